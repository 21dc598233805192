import Foundation
import Testing
import Fixtures

import SafeTensors

// Tests for `Header.parse(file:source:)`: one test per rule of docs/safetensors.md §2-§5
// and per edge case of §9, seeded property tests (round trip, truncation, byte changes)
// and a cross-check against the reference Python package.

// MARK: - Helpers

private let sourceName = "test.safetensors"

/// Assembles a file: the 8-byte little-endian length prefix, the header, the data.
/// `declaredLength` overrides the prefix (default: the header's real length).
private func makeFile(header: [UInt8], data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let n = declaredLength ?? UInt64(header.count)
    var bytes: [UInt8] = (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) }
    bytes += header
    bytes += data
    return bytes
}

/// A file whose header is `json` and whose data buffer is `dataCount` bytes.
private func makeFile(_ json: String, dataCount: Int = 0) -> [UInt8] {
    makeFile(header: Array(json.utf8), data: (0..<dataCount).map { UInt8(truncatingIfNeeded: $0 &* 7) })
}

/// One tensor member: `"name":{"dtype":...,"shape":[...],"data_offsets":[b,e]}`.
/// `name` is pasted as is (write escapes yourself).
private func entry(_ name: String, _ dtype: String, _ shape: [UInt64], _ begin: UInt64, _ end: UInt64) -> String {
    let dims = shape.map(String.init).joined(separator: ",")
    return "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(dims)],\"data_offsets\":[\(begin),\(end)]}"
}

private func parse(_ file: [UInt8]) throws -> Header {
    try file.withUnsafeBytes { try Header.parse(file: $0, source: sourceName) }
}

