import CKernels
import Foundation
import Testing
import Fixtures
@testable import SafeTensors

// Tests of the CKernels conversions, LoRA GEMM and statistics, run for every CPU level the
// machine supports (the suite is serialized because the level is process-wide).

// MARK: - Independent scalar references (written differently from the C code on purpose)

/// f32 bits -> f16 bits, round to nearest even, numpy's NaN rule (keep sign and top 10
/// payload bits, never quiet; empty payload -> 0x7C01). Works on the integer significand.
fileprivate func refF32toF16(_ u: UInt32) -> UInt16 {
    let sign = UInt16((u >> 31) << 15)
    let exp = Int((u >> 23) & 0xFF)
    let frac = u & 0x7F_FFFF
    if exp == 0xFF {
        if frac == 0 { return sign | 0x7C00 }
        let p = UInt16(frac >> 13)
        return sign | 0x7C00 | (p == 0 ? 1 : p)
    }
    if exp == 0 && frac == 0 { return sign }
    // value = sig * 2^(e) with sig a 24-bit integer (subnormal f32: no hidden bit)
    let sig: UInt64 = exp == 0 ? UInt64(frac) : UInt64(frac | 0x80_0000)
    let e = (exp == 0 ? 1 : exp) - 127 - 23
    // target: f16 quantum is 2^(max(E,-14) - 10) where E is the unbiased exponent
    let bitLen = 64 - sig.leadingZeroBitCount
    let unbiased = e + bitLen - 1
    let qexp = max(unbiased, -14) - 10
    let shift = qexp - e  // right shift of sig to reach the quantum
    var q: UInt64
    if shift <= 0 {
        q = sig << UInt64(-shift)
    } else if shift >= 64 {
        q = 0
    } else {
        q = sig >> UInt64(shift)
        let rem = sig & ((1 << UInt64(shift)) - 1)
        let half: UInt64 = 1 << UInt64(shift - 1)
        if rem > half || (rem == half && (q & 1) == 1) { q += 1 }
    }
    // q counts quanta of 2^qexp; encode
    if qexp == -24 {  // subnormal range (q may reach 0x400 = min normal)
        return sign | UInt16(q)
    }
    var mant = q
    var be = qexp + 10 + 15
    if mant >= 0x800 { mant >>= 1; be += 1 }
    if be >= 31 { return sign | 0x7C00 }
    return sign | UInt16(be << 10) | UInt16(mant & 0x3FF)
}

/// f64 bits -> f16 bits, one rounding (numpy).
fileprivate func refF64toF16(_ u: UInt64) -> UInt16 {
    let sign = UInt16((u >> 63) << 15)
    let exp = Int((u >> 52) & 0x7FF)
    let frac = u & 0xF_FFFF_FFFF_FFFF
    if exp == 0x7FF {
        if frac == 0 { return sign | 0x7C00 }
        let p = UInt16(frac >> 42)
        return sign | 0x7C00 | (p == 0 ? 1 : p)
    }
    if exp == 0 && frac == 0 { return sign }
    let sig: UInt64 = exp == 0 ? frac : (frac | (1 << 52))
    let e = (exp == 0 ? 1 : exp) - 1023 - 52
    let bitLen = 64 - sig.leadingZeroBitCount
    let unbiased = e + bitLen - 1
    if unbiased > 16 { return sign | 0x7C00 }
    let qexp = max(unbiased, -14) - 10
    let shift = qexp - e
    var q: UInt64
    if shift >= 64 {
        q = 0
    } else {
        q = sig >> UInt64(shift)
        let rem = sig & ((1 << UInt64(shift)) - 1)
        let half: UInt64 = 1 << UInt64(shift - 1)
        if rem > half || (rem == half && (q & 1) == 1) { q += 1 }
    }
    if qexp == -24 { return sign | UInt16(q) }
    var mant = q
    var be = qexp + 10 + 15
    if mant >= 0x800 { mant >>= 1; be += 1 }
    if be >= 31 { return sign | 0x7C00 }
    return sign | UInt16(be << 10) | UInt16(mant & 0x3FF)
}

/// f16 bits -> f32 bits, exact, NaN payload kept.
fileprivate func refF16toF32(_ h: UInt16) -> UInt32 {
    let sign = UInt32(h >> 15) << 31
    let exp = Int((h >> 10) & 0x1F)
    let frac = UInt32(h & 0x3FF)
    if exp == 0x1F { return sign | 0x7F80_0000 | (frac << 13) }
    if exp == 0 {
        if frac == 0 { return sign }
        // normalise: value = frac * 2^-24
        var f = frac, e = -14
        while f & 0x400 == 0 { f <<= 1; e -= 1 }
        return sign | UInt32(e + 127) << 23 | ((f & 0x3FF) << 13)
    }
    return sign | UInt32(exp - 15 + 127) << 23 | (frac << 13)
}

/// f16 bits -> f64 bits, exact, NaN payload kept.
fileprivate func refF16toF64(_ h: UInt16) -> UInt64 {
    let f = refF16toF32(h)
    let sign = UInt64(f >> 31) << 63
    if (f & 0x7F80_0000) == 0x7F80_0000 { return sign | 0x7FF0_0000_0000_0000 | (UInt64(f & 0x7F_FFFF) << 29) }
    return Double(Float(bitPattern: f)).bitPattern  // exact for non-NaN (no subnormal f32 arises)
}

