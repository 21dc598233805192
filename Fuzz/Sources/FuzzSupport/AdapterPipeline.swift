#if canImport(Glibc)
import Glibc
#endif
import Adapters
import FileIO
import Fixtures
import Foundation
import GraftEngine
import SafeTensors

/// The fixed checkpoint every adapter is planned against: a reduced-width SDXL base from
/// `Fixtures` (real key names and shapes), thinned to a few layers of each kind so that
/// each input stays fast (the planner reuses ``mapper``, the checkpoint's key index, built
/// once). ``file``'s data is a sparse zero tail of a memfd; ``patterned`` has the same
/// header over non-zero data (small finite values, different in every element), so that
/// executed updates also see a weight that is not zero (norms, rotations, GLoRA's W @ A).
public enum FixedCheckpoint {
    public static let architecture = SDXLArchitecture(widthDivisor: 16)
    public static let tensors: [SyntheticTensor] = architecture.checkpointTensors().filter(keep)

    /// Keeps TE1 layer 0, TE2 layer 0 (fused q/k/v), UNet input blocks 0 (conv_in), 3
    /// (downsampler), 4 (resnet with a 1×1 skip, attention), output blocks 2 (upsampler) and
    /// 5, transformer block 0, and every tensor outside numbered blocks; of the VAE only
    /// conv_in/conv_out: every layer kind once, so that planning stays cheap per input.
    static func keep(_ t: SyntheticTensor) -> Bool {
        let parts = t.name.split(separator: ".")
        func index(after word: String) -> Int? {
            guard let i = parts.firstIndex(where: { $0 == word }), i + 1 < parts.count else { return nil }
            return Int(parts[i + 1])
        }
        if t.name.hasPrefix(SDXLArchitecture.vaePrefix) {
            return t.name.contains("encoder.conv_in.") || t.name.contains("decoder.conv_out.")
        }
        if let n = index(after: "layers"), n != 0 { return false }
        if let n = index(after: "resblocks"), n != 0 { return false }
        if let n = index(after: "input_blocks"), ![0, 3, 4].contains(n) { return false }
        if let n = index(after: "output_blocks"), ![2, 5].contains(n) { return false }
        if let n = index(after: "transformer_blocks"), n != 0 { return false }
        if t.name.contains(".middle_block.") { return false }
        return true
    }

    /// The kohya LoRA/LoCon modules of this checkpoint (names, out/in features, kernels).
    public static let targets: [LoRATarget] = KohyaLoRA.sdxlTargets(checkpoint: tensors, includeConv: true)

    nonisolated(unsafe) private static var memFile: MemFile? = nil

    public static let file: SafeTensorsFile = {
        let layout = try! FileLayout(tensors: tensors.map(\.outputTensor), metadata: nil)
        let m = MemFile(name: "graft-fuzz-checkpoint")
        m.replace(with: layout.headerBytes, length: layout.totalByteCount)
        memFile = m
        return try! m.open()
    }()

    nonisolated(unsafe) private static var patternFile: MemFile? = nil

    public static let patterned: SafeTensorsFile = {
        let layout = try! FileLayout(tensors: tensors.map(\.outputTensor), metadata: nil)
        let m = MemFile(name: "graft-fuzz-checkpoint-patterned")
        var bytes = layout.headerBytes + [UInt8](repeating: 0, count: layout.totalByteCount - layout.dataStart)
        var values: [Float] = []
        for (i, t) in layout.tensors.enumerated() where Conversion.isSupported(t.dtype) && t.elementCount > 0 {
            let n = t.elementCount
            if values.count < n { values = (0..<n).map { Float(($0 * 37 + 11) % 29 - 14) / 64 } }
            let offset = layout.fileOffset(ofTensorAt: i)
            bytes.withUnsafeMutableBytes { b in
                values.withUnsafeBufferPointer {
                    Conversion.fromFloat32($0.baseAddress!, to: b.baseAddress! + offset, t.dtype, count: n)
                }
            }
        }
        m.replace(with: bytes)
        patternFile = m
        return try! m.open()
    }()

    public static let mapper = KeyMapper(tensors: file.tensors, metadata: file.metadata)
}

