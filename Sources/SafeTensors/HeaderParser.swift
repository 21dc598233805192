// Strict parsing and validation of a safetensors header, in the order the reference
// implementation (huggingface/safetensors `read_metadata` + `Metadata::validate`)
// applies its checks. See docs/safetensors.md §2-§5 and §13.
//
// Deliberate differences from the reference:
// * Duplicate tensor names are rejected (`.duplicateTensor`); the reference keeps the
//   last entry. Names are compared as raw UTF-8 bytes, so NFC and NFD spellings of
//   the same text are two distinct tensors.
// * The serde artifacts the reference accepts but no writer produces are rejected as
//   invalid JSON: a tensor entry written as an array `[dtype, shape, data_offsets]`
//   and a dtype written as a single-key object `{"U8": null}`.
// * `__metadata__` keys are Swift Strings (the public `Header.metadata` type), so two
//   keys that differ only in Unicode normalisation collapse into one, the later value
//   winning, exactly like a byte-identical duplicate key does in the reference.
// Otherwise the verdict (accept / reject) is meant to match the reference's exactly;
// HeaderParserTests cross-checks it against the Python package.

extension Header {
    /// Parses and validates the header of a safetensors file held in memory (a mapping of the
    /// whole file). `source` is the file name used in errors. Throws SafeTensorsError only.
    ///
    /// - Parameters:
    ///   - bytes: the whole file: the 8-byte length prefix, the header and the data buffer.
    ///   - source: the file name as the user gave it, copied into every error.
    /// - Returns: the header, with its tensors in data order (sorted by `(begin, end)`).
    /// - Throws: `SafeTensorsError` of kind `.headerTooSmall`, `.headerTooLarge`,
    ///   `.invalidHeaderLength`, `.invalidUTF8`, `.invalidJSON`, `.duplicateTensor`,
    ///   `.invalidOffset`, `.overflow`, `.misalignedSlice`, `.tensorInvalidInfo`,
    ///   `.truncated` or `.incompleteBuffer`, checked in that order. An implausible length
    ///   prefix is `.notSafeTensors` instead of `.headerTooLarge`/`.invalidHeaderLength` when
    ///   the first bytes are a known other format, and `.truncated` when they are the
    ///   start of a safetensors header (`{"`).
    public static func parse(file bytes: UnsafeRawBufferPointer, source: String) throws -> Header {
        try parse(bytes, fileSize: bytes.count, coverage: true, source: source).header
    }

    /// The size a file with this header must have (8 + N + the end of the last tensor),
    /// from the first bytes of a stream: `bytes` holds at least the length prefix and the
    /// N header bytes. Every rule except the final coverage check applies. Lets a reader
    /// of a pipe or a zstd stream stop as soon as the stream runs past what its header declares.
    /// - Throws: `SafeTensorsError` as ``parse(file:source:)``, except `.incompleteBuffer`.
    public static func declaredFileSize(prefix bytes: UnsafeRawBufferPointer, source: String) throws -> UInt64 {
        try parse(bytes, fileSize: Int.max, coverage: false, source: source).declaredSize
    }