/// PyTorch c10::BFloat16: NaN -> 0x7FC0, else RNE on the top 16 bits.
fileprivate func refF32toBF16(_ u: UInt32) -> UInt16 {
    if (u & 0x7FFF_FFFF) > 0x7F80_0000 { return 0x7FC0 }
    let lower = u & 0xFFFF
    var upper = u >> 16
    if lower > 0x8000 || (lower == 0x8000 && (upper & 1) == 1) { upper += 1 }
    return UInt16(truncatingIfNeeded: upper)
}

// MARK: - Helpers

fileprivate let allLevels: [Int] = Array(0...Conversion.detectedCPULevel)

fileprivate func withLevel<T>(_ level: Int, _ body: () throws -> T) rethrows -> T {
    Conversion.setCPULevel(level)
    defer { Conversion.setCPULevel(-1) }
    return try body()
}

fileprivate func convertArray<S, D>(_ src: [S], _ st: DType, _ dt: DType, as: D.Type, zero: D) -> [D] {
    var out = [D](repeating: zero, count: src.count)
    src.withUnsafeBytes { s in
        out.withUnsafeMutableBytes { d in
            Conversion.convert(s.baseAddress!, from: st, to: d.baseAddress!, dt, count: src.count)
        }
    }
    return out
}

/// f32 bit patterns biased towards the f16-relevant exponents, ties and specials.
fileprivate func sampleF32Bits(_ n: Int, seed: UInt64) -> [UInt32] {
    var g = SplitMix64(seed: seed)
    return (0..<n).map { i in
        let u = UInt32(truncatingIfNeeded: g.next())
        switch i % 8 {
        case 0, 1, 2:  // |x| in [2^-27, 2^18)
            return (u & 0x807F_FFFF) | (UInt32(100 + Int(g.next() % 45)) << 23)
        case 3:  // exact or near ties for f16 (low 13 bits 0x1000 +- 1)
            let e = UInt32(100 + Int(g.next() % 45)) << 23
            let low: UInt32 = [0x1000, 0x0FFF, 0x1001, 0x0000][Int(g.next() % 4)]
            return (u & 0x807F_E000) | e | low
        case 4:  // bf16 ties (low 16 bits 0x8000)
            return (u & 0xFFFF_0000) | 0x8000
        case 5:  // NaN / inf with random payloads
            return u | 0x7F80_0000
        default:
            return u
        }
    }
}

// MARK: - Tests

@Suite(.serialized)
struct ConversionTests {
    static let knownF32toF16: [(UInt32, UInt16)] = [
        // from numpy 2.4 astype(np.float16) on this machine
        (0x7F80_0001, 0x7C01), (0x7FC0_0000, 0x7E00), (0x7F80_2000, 0x7C01), (0x7FA0_0000, 0x7D00),
        (0x7FBF_FFFF, 0x7DFF), (0xFFC0_0001, 0xFE00), (0x7FFF_FFFF, 0x7FFF), (0xFF80_0001, 0xFC01),
        (0x7F80_1FFF, 0x7C01), (0x7FC0_1234, 0x7E00), (0x7F80_0000, 0x7C00), (0xFF80_0000, 0xFC00),
        (0x0000_0000, 0x0000), (0x8000_0000, 0x8000),
        (0x477F_EFFF, 0x7BFF),  // 65519.996 -> 65504
        (0x477F_F000, 0x7C00),  // 65520 -> inf
        (0x477F_E000, 0x7BFF), (0xC77F_F000, 0xFC00), (0x4780_0000, 0x7C00), (0x7F7F_FFFF, 0x7C00),
        (0x3300_0000, 0x0000),  // 2^-25: tie, to even 0
        (0x3300_0001, 0x0001), (0xB300_0000, 0x8000), (0x3380_0000, 0x0001),
        (0x33C0_0000, 0x0002),  // 1.5 * 2^-24: tie, to even 2
        (0x3420_0000, 0x0002),  // 2.5 * 2^-24: tie, to even 2
        (0x387F_C000, 0x03FF), (0x387F_E000, 0x0400), (0x387F_F000, 0x0400), (0x3880_0000, 0x0400),
        (0x3F80_1000, 0x3C00),  // 1 + 2^-11: tie down to even
        (0x3F80_3000, 0x3C02),  // 1 + 3*2^-11: tie up to even
        (0x3F80_1001, 0x3C01), (0x0000_0001, 0x0000), (0x8000_0001, 0x8000),
        (0x3F80_0000, 0x3C00), (0xBF80_0000, 0xBC00), (0x3EAA_AAAB, 0x3555),
    ]

    static let knownF64toF16: [(UInt64, UInt16)] = [
        // numpy converts directly; via f32 the first two would give 0x3C02 and 0x7C00
        (0x3FF0_05FF_FFC0_0000, 0x3C01), (0x40EF_FDFF_FFEB_074A, 0x7BFF),
        (0x40EF_FE00_0000_0000, 0x7C00), (0x3E60_0000_0000_0000, 0x0000),
        (0x3E60_0000_0000_1000, 0x0001), (0x3E78_0000_0000_0000, 0x0002),
        (0x01A5_6E1F_C2F8_F359, 0x0000), (0xFE37_E43C_8800_759C, 0xFC00),
        (0x7FF0_0000_0000_0001, 0x7C01), (0x7FF8_0000_0000_0000, 0x7E00),
        (0x7FF4_0000_0000_0000, 0x7D00), (0x7FF0_0400_0000_0000, 0x7C01),
    ]