/// Parses, and on failure returns the SafeTensorsError (recording an issue for any other error).
private func outcome(_ file: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> Result<
    Header, SafeTensorsError
>? {
    do {
        return .success(try parse(file))
    } catch let error as SafeTensorsError {
        return .failure(error)
    } catch {
        Issue.record("threw a non-SafeTensorsError: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Expects `parse` to fail with `kind`; optionally checks tensor, offset and a detail substring.
@discardableResult
private func expectFailure(
    _ kind: SafeTensorsError.Kind, _ file: [UInt8], tensor: String?? = .none, offset: UInt64?? = .none,
    detail: String? = nil, sourceLocation: SourceLocation = #_sourceLocation
) -> SafeTensorsError? {
    switch outcome(file, sourceLocation: sourceLocation) {
    case .success(let header)?:
        Issue.record("expected \(kind), but parsed \(header.tensors.count) tensors", sourceLocation: sourceLocation)
        return nil
    case .failure(let error)?:
        #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        #expect(error.file == sourceName, sourceLocation: sourceLocation)
        if case .some(let t) = tensor { #expect(error.tensor == t, "\(error)", sourceLocation: sourceLocation) }
        if case .some(let o) = offset { #expect(error.offset == o, "\(error)", sourceLocation: sourceLocation) }
        if let detail { #expect(error.detail.contains(detail), "\(error)", sourceLocation: sourceLocation) }
        #expect(
            error.detail.first.map { !$0.isUppercase } ?? false, "detail starts lowercase: \(error)",
            sourceLocation: sourceLocation)
        return error
    case nil:
        return nil
    }
}

/// Expects `parse` to succeed and returns the header.
private func expectHeader(_ file: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> Header? {
    switch outcome(file, sourceLocation: sourceLocation) {
    case .success(let header)?: return header
    case .failure(let error)?:
        Issue.record("expected success, got \(error.kind): \(error)", sourceLocation: sourceLocation)
        return nil
    case nil: return nil
    }
}

// MARK: - Length prefix (§2 steps 1-4)

@Suite("length prefix")
struct HeaderLengthPrefixTests {
    @Test("a file shorter than 8 bytes is headerTooSmall", arguments: 0..<8)
    func tooSmall(length: Int) {
        expectFailure(.headerTooSmall, [UInt8](repeating: 0, count: length), detail: "\(length) bytes")
    }

    @Test(
        "N above 100,000,000 is headerTooLarge, checked before the file size",
        arguments: [UInt64(100_000_001), 1 << 32, 1 << 63, UInt64.max])
    func tooLarge(n: UInt64) {
        // A 10-byte file: the size check would also fail, but the limit comes first.
        expectFailure(
            .headerTooLarge, makeFile(header: Array("{}".utf8), declaredLength: n), offset: 0,
            detail: "header length \(n) exceeds the 100000000-byte limit")
    }

    @Test("N = 100,000,000 passes the limit check (and then fails the size check here)")
    func exactlyAtLimit() {
        expectFailure(.invalidHeaderLength, makeFile(header: Array("{}".utf8), declaredLength: 100_000_000))
    }

    @Test("8 + N beyond the file is invalidHeaderLength")
    func pastEnd() {
        expectFailure(
            .invalidHeaderLength, makeFile(header: Array("{}".utf8), declaredLength: 3), offset: 0,
            detail: "8 + 3 > file size 10")
    }

    @Test("N = 0 is an empty header: invalid JSON")
    func emptyHeader() {
        expectFailure(.invalidJSON, makeFile(header: []), offset: 8, detail: "end of header")
        expectFailure(.invalidJSON, makeFile(header: [], data: [1, 2, 3]), offset: 8)
    }

    @Test("an odd N and unaligned data are accepted")
    func oddLength() throws {
        let header = try #require(expectHeader(makeFile("{" + entry("w", "F32", [2], 0, 8) + "} ", dataCount: 8)))
        #expect(header.byteCount % 2 == 1)
        #expect(header.dataStart == 8 + header.byteCount)
    }

    @Test("N one too large swallows a data byte: trailing characters")
    func oneTooLarge() {
        let json = "{" + entry("w", "U8", [1], 0, 1) + "}"
        expectFailure(
            .invalidJSON,
            makeFile(
                header: Array(json.utf8), data: [0x41],
                declaredLength: UInt64(json.utf8.count + 1)),
            detail: "trailing characters")
    }
}

// MARK: - UTF-8 (§2 step 5)

@Suite("strict UTF-8")
struct HeaderUTF8Tests {
    static let invalid: [[UInt8]] = [
        [0xC0, 0xAF], [0xC1, 0xBF],  // overlong 2-byte
        [0xE0, 0x80, 0xAF], [0xE0, 0x9F, 0xBF],  // overlong 3-byte
        [0xF0, 0x80, 0x80, 0xAF],  // overlong 4-byte
        [0xED, 0xA0, 0x80], [0xED, 0xBF, 0xBF],  // encoded surrogates
        [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
        [0xF5, 0x80, 0x80, 0x80], [0xFF], [0xFE],  // never valid
        [0x80], [0xBF],  // lone continuation
        [0xC3, 0x41], [0xE2, 0x82, 0x41],  // missing continuation
    ]

    @Test("invalid sequences inside a name are rejected at their offset", arguments: invalid)
    func rejects(sequence: [UInt8]) {
        let header = Array("{\"".utf8) + sequence + Array("\":{}}".utf8)
        expectFailure(.invalidUTF8, makeFile(header: header), offset: 10, detail: "invalid UTF-8 in header")
    }

    @Test(
        "a sequence truncated by the end of the header is rejected",
        arguments: [[0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x98]] as [[UInt8]])
    func truncated(sequence: [UInt8]) {
        let header = Array("{}".utf8) + sequence
        expectFailure(.invalidUTF8, makeFile(header: header), offset: 10, detail: "truncated")
    }

    @Test("UTF-8 is checked over the whole header before JSON")
    func beforeJSON() {
        // The JSON error (the first byte) comes earlier, but UTF-8 is checked first.
        expectFailure(.invalidUTF8, makeFile(header: Array("x          ".utf8) + [0xFF]))
    }

    @Test("valid 2-, 3- and 4-byte characters, including the extremes, are accepted")
    func validMultibyte() throws {
        let names = [
            "\u{80}", "\u{7FF}", "\u{800}", "\u{D7FF}", "\u{E000}", "\u{FFFF}", "\u{10000}", "\u{10FFFF}", "é€𝄞",
        ]
        let json =
            "{"
            + names.enumerated().map { entry($0.element, "U8", [1], UInt64($0.offset), UInt64($0.offset + 1)) }
            .joined(separator: ",") + "}"
        let header = try #require(expectHeader(makeFile(json, dataCount: names.count)))
        #expect(header.tensors.map(\.name) == names)
    }
}

// MARK: - JSON syntax (§3)

@Suite("JSON syntax")
struct HeaderJSONSyntaxTests {
    static let one = entry("a", "U8", [1], 0, 1)

    @Test(
        "SP, HT, LF and CR are accepted before and after the object",
        arguments: [" ", "\t", "\n", "\r", " \t\r\n  "])
    func whitespace(ws: String) throws {
        let header = try #require(expectHeader(makeFile(ws + "{" + Self.one + "}" + ws, dataCount: 1)))
        #expect(header.tensors.map(\.name) == ["a"])
    }

    @Test("whitespace between every token is accepted")
    func whitespaceEverywhere() throws {
        let json =
            " { \"__metadata__\" : { \"k\" : \"v\" } , \"a\" : { \"dtype\" : \"U8\" , \"shape\" : [ 1 ] ,"
            + " \"data_offsets\" : [ 0 , 1 ] , \"x\" : [ 1 , { \"y\" : null } ] } } "
        let header = try #require(expectHeader(makeFile(json, dataCount: 1)))
        #expect(header.tensors.map(\.name) == ["a"])
        #expect(header.metadata == ["k": "v"])
    }

    @Test(
        "anything else around the object is an error",
        arguments: [
            ([0x00], "trailing"), ([0x00, 0x00, 0x00], "trailing"), ([0x0C], "trailing"), ([0xC2, 0xA0], "trailing"),
            (Array("{}".utf8), "trailing"), (Array("x".utf8), "trailing"),
        ] as [([UInt8], String)])
    func trailing(suffix: [UInt8], detail: String) {
        let json = Array(("{" + Self.one + "}").utf8)
        expectFailure(.invalidJSON, makeFile(header: json + suffix, data: [0]), detail: detail)
    }

    @Test(
        "a BOM or a leading non-whitespace byte is rejected",
        arguments: [[0xEF, 0xBB, 0xBF], [0x00], [0x0C], [0xC2, 0xA0]] as [[UInt8]])
    func leading(prefix: [UInt8]) {
        expectFailure(.invalidJSON, makeFile(header: prefix + Array("{}".utf8)), offset: 8)
    }

    @Test(
        "the top-level value must be an object",
        arguments: ["[]", "null", "\"x\"", "1", "true", "   ", "", "[{}]"])
    func topLevel(json: String) {
        expectFailure(.invalidJSON, makeFile(json))
    }

    @Test(
        "malformed JSON is rejected",
        arguments: [
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}",  // trailing comma
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,],\"data_offsets\":[0,1]}}",  // trailing comma in array
            "{'a':{}}",  // single quotes
            "{/*c*/}", "{} // c",  // comments
            "{\"a\" {}}", "{\"a\":}", "{\"a\"}", "{,}", "{", "{\"a\":{\"dtype\":\"U8\"",  // structure
            "{\"a",  // unterminated string
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":NaN}}",
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":Infinity}}",
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":tru}}",
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":nul}}",
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[1 2]}}",
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":{\"k\" 1}}}",
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":{1:1}}}",
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[}}",
            "{\"a\\x\":{}}",  // bad escape
            "{\"a\\u12\":{}}", "{\"a\\u12G4\":{}}",  // short / bad \u
            "{\"\\ud800\":{}}", "{\"\\udc00\":{}}", "{\"\\ud800\\u0041\":{}}",  // lone surrogates
            "{\"\\ud800x\":{}}", "{\"\\udbff\\ud800\":{}}",
        ])
    func malformed(json: String) {
        expectFailure(.invalidJSON, makeFile(json, dataCount: 1), detail: "invalid JSON in header: ")
    }

    @Test(
        "raw control characters inside strings are rejected; DEL is not a control character",
        arguments: Array(UInt8(0)..<0x20))
    func controlCharacters(byte: UInt8) {
        let header = Array("{\"a".utf8) + [byte] + Array("\":{}}".utf8)
        expectFailure(.invalidJSON, makeFile(header: header), offset: 11, detail: "control character")
    }

    @Test("DEL (0x7F) is allowed raw in a name")
    func delAllowed() throws {
        let header =
            Array("{\"a".utf8) + [0x7F] + Array("\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}".utf8)
        let parsed = try #require(expectHeader(makeFile(header: header, data: [0])))
        #expect(parsed.tensors.first?.name == "a\u{7F}")
    }

    @Test("JSON error offsets are absolute file offsets (8 + position in header)")
    func errorOffset() {
        // `{"a" 1}`: the ':' is missing at header position 5.
        expectFailure(.invalidJSON, makeFile("{\"a\" 1}"), offset: 13, detail: "expected ':'")
        let json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]} x"
        let x =
            json.utf8.firstIndex(of: UInt8(ascii: "x")).map { json.utf8.distance(from: json.utf8.startIndex, to: $0) }
            ?? 0
        expectFailure(
            .invalidJSON, makeFile(json, dataCount: 1), offset: UInt64(8 + x),
            detail: "expected ',' or '}' after object member, found 'x'")
    }

    @Test("escapes are decoded in names, including surrogate pairs and U+0000")
    func escapesDecoded() throws {
        let json = "{" + entry(#"q\"b\\s\/\b\f\n\r\t\u00e9\u20AC\ud83d\ude00\u0000"#, "U8", [1], 0, 1) + "}"
        let header = try #require(expectHeader(makeFile(json, dataCount: 1)))
        #expect(header.tensors.first?.name == "q\"b\\s/\u{8}\u{C}\n\r\té€😀\u{0}")
    }

    @Test("escaped keys are decoded before comparison")
    func escapedKeys() throws {
        let json =
            #"{"__meta\u0064ata__":{"k":"v"},"a":{"d\u0074ype":"U8","shap\u0065":[1],"data_\u006Fffsets":[0,1]}}"#
        let header = try #require(expectHeader(makeFile(json, dataCount: 1)))
        #expect(header.metadata == ["k": "v"])
        #expect(header.tensors.map(\.name) == ["a"])
        // A second, escaped `__metadata__` is a duplicate.
        expectFailure(
            .invalidJSON, makeFile(#"{"__metadata__":null,"__meta\u0064ata__":null}"#), detail: "duplicate field")
    }

    @Test("nesting: 127 levels are accepted, 128 rejected, also inside ignored fields")
    func depthLimit() throws {
        func file(levels: Int, object: Bool) -> [UInt8] {
            // top object (1) + entry (2) + the ignored value's containers.
            let k = levels - 2
            let open = object ? String(repeating: "{\"k\":", count: k - 1) + "{" : String(repeating: "[", count: k)
            let close = String(repeating: object ? "}" : "]", count: k)
            return makeFile(
                "{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],\"x\":" + open + close + "}}",
                dataCount: 1)
        }
        for object in [false, true] {
            #expect(expectHeader(file(levels: 127, object: object)) != nil)
            expectFailure(.invalidJSON, file(levels: 128, object: object), detail: "deeper than 127")
        }
    }

    @Test("very deep nesting fails cleanly (no recursion)")
    func veryDeep() {
        let json = "{\"a\":{\"x\":" + String(repeating: "[", count: 200_000)
        expectFailure(.invalidJSON, makeFile(json), detail: "deeper than 127")
        let json2 = "{\"a\":{\"x\":" + String(repeating: "[{\"k\":", count: 100_000)
        expectFailure(.invalidJSON, makeFile(json2), detail: "deeper than 127")
    }
}

// MARK: - Numbers (§3)

@Suite("numbers")
struct HeaderNumberTests {
    @Test(
        "shape and data_offsets accept only non-negative integers up to 2^64-1",
        arguments: [
            "2.0", "2e0", "2E0", "-0", "-2", "02", "00", "+1", "18446744073709551616",
            "99999999999999999999999", "2.5", ".5", "2.", "1e", "-", "\"2\"", "true", "null", "[2]", "{}",
        ])
    func badShapeNumber(text: String) {
        let json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[\(text)],\"data_offsets\":[0,2]}}"
        expectFailure(.invalidJSON, makeFile(json, dataCount: 2), detail: "invalid JSON in header")
        let json2 = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,\(text)]}}"
        expectFailure(.invalidJSON, makeFile(json2, dataCount: 2), detail: "invalid JSON in header")
    }

    @Test("the message names the number that was found")
    func message() {
        let json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}"
        expectFailure(
            .invalidJSON, makeFile(json, dataCount: 2), tensor: "a", offset: 8 + 28,
            detail: "expected a non-negative integer (at most 2^64-1) in shape, found a fraction or exponent: 2.0")
    }

    @Test("0 and 2^64-1 are valid numbers")
    func extremes() throws {
        let json = "{" + entry("z", "F32", [18_446_744_073_709_551_615, 0], 0, 0) + "}"
        let header = try #require(expectHeader(makeFile(json)))
        #expect(header.tensors.first?.shape == [UInt64.max, 0])
    }

    @Test(
        "ignored fields accept any JSON number that fits a double",
        arguments: [
            "0", "-0", "-2", "2.5", "-2.5e-3", "1E+2", "1e-400", "0e99999999999", "1.7976931348623157e308",
            "18446744073709551616", "-9223372036854775809", String(repeating: "9", count: 300),
        ])
    func ignoredNumbers(text: String) throws {
        let json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[\(text)]}}"
        #expect(expectHeader(makeFile(json, dataCount: 1)) != nil)
    }

    @Test(
        "ignored numbers that overflow a double are rejected, as serde_json does",
        arguments: [
            "1e400", "-1e400", "1.8e308", "1.7976931348623159e308", "1e99999999999",
            String(repeating: "9", count: 400), "-" + String(repeating: "1", count: 400),
        ])
    func ignoredOutOfRange(text: String) {
        let json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":\(text)}}"
        expectFailure(.invalidJSON, makeFile(json, dataCount: 1), detail: "out of range")
    }

    @Test(
        "ignored numbers must still be valid JSON",
        arguments: ["01", "+1", ".5", "1.", "1e", "1e+", "--1", "0x10", "NaN"])
    func ignoredMalformed(text: String) {
        let json = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":\(text)}}"
        expectFailure(.invalidJSON, makeFile(json, dataCount: 1))
    }
}