    private static func parse(
        _ bytes: UnsafeRawBufferPointer, fileSize declaredFileSize: Int, coverage: Bool,
        source: String
    ) throws -> (header: Header, declaredSize: UInt64) {
        let fileSize = coverage ? bytes.count : declaredFileSize
        // 1. The 8-byte little-endian length prefix.
        guard fileSize >= 8 else {
            throw SafeTensorsError(
                .headerTooSmall, file: source,
                "file is \(fileSize) bytes, shorter than the 8-byte header length prefix")
        }
        var n: UInt64 = 0
        for i in (0..<8).reversed() { n = n << 8 | UInt64(bytes[i]) }
        // 2-3. The size limit comes before any comparison with the file size.
        guard n <= Header.maxByteCount else {
            if let other = ForeignFormat.describe(bytes) { throw notSafeTensors(other, source) }
            throw SafeTensorsError(
                .headerTooLarge, file: source, offset: 0,
                "header length \(n) exceeds the \(Header.maxByteCount)-byte limit")
        }
        let headerLength = Int(n)  // n <= 100,000,000
        // 4. The header must fit in the file.
        guard headerLength <= bytes.count - 8 else {
            if let other = ForeignFormat.describe(bytes) { throw notSafeTensors(other, source) }
            // `{"` is how every writer starts a header: this is the start of a real file.
            if bytes.count >= 10 && bytes[8] == UInt8(ascii: "{") && bytes[9] == UInt8(ascii: "\"") {
                throw SafeTensorsError(
                    .truncated, file: source, offset: UInt64(bytes.count),
                    "file is truncated: at least \(8 + n - UInt64(bytes.count)) bytes missing (incomplete download?); "
                        + "the header alone needs 8 + \(n) bytes, the file has \(bytes.count)")
            }
            throw SafeTensorsError(
                .invalidHeaderLength, file: source, offset: 0,
                "header length \(n) runs past the end of the file: 8 + \(n) > file size \(fileSize)")
        }
        let headerEnd = 8 + headerLength
        // 5. Strict UTF-8 over the whole header before any JSON is read.
        try validateHeaderUTF8(bytes, start: 8, end: headerEnd, source: source)
        // 6. JSON syntax and the header model.
        var parser = HeaderModelParser(
            scanner: JSONScanner(file: bytes, headerStart: 8, headerEnd: headerEnd, source: source))
        try parser.parseDocument()
        // Deliberately stricter than the reference: refuse duplicate names.
        try rejectDuplicateNames(parser.entries, source: source)
        // 7-8. Tensor table validation and full coverage of the data buffer.
        let tensors = try validate(
            parser.entries, dataStart: UInt64(headerEnd), fileSize: UInt64(fileSize), coverage: coverage, source: source
        )
        let declared = UInt64(headerEnd) + (tensors.last?.dataOffsets.upperBound ?? 0)
        return (Header(tensors: tensors, metadata: parser.metadata, byteCount: headerLength), declared)
    }

    // MARK: - Validation (§5)

    private static func rejectDuplicateNames(_ entries: [RawTensorEntry], source: String) throws {
        var seen: [NameBytes: Int] = [:]
        seen.reserveCapacity(entries.count)
        for entry in entries {
            if let first = seen.updateValue(entry.nameOffset, forKey: NameBytes(entry.name)) {
                throw SafeTensorsError(
                    .duplicateTensor, file: source, tensor: entry.name, offset: UInt64(entry.nameOffset),
                    "tensor name appears twice in the header (first at byte \(first)); "
                        + "the reference would silently keep only the last entry")
            }
        }
    }