    @Test func referencesAgreeWithKnownValues() {
        for (u, h) in Self.knownF32toF16 { #expect(refF32toF16(u) == h, "\(String(u, radix: 16))") }
        for (u, h) in Self.knownF64toF16 { #expect(refF64toF16(u) == h, "\(String(u, radix: 16))") }
        #expect(refF32toBF16(0x3F80_8000) == 0x3F80)  // tie to even (down)
        #expect(refF32toBF16(0x3F81_8000) == 0x3F82)  // tie to even (up)
        #expect(refF32toBF16(0x7F7F_FFFF) == 0x7F80)  // rounds to inf
        #expect(refF32toBF16(0xFFC0_0001) == 0x7FC0)  // any NaN -> 0x7FC0
        #expect(refF16toF32(0x7D00) == 0x7FA0_0000)  // sNaN kept
        #expect(refF16toF32(0x0001) == 0x3380_0000)
    }

    @Test(arguments: allLevels)
    func knownValuesAllLevels(level: Int) {
        withLevel(level) {
            // repeat the table so the vector paths (8/16/32 wide) see every value
            let src = Array(repeating: Self.knownF32toF16.map(\.0), count: 5).flatMap { $0 }
            let expect = Array(repeating: Self.knownF32toF16.map(\.1), count: 5).flatMap { $0 }
            let got = convertArray(src, .F32, .F16, as: UInt16.self, zero: 0)
            #expect(got == expect)
            let src64 = Array(repeating: Self.knownF64toF16.map(\.0), count: 5).flatMap { $0 }
            let exp64 = Array(repeating: Self.knownF64toF16.map(\.1), count: 5).flatMap { $0 }
            #expect(convertArray(src64, .F64, .F16, as: UInt16.self, zero: 0) == exp64)
        }
    }

    @Test(arguments: allLevels)
    func exhaustiveHalfToWider(level: Int) {
        withLevel(level) {
            let all = (0...0xFFFF).map { UInt16($0) }
            let f32 = convertArray(all, .F16, .F32, as: UInt32.self, zero: 0)
            let f64 = convertArray(all, .F16, .F64, as: UInt64.self, zero: 0)
            let b32 = convertArray(all, .BF16, .F32, as: UInt32.self, zero: 0)
            let b64 = convertArray(all, .BF16, .F64, as: UInt64.self, zero: 0)
            let h2b = convertArray(all, .F16, .BF16, as: UInt16.self, zero: 0)
            let b2h = convertArray(all, .BF16, .F16, as: UInt16.self, zero: 0)
            var bad = 0
            for h in all {
                let i = Int(h)
                if f32[i] != refF16toF32(h) { bad += 1 }
                if f64[i] != refF16toF64(h) { bad += 1 }
                if b32[i] != UInt32(h) << 16 { bad += 1 }
                if b64[i] != Double(Float(bitPattern: UInt32(h) << 16)).bitPattern { bad += 1 }
                if h2b[i] != refF32toBF16(refF16toF32(h)) { bad += 1 }
                if b2h[i] != refF32toF16(UInt32(h) << 16) { bad += 1 }
            }
            #expect(bad == 0)
            // f16 -> f32 -> f16 is the identity on all 65,536 patterns, NaNs included
            #expect(convertArray(f32, .F32, .F16, as: UInt16.self, zero: 0) == all)
            #expect(convertArray(f64, .F64, .F16, as: UInt16.self, zero: 0) == all)
        }
    }

    @Test(arguments: allLevels)
    func sampledF32ToHalf(level: Int) {
        withLevel(level) {
            let src = sampleF32Bits(1_000_003, seed: 0x5EED)
            let h = convertArray(src, .F32, .F16, as: UInt16.self, zero: 0)
            let b = convertArray(src, .F32, .BF16, as: UInt16.self, zero: 0)
            let d = convertArray(src, .F32, .F64, as: UInt64.self, zero: 0)
            var badH = 0, badB = 0, badD = 0
            for i in src.indices {
                if h[i] != refF32toF16(src[i]) { badH += 1 }
                if b[i] != refF32toBF16(src[i]) { badB += 1 }
                if d[i] != Double(Float(bitPattern: src[i])).bitPattern { badD += 1 }
            }
            #expect(badH == 0)
            #expect(badB == 0)
            #expect(badD == 0)
        }
    }

    @Test(arguments: allLevels)
    func sampledF64Narrowing(level: Int) {
        withLevel(level) {
            var g = SplitMix64(seed: 42)
            let src: [UInt64] = (0..<300_001).map { i in
                let u = g.next()
                if i % 2 == 0 { return (u & 0x800F_FFFF_FFFF_FFFF) | (UInt64(1023 - 30 + Int(g.next() % 48)) << 52) }
                if i % 7 == 1 { return u | 0x7FF0_0000_0000_0000 }
                return u
            }
            let h = convertArray(src, .F64, .F16, as: UInt16.self, zero: 0)
            let f = convertArray(src, .F64, .F32, as: UInt32.self, zero: 0)
            let b = convertArray(src, .F64, .BF16, as: UInt16.self, zero: 0)
            var bad = 0
            for i in src.indices {
                let x = Double(bitPattern: src[i])
                if h[i] != refF64toF16(src[i]) { bad += 1 }
                if f[i] != Float(x).bitPattern { bad += 1 }
                if b[i] != refF32toBF16(Float(x).bitPattern) { bad += 1 }
            }
            #expect(bad == 0)
        }
    }

    @Test(arguments: allLevels)
    func unalignedPointersAndOddCounts(level: Int) {
        withLevel(level) {
            let src = sampleF32Bits(1000, seed: 7)
            for count in [0, 1, 7, 8, 15, 16, 17, 31, 33, 999] {
                var raw = [UInt8](repeating: 0, count: 4 * count + 1)
                raw.withUnsafeMutableBytes { r in
                    for i in 0..<count { (r.baseAddress! + 1 + 4 * i).storeBytes(of: src[i], as: UInt32.self) }
                }
                var out = [UInt8](repeating: 0, count: 2 * count + 1)
                raw.withUnsafeBytes { s in
                    out.withUnsafeMutableBytes { d in
                        Conversion.convert(s.baseAddress! + 1, from: .F32, to: d.baseAddress! + 1, .F16, count: count)
                    }
                }
                for i in 0..<count {
                    let v = UInt16(out[1 + 2 * i]) | UInt16(out[2 + 2 * i]) << 8
                    #expect(v == refF32toF16(src[i]))
                }
            }
        }
    }

    @Test func overflowCounting() {
        let xs: [Float] = [65519.99, 65520, .infinity, -1e10, .nan, 1, -65504, -.infinity, 3e38]
        var h = [UInt16](repeating: 0, count: xs.count)
        let n = xs.withUnsafeBytes { s in
            h.withUnsafeMutableBytes { d in
                Conversion.convertCountingOverflow(
                    s.baseAddress!, from: .F32, to: d.baseAddress!, .F16, count: xs.count)
            }
        }
        #expect(n == 3)  // 65520, -1e10, 3e38
        #expect(h == xs.map { refF32toF16($0.bitPattern) })
        let ds: [Double] = [65519.99999, 65520, 1e39, -1e300, .infinity, 3.4e38, .nan]
        var hb = [UInt16](repeating: 0, count: ds.count)
        var fb = [Float](repeating: 0, count: ds.count)
        ds.withUnsafeBytes { s in
            let a = hb.withUnsafeMutableBytes {
                Conversion.convertCountingOverflow(
                    s.baseAddress!, from: .F64, to: $0.baseAddress!, .F16, count: ds.count)
            }
            let b = fb.withUnsafeMutableBytes {
                Conversion.convertCountingOverflow(
                    s.baseAddress!, from: .F64, to: $0.baseAddress!, .F32, count: ds.count)
            }
            #expect(a == 4)  // 65520, 1e39, -1e300, 3.4e38 (65519.99999 rounds to 65504)
            #expect(b == 2)
        }
        // widening never overflows; a large run crosses the internal chunking
        let big = [Float](repeating: 7e4, count: 20_000)
        var bh = [UInt16](repeating: 0, count: big.count)
        let c = big.withUnsafeBytes { s in
            bh.withUnsafeMutableBytes {
                Conversion.convertCountingOverflow(
                    s.baseAddress!, from: .F32, to: $0.baseAddress!, .F16, count: big.count)
            }
        }
        #expect(c == 20_000)
    }

    @Test func sameTypeCopiesAndLevelNames() {
        let xs: [UInt16] = [1, 2, 0x7D00, 0xFFFF]
        #expect(convertArray(xs, .F16, .F16, as: UInt16.self, zero: 0) == xs)
        #expect(["avx512", "avx2", "portable"].contains(Conversion.cpuLevelName))
        #expect(Conversion.setCPULevel(99) == Conversion.detectedCPULevel)
        #expect(Conversion.setCPULevel(0) == 0)
        #expect(Conversion.cpuLevelName == "portable")
        #expect(Conversion.setCPULevel(-1) == Conversion.detectedCPULevel)
        #expect(Conversion.isSupported(.F64) && !Conversion.isSupported(.I8))
    }

    // MARK: numpy cross-check

    @Test(
        .enabled(
            if: PythonRunner.hasNumpy || PythonRunner.isCI,
            "python3 with numpy not available: numpy cross-check skipped"))
    func matchesNumpy() throws {
        guard PythonRunner.hasNumpy else {
            Issue.record("CI is set but python3 -c 'import numpy' fails")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "graft-np-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let n = 400_000
        let src32 = sampleF32Bits(n, seed: 0xA11CE)
        var g = SplitMix64(seed: 99)
        let src64: [UInt64] = (0..<n).map { i in
            let u = g.next()
            return i % 2 == 0 ? (u & 0x800F_FFFF_FFFF_FFFF) | (UInt64(1023 - 30 + Int(g.next() % 48)) << 52) : u
        }
        try src32.withUnsafeBytes { try Data($0).write(to: dir.appendingPathComponent("in32")) }
        try src64.withUnsafeBytes { try Data($0).write(to: dir.appendingPathComponent("in64")) }
        let script = """
            import numpy as np, sys, warnings
            warnings.simplefilter('ignore')
            d = sys.argv[1]
            np.fromfile(d + '/in32', dtype='<f4').astype(np.float16).tofile(d + '/out32')
            np.fromfile(d + '/in64', dtype='<f8').astype(np.float16).tofile(d + '/out64')
            """
        #expect(try PythonRunner.run(["-c", script, dir.path]).status == 0)
        let np32 = try Data(contentsOf: dir.appendingPathComponent("out32")).withUnsafeBytes {
            Array($0.bindMemory(to: UInt16.self))
        }
        let np64 = try Data(contentsOf: dir.appendingPathComponent("out64")).withUnsafeBytes {
            Array($0.bindMemory(to: UInt16.self))
        }
        for level in allLevels {
            withLevel(level) {
                let a = convertArray(src32, .F32, .F16, as: UInt16.self, zero: 0)
                let b = convertArray(src64, .F64, .F16, as: UInt16.self, zero: 0)
                #expect(a == np32, "f32->f16 differs from numpy at level \(level)")
                #expect(b == np64, "f64->f16 differs from numpy at level \(level)")
            }
        }
    }

    // MARK: GEMM

    static func refGemm(
        m: Int, n: Int, r: Int, acc: inout [Float], lda: Int, U: [Float], ldu: Int,
        D: [Float], ldd: Int, ratio: Float, scale: Float
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var s: Float = 0
                for k in 0..<r { s = s.addingProduct(U[i * ldu + k], D[k * ldd + j]) }
                var t = s * ratio
                t = t * scale
                acc[i * lda + j] = acc[i * lda + j] + t
            }
        }
    }

    fileprivate static func randomFloats(_ n: Int, _ g: inout SplitMix64) -> [Float] {
        (0..<n).map { _ in
            let x = Float(Int64(bitPattern: g.next()) % 2_000_001) / 1_000_000  // [-2, 2]
            let e = Float(sign: .plus, exponent: Int(g.next() % 9) - 4, significand: 1)
            return x * e
        }
    }

    static let gemmShapes: [(Int, Int, Int)] = [
        (1, 1, 1), (3, 5, 1), (5, 1, 7), (4, 64, 32), (7, 67, 33), (13, 130, 5),
        (65, 200, 17), (6, 17, 0), (9, 1000, 3), (2, 3, 130),
    ]

    @Test(arguments: gemmShapes.indices)
    func gemmMatchesReferenceAtEveryLevel(shape: Int) {
        let (m, n, r) = Self.gemmShapes[shape]
        let lda = n + 3, ldu = r + 2, ldd = n + 5
        var g = SplitMix64(seed: UInt64(shape) &+ 1234)
        let acc0 = Self.randomFloats(m * lda, &g)
        let U = Self.randomFloats(m * ldu, &g)
        let D = Self.randomFloats(max(r, 1) * ldd, &g)
        let ratio: Float = 0.7, scale: Float = 1.0 / 3.0
        var expected = acc0
        Self.refGemm(
            m: m, n: n, r: r, acc: &expected, lda: lda, U: U, ldu: ldu, D: D, ldd: ldd, ratio: ratio, scale: scale)
        for level in allLevels {
            withLevel(level) {
                var acc = acc0
                acc.withUnsafeMutableBufferPointer { a in
                    gk_lora_gemm_f32(m, n, r, a.baseAddress!, lda, U, ldu, D, ldd, ratio, scale)
                }
                #expect(acc.map(\.bitPattern) == expected.map(\.bitPattern), "level \(level), \(m)x\(n) r\(r)")
            }
        }
    }

    @Test func gemmIsIndependentOfCallerBlocking() {
        let m = 37, n = 301, r = 19
        var g = SplitMix64(seed: 77)
        let acc0 = Self.randomFloats(m * n, &g), U = Self.randomFloats(m * r, &g), D = Self.randomFloats(r * n, &g)
        var whole = acc0
        whole.withUnsafeMutableBufferPointer { gk_lora_gemm_f32(m, n, r, $0.baseAddress!, n, U, r, D, n, -1.25, 0.5) }
        for level in allLevels {
            withLevel(level) {
                var blocked = acc0
                blocked.withUnsafeMutableBufferPointer { a in
                    U.withUnsafeBufferPointer { u in
                        D.withUnsafeBufferPointer { d in
                            for i0 in stride(from: 0, to: m, by: 5) {
                                for j0 in stride(from: 0, to: n, by: 23) {
                                    let mb = min(5, m - i0), nb = min(23, n - j0)
                                    gk_lora_gemm_f32(
                                        mb, nb, r, a.baseAddress! + i0 * n + j0, n,
                                        u.baseAddress! + i0 * r, r, d.baseAddress! + j0, n, -1.25, 0.5)
                                }
                            }
                        }
                    }
                }
                #expect(blocked.map(\.bitPattern) == whole.map(\.bitPattern), "level \(level)")
            }
        }
    }

    // MARK: Statistics

    /// The oracle: counts, min/max and a two-pass mean and M2 over the finite values,
    /// in double with a compensated (Neumaier) sum for the mean.
    static func refStats(_ x: [Double]) -> (
        count: Int, nan: Int, pinf: Int, ninf: Int, min: Double, max: Double,
        mean: Double, m2: Double, sumAbs: Double
    ) {
        var nan = 0, pinf = 0, ninf = 0, n = 0
        var mn = Double.infinity, mx = -Double.infinity
        var sum = 0.0, comp = 0.0, sumAbs = 0.0
        for v in x {
            if v.isNaN { nan += 1; continue }
            if v.isInfinite { if v > 0 { pinf += 1 } else { ninf += 1 }; continue }
            n += 1
            mn = min(mn, v); mx = max(mx, v); sumAbs += abs(v)
            let t = sum + v
            comp += abs(sum) >= abs(v) ? (sum - t) + v : (v - t) + sum
            sum = t
        }
        let mean = n > 0 ? (sum + comp) / Double(n) : 0
        var m2 = 0.0
        for v in x where v.isFinite { m2 += (v - mean) * (v - mean) }
        return (x.count, nan, pinf, ninf, mn, mx, mean, m2, sumAbs)
    }

    /// Every field, bit for bit.
    static func statsEqual(_ a: gk_stats, _ b: gk_stats) -> Bool {
        a.count == b.count && a.nan_count == b.nan_count && a.pinf_count == b.pinf_count && a.ninf_count == b.ninf_count
            && a.min.bitPattern == b.min.bitPattern && a.max.bitPattern == b.max.bitPattern
            && a.mean.bitPattern == b.mean.bitPattern && a.m2.bitPattern == b.m2.bitPattern
            && a.sum_abs.bitPattern == b.sum_abs.bitPattern && a.sum_sq.bitPattern == b.sum_sq.bitPattern
    }

    /// Checks the kernel's result against the oracle: counts and extremes exact, the mean
    /// to 1e-12 of the spread-and-magnitude scale, the standard deviation to 1e-9 relative
    /// (or 64 ulps of the mean).
    static func expectClose(
        _ st: gk_stats, _ x: [Double], _ context: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let r = refStats(x)
        #expect(
            Int(st.count) == r.count && Int(st.nan_count) == r.nan && Int(st.pinf_count) == r.pinf
                && Int(st.ninf_count) == r.ninf, "\(context): counts", sourceLocation: sourceLocation)
        #expect(
            st.min == r.min && st.max == r.max, "\(context): min/max \(st.min) \(st.max)",
            sourceLocation: sourceLocation)
        let finite = Double(r.count - r.nan - r.pinf - r.ninf)
        guard finite > 0 else {
            #expect(st.mean == 0 && st.m2 == 0, "\(context): empty moments", sourceLocation: sourceLocation)
            return
        }
        let std = (st.m2 / finite).squareRoot(), refStd = (r.m2 / finite).squareRoot()
        #expect(
            abs(st.mean - r.mean) <= 1e-12 * (abs(r.mean) + refStd), "\(context): mean \(st.mean) vs \(r.mean)",
            sourceLocation: sourceLocation)
        // Values near the mean are only resolved to ulp(mean), so a spread of a few
        // thousand ulps is itself known to a few digits: allow 1e-9 relative or 64 ulps
        // of the mean. sum_sq/n - mean^2 is off by about sqrt(eps) * |mean| (1e-5 at 1000).
        #expect(
            abs(std - refStd) <= 1e-9 * refStd + 64 * abs(r.mean).ulp, "\(context): std \(std) vs \(refStd)",
            sourceLocation: sourceLocation)
        #expect(abs(st.sum_abs - r.sumAbs) <= 1e-12 * r.sumAbs, "\(context): sum |x|", sourceLocation: sourceLocation)
    }

    /// A large mean with a tiny spread (the case sum_sq/n - mean^2 gets wrong), with
    /// NaN, +inf and -inf sprinkled in.
    static func hardSample(_ n: Int, mean: Float, spread: Float, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        var x = (0..<n).map { _ in mean + spread * (Float(g.next() % 2_000_001) / 1_000_000 - 1) }
        for i in stride(from: 5, to: n, by: 89) { x[i] = [.nan, .infinity, -.infinity][i % 3] }
        return x
    }

    static func statsSample(_ n: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        var x = randomFloats(n, &g)
        for i in stride(from: 3, to: n, by: 97) {
            x[i] = [.nan, .infinity, -.infinity, Float(bitPattern: 0x7FA0_0001)][i % 4]
        }
        return x
    }

    @Test(
        "stats: every CPU level gives the same bits, close to a two-pass oracle",
        arguments: [0, 1, 15, 16, 17, 100, 2047, 2048, 2049, 4096, 4097, 100_003])
    func statsMatchReference(n: Int) {
        let x = Self.statsSample(n, seed: UInt64(n) + 5)
        var first: gk_stats?
        for level in allLevels {
            withLevel(level) {
                var st = gk_stats()
                gk_stats_f32(x, n, &st)
                if let first { #expect(Self.statsEqual(st, first), "level \(level) n \(n): \(st) vs \(first)") }
                first = first ?? st
                Self.expectClose(st, x.map(Double.init), "level \(level) n \(n)")
                // typed f16 input == stats of the converted values
                let h = convertArray(x, .F32, .F16, as: UInt16.self, zero: 0)
                let back = convertArray(h, .F16, .F32, as: Float.self, zero: 0)
                var ref16 = gk_stats(), got16 = gk_stats()
                gk_stats_f32(back, n, &ref16)
                #expect(h.withUnsafeBytes { gk_stats_typed($0.baseAddress, Int32(GK_F16), n, &got16) } == 0)
                #expect(Self.statsEqual(got16, ref16))
            }
        }
    }

    /// fp32 1000 +- 1e-3 gave std 6.11e-4 (true 1.00e-3) when std came from sum_sq/n - mean^2.
    @Test(
        "stats: a large mean with a tiny spread keeps its digits, for every dtype and CPU level",
        arguments: [(Float(1000), Float(1e-3)), (1, 1e-4), (-3e4, 0.01), (0.5, 1e-7)] as [(Float, Float)])
    func statsLargeMeanTinySpread(mean: Float, spread: Float) {
        for n in [33, 2048 + 17, 50_001] {
            let x = Self.hardSample(n, mean: mean, spread: spread, seed: UInt64(n))
            let h = convertArray(x, .F32, .F16, as: UInt16.self, zero: 0)
            let b = convertArray(x, .F32, .BF16, as: UInt16.self, zero: 0)
            // fp64 values whose spread is below fp32's resolution at this mean.
            let d = x.indices.map { i in
                x[i].isFinite
                    ? Double(mean) + Double(spread) * 1e-3 * (Double(i * 7919 % 10_007) / 5003.5 - 1) : Double(x[i])
            }
            let cases: [(String, [Double], (UnsafeMutablePointer<gk_stats>) -> Int32)] = [
                (
                    "F32", x.map(Double.init),
                    { p in x.withUnsafeBytes { gk_stats_typed($0.baseAddress, Int32(GK_F32), n, p) } }
                ),
                (
                    "F16", convertArray(h, .F16, .F32, as: Float.self, zero: 0).map(Double.init),
                    { p in h.withUnsafeBytes { gk_stats_typed($0.baseAddress, Int32(GK_F16), n, p) } }
                ),
                (
                    "BF16", convertArray(b, .BF16, .F32, as: Float.self, zero: 0).map(Double.init),
                    { p in b.withUnsafeBytes { gk_stats_typed($0.baseAddress, Int32(GK_BF16), n, p) } }
                ),
                ("F64", d, { p in d.withUnsafeBytes { gk_stats_typed($0.baseAddress, Int32(GK_F64), n, p) } }),
            ]
            for (name, values, run) in cases {
                var first: gk_stats?
                for level in allLevels {
                    withLevel(level) {
                        var st = gk_stats()
                        #expect(run(&st) == 0)
                        if let first { #expect(Self.statsEqual(st, first), "\(name) level \(level) n \(n)") }
                        first = first ?? st
                        Self.expectClose(st, values, "\(name) mean \(mean) spread \(spread) n \(n) level \(level)")
                    }
                }
            }
        }
    }

    @Test("stats: combining blocks with Chan's formula matches one pass over the whole")
    func statsCombine() {
        let x = Self.hardSample(10_000, mean: 1000, spread: 1e-3, seed: 9)
        var whole = gk_stats()
        gk_stats_f32(x, x.count, &whole)
        for cut in [0, 1, 16, 777, 2048, 9_999, 10_000] {
            var a = gk_stats(), b = gk_stats(), empty = gk_stats()
            x.withUnsafeBufferPointer { p in
                gk_stats_f32(p.baseAddress!, cut, &a)
                gk_stats_f32(p.baseAddress! + cut, x.count - cut, &b)
            }
            gk_stats_empty(&empty)
            gk_stats_combine(&a, &b)
            gk_stats_combine(&a, &empty)
            Self.expectClose(a, x.map(Double.init), "cut \(cut)")
            #expect(
                a.count == whole.count && a.nan_count == whole.nan_count && a.min == whole.min && a.max == whole.max)
        }
    }

    /// The diff kernel's fast path, element by element: fp32 differences and products,
    /// summed per lane (i % 16) in fp32 over blocks of 16 vectors (256 elements, the
    /// remainder vector a block of its own), each block's sums added to per-lane doubles.
    static func refDiff(_ a: [Float], _ b: [Float]) -> gk_diff {
        var d = gk_diff()
        d.count = UInt64(a.count)
        var mx = [Double](repeating: 0, count: 16), sad = mx, sqd = mx, sa = mx, sb = mx, sab = mx
        var pad = [Float](repeating: 0, count: 16), psq = pad, pa2 = pad, pb2 = pad, pab = pad
        func flush() {
            for l in 0..<16 {
                sad[l] += Double(pad[l]); sqd[l] += Double(psq[l])
                sa[l] += Double(pa2[l]); sb[l] += Double(pb2[l]); sab[l] += Double(pab[l])
                pad[l] = 0; psq[l] = 0; pa2[l] = 0; pb2[l] = 0; pab[l] = 0
            }
        }
        let full = a.count / 16 * 16
        for i in a.indices {
            if i > 0 && i <= full && (i % 256 == 0 || i == full) { flush() }
            let x = a[i], y = b[i]
            if x.isNaN { d.nan_a += 1 }
            if y.isNaN { d.nan_b += 1 }
            if x.isInfinite { d.inf_a += 1 }
            if y.isInfinite { d.inf_b += 1 }
            if x != y && !(x.isNaN && y.isNaN) { d.differ_count += 1 }
            guard x.isFinite && y.isFinite else { continue }
            d.both_finite += 1
            let df = x - y, ad = abs(df)
            let l = i % 16
            if Double(ad) > mx[l] { mx[l] = Double(ad) }
            pad[l] += ad; psq[l] += df * df; pa2[l] += x * x; pb2[l] += y * y; pab[l] += x * y
        }
        flush()
        for l in 0..<16 {
            d.max_abs_diff = max(d.max_abs_diff, mx[l])
            d.sum_abs_diff += sad[l]; d.sum_sq_diff += sqd[l]
            d.sum_sq_a += sa[l]; d.sum_sq_b += sb[l]; d.sum_ab += sab[l]
        }
        return d
    }

    @Test("values whose fp32 squares overflow fall back to double sums")
    func diffHugeValuesStayFinite() {
        let n = 1000
        let a = (0..<n).map { Float($0 % 7 + 1) * 1e30 }
        let b = a.enumerated().map { $0.offset % 5 == 0 ? $0.element * 0.5 : $0.element }
        for level in allLevels {
            withLevel(level) {
                var d = gk_diff()
                gk_diff_f32(a, b, n, &d)
                var sqa = 0.0, sqd = 0.0
                for i in 0..<n { sqa += Double(a[i]) * Double(a[i]); let x = Double(a[i]) - Double(b[i]); sqd += x * x }
                #expect(d.sum_sq_a.isFinite && abs(d.sum_sq_a - sqa) <= 1e-12 * sqa, "level \(level)")
                #expect(d.sum_sq_diff.isFinite && abs(d.sum_sq_diff - sqd) <= 1e-12 * sqd, "level \(level)")
                #expect(d.differ_count == 200)
            }
        }
    }

    @Test(arguments: [0, 1, 17, 255, 256, 257, 1000, 4096, 4111, 65_537])
    func diffMatchesReference(n: Int) {
        let a = Self.statsSample(n, seed: 11)
        var b = a
        var g = SplitMix64(seed: 12)
        for i in b.indices where g.next() % 3 == 0 { b[i] = b[i] * 1.001 + 1e-3 }
        if n > 10 { b[5] = .nan; b[6] = -0.0; b[7] = a[7].isNaN ? 0 : -a[7] }
        let expected = Self.refDiff(a, b)
        for level in allLevels {
            withLevel(level) {
                var d = gk_diff()
                gk_diff_f32(a, b, n, &d)
                #expect(
                    d.count == expected.count && d.differ_count == expected.differ_count
                        && d.both_finite == expected.both_finite && d.nan_a == expected.nan_a
                        && d.nan_b == expected.nan_b && d.inf_a == expected.inf_a && d.inf_b == expected.inf_b,
                    "level \(level): \(d) vs \(expected)")
                #expect(d.max_abs_diff.bitPattern == expected.max_abs_diff.bitPattern)
                #expect(d.sum_abs_diff.bitPattern == expected.sum_abs_diff.bitPattern)
                #expect(d.sum_sq_diff.bitPattern == expected.sum_sq_diff.bitPattern)
                #expect(d.sum_sq_a.bitPattern == expected.sum_sq_a.bitPattern)
                #expect(d.sum_sq_b.bitPattern == expected.sum_sq_b.bitPattern)
                #expect(d.sum_ab.bitPattern == expected.sum_ab.bitPattern)
            }
        }
    }

    @Test(
        "the fused f16 diff equals converting to f32 first, at every level",
        arguments: [0, 1, 15, 16, 17, 1000, 65_537])
    func fusedHalfDiffMatchesF32(n: Int) {
        // Random f16 bit patterns: NaNs (both kinds), infinities, subnormals, zeros included.
        var g = SplitMix64(seed: UInt64(n) &+ 2024)
        let a = (0..<n).map { _ in UInt16(truncatingIfNeeded: g.next()) }
        let b = a.map { g.next() % 3 == 0 ? UInt16(truncatingIfNeeded: g.next()) : $0 }
        var fa = [Float](repeating: 0, count: n), fb = fa
        a.withUnsafeBytes { src in fa.withUnsafeMutableBytes { gk_f16_to_f32(src.baseAddress, $0.baseAddress, n) } }
        b.withUnsafeBytes { src in fb.withUnsafeMutableBytes { gk_f16_to_f32(src.baseAddress, $0.baseAddress, n) } }
        for level in allLevels {
            withLevel(level) {
                var want = gk_diff(), got = gk_diff()
                gk_diff_f32(fa, fb, n, &want)
                a.withUnsafeBytes { pa in
                    b.withUnsafeBytes { pb in
                        _ = gk_diff_typed(pa.baseAddress, Int32(GK_F16), pb.baseAddress, Int32(GK_F16), n, &got)
                    }
                }
                #expect(
                    got.count == want.count && got.differ_count == want.differ_count
                        && got.both_finite == want.both_finite && got.nan_a == want.nan_a && got.nan_b == want.nan_b
                        && got.inf_a == want.inf_a && got.inf_b == want.inf_b, "level \(level), n \(n)")
                #expect(
                    got.max_abs_diff.bitPattern == want.max_abs_diff.bitPattern
                        && got.sum_abs_diff.bitPattern == want.sum_abs_diff.bitPattern
                        && got.sum_sq_diff.bitPattern == want.sum_sq_diff.bitPattern
                        && got.sum_sq_a.bitPattern == want.sum_sq_a.bitPattern
                        && got.sum_sq_b.bitPattern == want.sum_sq_b.bitPattern
                        && got.sum_ab.bitPattern == want.sum_ab.bitPattern, "level \(level), n \(n)")
            }
        }
    }

    @Test func diffOfIdenticalIsZero() {
        let a = Self.statsSample(5000, seed: 3)
        var d = gk_diff()
        gk_diff_f32(a, a, a.count, &d)
        #expect(d.differ_count == 0 && d.max_abs_diff == 0 && d.sum_sq_diff == 0)
        var t = gk_diff()
        a.withUnsafeBytes { p in
            _ = gk_diff_typed(p.baseAddress, Int32(GK_F32), p.baseAddress, Int32(GK_F32), a.count, &t)
        }
        #expect(t.differ_count == 0 && t.count == 5000)
    }
}
