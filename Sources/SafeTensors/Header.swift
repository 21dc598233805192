/// A parsed and validated safetensors header.
public struct Header: Sendable {
    /// Every tensor, in data order (sorted by `(begin, end)` of `dataOffsets`).
    public let tensors: [TensorInfo]
    /// The `__metadata__` map, or nil when it is absent or `null`.
    public let metadata: [String: String]?
    /// N, the header length from the 8-byte prefix (padding included).
    public let byteCount: Int
    /// Absolute file offset of the data buffer: 8 + N.
    public var dataStart: Int { 8 + byteCount }

    public init(tensors: [TensorInfo], metadata: [String: String]?, byteCount: Int) {
        self.tensors = tensors
        self.metadata = metadata
        self.byteCount = byteCount
    }

    /// The largest header the reference accepts.
    public static let maxByteCount: UInt64 = 100_000_000
    /// The deepest JSON nesting the reference accepts (counting the top-level object).
    public static let maxNestingDepth = 127
}