    /// - Parameter coverage: require the tensors to end exactly at `fileSize` (false when
    ///   only a stream's first bytes are known and `fileSize` is an upper bound).
    private static func validate(
        _ entries: [RawTensorEntry], dataStart: UInt64, fileSize: UInt64, coverage: Bool = true, source: String
    ) throws -> [TensorInfo] {
        // Sort by (begin, end); ties keep JSON order so errors are deterministic.
        let order = entries.indices.sorted { a, b in
            let x = entries[a], y = entries[b]
            if x.begin != y.begin { return x.begin < y.begin }
            if x.end != y.end { return x.end < y.end }
            return a < b
        }
        let dataSize = fileSize - dataStart  // dataStart <= fileSize was checked
        // Absolute file offset of a data offset, when it lies inside the file.
        func absolute(_ dataOffset: UInt64) -> UInt64? {
            let (sum, overflow) = dataStart.addingReportingOverflow(dataOffset)
            return overflow || sum > fileSize ? nil : sum
        }
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(entries.count)
        var cursor: UInt64 = 0
        for index in order {
            let e = entries[index]
            // Messages are built only on failure: this loop runs once per tensor.
            var offsets: String { "data_offsets [\(e.begin), \(e.end)]" }
            var shapeText: String { describeShape(e.shape) }
            guard e.begin == cursor, e.end >= e.begin else {
                let why: String
                if e.end < e.begin {
                    why = "\(offsets) end before they begin"
                } else if e.begin > cursor {
                    why = "\(offsets) leave a hole: expected begin \(cursor)"
                } else {
                    why = "\(offsets) overlap the previous tensor: expected begin \(cursor)"
                }
                throw SafeTensorsError(.invalidOffset, file: source, tensor: e.name, offset: absolute(e.begin), why)
            }
            cursor = e.end
            switch TensorInfo.expectedByteCount(dtype: e.dtype, shape: e.shape) {
            case .failure(.misalignedSlice):
                throw SafeTensorsError(
                    .misalignedSlice, file: source, tensor: e.name, offset: absolute(e.begin),
                    "dtype \(e.dtype.rawValue) with shape \(shapeText) is not a whole number of bytes "
                        + "(\(e.dtype.bitCount)-bit elements)")
            case .failure:
                throw SafeTensorsError(
                    .overflow, file: source, tensor: e.name, offset: absolute(e.begin),
                    "element or bit count of \(e.dtype.rawValue) shape \(shapeText) overflows 64 bits")
            case .success(let byteCount):
                guard e.end - e.begin == byteCount else {
                    throw SafeTensorsError(
                        .tensorInvalidInfo, file: source, tensor: e.name, offset: absolute(e.begin),
                        "\(offsets) span \(e.end - e.begin) bytes but \(e.dtype.rawValue) shape \(shapeText) "
                            + "needs \(byteCount)")
                }
            }
            tensors.append(TensorInfo(name: e.name, dtype: e.dtype, shape: e.shape, dataOffsets: e.begin..<e.end))
        }
        let (total, overflow) = dataStart.addingReportingOverflow(cursor)
        if !overflow && total > fileSize && coverage {
            throw SafeTensorsError(
                .truncated, file: source, offset: fileSize,
                "file is truncated: \(total - fileSize) bytes missing (incomplete download?); "
                    + "tensors end at data offset \(cursor) but the data buffer holds only \(dataSize) bytes")
        }
        if overflow || total > fileSize {
            throw SafeTensorsError(
                .incompleteBuffer, file: source, tensor: tensors.last?.name,
                offset: tensors.last.flatMap { absolute($0.dataOffsets.lowerBound) },
                "tensors end at data offset \(cursor) but the data buffer holds only \(dataSize) bytes")
        }
        if coverage && total < fileSize {
            throw SafeTensorsError(
                .incompleteBuffer, file: source, offset: total,
                "\(fileSize - total) bytes after the last tensor are not covered by any tensor "
                    + "(tensors end at data offset \(cursor), data buffer holds \(dataSize) bytes)")
        }
        return tensors
    }

    private static func notSafeTensors(_ what: String, _ source: String) -> SafeTensorsError {
        SafeTensorsError(.notSafeTensors, file: source, offset: 0, "not a safetensors file: looks like " + what)
    }

    private static func describeShape(_ shape: [UInt64]) -> String {
        if shape.count <= 8 { return "[" + shape.map(String.init).joined(separator: ", ") + "]" }
        return "[" + shape.prefix(8).map(String.init).joined(separator: ", ") + ", ... (\(shape.count) dims)]"
    }
}

// MARK: - Header model

/// A tensor entry as read from JSON, before validation.
private struct RawTensorEntry {
    var name: String
    /// Absolute offset of the name's opening quote.
    var nameOffset: Int
    var dtype: DType
    var shape: [UInt64]
    var begin: UInt64
    var end: UInt64
}

/// A tensor name keyed by its exact UTF-8 bytes (Swift's String `==` and hashing treat
/// canonically equivalent strings as equal, which would merge NFC and NFD names).
private struct NameBytes: Hashable {
    let name: String
    init(_ name: String) { self.name = name }

    static func == (a: NameBytes, b: NameBytes) -> Bool {
        // Native strings store contiguous UTF-8; compare the buffers directly (hash-table
        // probes call this often, and names tend to share long prefixes).
        let fast = a.name.utf8.withContiguousStorageIfAvailable { x in
            b.name.utf8.withContiguousStorageIfAvailable { y in x.count == y.count && x.elementsEqual(y) }
        }
        return (fast ?? nil) ?? a.name.utf8.elementsEqual(b.name.utf8)
    }

    func hash(into hasher: inout Hasher) {
        var copy = name
        copy.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        hasher.combine(name.utf8.count)
    }
}