// MARK: - Header model (§4)

@Suite("header model")
struct HeaderModelTests {
    @Test("metadata absent, null and empty")
    func metadataForms() throws {
        #expect(try #require(expectHeader(makeFile("{}"))).metadata == nil)
        #expect(try #require(expectHeader(makeFile("{\"__metadata__\":null}"))).metadata == nil)
        #expect(try #require(expectHeader(makeFile("{\"__metadata__\":{}}"))).metadata == [:])
        let header = try #require(
            expectHeader(
                makeFile(
                    "{\"__metadata__\":{\"format\":\"pt\",\"\":\"\",\"k\\n\":\"v\\u00e9\"},"
                        + entry("a", "U8", [1], 0, 1) + "}",
                    dataCount: 1)))
        #expect(header.metadata == ["format": "pt", "": "", "k\n": "vé"])
    }

    @Test("a repeated key inside metadata keeps the last value")
    func metadataLastWins() throws {
        let header = try #require(expectHeader(makeFile("{\"__metadata__\":{\"k\":\"1\",\"j\":\"x\",\"k\":\"2\"}}")))
        #expect(header.metadata == ["k": "2", "j": "x"])
    }

    @Test("metadata values must be strings", arguments: ["1", "null", "true", "[]", "{}", "[\"x\"]"])
    func metadataValueType(value: String) {
        expectFailure(.invalidJSON, makeFile("{\"__metadata__\":{\"k\":\(value)}}"), detail: "must be a string")
    }

    @Test("metadata must be an object or null", arguments: ["1", "\"x\"", "[]", "true", "[[\"k\",\"v\"]]"])
    func metadataType(value: String) {
        expectFailure(.invalidJSON, makeFile("{\"__metadata__\":\(value)}"), detail: "__metadata__")
    }

    @Test("a tensor-shaped entry under __metadata__ is rejected")
    func metadataReserved() {
        expectFailure(
            .invalidJSON,
            makeFile(
                "{\"__metadata__\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                dataCount: 1))
    }

    @Test("__metadata__ twice is rejected", arguments: ["null", "{}", "{\"a\":\"b\"}"])
    func metadataTwice(second: String) {
        expectFailure(
            .invalidJSON, makeFile("{\"__metadata__\":{},\"__metadata__\":\(second)}"),
            detail: "duplicate field `__metadata__`")
    }

    @Test("each of the 22 dtypes is accepted with its bit size", arguments: DType.allCases)
    func allDTypes(dtype: DType) throws {
        let shape: [UInt64] = [2, 4]  // 8 elements: a whole number of bytes for every width
        let bytes = UInt64(8 * dtype.bitCount / 8)
        let header = try #require(
            expectHeader(
                makeFile(
                    "{" + entry("t", dtype.rawValue, shape, 0, bytes) + "}",
                    dataCount: Int(bytes))))
        #expect(header.tensors == [TensorInfo(name: "t", dtype: dtype, shape: shape, dataOffsets: 0..<bytes)])
    }

    @Test(
        "dtype names are exact and case-sensitive",
        arguments: ["f32", "F32 ", "Q4_0", "FLOAT", "", "bool", "F8_E4M3FN", "U128", "F8_E4M3FNUZX", "BOOL\\u0000"])
    func unknownDType(name: String) {
        expectFailure(
            .invalidJSON, makeFile("{" + entry("t", name, [1], 0, 1) + "}", dataCount: 1), tensor: "t",
            detail: "is not one of the 22 safetensors dtypes")
    }

    @Test("the dtype message quotes the name")
    func dtypeMessage() {
        expectFailure(
            .invalidJSON, makeFile("{" + entry("t", "f32", [1], 0, 4) + "}", dataCount: 4),
            detail: "dtype \"f32\" is not one of the 22 safetensors dtypes")
    }

    @Test(
        "a dtype that is not a string is rejected (serde's {\"U8\":null} form included)",
        arguments: ["1", "null", "[\"U8\"]", "{\"U8\":null}"])
    func dtypeNotString(value: String) {
        let json = "{\"t\":{\"dtype\":\(value),\"shape\":[1],\"data_offsets\":[0,1]}}"
        expectFailure(.invalidJSON, makeFile(json, dataCount: 1), tensor: "t")
    }

    @Test(
        "a tensor entry must be an object (serde's array form included)",
        arguments: ["null", "1", "\"U8\"", "[]", "[\"U8\",[1],[0,1]]"])
    func entryNotObject(value: String) {
        expectFailure(.invalidJSON, makeFile("{\"t\":\(value)}", dataCount: 1), tensor: "t")
    }

    @Test("every field is required", arguments: ["dtype", "shape", "data_offsets"])
    func missingField(field: String) {
        var fields = ["\"dtype\":\"U8\"", "\"shape\":[1]", "\"data_offsets\":[0,1]"]
        fields.removeAll { $0.hasPrefix("\"\(field)\"") }
        expectFailure(
            .invalidJSON, makeFile("{\"t\":{" + fields.joined(separator: ",") + "}}", dataCount: 1),
            tensor: "t", detail: "missing field `\(field)`")
    }

    @Test(
        "a known field twice is rejected, even with the same value",
        arguments: ["\"dtype\":\"U8\"", "\"shape\":[1]", "\"data_offsets\":[0,1]"])
    func duplicateField(field: String) {
        let json = "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\(field)}}"
        expectFailure(.invalidJSON, makeFile(json, dataCount: 1), tensor: "t", detail: "duplicate field")
    }

    @Test("unknown fields are ignored, whatever they hold")
    func unknownFields() throws {
        let json =
            "{\"t\":{\"DTYPE\":\"nope\",\"dtype\":\"U8\",\"x\":{\"a\":[1,-2.5e3,true,false,null,\"s\\u00e9\",{}],\"b\":[]},"
            + "\"shape\":[1],\"Shape\":7,\"data_offsets\":[0,1],\"\":null,\"dtype \":[[[]]]}}"
        let header = try #require(expectHeader(makeFile(json, dataCount: 1)))
        #expect(header.tensors == [TensorInfo(name: "t", dtype: .U8, shape: [1], dataOffsets: 0..<1)])
    }

    @Test(
        "shape must be an array of integers; rank has no limit",
        arguments: ["1", "null", "{}", "\"1\"", "[[1]]", "[1,\"1\"]"])
    func badShape(value: String) {
        let json = "{\"t\":{\"dtype\":\"U8\",\"shape\":\(value),\"data_offsets\":[0,1]}}"
        expectFailure(.invalidJSON, makeFile(json, dataCount: 1), tensor: "t")
    }

    @Test("a rank-64 shape is fine")
    func highRank() throws {
        let shape = [UInt64](repeating: 1, count: 64)
        let header = try #require(expectHeader(makeFile("{" + entry("t", "U8", shape, 0, 1) + "}", dataCount: 1)))
        #expect(header.tensors.first?.shape == shape)
    }

    @Test(
        "data_offsets must be exactly two integers",
        arguments: ["[]", "[0]", "[0,1,1]", "[0,1,2,3]", "{\"0\":0,\"1\":1}", "1", "null", "[0,\"1\"]"])
    func badOffsets(value: String) {
        let json = "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":\(value)}}"
        expectFailure(.invalidJSON, makeFile(json, dataCount: 1), tensor: "t")
    }

    @Test("names may be empty, long, or hold quotes, path separators and U+0000")
    func oddNames() throws {
        let long = String(repeating: "x", count: 1000)
        let names = ["", "../../etc/passwd", "a\"b", "🙂", long, "a\u{0}b"]
        let escaped = ["", "../../etc/passwd", "a\\\"b", "🙂", long, "a\\u0000b"]
        let json =
            "{"
            + escaped.enumerated().map { entry($0.element, "U8", [1], UInt64($0.offset), UInt64($0.offset + 1)) }
            .joined(separator: ",") + "}"
        let header = try #require(expectHeader(makeFile(json, dataCount: names.count)))
        #expect(header.tensors.map(\.name) == names)
    }
}

