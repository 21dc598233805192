// A strict RFC 8259 scanner over the header bytes of a safetensors file.
//
// It works directly on the mapped file: positions are absolute file offsets, and the
// header occupies `start ..< end` (8 ..< 8 + N). Every error it throws is a
// `SafeTensorsError` of kind `.invalidJSON` whose offset is the absolute position of
// the offending byte. It never recurses: ignored values are skipped with an explicit
// stack, and nesting is capped at `Header.maxNestingDepth` everywhere.
//
// The header must already have passed `validateHeaderUTF8`, so any byte >= 0x80 inside
// a string is part of a well-formed sequence and may be copied as is.

/// ASCII byte values used by the header scanner and parser.
enum JSONByte {
    static let quote: UInt8 = 0x22  // "
    static let backslash: UInt8 = 0x5C  // \
    static let slash: UInt8 = 0x2F  // /
    static let comma: UInt8 = 0x2C  // ,
    static let colon: UInt8 = 0x3A  // :
    static let openBrace: UInt8 = 0x7B  // {
    static let closeBrace: UInt8 = 0x7D  // }
    static let openBracket: UInt8 = 0x5B  // [
    static let closeBracket: UInt8 = 0x5D  // ]
    static let minus: UInt8 = 0x2D  // -
    static let plus: UInt8 = 0x2B  // +
    static let dot: UInt8 = 0x2E  // .
    static let zero: UInt8 = 0x30
    static let nine: UInt8 = 0x39
    static let lowerE: UInt8 = 0x65
    static let upperE: UInt8 = 0x45
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let lineFeed: UInt8 = 0x0A
    static let carriageReturn: UInt8 = 0x0D
}

/// A string token. Its content is either the raw bytes `start ..< end` of the file
/// (no escapes, the common case) or, when `escaped`, the scanner's `scratch` buffer,
/// which stays valid until the next string is read.
struct JSONStringToken {
    /// Absolute offset of the opening quote.
    var quoteOffset: Int
    var start: Int
    var end: Int
    var escaped: Bool
}

/// A number token, classified the way serde_json classifies numbers.
struct JSONNumberToken {
    var start: Int
    var end: Int
    var negative: Bool
    /// Has a fraction or an exponent.
    var isFloat: Bool
    /// The value when the token is a non-negative integer that fits in 64 bits.
    var unsignedValue: UInt64?
    var integerDigitCount: Int
}

struct JSONScanner {
    let bytes: UnsafeRawBufferPointer
    /// One past the last header byte (8 + N).
    let end: Int
    let source: String
    /// Current absolute position.
    var pos: Int
    /// Decoded bytes of the last escaped string.
    var scratch: [UInt8] = []

    init(file bytes: UnsafeRawBufferPointer, headerStart: Int, headerEnd: Int, source: String) {
        self.bytes = bytes
        self.pos = headerStart
        self.end = headerEnd
        self.source = source
    }

    // MARK: Errors

    func error(_ message: String, at offset: Int? = nil, tensor: String? = nil) -> SafeTensorsError {
        SafeTensorsError(
            .invalidJSON, file: source, tensor: tensor, offset: UInt64(offset ?? pos),
            "invalid JSON in header: \(message)")
    }

    /// Describes the byte at `offset` for "found ..." phrases.
    func found(at offset: Int) -> String {
        guard offset < end else { return "end of header" }
        let b = bytes[offset]
        if b == JSONByte.space { return "a space" }
        if b > 0x20 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
        return "byte " + hexByte(b)
    }

    /// Names the kind of JSON value starting at `offset`, for type errors.
    func valueKind(at offset: Int) -> String {
        guard offset < end else { return "end of header" }
        switch bytes[offset] {
        case JSONByte.openBrace: return "an object"
        case JSONByte.openBracket: return "an array"
        case JSONByte.quote: return "a string"
        case JSONByte.minus, JSONByte.zero...JSONByte.nine: return "a number"
        case 0x74, 0x66: return "a boolean"  // t, f
        case 0x6E: return "null"  // n
        default: return found(at: offset)
        }
    }

    // MARK: Basic scanning

    @inline(__always) func peek() -> UInt8? { pos < end ? bytes[pos] : nil }

