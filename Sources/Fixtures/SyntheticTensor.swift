import SafeTensors

/// One tensor of a synthetic model: its name, element type, shape and how its
/// values are made. Shapes use `Int`; ``outputTensor`` converts for the writer.
public struct SyntheticTensor: Sendable, Equatable, CustomStringConvertible {
    /// How a tensor's values are generated.
    public enum Fill: Sendable, Equatable {
        /// Approximately N(0, std²) (see ``SplitMix64/nextNormal()``).
        case normal(std: Float)
        /// Approximately N(mean, std²), e.g. norm weights near 1.
        case normalAround(mean: Float, std: Float)
        /// Every element equal to the value (LoRA `alpha`, `logit_scale`).
        case constant(Float)
    }

    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var fill: Fill

    public init(name: String, dtype: DType, shape: [Int], fill: Fill) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.fill = fill
    }

    /// Number of elements (1 for a scalar of shape []).
    public var elementCount: Int { shape.reduce(1, *) }
    /// Bytes of data (whole bytes; sub-byte dtypes rounded up).
    public var byteCount: Int { (elementCount * dtype.bitCount + 7) / 8 }
    /// The name, dtype and shape in the form the safetensors writer takes.
    public var outputTensor: OutputTensor {
        OutputTensor(name: name, dtype: dtype, shape: shape.map { UInt64($0) })
    }

    public var description: String {
        "\(name) \(dtype.rawValue) [\(shape.map(String.init).joined(separator: ", "))]"
    }
}

extension Array where Element == SyntheticTensor {
    /// Total bytes of tensor data (header excluded).
    public var dataByteCount: Int { reduce(0) { $0 + $1.byteCount } }

    /// The tensors sorted by name (as UTF-8 bytes), the order a safetensors file of a
    /// single dtype stores them in.
    public func sortedByName() -> [SyntheticTensor] {
        sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    }

    /// Every tensor with its dtype replaced.
    public func converted(to dtype: DType) -> [SyntheticTensor] {
        map {
            var t = $0; t.dtype = dtype; return t
        }
    }
}

/// Collects the tensors of a model in the conventions of PyTorch layers: a Linear
/// `[out, in]` with bias `[out]`, a Conv2d `[out, in, k, k]`, a norm's weight near 1.
struct TensorListBuilder {
    var dtype: DType
    var tensors: [SyntheticTensor] = []

    static let weightStd: Float = 0.02
    static let biasStd: Float = 0.005

    init(dtype: DType) { self.dtype = dtype }

    mutating func add(_ name: String, _ shape: [Int], _ fill: SyntheticTensor.Fill) {
        tensors.append(SyntheticTensor(name: name, dtype: dtype, shape: shape, fill: fill))
    }

    mutating func weight(_ name: String, _ shape: [Int]) {
        add(name, shape, .normal(std: Self.weightStd))
    }

    mutating func bias(_ name: String, _ count: Int) {
        add(name, [count], .normal(std: Self.biasStd))
    }

    /// `name.weight` [out, in], plus `name.bias` [out] when `bias`.
    mutating func linear(_ name: String, out: Int, in inputs: Int, bias: Bool = true) {
        weight(name + ".weight", [out, inputs])
        if bias { self.bias(name + ".bias", out) }
    }

    /// `name.weight` [out, in, k, k] and `name.bias` [out].
    mutating func conv(_ name: String, out: Int, in inputs: Int, kernel: Int) {
        weight(name + ".weight", [out, inputs, kernel, kernel])
        bias(name + ".bias", out)
    }

    /// GroupNorm / LayerNorm: `name.weight` near 1 and `name.bias` near 0, both [count].
    mutating func norm(_ name: String, _ count: Int) {
        add(name + ".weight", [count], .normalAround(mean: 1, std: Self.weightStd))
        bias(name + ".bias", count)
    }
}