/// Everything graft does with an adapter: analysis, the `list` report, key mapping,
/// per-module resolution, merge planning against ``FixedCheckpoint``, and execution of
/// every planned update (``execute(_:chunkElements:)``). Errors are expected; only traps
/// and sanitizer reports count.
public enum AdapterPipeline {
    public static func run(_ file: SafeTensorsFile) {
        let alpha: (TensorInfo) throws -> Double? = { try file.scalarValue(of: $0) }
        let analysis = AdapterAnalysis(tensors: file.tensors, metadata: file.metadata, alphaValue: alpha)
        _ = (analysis.ranks, analysis.convRanks, analysis.alphas, analysis.convAlphas)
        _ = (analysis.moduleCounts, analysis.kindCounts, analysis.layerCounts, analysis.invalidModules)
        for m in analysis.modules {
            _ = m.delta?.description
            _ = analysis.module(named: m.name)
        }

        let report = ListReport(tensors: file.tensors, metadata: file.metadata, alphaValue: alpha, includeModules: true)
        _ = try? JSONEncoder().encode(report)

        let mapper = FixedCheckpoint.mapper
        _ = mapper.compatibility(with: analysis)
        _ = try? mapper.checkCompatible(analysis)
        let plan = mapper.plan(analysis)
        _ = (plan.resolved.count, plan.unresolved.count, plan.differingFromSDScripts.count, plan.overlaps)
        for m in analysis.modules {
            _ = mapper.resolve(m)
            if let target = try? mapper.resolve(m, adapterFamily: analysis.baseModel.family).get() {
                _ = mapper.sdScriptsTreatment(of: m, target: target)
            }
        }

        // The planner indexes the whole checkpoint before looking at the adapter, and throws
        // right after the analysis when this guard fails: skip it then (most raw inputs).
        guard !analysis.modules.isEmpty, analysis.kind != .unknown else { return }
        // Strict (fp32) or --allow-unmatched (fp16, bf16 output), by the input's size:
        // one plan per input, for the same reason.
        // The other bits of the size pick the checkpoint data (zeros or a pattern), the compat
        // and the ratio of the executed merge.
        let allowUnmatched = file.byteCount % 2 == 0
        let choice = file.byteCount / 2
        do {
            let precision: MergePrecision = allowUnmatched ? .fp16 : .fp32
            var request = MergeRequest(
                checkpoint: choice % 2 == 0 ? FixedCheckpoint.file : FixedCheckpoint.patterned,
                adapters: [MergeInput(file: file, ratio: choice / 2 % 3 == 0 ? 1 : 0.75)],
                savePrecision: allowUnmatched ? .BF16 : nil, precision: precision,
                allowUnmatched: allowUnmatched, outputPath: "fuzz-out.safetensors", graftVersion: "fuzz")
            request.compat = choice / 6 % 2 == 0 ? .lycoris : .comfyui
            // The planner lays the output out itself (MergePlan.outputBytes).
            guard let merge = try? MergePlanner.plan(request, mapper: FixedCheckpoint.mapper) else { return }
            _ = (merge.unmatched, merge.outputBytes)
            execute(merge, chunkElements: choice / 12 % 2 == 0 ? 1 << 12 : 64)
        }
    }

    /// Work above which a plan is not executed (floating-point operations of its updates,
    /// bytes of adapter factors): a merge that large only costs time and memory, and the
    /// shapes that reach it are exercised by validation and planning already.
    static let maxFlops = 5e7
    static let maxAdapterBytes = 64 << 20

    /// The output directory: tmpfs when there is one, a directory of its own (AtomicOutput
    /// scans the destination's directory for stale partial outputs; with `O_TMPFILE` it stays
    /// empty, so fork-mode jobs can share it).
    static let outputDirectory: String = {
        let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NSTemporaryDirectory()
        let dir = "\(base)/graft-fuzz-exec-\(getuid())"
        mkdir(dir, 0o700)
        return dir
    }()

    /// Runs the real ``Executor`` on the tensors of `merge` that updates change (the copies
    /// and conversions are left out: they do not depend on the adapter), one thread, small
    /// chunks (so that chunking, OFT's row alignment and BOFT's whole-update blocks are
    /// exercised), into an `O_TMPFILE` output on tmpfs that is aborted, never committed.
    public static func execute(_ merge: MergePlan, chunkElements: Int = 1 << 12) {
        let tensors = merge.execution.tensors.filter {
            if case .update = $0.operation { return true }
            return false
        }
        guard !tensors.isEmpty else { return }
        let flops = tensors.reduce(0.0) {
            if case .update(let u) = $1.operation { return $0 + u.flops() }
            return $0
        }
        guard flops <= maxFlops, merge.adapters.allSatisfy({ a in
            a.analysis.modules.allSatisfy { $0.parts.values.reduce(0) { $0 + $1.byteCount } <= maxAdapterBytes }
        }) else { return }
        let plan = ExecutionPlan(tensors: tensors, metadata: nil, precision: merge.execution.precision)
        var executor = Executor()
        executor.threads = 1
        executor.chunkElements = chunkElements
        executor.copyChunkBytes = 1 << 16
        executor.directIO = false
        guard let output = try? AtomicOutput(path: outputDirectory + "/out.safetensors", overwrite: true) else {
            return
        }
        _ = try? executor.run(plan, into: output)
        output.abort()
    }
}