// MARK: - Duplicate names (graft's deliberate rule)

@Suite("duplicate tensor names")
struct HeaderDuplicateNameTests {
    @Test("a byte-identical name twice is rejected with duplicateTensor")
    func duplicate() {
        let json = "{" + entry("w", "U8", [1], 0, 1) + "," + entry("w", "U8", [1], 1, 2) + "}"
        let error = expectFailure(.duplicateTensor, makeFile(json, dataCount: 2), tensor: "w")
        #expect(error?.offset == UInt64(8 + 1 + entry("w", "U8", [1], 0, 1).utf8.count + 1))
    }

    @Test("duplicates are found even when the reference's last-wins would make the file valid")
    func duplicateThatFits() {
        let json = "{" + entry("w", "U8", [5], 0, 5) + "," + entry("w", "U8", [1], 0, 1) + "}"
        expectFailure(.duplicateTensor, makeFile(json, dataCount: 1), tensor: "w")
    }

    @Test("an escaped spelling of the same name is a duplicate")
    func escapedDuplicate() {
        let json = "{" + entry("ab", "U8", [1], 0, 1) + "," + entry("\\u0061b", "U8", [1], 1, 2) + "}"
        expectFailure(.duplicateTensor, makeFile(json, dataCount: 2), tensor: "ab")
    }

    @Test("NFC and NFD spellings are two distinct tensors (compared as bytes)")
    func normalisation() throws {
        let nfc = "caf\u{E9}", nfd = "cafe\u{301}"
        let angstrom = "\u{212B}", aRing = "\u{C5}"
        #expect(nfc == nfd)  // Swift's String == would merge them
        let json =
            "{"
            + [nfc, nfd, angstrom, aRing].enumerated()
            .map { entry($0.element, "U8", [1], UInt64($0.offset), UInt64($0.offset + 1)) }.joined(separator: ",") + "}"
        let header = try #require(expectHeader(makeFile(json, dataCount: 4)))
        #expect(header.tensors.map { Array($0.name.utf8) } == [nfc, nfd, angstrom, aRing].map { Array($0.utf8) })
    }

    @Test("JSON errors later in the header take precedence over a duplicate name")
    func jsonFirst() {
        let json = "{" + entry("w", "U8", [1], 0, 1) + "," + entry("w", "U8", [1], 1, 2) + ",}"
        expectFailure(.invalidJSON, makeFile(json, dataCount: 2))
    }
}

// MARK: - Tensor table validation (§5) and coverage (§2 step 8)

@Suite("tensor table validation")
struct HeaderValidationTests {
    private func file(_ entries: [String], dataCount: Int) -> [UInt8] {
        makeFile("{" + entries.joined(separator: ",") + "}", dataCount: dataCount)
    }

    @Test("a scalar (shape []) holds one element")
    func scalar() throws {
        let header = try #require(expectHeader(file([entry("s", "F64", [], 0, 8)], dataCount: 8)))
        #expect(header.tensors == [TensorInfo(name: "s", dtype: .F64, shape: [], dataOffsets: 0..<8)])
    }

    @Test("zero-size tensors at the start, in the middle, at the end and sharing offsets")
    func zeroSize() throws {
        let entries = [
            entry("z0", "F32", [0], 0, 0), entry("z1", "U8", [2, 0], 0, 0), entry("a", "U8", [2], 0, 2),
            entry("z2", "F16", [0, 5], 2, 2), entry("b", "I16", [1], 2, 4), entry("z3", "BOOL", [0], 4, 4),
            entry("z4", "F32", [18_446_744_073_709_551_615, 0], 4, 4),
            entry("z5", "F32", [0, 18_446_744_073_709_551_615, 2], 4, 4),
        ]
        let header = try #require(expectHeader(file(entries, dataCount: 4)))
        #expect(header.tensors.map(\.name) == ["z0", "z1", "a", "z2", "b", "z3", "z4", "z5"])
    }

    @Test("a zero-size tensor at an offset that is no tensor boundary is invalidOffset")
    func zeroSizeInside() {
        let entries = [entry("a", "U8", [4], 0, 4), entry("z", "U8", [0], 2, 2)]
        let n = ("{" + entries.joined(separator: ",") + "}").utf8.count
        expectFailure(.invalidOffset, file(entries, dataCount: 4), tensor: "z", offset: UInt64(8 + n + 2))
    }

    @Test("a zero-element shape with a non-empty range is tensorInvalidInfo")
    func zeroShapeNonEmptyRange() {
        expectFailure(.tensorInvalidInfo, file([entry("z", "U8", [0], 0, 1)], dataCount: 1), tensor: "z")
    }