/// Maps the JSON document onto the header model (§4), on top of `JSONScanner`.
private struct HeaderModelParser {
    var scanner: JSONScanner
    var entries: [RawTensorEntry] = []
    var metadata: [String: String]?

    init(scanner: JSONScanner) { self.scanner = scanner }

    /// Parses the whole header: optional whitespace, one object, optional whitespace.
    mutating func parseDocument() throws {
        scanner.skipWhitespace()
        guard let first = scanner.peek() else {
            throw scanner.error("expected an object, found end of header")
        }
        guard first == JSONByte.openBrace else {
            throw scanner.error("the header must be a JSON object, found \(scanner.valueKind(at: scanner.pos))")
        }
        scanner.pos += 1
        scanner.skipWhitespace()
        var sawMetadata = false
        if scanner.peek() == JSONByte.closeBrace {
            scanner.pos += 1
        } else {
            repeat {
                scanner.skipWhitespace()
                let key = try scanner.readKey()
                if scanner.stringEquals(key, "__metadata__") {
                    guard !sawMetadata else {
                        throw scanner.error("duplicate field `__metadata__`", at: key.quoteOffset)
                    }
                    sawMetadata = true
                    metadata = try parseMetadata()
                } else {
                    let name = scanner.string(key)
                    entries.append(try parseTensorEntry(name: name, nameOffset: key.quoteOffset))
                }
            } while try scanner.commaOrClose(JSONByte.closeBrace, after: "object member")
        }
        scanner.skipWhitespace()
        guard scanner.pos == scanner.end else {
            throw scanner.error("trailing characters after the header object: found \(scanner.found(at: scanner.pos))")
        }
    }

    /// `__metadata__`: null (same as absent) or an object of string values; a repeated
    /// key keeps its last value.
    private mutating func parseMetadata() throws -> [String: String]? {
        let valueStart = scanner.pos
        switch scanner.peek() {
        case 0x6E:  // n
            try scanner.readLiteral("null")
            return nil
        case JSONByte.openBrace:
            break
        default:
            throw scanner.error(
                "`__metadata__` must be an object of strings or null, found \(scanner.valueKind(at: valueStart))")
        }
        scanner.pos += 1  // depth 2
        scanner.skipWhitespace()
        var map: [String: String] = [:]
        if scanner.peek() == JSONByte.closeBrace {
            scanner.pos += 1
            return map
        }
        repeat {
            scanner.skipWhitespace()
            let keyToken = try scanner.readKey()
            let key = scanner.string(keyToken)
            guard scanner.peek() == JSONByte.quote else {
                throw scanner.error(
                    "`__metadata__` value for key \(quoted(key)) must be a string, "
                        + "found \(scanner.valueKind(at: scanner.pos))")
            }
            let value = try scanner.readString()
            map[key] = scanner.string(value)
        } while try scanner.commaOrClose(JSONByte.closeBrace, after: "object member")
        return map
    }

    /// One tensor entry: `{"dtype": ..., "shape": [...], "data_offsets": [b, e], <ignored>...}`.
    private mutating func parseTensorEntry(name: String, nameOffset: Int) throws -> RawTensorEntry {
        guard scanner.peek() == JSONByte.openBrace else {
            throw scanner.error(
                "tensor entry must be an object with dtype, shape and data_offsets, "
                    + "found \(scanner.valueKind(at: scanner.pos))",
                tensor: name)
        }
        let entryStart = scanner.pos
        scanner.pos += 1  // depth 2
        scanner.skipWhitespace()
        var dtype: DType?
        var shape: [UInt64]?
        var offsets: (UInt64, UInt64)?
        if scanner.peek() == JSONByte.closeBrace {
            scanner.pos += 1
        } else {
            repeat {
                scanner.skipWhitespace()
                let key = try scanner.readKey()
                if scanner.stringEquals(key, "dtype") {
                    guard dtype == nil else { throw duplicateField("dtype", key, name) }
                    dtype = try parseDType(tensor: name)
                } else if scanner.stringEquals(key, "shape") {
                    guard shape == nil else { throw duplicateField("shape", key, name) }
                    shape = try parseShape(tensor: name)
                } else if scanner.stringEquals(key, "data_offsets") {
                    guard offsets == nil else { throw duplicateField("data_offsets", key, name) }
                    offsets = try parseOffsets(tensor: name)
                } else {
                    try scanner.skipValue(parentDepth: 2)
                }
            } while try scanner.commaOrClose(JSONByte.closeBrace, after: "object member")
        }
        guard let dtype else { throw missingField("dtype", entryStart, name) }
        guard let shape else { throw missingField("shape", entryStart, name) }
        guard let offsets else { throw missingField("data_offsets", entryStart, name) }
        return RawTensorEntry(
            name: name, nameOffset: nameOffset, dtype: dtype, shape: shape, begin: offsets.0, end: offsets.1)
    }

