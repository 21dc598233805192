import FileIO

/// A validated safetensors file, memory-mapped read-only.
///
/// `SafeTensorsFile(path:)` maps the file and checks its whole header (every rule in
/// docs/safetensors.md); after that every tensor view it hands out is in bounds.
/// Nothing proportional to the file size is allocated: data stays in the page cache
/// and is lent through ``withData(of:_:)``. Standard input ("-") and zstd-compressed
/// files are spooled to an unlinked temporary file first.
public final class SafeTensorsFile: @unchecked Sendable {
    /// The path as the user named it (`<stdin>` for "-").
    public let path: String
    public let header: Header
    /// The mapping (package-internal: its pointer must not outlive this object).
    package let mapping: MappedFile
    private let index: [[UInt8]: Int]

    /// Opens, maps and validates a file. "-" reads standard input.
    /// - Throws: `SafeTensorsError` (`.io` for system errors, `.compression` for bad
    ///   zstd input, `.notSafeTensors` for a diffusers folder or a file of another known
    ///   format, `.truncated` for an incomplete download, any format kind for a malformed file).
    public init(path: String) throws {
        let map: MappedFile
        do {
            map = try InputSpool.open(path, bound: SafeTensorsFile.spoolBound(source: path == "-" ? "<stdin>" : path))
        } catch let e as FileIOError {
            // Only after a failed open: a directory with model_index.json is a diffusers model.
            if path != "-", SystemInfo.fileExists(path + "/model_index.json") {
                throw SafeTensorsError(
                    .notSafeTensors, file: path,
                    "not a safetensors file: a diffusers folder (it holds model_index.json), not a single file; "
                        + "name one of its files, e.g. unet/diffusion_pytorch_model.safetensors")
            }
            throw SafeTensorsError(e)
        }
        self.mapping = map
        self.path = map.path
        self.header = try Header.parse(file: map.bytes, source: map.path)
        var index = [[UInt8]: Int](minimumCapacity: header.tensors.count)
        for (i, t) in header.tensors.enumerated() { index[Array(t.name.utf8)] = i }
        self.index = index
    }

    /// Tensors in data order.
    public var tensors: [TensorInfo] { header.tensors }
    public var metadata: [String: String]? { header.metadata }
    /// Total size of the (uncompressed) file in bytes.
    public var byteCount: Int { mapping.byteCount }

    /// The tensor with exactly this name (compared as UTF-8 bytes, not as
    /// canonically-equivalent Strings).
    public func tensor(named name: String) -> TensorInfo? {
        index[Array(name.utf8)].map { header.tensors[$0] }
    }

    /// Absolute file offset of a tensor's first byte.
    public func fileOffset(of t: TensorInfo) -> Int { header.dataStart + Int(t.dataOffsets.lowerBound) }

    /// Lends a tensor's bytes to `body`; the pointer must not escape the closure.
    /// - Precondition: `t` is one of this file's tensors.
    public func withData<R>(of t: TensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(data(of: t)) }
    }

    /// A borrowed view of a tensor's bytes, valid while this object is alive
    /// (package-internal: the engine's workers hold the file for the whole run).
    /// - Precondition: `t` is one of this file's tensors (checked: the range lies in the mapping).
    package func data(of t: TensorInfo) -> UnsafeRawBufferPointer {
        let start = fileOffset(of: t)
        precondition(
            start >= 0 && t.byteCount >= 0 && start <= mapping.byteCount - t.byteCount,
            "tensor '\(t.name)' is not in \(path)")
        return UnsafeRawBufferPointer(rebasing: mapping.bytes[start..<start + t.byteCount])
    }

    /// How far a spooled stream may go: asks for the 8-byte length, then for the whole
    /// header, then answers with the size the header declares (8 + N + end of the last tensor).
    static func spoolBound(source: String) -> (UnsafeRawBufferPointer) throws -> SpoolBound {
        { prefix in
            guard prefix.count >= 8 else { return .needPrefix(8) }
            var n: UInt64 = 0
            for i in (0..<8).reversed() { n = n << 8 | UInt64(prefix[i]) }
            guard n <= Header.maxByteCount else {
                // Not safetensors: read a little more to say what it is (a shorter stream is
                // mapped whole and the parser says it).
                if prefix.count < ForeignFormat.sniffLength { return .needPrefix(ForeignFormat.sniffLength) }
                if let other = ForeignFormat.describe(prefix) {
                    throw SafeTensorsError(
                        .notSafeTensors, file: source, offset: 0, "not a safetensors file: looks like " + other)
                }
                throw SafeTensorsError(
                    .headerTooLarge, file: source, offset: 0,
                    "header length \(n) exceeds the \(Header.maxByteCount)-byte limit")
            }
            guard prefix.count >= 8 + Int(n) else { return .needPrefix(8 + Int(n)) }
            return .total(try Header.declaredFileSize(prefix: prefix, source: source))
        }
    }

    /// The value of a one-element floating or integer tensor (e.g. a LoRA `alpha`).
    /// - Throws: `.unsupported` when the tensor has more than one element or a dtype
    ///   without a numeric reading.
    public func scalarValue(of t: TensorInfo) throws -> Double {
        guard t.elementCount == 1 else {
            throw SafeTensorsError(
                .unsupported, file: path, tensor: t.name,
                "expected a one-element tensor, found shape \(t.shape)")
        }
        let p = data(of: t)
        func load<T>(_: T.Type) -> T { p.loadUnaligned(as: T.self) }
        switch t.dtype {
        case .F32: return Double(Float(bitPattern: load(UInt32.self)))
        case .F64: return Double(bitPattern: load(UInt64.self))
        case .F16: return Double(Float(Float16(bitPattern: load(UInt16.self))))
        case .BF16: return Double(Float(bitPattern: UInt32(load(UInt16.self)) << 16))
        case .I64: return Double(load(Int64.self))
        case .I32: return Double(load(Int32.self))
        case .I16: return Double(load(Int16.self))
        case .I8: return Double(load(Int8.self))
        case .U8: return Double(load(UInt8.self))
        case .U16: return Double(load(UInt16.self))
        case .U32: return Double(load(UInt32.self))
        case .U64: return Double(load(UInt64.self))
        default:
            throw SafeTensorsError(
                .unsupported, file: path, tensor: t.name,
                "cannot read a \(t.dtype.rawValue) value as a number")
        }
    }
}