    @Test("header only, header with metadata only")
    func noTensors() throws {
        let f = makeFile("{}")
        #expect(f.count == 10)
        let header = try #require(expectHeader(f))
        #expect(header.tensors.isEmpty && header.metadata == nil && header.byteCount == 2 && header.dataStart == 10)
        let padded = try #require(expectHeader(makeFile("{}      ")))
        #expect(padded.byteCount == 8)
        #expect(try #require(expectHeader(makeFile("{\"__metadata__\":{\"a\":\"b\"}}"))).metadata == ["a": "b"])
    }

    @Test("{} followed by data is incompleteBuffer")
    func emptyWithData() {
        expectFailure(
            .incompleteBuffer, makeFile("{}", dataCount: 3), offset: 10, detail: "3 bytes after the last tensor")
    }

    @Test("trailing data after the last tensor is incompleteBuffer")
    func trailingData() {
        let json = "{" + entry("a", "U8", [2], 0, 2) + "}"
        expectFailure(.incompleteBuffer, makeFile(json, dataCount: 3), offset: UInt64(8 + json.utf8.count + 2))
    }

    @Test("data shorter than the last end is truncated (a partial download), saying how much is missing")
    func shortData() {
        let short = file([entry("a", "U8", [2], 0, 2), entry("b", "F32", [4], 2, 18)], dataCount: 10)
        // The offset is the end of the file, where the missing bytes would start.
        expectFailure(.truncated, short, tensor: .some(nil), offset: UInt64(short.count), detail: "8 bytes missing")
    }

    @Test("a hole between tensors or before the first is invalidOffset, naming the tensor")
    func holes() {
        expectFailure(
            .invalidOffset, file([entry("a", "U8", [8], 0, 8), entry("b", "U8", [10], 10, 20)], dataCount: 20),
            tensor: "b", detail: "data_offsets [10, 20] leave a hole: expected begin 8")
        expectFailure(
            .invalidOffset, file([entry("a", "U8", [2], 2, 4)], dataCount: 4), tensor: "a",
            detail: "expected begin 0")
    }

    @Test("overlapping or identical ranges are invalidOffset")
    func overlaps() {
        expectFailure(
            .invalidOffset, file([entry("a", "U8", [4], 0, 4), entry("b", "U8", [4], 2, 6)], dataCount: 6),
            tensor: "b", detail: "overlap")
        expectFailure(
            .invalidOffset, file([entry("a", "U8", [4], 0, 4), entry("b", "U8", [4], 0, 4)], dataCount: 4),
            tensor: "b")
    }

    @Test("begin > end is invalidOffset")
    func reversed() {
        expectFailure(
            .invalidOffset, file([entry("a", "U8", [0], 0, 0), entry("b", "U8", [2], 4, 2)], dataCount: 4),
            tensor: "b", detail: "end before they begin")
        expectFailure(.invalidOffset, file([entry("a", "U8", [1], 1, 0)], dataCount: 1), tensor: "a")
    }

    @Test("JSON order does not matter: tensors come back in data order")
    func outOfOrder() throws {
        let header = try #require(
            expectHeader(
                file(
                    [
                        entry("c", "F32", [1], 6, 10), entry("a", "U8", [2], 0, 2), entry("b", "I32", [1], 2, 6),
                    ], dataCount: 10)))
        #expect(header.tensors.map(\.name) == ["a", "b", "c"])
        #expect(header.tensors.map(\.dataOffsets) == [0..<2, 2..<6, 6..<10])
    }

    @Test("sub-byte dtypes: only the total bit count must be whole bytes")
    func subByte() {
        #expect(expectHeader(file([entry("f", "F4", [2, 3], 0, 3)], dataCount: 3)) != nil)
        #expect(expectHeader(file([entry("f", "F6_E2M3", [4], 0, 3)], dataCount: 3)) != nil)
        expectFailure(
            .misalignedSlice, file([entry("f", "F4", [3], 0, 2)], dataCount: 2), tensor: "f",
            offset: UInt64(8 + 2 + entry("f", "F4", [3], 0, 2).utf8.count))
        expectFailure(.misalignedSlice, file([entry("f", "F6_E3M2", [1], 0, 1)], dataCount: 1), tensor: "f")
    }

    @Test("the shape product is checked left to right, then the bit count")
    func overflow() {
        #expect(expectHeader(file([entry("z", "U8", [UInt64.max, 0], 0, 0)], dataCount: 0)) != nil)
        expectFailure(.overflow, file([entry("z", "U8", [UInt64.max, 2, 0], 0, 0)], dataCount: 0), tensor: "z")
        expectFailure(.overflow, file([entry("z", "U8", [1 << 62, 1 << 62], 0, 0)], dataCount: 0), tensor: "z")
        expectFailure(
            .overflow, file([entry("z", "U8", [1 << 61], 0, 0)], dataCount: 0), tensor: "z",
            detail: "overflows 64 bits")
        expectFailure(.overflow, file([entry("z", "U8", [UInt64.max], 0, 0)], dataCount: 0), tensor: "z")
    }

    @Test("a range that does not match shape x dtype is tensorInvalidInfo", arguments: [3, 5] as [UInt64])
    func wrongSize(end: UInt64) {
        expectFailure(
            .tensorInvalidInfo, file([entry("w", "F32", [1], 0, end)], dataCount: Int(end)), tensor: "w",
            detail: "span \(end) bytes but F32 shape [1] needs 4")
    }

    @Test("offsets near 2^64 are handled with checked arithmetic")
    func hugeOffsets() {
        let max = UInt64.max
        // The largest U8 tensor whose bit count fits in 64 bits.
        let big: UInt64 = (1 << 61) - 1
        expectFailure(
            .truncated, file([entry("b", "U8", [big], 0, big)], dataCount: 4), tensor: nil,
            detail: "\(big - 4) bytes missing")
        // Eight of them: a valid table ending at 2^64 - 8, so 8 + N + end overflows. No trap.
        let eight = (0..<8).map { entry("t\($0)", "U8", [big], UInt64($0) * big, UInt64($0 + 1) * big) }
        expectFailure(.incompleteBuffer, file(eight, dataCount: 0), tensor: "t7")
        expectFailure(
            .invalidOffset, file([entry("a", "U8", [1], max, max)], dataCount: 0), tensor: "a", offset: .some(nil))
        expectFailure(.tensorInvalidInfo, file([entry("a", "U8", [1], 0, max)], dataCount: 0), tensor: "a")
    }

    @Test("a 4 TiB tensor declared in a tiny file is rejected cheaply")
    func hugeDeclaration() {
        expectFailure(.truncated, file([entry("a", "U8", [1 << 42], 0, 1 << 42)], dataCount: 16))
    }

    @Test("the checks run in the reference's order")
    func checkOrder() {
        // Tensors are checked one by one in data order: a's size error comes before b's hole.
        expectFailure(
            .tensorInvalidInfo, file([entry("a", "U8", [1], 0, 2), entry("b", "U8", [1], 5, 6)], dataCount: 6),
            tensor: "a")
        // Table errors come before the coverage check.
        expectFailure(.invalidOffset, file([entry("a", "U8", [1], 1, 2)], dataCount: 100), tensor: "a")
    }
}

// MARK: - Generated files

/// A valid file built from random tensors, with the header the parser must return.
private struct GeneratedFile {
    var bytes: [UInt8]
    var tensors: [TensorInfo]
    var metadata: [String: String]?
    var json: String
}

private enum Gen {
    static let nameAtoms = [
        "a", "b", "z", "0", "_", ".", "/", "\"", "\\", "\n", "\u{0}", "\u{1F}", "\u{7F}", " ",
        "\u{E9}", "e\u{301}", "\u{20AC}", "\u{1F600}", "\u{212B}", "\u{C5}",
    ]
    static let whitespace = ["", "", "", " ", "\t", "\n", "\r", "  ", " \r\n"]

    static func pick<T>(_ items: [T], _ rng: inout SplitMix64) -> T { items[Int(rng.next() % UInt64(items.count))] }