    @inline(__always) mutating func skipWhitespace() {
        while pos < end {
            let b = bytes[pos]
            guard b == JSONByte.space || b == JSONByte.lineFeed || b == JSONByte.carriageReturn || b == JSONByte.tab
            else {
                return
            }
            pos += 1
        }
    }

    /// Consumes `byte` or throws "expected <what>, found ...".
    mutating func expect(_ byte: UInt8, _ what: String) throws {
        guard pos < end, bytes[pos] == byte else { throw error("expected \(what), found \(found(at: pos))") }
        pos += 1
    }

    /// After a member or element: consumes ',' (returns true) or the closing byte (returns false).
    mutating func commaOrClose(_ close: UInt8, after what: String) throws -> Bool {
        skipWhitespace()
        if pos < end {
            if bytes[pos] == JSONByte.comma { pos += 1; return true }
            if bytes[pos] == close { pos += 1; return false }
        }
        let closeText = close == JSONByte.closeBrace ? "'}'" : "']'"
        throw error("expected ',' or \(closeText) after \(what), found \(found(at: pos))")
    }

    /// Reads an object key and the ':' after it; `pos` must be at the key (whitespace skipped).
    mutating func readKey() throws -> JSONStringToken {
        guard pos < end, bytes[pos] == JSONByte.quote else {
            throw error("expected a string key, found \(found(at: pos))")
        }
        let key = try readString()
        skipWhitespace()
        try expect(JSONByte.colon, "':' after object key")
        skipWhitespace()
        return key
    }

    // MARK: Strings

