/// One entry of a safetensors header: a tensor's name, element type, shape and the
/// byte range of its data, relative to the start of the data buffer.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    /// Dimensions exactly as stored. They are `UInt64` because the format allows any
    /// u64 (a zero-element tensor may carry a dimension of 2^64-1).
    public let shape: [UInt64]
    /// `[begin, end)` relative to the data buffer (the reference's `data_offsets`).
    public let dataOffsets: Range<UInt64>

    public init(name: String, dtype: DType, shape: [UInt64], dataOffsets: Range<UInt64>) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.dataOffsets = dataOffsets
    }

    /// Number of elements. Only call on a validated tensor: validation proved the
    /// product fits, and a non-empty tensor's dimensions all fit in `Int`.
    public var elementCount: Int {
        if shape.contains(0) { return 0 }
        return shape.reduce(1) { $0 * Int($1) }
    }

    /// Size of the tensor's data in bytes.
    public var byteCount: Int { Int(dataOffsets.upperBound - dataOffsets.lowerBound) }

    /// The shape as `Int`s (dimensions above `Int.max`, possible only in zero-element
    /// tensors, are clamped).
    public var dims: [Int] { shape.map { Int(clamping: $0) } }

    /// The byte count a tensor of this dtype and shape must have, or nil on overflow
    /// or a bit count that is not a whole number of bytes. Left-to-right checked
    /// multiplication, as the reference does it.
    public static func expectedByteCount(dtype: DType, shape: [UInt64]) -> Result<UInt64, SafeTensorsError.Kind> {
        var count: UInt64 = 1
        for d in shape {
            let (p, o) = count.multipliedReportingOverflow(by: d)
            if o { return .failure(.overflow) }
            count = p
        }
        let (bits, o) = count.multipliedReportingOverflow(by: UInt64(dtype.bitCount))
        if o { return .failure(.overflow) }
        if bits % 8 != 0 { return .failure(.misalignedSlice) }
        return .success(bits / 8)
    }
}