    static func ws(_ rng: inout SplitMix64) -> String { pick(whitespace, &rng) }

    /// A JSON string literal for `s`, with random (valid) choices of escapes.
    static func quote(_ s: String, _ rng: inout SplitMix64) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            let v = scalar.value
            let r = rng.next() % 6
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n" where r < 3: out += "\\n"
            case "/" where r == 0: out += "\\/"
            case _ where v < 0x20 || (r == 0 && v < 0x10000):
                out += "\\u" + String(v, radix: 16).leftPadded(to: 4, uppercase: r == 1)
            case _ where r == 0:
                let u = v - 0x10000
                out += "\\u" + String(0xD800 + (u >> 10), radix: 16) + "\\u" + String(0xDC00 + (u & 0x3FF), radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// A small random JSON value for ignored fields.
    static func value(_ rng: inout SplitMix64, depth: Int = 0) -> String {
        switch rng.next() % (depth < 3 ? 9 : 7) {
        case 0: return "null"
        case 1: return "true"
        case 2: return "false"
        case 3: return pick(["0", "-0", "12", "-7", "3.25", "1e-3", "-2E+5", "18446744073709551616"], &rng)
        case 4, 5: return quote(pick(nameAtoms, &rng) + pick(nameAtoms, &rng), &rng)
        case 6: return "[]"
        case 7:
            let n = Int(rng.next() % 3)
            return "[" + (0..<n).map { _ in ws(&rng) + value(&rng, depth: depth + 1) + ws(&rng) }.joined(separator: ",")
                + "]"
        default:
            let n = Int(rng.next() % 3)
            return "{"
                + (0..<n).map { i in ws(&rng) + "\"k\(i)\":" + ws(&rng) + value(&rng, depth: depth + 1) }
                .joined(separator: ",") + "}"
        }
    }

    static func file(seed: UInt64, maxTensors: Int = 6) -> GeneratedFile {
        var rng = SplitMix64(seed: seed)
        // Tensors with unique (by bytes) names and sizes that are whole bytes.
        var names: [String] = []
        var seen = Set<[UInt8]>()
        let count = Int(rng.next() % UInt64(maxTensors + 1))
        while names.count < count {
            let name = (0..<Int(rng.next() % 5)).map { _ in pick(nameAtoms, &rng) }.joined()
            if seen.insert(Array(name.utf8)).inserted { names.append(name) }
        }
        var specs: [(name: String, dtype: DType, shape: [UInt64], bytes: UInt64)] = []
        for name in names {
            while true {
                let dtype = pick(DType.allCases, &rng)
                let shape = (0..<Int(rng.next() % 4)).map { _ in rng.next() % 5 }
                if case .success(let bytes) = TensorInfo.expectedByteCount(dtype: dtype, shape: shape) {
                    specs.append((name, dtype, shape, bytes))
                    break
                }
            }
        }
        // Data order is a random permutation; offsets are packed in that order.
        let dataOrder = specs.indices.shuffled(using: &rng)
        var offsets = [Range<UInt64>](repeating: 0..<0, count: specs.count)
        var cursor: UInt64 = 0
        for i in dataOrder {
            offsets[i] = cursor..<(cursor + specs[i].bytes)
            cursor += specs[i].bytes
        }
        // JSON members in another random order, the metadata among them.
        var members: [String] = []
        let jsonOrder = specs.indices.shuffled(using: &rng)
        for i in jsonOrder {
            let s = specs[i]
            var fields = [
                "\"dtype\":" + ws(&rng) + "\"\(s.dtype.rawValue)\"",
                "\"shape\":" + ws(&rng) + "[" + s.shape.map { ws(&rng) + String($0) + ws(&rng) }.joined(separator: ",")
                    + "]",
                "\"data_offsets\":" + ws(&rng) + "[\(offsets[i].lowerBound),\(ws(&rng))\(offsets[i].upperBound)]",
            ]
            for k in 0..<Int(rng.next() % 3) where rng.next() % 2 == 0 {
                fields.append("\"x\(k)\":" + ws(&rng) + value(&rng))
            }
            fields.shuffle(using: &rng)
            members.append(
                quote(s.name, &rng) + ws(&rng) + ":" + ws(&rng) + "{" + ws(&rng)
                    + fields.joined(separator: ws(&rng) + "," + ws(&rng)) + ws(&rng) + "}")
        }
        var metadata: [String: String]?
        switch rng.next() % 4 {
        case 0: break
        case 1: members.insert("\"__metadata__\":null", at: Int(rng.next() % UInt64(members.count + 1)))
        default:
            var map: [String: String] = [:]
            var parts: [String] = []
            for k in 0..<Int(rng.next() % 4) {
                let key = "k\(k)" + pick(nameAtoms, &rng)
                let value = (0..<Int(rng.next() % 4)).map { _ in pick(nameAtoms, &rng) }.joined()
                if map[key] != nil { continue }
                map[key] = value
                parts.append(quote(key, &rng) + ws(&rng) + ":" + ws(&rng) + quote(value, &rng))
            }
            metadata = map
            members.insert(
                "\"__metadata__\":" + ws(&rng) + "{" + parts.joined(separator: ",") + "}",
                at: Int(rng.next() % UInt64(members.count + 1)))
        }
        let json =
            ws(&rng) + "{" + ws(&rng) + members.joined(separator: ws(&rng) + "," + ws(&rng)) + ws(&rng) + "}"
            + String(repeating: " ", count: Int(rng.next() % 8)) + ws(&rng)
        let data = (0..<cursor).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        // Expected: data order, ties (zero-size tensors) in JSON order.
        let rank = Dictionary(uniqueKeysWithValues: jsonOrder.enumerated().map { ($0.element, $0.offset) })
        let expectedOrder = specs.indices.sorted {
            (offsets[$0].lowerBound, offsets[$0].upperBound, rank[$0] ?? 0)
                < (offsets[$1].lowerBound, offsets[$1].upperBound, rank[$1] ?? 0)
        }
        let tensors = expectedOrder.map {
            TensorInfo(name: specs[$0].name, dtype: specs[$0].dtype, shape: specs[$0].shape, dataOffsets: offsets[$0])
        }
        return GeneratedFile(
            bytes: makeFile(header: Array(json.utf8), data: data), tensors: tensors,
            metadata: metadata, json: json)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int, uppercase: Bool) -> String {
        let s = uppercase ? self.uppercased() : self
        return String(repeating: "0", count: Swift.max(0, width - s.count)) + s
    }
}

/// Checks the invariants every successfully parsed header must satisfy.
private func checkInvariants(
    _ header: Header, fileSize: Int, context: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    var cursor: UInt64 = 0
    var names = Set<[UInt8]>()
    for t in header.tensors {
        #expect(t.dataOffsets.lowerBound == cursor, "\(context)", sourceLocation: sourceLocation)
        cursor = t.dataOffsets.upperBound
        #expect(names.insert(Array(t.name.utf8)).inserted, "\(context)", sourceLocation: sourceLocation)
    }
    #expect(UInt64(header.dataStart) + cursor == UInt64(fileSize), "\(context)", sourceLocation: sourceLocation)
}

// MARK: - Property tests

@Suite("properties (seeded)")
struct HeaderPropertyTests {
    @Test("random valid files parse back to exactly their tensors and metadata", arguments: 0..<300 as Range<UInt64>)
    func roundTrip(seed: UInt64) throws {
        let g = Gen.file(seed: seed)
        let context = "seed \(seed), header \(g.json.debugDescription)"
        let header = try #require(expectHeader(g.bytes), "\(context)")
        #expect(header.tensors == g.tensors, "\(context)")
        // TensorInfo's == compares names as canonically equivalent Strings: check the bytes too.
        #expect(header.tensors.map { Array($0.name.utf8) } == g.tensors.map { Array($0.name.utf8) }, "\(context)")
        #expect(header.metadata == g.metadata, "\(context)")
        #expect(header.byteCount == g.json.utf8.count, "\(context)")
        checkInvariants(header, fileSize: g.bytes.count, context: context)
    }