    /// Reads a string; `pos` must be at its opening quote.
    mutating func readString() throws -> JSONStringToken {
        let quote = pos
        pos += 1
        let start = pos
        // Fast path: a run of plain bytes ended by the closing quote.
        while pos < end {
            let b = bytes[pos]
            if b == JSONByte.quote {
                pos += 1
                return JSONStringToken(quoteOffset: quote, start: start, end: pos - 1, escaped: false)
            }
            if b == JSONByte.backslash { break }
            if b < 0x20 { throw error("control character \(hexByte(b)) must be escaped inside a string") }
            pos += 1
        }
        guard pos < end else { throw error("unterminated string (end of header inside a string)") }
        // Slow path: copy runs of plain bytes and decode escapes into `scratch`.
        scratch.removeAll(keepingCapacity: true)
        var runStart = start
        while pos < end {
            let b = bytes[pos]
            if b == JSONByte.quote {
                scratch.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<pos]))
                pos += 1
                return JSONStringToken(quoteOffset: quote, start: start, end: pos - 1, escaped: true)
            }
            if b < 0x20 { throw error("control character \(hexByte(b)) must be escaped inside a string") }
            if b != JSONByte.backslash { pos += 1; continue }
            scratch.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<pos]))
            try readEscape()
            runStart = pos
        }
        throw error("unterminated string (end of header inside a string)")
    }

    /// Decodes one escape sequence at `pos` (the backslash) into `scratch`.
    private mutating func readEscape() throws {
        let escapeStart = pos
        pos += 1
        guard pos < end else { throw error("unterminated string (end of header inside an escape)") }
        let c = bytes[pos]
        pos += 1
        switch c {
        case JSONByte.quote, JSONByte.backslash, JSONByte.slash: scratch.append(c)
        case 0x62: scratch.append(0x08)  // \b
        case 0x66: scratch.append(0x0C)  // \f
        case 0x6E: scratch.append(0x0A)  // \n
        case 0x72: scratch.append(0x0D)  // \r
        case 0x74: scratch.append(0x09)  // \t
        case 0x75:  // \uXXXX
            let unit = try readHex4()
            var scalarValue = UInt32(unit)
            if (0xDC00...0xDFFF).contains(unit) {
                throw error("lone low surrogate \\u\(hex4(unit)) in string escape", at: escapeStart)
            }
            if (0xD800...0xDBFF).contains(unit) {
                guard pos + 1 < end, bytes[pos] == JSONByte.backslash, bytes[pos + 1] == 0x75 else {
                    throw error("lone high surrogate \\u\(hex4(unit)) in string escape", at: escapeStart)
                }
                pos += 2
                let low = try readHex4()
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw error(
                        "high surrogate \\u\(hex4(unit)) is followed by \\u\(hex4(low)), not a low surrogate",
                        at: escapeStart)
                }
                scalarValue = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
            }
            appendUTF8(scalarValue)
        default:
            throw error("invalid escape in string: backslash followed by \(found(at: pos - 1))", at: escapeStart)
        }
    }

    private mutating func readHex4() throws -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            guard pos < end else { throw error("unterminated \\u escape (end of header)") }
            let b = bytes[pos]
            let digit: UInt8
            switch b {
            case JSONByte.zero...JSONByte.nine: digit = b - JSONByte.zero
            case 0x61...0x66: digit = b - 0x61 + 10
            case 0x41...0x46: digit = b - 0x41 + 10
            default: throw error("expected a hex digit in \\u escape, found \(found(at: pos))")
            }
            value = value << 4 | UInt16(digit)
            pos += 1
        }
        return value
    }

    /// Appends a Unicode scalar value (never a surrogate, at most 0x10FFFF) as UTF-8.
    private mutating func appendUTF8(_ v: UInt32) {
        switch v {
        case 0..<0x80:
            scratch.append(UInt8(truncatingIfNeeded: v))
        case 0x80..<0x800:
            scratch.append(UInt8(truncatingIfNeeded: 0xC0 | (v >> 6)))
            scratch.append(UInt8(truncatingIfNeeded: 0x80 | (v & 0x3F)))
        case 0x800..<0x10000:
            scratch.append(UInt8(truncatingIfNeeded: 0xE0 | (v >> 12)))
            scratch.append(UInt8(truncatingIfNeeded: 0x80 | ((v >> 6) & 0x3F)))
            scratch.append(UInt8(truncatingIfNeeded: 0x80 | (v & 0x3F)))
        default:
            scratch.append(UInt8(truncatingIfNeeded: 0xF0 | (v >> 18)))
            scratch.append(UInt8(truncatingIfNeeded: 0x80 | ((v >> 12) & 0x3F)))
            scratch.append(UInt8(truncatingIfNeeded: 0x80 | ((v >> 6) & 0x3F)))
            scratch.append(UInt8(truncatingIfNeeded: 0x80 | (v & 0x3F)))
        }
    }

    /// The decoded content of a string token as a Swift String. The bytes are valid
    /// UTF-8 (checked before scanning; escapes are encoded above), so decoding is exact.
    func string(_ token: JSONStringToken) -> String {
        if token.escaped { return String(decoding: scratch, as: UTF8.self) }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[token.start..<token.end]), as: UTF8.self)
    }

    /// Compares the decoded content of a string token with an ASCII literal, byte for byte.
    func stringEquals(_ token: JSONStringToken, _ literal: StaticString) -> Bool {
        let lit = UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        if token.escaped { return scratch.elementsEqual(lit) }
        guard token.end - token.start == lit.count else { return false }
        return UnsafeRawBufferPointer(rebasing: bytes[token.start..<token.end]).elementsEqual(lit)
    }

    /// Number of decoded bytes in a string token.
    func byteCount(_ token: JSONStringToken) -> Int {
        token.escaped ? scratch.count : token.end - token.start
    }

    // MARK: Numbers

    /// Scans a number per RFC 8259; `pos` must be at '-' or a digit.
    mutating func readNumber() throws -> JSONNumberToken {
        let start = pos
        var negative = false
        if bytes[pos] == JSONByte.minus {
            negative = true
            pos += 1
        }
        guard pos < end, isDigit(bytes[pos]) else {
            throw error("expected a digit in number, found \(found(at: pos))")
        }
        var value: UInt64? = 0
        let digitsStart = pos
        if bytes[pos] == JSONByte.zero {
            pos += 1
            if pos < end, isDigit(bytes[pos]) {
                throw error("leading zeros are not allowed in numbers", at: start)
            }
        } else {
            while pos < end, isDigit(bytes[pos]) {
                if let v = value {
                    let (m, o1) = v.multipliedReportingOverflow(by: 10)
                    let (s, o2) = m.addingReportingOverflow(UInt64(bytes[pos] - JSONByte.zero))
                    value = (o1 || o2) ? nil : s
                }
                pos += 1
            }
        }
        let integerDigitCount = pos - digitsStart
        var isFloat = false
        if pos < end, bytes[pos] == JSONByte.dot {
            isFloat = true
            pos += 1
            guard pos < end, isDigit(bytes[pos]) else {
                throw error("expected a digit after the decimal point, found \(found(at: pos))")
            }
            while pos < end, isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < end, bytes[pos] == JSONByte.lowerE || bytes[pos] == JSONByte.upperE {
            isFloat = true
            pos += 1
            if pos < end, bytes[pos] == JSONByte.plus || bytes[pos] == JSONByte.minus { pos += 1 }
            guard pos < end, isDigit(bytes[pos]) else {
                throw error("expected a digit in the exponent, found \(found(at: pos))")
            }
            while pos < end, isDigit(bytes[pos]) { pos += 1 }
        }
        return JSONNumberToken(
            start: start, end: pos, negative: negative, isFloat: isFloat,
            unsignedValue: (negative || isFloat) ? nil : value, integerDigitCount: integerDigitCount)
    }

    /// The token's text, shortened for messages.
    func text(_ number: JSONNumberToken) -> String {
        let shown = min(number.end - number.start, 40)
        let s = String(
            decoding: UnsafeRawBufferPointer(rebasing: bytes[number.start..<(number.start + shown)]),
            as: UTF8.self)
        return shown < number.end - number.start ? s + "..." : s
    }

    /// Reads a number that must be a non-negative integer no larger than 2^64-1
    /// (serde's `usize` on a 64-bit target). `what` names the field for messages.
    mutating func readUInt64(_ what: String, tensor: String?) throws -> UInt64 {
        guard let b = peek(), b == JSONByte.minus || isDigit(b) else {
            throw error("expected a non-negative integer in \(what), found \(valueKind(at: pos))", tensor: tensor)
        }
        let number = try readNumber()
        if let v = number.unsignedValue { return v }
        let why: String
        if number.isFloat {
            why = "a fraction or exponent"
        } else if number.negative {
            why = "a negative number"
        } else {
            why = "a number above 2^64-1"
        }
        throw error(
            "expected a non-negative integer (at most 2^64-1) in \(what), found \(why): \(text(number))",
            at: number.start, tensor: tensor)
    }

    /// serde_json converts every number that is not a 64-bit integer to f64, and rejects
    /// the ones that overflow to infinity ("number out of range"), even in ignored fields.
    private func checkNumberRange(_ number: JSONNumberToken) throws {
        if !number.isFloat && number.integerDigitCount <= 18 { return }  // always fits u64/i64
        if number.unsignedValue != nil { return }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[number.start..<number.end]), as: UTF8.self)
        if let d = Double(text), d.isFinite { return }
        throw error("number \(self.text(number)) is out of range for a 64-bit float", at: number.start)
    }

    // MARK: Skipping ignored values

    /// Skips one JSON value of any type, validating its syntax. `parentDepth` is the
    /// nesting depth of the container holding it (1 for a top-level member).
    mutating func skipValue(parentDepth: Int) throws {
        // One entry per open container: true for an object, false for an array.
        var stack: [Bool] = []
        while true {
            // Parse one value (or open a container and continue with its first child).
            guard pos < end else { throw error("expected a value, found end of header") }
            let b = bytes[pos]
            var opened = false
            switch b {
            case JSONByte.openBrace, JSONByte.openBracket:
                let isObject = b == JSONByte.openBrace
                guard parentDepth + stack.count + 1 <= Header.maxNestingDepth else {
                    throw error("nesting is deeper than \(Header.maxNestingDepth) levels")
                }
                pos += 1
                skipWhitespace()
                if pos < end, bytes[pos] == (isObject ? JSONByte.closeBrace : JSONByte.closeBracket) {
                    pos += 1  // empty container: a complete value
                } else {
                    stack.append(isObject)
                    if isObject { _ = try readKey() } else { skipWhitespace() }
                    opened = true
                }
            case JSONByte.quote:
                _ = try readString()
            case JSONByte.minus, JSONByte.zero...JSONByte.nine:
                let number = try readNumber()
                try checkNumberRange(number)
            case 0x74: try readLiteral("true")
            case 0x66: try readLiteral("false")
            case 0x6E: try readLiteral("null")
            default:
                throw error("expected a value, found \(found(at: pos))")
            }
            if opened { continue }
            // A value is complete: close containers until one has another member.
            while let isObject = stack.last {
                let what = isObject ? "object member" : "array element"
                if try commaOrClose(isObject ? JSONByte.closeBrace : JSONByte.closeBracket, after: what) {
                    skipWhitespace()
                    if isObject { _ = try readKey() }
                    break
                }
                stack.removeLast()
            }
            if stack.isEmpty { return }
        }
    }

    mutating func readLiteral(_ literal: StaticString) throws {
        let lit = UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        let start = pos
        for expected in lit {
            guard pos < end, bytes[pos] == expected else {
                throw error("expected a value, found \(found(at: start))", at: start)
            }
            pos += 1
        }
    }
}

