import SafeTensors

/// Called from worker threads with (bytes produced so far, total bytes).
public typealias ProgressCallback = @Sendable (_ done: Int, _ total: Int) -> Void

/// How one output tensor is produced from one input tensor.
public enum TensorOperation: Sendable {
    /// The input bytes, unchanged (same dtype).
    case copy
    /// A floating-point dtype conversion, element by element.
    case convert
    /// The input weight changed by adapter updates in command-line order, computed in
    /// the plan's arithmetic precision (fp32 unless sd-scripts' fp16/bf16 emulation was
    /// asked for) and rounded to the output dtype once.
    case update(TensorUpdates)
}

/// One tensor of the output: where it comes from and what is done to it.
public struct PlannedTensor: Sendable {
    public let source: SafeTensorsFile
    public let input: TensorInfo
    public let output: OutputTensor
    public let operation: TensorOperation

    public init(source: SafeTensorsFile, input: TensorInfo, output: OutputTensor, operation: TensorOperation) {
        self.source = source
        self.input = input
        self.output = output
        self.operation = operation
    }
}

/// Arithmetic precision of a merge (sd-scripts' `--precision`).
public enum MergePrecision: String, Sendable, CaseIterable {
    /// fp32 throughout, one rounding at the end (sd-scripts' default, "float").
    case fp32
    /// Every intermediate rounded to fp16, as PyTorch does with `--precision fp16`.
    case fp16
    /// Every intermediate rounded to bf16.
    case bf16
}

/// Whose arithmetic a merge reproduces where the reference implementations disagree
/// (DoRA, OFT and BOFT; every other kind is computed the same by both).
public enum MergeCompat: String, Sendable, CaseIterable, Codable {
    /// The LyCORIS library's definitions: what the adapter was trained to mean (DoRA
    /// norms of the updated weight, magnitude-only strength; OFT constraint alpha × rows,
    /// `rescale` applied; strength interpolates the rotation).
    case lycoris
    /// ComfyUI's `comfy.lora` inference: output-axis DoRA divides by the norm of the
    /// original weight, strength other than 1 interpolates the final weight linearly,
    /// the OFT constraint is alpha itself, OFT `rescale` is ignored.
    case comfyui
}

/// A complete description of an output file: every tensor and the metadata.
public struct ExecutionPlan: Sendable {
    public var tensors: [PlannedTensor]
    public var metadata: [String: String]?
    public var precision: MergePrecision

    public init(tensors: [PlannedTensor], metadata: [String: String]?, precision: MergePrecision = .fp32) {
        self.tensors = tensors
        self.metadata = metadata
        self.precision = precision
    }
}

/// What a run did.
public struct ExecutionReport: Sendable {
    public var bytesWritten: Int
    public var tensorsWritten: Int
    public var tensorsMerged: Int
    public var tensorsConverted: Int
    public var tensorsCopied: Int
    /// Floating-point operations of all updates (2 · rows · columns · rank for LoRA).
    public var flops: Double
    public var seconds: Double
    public var threads: Int
    /// Tensors in which finite values became ±inf when rounded to the output dtype
    /// (narrowing conversions and merges into fp16/bf16), in file order.
    public var overflows: [TensorOverflow] = []
    /// Size of the compressed file when the output was zstd-encoded, else nil.
    public var compressedBytes: Int? = nil
}

/// How many finite input values of one tensor became ±inf in the output dtype.
public struct TensorOverflow: Sendable, Equatable, Codable {
    public let name: String
    public let count: Int
    public init(name: String, count: Int) {
        self.name = name
        self.count = count
    }
}

/// How the executor encodes the output file.
public enum OutputEncoding: Sendable, Equatable {
    /// The safetensors bytes, each chunk written at its final offset by any thread.
    case raw
    /// One zstd frame of the safetensors bytes, fed to the compressor in file order.
    /// `workers` is zstd's own thread count (`ZSTD_c_nbWorkers`, 0 = single-threaded).
    case zstd(level: Int, workers: Int)
    /// The safetensors bytes appended in file order (for outputs that cannot seek, such as
    /// a pipe on standard output; chosen automatically for ``FileIO/AtomicOutput/isStream``).
    case sequential

    /// The encoding a path asks for: zstd when it ends in `.zst`.
    public static func forPath(_ path: String, zstdLevel: Int = 3, workers: Int = defaultThreadCount())
        -> OutputEncoding
    {
        path.hasSuffix(".zst") ? .zstd(level: zstdLevel, workers: workers) : .raw
    }
}