    @Test("every truncation of a valid file throws a SafeTensorsError", arguments: [11, 12, 13] as [UInt64])
    func truncations(seed: UInt64) throws {
        let g = Gen.file(seed: seed, maxTensors: 4)
        for length in 0..<g.bytes.count {
            let context = "seed \(seed), truncated to \(length) bytes"
            // A proper prefix of a valid file is never valid: either 8 + N no longer fits,
            // or the data buffer is shorter than the tensors need.
            if case .success? = outcome(Array(g.bytes[..<length])) {
                Issue.record("a truncated file parsed: \(context)")
            }
        }
        // The header itself cut short, with N adjusted: every prefix must fail cleanly or parse.
        let header = Array(g.json.utf8)
        for length in 0..<header.count {
            if case .success(let parsed)? = outcome(makeFile(header: Array(header[..<length]))) {
                checkInvariants(parsed, fileSize: 8 + length, context: "seed \(seed), header cut to \(length)")
            }
        }
    }

    @Test("every single-byte change either parses or throws a SafeTensorsError", arguments: [21, 22] as [UInt64])
    func byteChanges(seed: UInt64) throws {
        // The first file from this seed onwards that is small enough to try all 255 changes per byte.
        var fileSeed = seed
        var g = Gen.file(seed: fileSeed, maxTensors: 3)
        while g.bytes.count > 220 || g.tensors.count < 2 {
            fileSeed &+= 1_000
            g = Gen.file(seed: fileSeed, maxTensors: 3)
        }
        var accepted = 0
        for position in 0..<g.bytes.count {
            var bytes = g.bytes
            for value in 0...255 where value != Int(g.bytes[position]) {
                bytes[position] = UInt8(value)
                if case .success(let header)? = outcome(bytes) {
                    accepted += 1
                    checkInvariants(
                        header, fileSize: bytes.count,
                        context: "seed \(fileSeed), byte \(position) set to \(value)")
                }
            }
        }
        #expect(accepted > 0, "some changes (in data bytes, names, whitespace) must still parse; seed \(fileSeed)")
    }

    @Test("every single-byte change of a hand-written file with every feature parses or throws")
    func byteChangesHandWritten() {
        let json =
            #" {"__metadata__":{"k\n":"v\u00e9","k\n":"w"},"\u0061\ud83d\ude00":{"dtype":"F4","x":[{"y":-0.5e1}],"#
            + #""shape":[2,3],"data_offsets":[2,5]},"z":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},"#
            + #""b":{"shape":[],"dtype":"F16","data_offsets":[0,2]}}  "#
        let original = makeFile(header: Array(json.utf8), data: [1, 2, 3, 4, 5])
        #expect(expectHeader(original)?.tensors.map(\.name) == ["b", "z", "a😀"])
        var accepted = 0
        for position in 0..<original.count {
            var bytes = original
            for value in 0...255 where value != Int(original[position]) {
                bytes[position] = UInt8(value)
                if case .success(let header)? = outcome(bytes) {
                    accepted += 1
                    checkInvariants(header, fileSize: bytes.count, context: "byte \(position) set to \(value)")
                }
            }
        }
        #expect(accepted > 0)
    }

