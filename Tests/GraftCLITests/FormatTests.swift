import Testing
@testable import graft

// The one number formatter of the text output (Sources/graft/Format.swift). Six
// hand-written formatters used to drift: `list --stats` printed "10.0e-5" for 9.9996e-5.

@Suite("FormatTests: numbers in text output")
struct FormatTests {
    @Test(
        "statistics: zero, fixed range, scientific, and the roll-overs at every boundary",
        arguments: [
            (0.0, "0"), (-0.0, "0"),
            (9.9996e-5, "1.00e-4"), (-9.9996e-5, "-1.00e-4"), (9.994e-5, "9.99e-5"), (1.234e-5, "1.23e-5"),
            (0.0099996, "0.0100"), (0.00999, "9.99e-3"), (0.0123, "0.0123"), (0.5, "0.5000"), (1, "1.0000"),
            (-2.5, "-2.5000"), (1234.56789, "1234.5679"), (9999.99996, "1.00e4"), (12345, "1.23e4"),
            (-4.567e6, "-4.57e6"), (1e-300, "1.00e-300"), (1.7976931348623157e308, "1.80e308"),
        ] as [(Double, String)])
    func statistic(value: Double, expected: String) {
        #expect(Format.statistic(value) == expected, "\(value)")
    }

    @Test("non-finite values print as nan, inf, -inf everywhere")
    func nonFinite() {
        for f in [Format.statistic, { Format.fixed($0, decimals: 1) }, Format.shortest] {
            #expect(f(.nan) == "nan")
            #expect(f(.infinity) == "inf")
            #expect(f(-.infinity) == "-inf")
        }
        #expect(Format.cosine(.nan) == "nan")
        #expect(Format.cosine(nil) == "-")
    }

    @Test(
        "fixed decimals: correct rounding, carries, and no '-0.0'",
        arguments: [
            (0.05, 1, "0.1"), (0.25, 1, "0.2"), (9.96, 1, "10.0"), (-0.04, 1, "0.0"), (-0.0, 1, "0.0"),
            (-0.06, 1, "-0.1"), (2.675, 2, "2.67"), (1.005, 2, "1.00"), (99.999, 2, "100.00"), (12.0, 0, "12"),
        ] as [(Double, Int, String)])
    func fixed(value: Double, decimals: Int, expected: String) {
        #expect(Format.fixed(value, decimals: decimals) == expected, "\(value) to \(decimals)")
    }

    @Test(
        "byte sizes: B below 1000, one decimal above, and no '1000.0 KB'",
        arguments: [
            (0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (1049, "1.0 KB"), (1050, "1.1 KB"), (999_949, "999.9 KB"),
            (999_950, "1.0 MB"), (999_960, "1.0 MB"), (2_100_000, "2.1 MB"), (6_938_078_334, "6.9 GB"),
            (999_999_999_999, "1.0 TB"), (Int.max, "9223.4 PB"),
        ] as [(Int, String)])
    func bytes(count: Int, expected: String) {
        #expect(Format.bytes(count) == expected, "\(count)")
    }

    @Test(
        "counts: K, M, B with the same roll-over",
        arguments: [(999, "999"), (1000, "1.0K"), (999_960, "1.0M"), (2_567_000_000, "2.6B"), (123_456, "123.5K")]
            as [(Int, String)])
    func counts(count: Int, expected: String) {
        #expect(Format.count(count) == expected, "\(count)")
    }

    @Test("cosine: exactly 1, 1 minus a tiny amount, four decimals otherwise")
    func cosine() {
        #expect(Format.cosine(1) == "1")
        #expect(Format.cosine(1 - 2.346e-7) == "1-2.35e-7")
        #expect(Format.cosine(0.99999) == "1-1.00e-5")
        #expect(Format.cosine(0.5) == "0.5000")
        #expect(Format.cosine(-1) == "-1.0000")
    }

    @Test("values as typed: integers without a fraction, others shortest")
    func shortest() {
        #expect(Format.shortest(4) == "4")
        #expect(Format.shortest(-1) == "-1")
        #expect(Format.shortest(0.8) == "0.8")
        #expect(Format.shortest(-0.0) == "0")
        #expect(Format.shortest(1e20) == "1e+20")
    }
}
