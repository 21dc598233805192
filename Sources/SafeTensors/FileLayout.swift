/// A tensor to be written: its name, element type and shape; its bytes come later.
public struct OutputTensor: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [UInt64]

    public init(name: String, dtype: DType, shape: [UInt64]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
}

/// The complete layout of a safetensors file before any tensor data is produced:
/// the serialized header and every tensor's byte range. This is what makes writing
/// streamable — each tensor's bytes can be written at a known offset, in any order,
/// by any thread.
///
/// Determinism: tensors are ordered as the reference writer orders them (dtype in
/// descending enum order, then name in ascending byte order), the header is compact
/// JSON in that order with `__metadata__` first (its keys sorted by bytes, where the
/// reference uses hash order), padded with spaces to a multiple of 8.
public struct FileLayout: Sendable {
    /// The 8-byte length prefix, the JSON header and its padding.
    public let headerBytes: [UInt8]
    /// The tensors in data order, with their final `dataOffsets`.
    public let tensors: [TensorInfo]
    /// Absolute offset of the data buffer.
    public var dataStart: Int { headerBytes.count }
    /// Size of the whole file.
    public let totalByteCount: Int
    /// For each tensor in data order, its index in the list the layout was made from.
    public let inputIndex: [Int]

    /// - Throws: `.duplicateTensor` for a repeated name, `.overflow` / `.misalignedSlice`
    ///   for an impossible shape, `.headerTooLarge` past the 100,000,000-byte limit.
    public init(tensors input: [OutputTensor], metadata: [String: String]?, file: String = "<output>") throws {
        let order = input.indices.sorted { i, j in
            let a = input[i], b = input[j]
            if a.dtype != b.dtype { return a.dtype.orderIndex > b.dtype.orderIndex }
            return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
        }
        let sorted = order.map { input[$0] }
        var infos: [TensorInfo] = []
        infos.reserveCapacity(sorted.count)
        var cursor: UInt64 = 0
        var previous: [UInt8]? = nil
        var seen = Set<[UInt8]>()
        for t in sorted {
            let bytes = Array(t.name.utf8)
            if previous == bytes || !seen.insert(bytes).inserted {
                throw SafeTensorsError(.duplicateTensor, file: file, tensor: t.name, "tensor name written twice")
            }
            previous = bytes
            let n: UInt64
            switch TensorInfo.expectedByteCount(dtype: t.dtype, shape: t.shape) {
            case .success(let v): n = v
            case .failure(let kind):
                throw SafeTensorsError(
                    kind, file: file, tensor: t.name, "shape \(t.shape) of \(t.dtype.rawValue) has no valid byte size")
            }
            let (end, o) = cursor.addingReportingOverflow(n)
            if o { throw SafeTensorsError(.overflow, file: file, tensor: t.name, "total data size overflows 64 bits") }
            infos.append(TensorInfo(name: t.name, dtype: t.dtype, shape: t.shape, dataOffsets: cursor..<end))
            cursor = end
        }

        var json: [UInt8] = []
        json.reserveCapacity(64 + infos.count * 120)
        json.append(UInt8(ascii: "{"))
        var first = true
        if let metadata {
            JSONWriter.appendString("__metadata__", to: &json)
            json.append(contentsOf: Array(":{".utf8))
            let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            for (i, k) in keys.enumerated() {
                if i > 0 { json.append(UInt8(ascii: ",")) }
                JSONWriter.appendString(k, to: &json)
                json.append(UInt8(ascii: ":"))
                JSONWriter.appendString(metadata[k]!, to: &json)
            }
            json.append(UInt8(ascii: "}"))
            first = false
        }
        for t in infos {
            if !first { json.append(UInt8(ascii: ",")) }
            first = false
            JSONWriter.appendString(t.name, to: &json)
            json.append(contentsOf: Array(":{\"dtype\":\"".utf8))
            json.append(contentsOf: Array(t.dtype.rawValue.utf8))
            json.append(contentsOf: Array("\",\"shape\":[".utf8))
            for (i, d) in t.shape.enumerated() {
                if i > 0 { json.append(UInt8(ascii: ",")) }
                json.append(contentsOf: Array(String(d).utf8))
            }
            json.append(contentsOf: Array("],\"data_offsets\":[".utf8))
            json.append(contentsOf: Array("\(t.dataOffsets.lowerBound),\(t.dataOffsets.upperBound)]}".utf8))
        }
        json.append(UInt8(ascii: "}"))
        while json.count % 8 != 0 { json.append(0x20) }
        if UInt64(json.count) > Header.maxByteCount {
            throw SafeTensorsError(
                .headerTooLarge, file: file,
                "header of \(json.count) bytes exceeds the \(Header.maxByteCount)-byte limit")
        }
        var header: [UInt8] = []
        header.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { header.append(contentsOf: $0) }
        header.append(contentsOf: json)
        self.headerBytes = header
        self.tensors = infos
        self.inputIndex = order
        let (total, o) = UInt64(header.count).addingReportingOverflow(cursor)
        if o || total > UInt64(Int.max) {
            throw SafeTensorsError(.overflow, file: file, "total file size overflows")
        }
        self.totalByteCount = Int(total)
    }

    /// Absolute file offset of tensor `i` (in data order).
    public func fileOffset(ofTensorAt i: Int) -> Int { dataStart + Int(tensors[i].dataOffsets.lowerBound) }
}

/// Minimal JSON string escaping, as serde_json writes it: `"` and `\` escaped,
/// control characters as \b \f \n \r \t or \u00xx (lower-case hex), everything
/// else (including non-ASCII) written raw as UTF-8.
enum JSONWriter {
    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x00..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