@inline(__always) private func isDigit(_ b: UInt8) -> Bool { b &- JSONByte.zero < 10 }

private func hexByte(_ b: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return "0x" + String(digits[Int(b >> 4)]) + String(digits[Int(b & 0xF)])
}

private func hex4(_ v: UInt16) -> String {
    let digits = Array("0123456789abcdef")
    return (0..<4).reversed().map { String(digits[Int((v >> (UInt16($0) * 4)) & 0xF)]) }.joined()
}

// MARK: - UTF-8

/// Checks `bytes[start..<end]` under the strict rules Rust's `str::from_utf8` applies:
/// no overlong forms, no encoded surrogates (ED A0-BF), nothing above U+10FFFF, no
/// truncated sequence. Throws `.invalidUTF8` at the absolute offset of the first bad
/// sequence.
func validateHeaderUTF8(_ bytes: UnsafeRawBufferPointer, start: Int, end: Int, source: String) throws {
    var i = start
    while i < end {
        // ASCII fast path, eight bytes at a time.
        while i + 8 <= end, bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
            i += 8
        }
        guard i < end else { return }
        let lead = bytes[i]
        if lead < 0x80 { i += 1; continue }
        let length: Int
        var secondRange: ClosedRange<UInt8> = 0x80...0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; secondRange = 0xA0...0xBF
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; secondRange = 0x80...0x9F
        case 0xF0: length = 4; secondRange = 0x90...0xBF
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; secondRange = 0x80...0x8F
        default:
            let why: String
            switch lead {
            case 0x80...0xBF: why = "unexpected continuation byte \(hexByte(lead))"
            case 0xC0, 0xC1: why = "byte \(hexByte(lead)) starts an overlong encoding"
            default: why = "byte \(hexByte(lead)) never appears in UTF-8"
            }
            throw SafeTensorsError(.invalidUTF8, file: source, offset: UInt64(i), "invalid UTF-8 in header: \(why)")
        }
        for k in 1..<length {
            guard i + k < end else {
                throw SafeTensorsError(
                    .invalidUTF8, file: source, offset: UInt64(i),
                    "invalid UTF-8 in header: truncated \(length)-byte sequence at the end of the header")
            }
            let b = bytes[i + k]
            let range: ClosedRange<UInt8> = k == 1 ? secondRange : 0x80...0xBF
            guard range.contains(b) else {
                let why: String
                if k == 1 && lead == 0xED && (0xA0...0xBF).contains(b) {
                    why = "encoded surrogate (\(hexByte(lead)) \(hexByte(b)))"
                } else if k == 1 && (lead == 0xE0 || lead == 0xF0) && (0x80...0xBF).contains(b) {
                    why = "overlong encoding (\(hexByte(lead)) \(hexByte(b)))"
                } else if k == 1 && lead == 0xF4 && (0x80...0xBF).contains(b) {
                    why = "code point above U+10FFFF (\(hexByte(lead)) \(hexByte(b)))"
                } else {
                    why = "expected a continuation byte after \(hexByte(lead)), found \(hexByte(b))"
                }
                throw SafeTensorsError(.invalidUTF8, file: source, offset: UInt64(i), "invalid UTF-8 in header: \(why)")
            }
        }
        i += length
    }
}
