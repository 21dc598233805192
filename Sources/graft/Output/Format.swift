#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every number the text output shows, rendered in one place so that all commands
/// round alike. Digits come from C's `printf`, which rounds correctly, and the
/// magnitude is chosen *after* rounding, so 9.9996e-5 is "1.00e-4" (never "10.0e-5")
/// and 999,960 bytes is "1.0 MB" (never "1000.0 KB").
///
/// Text output is for people and may change; `--json` carries the exact values.
enum Format {
    /// `value` with exactly `decimals` digits after the point: `fixed(2.25, decimals: 1)` is
    /// "2.2" (round half to even on the binary value, as printf does). Negative zero, and
    /// negative values that round to zero, print without a sign. NaN is "nan", infinities
    /// "inf" and "-inf".
    static func fixed(_ value: Double, decimals: Int) -> String {
        guard value.isFinite else { return nonFinite(value) }
        var s = printf("%.*f", Int32(decimals), value)
        if s.hasPrefix("-")
            && s.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "0") || $0 == UInt8(ascii: ".") })
        {
            s.removeFirst()
        }
        return s
    }

    /// A statistic or difference (min, max, mean, std, |A-B|, relative change): "0" for
    /// either zero, four decimals when the value rounds to 0.01 ≤ |v| < 10000 ("0.0123",
    /// "1234.5678"), else three significant digits in scientific notation ("1.23e-5",
    /// "-4.57e6"). NaN is "nan", infinities "inf" and "-inf".
    static func statistic(_ value: Double) -> String {
        guard value.isFinite else { return nonFinite(value) }
        if value == 0 { return "0" }
        let (mantissa, exponent) = scientific(value, significantDigits: 3)
        if (-2...3).contains(exponent) { return fixed(value, decimals: 4) }
        return "\(mantissa)e\(exponent)"
    }

    /// A cosine similarity: "1" when exactly 1, "1-2.35e-7" when within 1e-4 of 1 (the
    /// last digits are what matter there), else four decimals; nil (undefined, a side is
    /// all zero) is "-".
    static func cosine(_ value: Double?) -> String {
        guard let value else { return "-" }
        if value == 1 { return "1" }
        if value > 0.9999 && value < 1 { return "1-" + statistic(1 - value) }
        return fixed(value, decimals: 4)
    }

    /// A byte count in decimal units: "512 B", "1.5 KB", "2.1 MB", "6.9 GB", "1.2 TB".
    static func bytes(_ count: Int) -> String {
        scaled(count, units: ["KB", "MB", "GB", "TB", "PB"], separator: " ", small: "\(count) B")
    }

    /// A parameter or element count: "999", "1.5K", "2.6M", "3.5B".
    static func count(_ count: Int) -> String {
        scaled(count, units: ["K", "M", "B", "T"], separator: "", small: "\(count)")
    }

    /// A value as typed (an alpha, a ratio, a tolerance): integers without a fraction
    /// ("4", "-1"), anything else in Swift's shortest round-trip form ("0.8", "1e-05").
    static func shortest(_ value: Double) -> String {
        guard value.isFinite else { return nonFinite(value) }
        if value == value.rounded() && abs(value) < 1e15 { return String(Int(value)) }
        return String(value)
    }

    // MARK: - Helpers

    private static func nonFinite(_ value: Double) -> String {
        value.isNaN ? "nan" : value < 0 ? "-inf" : "inf"
    }

    /// Divides by 1000 until the value *as printed with one decimal* is below 1000.
    private static func scaled(_ count: Int, units: [String], separator: String, small: String) -> String {
        guard count >= 1000 || count <= -1000 else { return small }
        var value = Double(count) / 1000
        var unit = 0
        while unit < units.count - 1 && abs(Double(fixed(value, decimals: 1)) ?? 0) >= 1000 {
            value /= 1000
            unit += 1
        }
        return fixed(value, decimals: 1) + separator + units[unit]
    }

    /// printf's "%.{d-1}e" split into mantissa ("1.00") and exponent (-4): the exponent is
    /// the one *after* rounding the mantissa.
    private static func scientific(_ value: Double, significantDigits: Int) -> (String, Int) {
        let s = printf("%.*e", Int32(significantDigits - 1), value)
        guard let e = s.firstIndex(of: "e"), let exponent = Int(s[s.index(after: e)...]) else { return (s, 0) }
        return (String(s[..<e]), exponent)
    }

    /// snprintf with an Int32 precision and one Double (the only shapes used here).
    private static func printf(_ format: String, _ precision: Int32, _ value: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 400)  // %.4f of 1e308 is 314 characters
        let n = withVaList([precision, value]) { args in
            buffer.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress, $0.count, format, args) }
        }
        precondition(n >= 0 && Int(n) < buffer.count, "formatted number does not fit the buffer")
        return String(decoding: buffer[..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