    private func duplicateField(_ field: String, _ key: JSONStringToken, _ tensor: String) -> SafeTensorsError {
        scanner.error("duplicate field `\(field)` in tensor entry", at: key.quoteOffset, tensor: tensor)
    }

    private func missingField(_ field: String, _ entryStart: Int, _ tensor: String) -> SafeTensorsError {
        scanner.error("missing field `\(field)` in tensor entry", at: entryStart, tensor: tensor)
    }

    private mutating func parseDType(tensor: String) throws -> DType {
        let valueStart = scanner.pos
        guard scanner.peek() == JSONByte.quote else {
            throw scanner.error(
                "dtype must be a string naming one of the 22 safetensors dtypes, "
                    + "found \(scanner.valueKind(at: valueStart))",
                tensor: tensor)
        }
        let token = try scanner.readString()
        // The longest name is F8_E4M3FNUZ (11 bytes); don't build long strings needlessly.
        if scanner.byteCount(token) <= 11, let dtype = DType(rawValue: scanner.string(token)) {
            return dtype
        }
        throw scanner.error(
            "dtype \(quoted(scanner.string(token))) is not one of the 22 safetensors dtypes",
            at: valueStart, tensor: tensor)
    }

    /// Reads `[u64, ...]`, at depth 3.
    private mutating func parseShape(tensor: String) throws -> [UInt64] {
        guard scanner.peek() == JSONByte.openBracket else {
            throw scanner.error(
                "shape must be an array of non-negative integers, found \(scanner.valueKind(at: scanner.pos))",
                tensor: tensor)
        }
        scanner.pos += 1
        scanner.skipWhitespace()
        var dims: [UInt64] = []
        if scanner.peek() == JSONByte.closeBracket {
            scanner.pos += 1
            return dims
        }
        repeat {
            scanner.skipWhitespace()
            dims.append(try scanner.readUInt64("shape", tensor: tensor))
        } while try scanner.commaOrClose(JSONByte.closeBracket, after: "array element")
        return dims
    }

    /// Reads `[begin, end]`, exactly two u64 values, at depth 3.
    private mutating func parseOffsets(tensor: String) throws -> (UInt64, UInt64) {
        let valueStart = scanner.pos
        guard scanner.peek() == JSONByte.openBracket else {
            throw scanner.error(
                "data_offsets must be an array of two non-negative integers, "
                    + "found \(scanner.valueKind(at: valueStart))",
                tensor: tensor)
        }
        scanner.pos += 1
        scanner.skipWhitespace()
        var values: (UInt64, UInt64) = (0, 0)
        var count = 0
        if scanner.peek() == JSONByte.closeBracket {
            scanner.pos += 1
        } else {
            repeat {
                scanner.skipWhitespace()
                let v = try scanner.readUInt64("data_offsets", tensor: tensor)
                switch count {
                case 0: values.0 = v
                case 1: values.1 = v
                default:
                    throw scanner.error(
                        "data_offsets must have exactly 2 elements, found more", at: valueStart,
                        tensor: tensor)
                }
                count += 1
            } while try scanner.commaOrClose(JSONByte.closeBracket, after: "array element")
        }
        guard count == 2 else {
            throw scanner.error(
                "data_offsets must have exactly 2 elements, found \(count)", at: valueStart,
                tensor: tensor)
        }
        return values
    }
}

/// A string in double quotes for messages, shortened to 64 characters.
private func quoted(_ s: String) -> String {
    let shown = s.count > 64 ? String(s.prefix(64)) + "..." : s
    return "\"" + shown + "\""
}