    @Test("arbitrary seeded random bytes never trap", arguments: [31, 32] as [UInt64])
    func randomBytes(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let alphabet =
            Array("{}[]\":, \t\n\\u0123456789abcdefe.-+EdtypshaoffsU8F32ln\u{1}".utf8) + [0x00, 0xC3, 0xA9, 0xED, 0xFF]
        for _ in 0..<2_000 {
            let n = Int(rng.next() % 64)
            let header = (0..<n).map { _ in Gen.pick(alphabet, &rng) }
            let data = (0..<Int(rng.next() % 8)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            _ = outcome(makeFile(header: header, data: data))
        }
    }

    @Test("a 2,500-tensor header (~300 KB) parses")
    func largeHeader() throws {
        var entries: [String] = []
        var offset: UInt64 = 0
        for i in 0..<2_500 {
            let name =
                "lora_unet_down_blocks_\(i % 4)_attentions_\(i % 2)_transformer_blocks_\(i)_attn1_to_k.lora_down.weight"
            entries.append(entry(name, "F16", [4, 8], offset, offset + 64))
            offset += 64
        }
        let json = "{\"__metadata__\":{\"ss_network_dim\":\"4\"}," + entries.joined(separator: ",") + "}"
        let bytes = makeFile(header: Array(json.utf8), data: [UInt8](repeating: 0, count: Int(offset)))
        #expect(json.utf8.count > 250_000)
        let header = try #require(expectHeader(bytes))
        #expect(header.tensors.count == 2_500)
        #expect(header.tensors.last?.dataOffsets == (offset - 64)..<offset)
    }
}

// MARK: - Cross-check with the reference implementation

/// The reference Python package, when `python3 -c "import safetensors, numpy"` works.
private enum Reference {
    /// For each file in `directory`, one line: `<file name> OK` or `<file name> ERR <message>`.
    static let script = """
        import os, sys
        from safetensors import safe_open
        d = sys.argv[1]
        for name in sorted(os.listdir(d)):
            try:
                with safe_open(os.path.join(d, name), framework="np") as f:
                    f.keys(); f.metadata()
                print(name, "OK")
            except Exception as e:
                print(name, "ERR", ascii(str(e))[:300])
        """
}

@Suite("reference cross-check")
struct HeaderReferenceCrossCheckTests {
    /// Headers that are malformed (or valid in unusual ways), with the data size they need.
    static let curated: [(String, Int)] = [
        ("{}", 0), ("{}", 1), (" \t\r\n{} \t\r\n", 0), ("{}\u{0}", 0), ("{}\u{C}", 0), ("\u{FEFF}{}", 0), ("", 0),
        ("[]", 0), ("null", 0), ("{\"__metadata__\":null}", 0), ("{\"__metadata__\":{}}", 0),
        ("{\"__metadata__\":{\"a\":\"b\",\"a\":\"c\"}}", 0), ("{\"__metadata__\":{\"a\":1}}", 0),
        ("{\"__metadata__\":null,\"__metadata__\":null}", 0), (#"{"__meta\u0064ata__":{"k":"v"}}"#, 0),
        (#"{"a":{"d\u0074ype":"U8","shape":[1],"data_offsets":[0,1]}}"#, 1),
        (#"{"\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, 1),
        (#"{"\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, 1),
        (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1e400}}"#, 1),
        (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1.7976931348623157e308}}"#, 1),
        (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":-0}}"#, 1),
        (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":01}}"#, 1),
        (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"DTYPE":"x"}}"#, 1),
        (#"{"a":{"dtype":"U8","shape":[-0],"data_offsets":[0,0]}}"#, 0),
        (#"{"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}}"#, 2),
        (#"{"a":{"dtype":"U8","shape":[18446744073709551615,0],"data_offsets":[0,0]}}"#, 0),
        (#"{"a":{"dtype":"U8","shape":[18446744073709551615,2,0],"data_offsets":[0,0]}}"#, 0),
        (#"{"a":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]}}"#, 3),
        (#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, 2),
        (#"{"a":{"dtype":"F8_E5M2FNUZ","shape":[3],"data_offsets":[0,3]}}"#, 3),
        (#"{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#, 4),
        (
            #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#,
            1
        ),
        (
            #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[0],"data_offsets":[1,1]}}"#,
            2
        ),
        (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#, 2),
        (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, 2),
        (#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"dtype":"U8"}}"#, 1),
        (
            #"{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1],"x":"#
                + String(repeating: "[", count: 125) + String(repeating: "]", count: 125) + "}}", 1
        ),
        (
            #"{"a":{"dtype":"U8","shape":[],"data_offsets":[0,1],"x":"#
                + String(repeating: "[", count: 126) + String(repeating: "]", count: 126) + "}}", 1
        ),
        (
            "{\"caf\u{E9}\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                + "\"cafe\u{301}\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2
        ),
    ]

    @Test(
        "the reference accepts exactly the files graft accepts (duplicate names aside)",
        .enabled(
            if: PythonRunner.hasSafetensors || PythonRunner.isCI,
            "python3 with safetensors and numpy not found; skipping the reference cross-check"))
    func crossCheck() throws {
        guard PythonRunner.hasSafetensors else {
            Issue.record("CI is set but `python3 -c \"import safetensors, numpy\"` fails; run `make deps`")
            return
        }
        var cases: [(name: String, bytes: [UInt8], about: String)] = []
        func add(_ bytes: [UInt8], _ about: String) {
            cases.append((String(format: "case-%04d.safetensors", cases.count), bytes, about))
        }
        for (json, dataCount) in Self.curated {
            add(makeFile(json, dataCount: dataCount), "curated \(json.debugDescription)")
        }
        add(makeFile(header: Array("{}".utf8), declaredLength: 1 << 63), "huge N on a tiny file")
        add(makeFile(header: Array("{}".utf8), declaredLength: 100_000_001), "N just above the limit")
        add([1, 2, 3], "3-byte file")
        add([], "empty file")
        for seed in UInt64(1_000)..<1_040 { add(Gen.file(seed: seed).bytes, "valid, seed \(seed)") }
        var rng = SplitMix64(seed: 4_242)
        for i in 0..<120 {
            let seed = 2_000 + UInt64(i % 12)
            var bytes = Gen.file(seed: seed, maxTensors: 3).bytes
            let position = Int(rng.next() % UInt64(bytes.count))
            let value = UInt8(truncatingIfNeeded: rng.next())
            bytes[position] = value
            add(bytes, "seed \(seed), byte \(position) set to \(value)")
        }
        for i in 0..<20 {
            let bytes = Gen.file(seed: 3_000 + UInt64(i), maxTensors: 3).bytes
            add(Array(bytes[..<Int(rng.next() % UInt64(bytes.count))]), "seed \(3_000 + i), truncated")
        }

        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent(
                "graft-xcheck-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        for c in cases { try Data(c.bytes).write(to: directory.appendingPathComponent(c.name)) }

        let result = try PythonRunner.run(["-c", Reference.script, directory.path])
        try #require(result.status == 0, "python failed: \(result.output)")
        var verdicts: [String: String] = [:]
        for line in result.output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { verdicts[String(parts[0])] = String(parts[1]) }
        }
        var compared = 0
        for c in cases {
            let reference = try #require(verdicts[c.name], "no verdict for \(c.name) (\(c.about))")
            let ours = outcome(c.bytes)
            if case .failure(let e)? = ours, e.kind == .duplicateTensor { continue }
            let weAccept: Bool
            if case .success? = ours { weAccept = true } else { weAccept = false }
            let ourText: String
            switch ours {
            case .success?: ourText = "accepted"
            case .failure(let e)?: ourText = "\(e.kind): \(e.detail)"
            case nil: ourText = "?"
            }
            #expect(weAccept == (reference == "OK"), "\(c.name) (\(c.about)): graft \(ourText); reference \(reference)")
            compared += 1
        }
        #expect(compared > 150)
    }
}

// MARK: - Files that are not safetensors, and truncated downloads

/// The files people mistake for safetensors, as literal bytes: each is rejected (as the
/// reference rejects it) and says what it is. `detail` names the one phrase that tells
/// the cases of `.notSafeTensors` apart.
@Suite("HeaderParser: what a non-safetensors file is")
struct ForeignFormatTests {
    /// A zip local file header (stored, no extra field) for one entry named `name`.
    static func zipHeader(_ name: String) -> [UInt8] {
        let n = Array(name.utf8)
        return [0x50, 0x4B, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00]
            + [0x12, 0x34, 0x56, 0x78, 0x10, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00]
            + [UInt8(n.count), 0x00, 0x00, 0x00] + n
    }

    /// Real bytes of each format's start (followed by filler so the file is not tiny).
    static let cases: [(String, [UInt8], String)] = [
        ("PyTorch zip (.ckpt)", zipHeader("archive/data.pkl"), "PyTorch checkpoint (.ckpt/.pt/.pth, a zip archive"),
        ("PyTorch zip, named archive", zipHeader("v1-5-pruned/data.pkl"), "PyTorch checkpoint"),
        ("another zip", zipHeader("my_lora/my_lora.safetensors"), "a zip archive, not a model file"),
        (
            "raw pickle protocol 2",
            [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19],
            "PyTorch checkpoint (.ckpt/.pt/.pth, a raw Python pickle)"
        ),
        (
            "raw pickle protocol 4", [0x80, 0x04, 0x95, 0x1A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7D, 0x94],
            "pickle"
        ),
        ("HTML", Array("<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n".utf8), "HTML page"),
        (
            "HTML, lower case, leading blank lines",
            Array("\n\n   <html lang=\"en\"><body>Not found</body></html>".utf8), "HTML page"
        ),
        (
            "XML error",
            Array("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code></Error>".utf8),
            "XML document"
        ),
        (
            "JSON error body", Array("{\"error\":\"Invalid username or password.\"}".utf8),
            "JSON document, not a model (an error response from a model hub?): {\"error\":\"Invalid username or password.\"}"
        ),
        (
            "git-lfs pointer",
            Array(
                ("version https://git-lfs.github.com/spec/v1\noid sha256:4a3b2c1d\n"
                    + "size 6938078334\n").utf8), "git-lfs pointer, not the file it points to of 6938078334 bytes"
        ),
        ("GGUF", Array("GGUF".utf8) + [3, 0, 0, 0, 0x2A, 0, 0, 0, 0, 0, 0, 0], "GGUF"),
    ]

    @Test(
        "an implausible length prefix on a known format is notSafeTensors, naming the format",
        arguments: cases.indices)
    func recognised(index: Int) {
        let (name, bytes, phrase) = Self.cases[index]
        let e = expectFailure(.notSafeTensors, bytes + Array(repeating: 0x20, count: 64), offset: 0)
        #expect(e?.detail.hasPrefix("not a safetensors file: looks like ") == true, "\(name): \(e?.detail ?? "")")
        #expect(e?.detail.contains(phrase) == true, "\(name): \(e?.detail ?? "")")
    }

    @Test("the same bytes inside a valid length prefix are not second-guessed")
    func plausiblePrefixIsNotSniffed() {
        // A header length whose low bytes happen to be "PK": still judged as safetensors.
        var bytes = makeFile(header: Array("{}      ".utf8))
        bytes[0] = 0x50; bytes[1] = 0x4B  // N = 0x4B50: past the end of a 16-byte file
        expectFailure(.invalidHeaderLength, bytes, offset: 0)
        // Unknown garbage with a huge N stays headerTooLarge.
        expectFailure(.headerTooLarge, [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09], offset: 0)
    }

    @Test("a header cut short by the end of the file is truncated, with the bytes missing")
    func truncatedHeader() {
        let header = Array(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.utf8)
        let full = makeFile(header: header, data: Array(repeating: 0, count: 16))
        let cut = Array(full.prefix(30))
        expectFailure(.truncated, cut, offset: 30, detail: "at least \(8 + header.count - 30) bytes missing")
    }

    @Test("a file whose data ends early is truncated; data after the last tensor stays incompleteBuffer")
    func truncatedData() {
        let header = Array(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.utf8)
        expectFailure(
            .truncated, makeFile(header: header, data: Array(repeating: 0, count: 5)), detail: "11 bytes missing")
        expectFailure(.incompleteBuffer, makeFile(header: header, data: Array(repeating: 0, count: 17)))
    }
}
