import CKernels

/// Element-type conversion between F16, BF16, F32 and F64, backed by the C kernels in
/// `CKernels` (AVX-512 / AVX2+F16C / portable, picked at run time; all give the same bits).
///
/// Semantics (round to nearest even throughout):
/// - to F16 (from F32 or F64): bit-identical to numpy's `astype(np.float16)`, including NaN
///   payloads (not quieted; a payload that would vanish becomes 0x7C01) and overflow
///   (|x| >= 65520 becomes ±inf). F64 rounds directly, with no detour through F32.
/// - F32 to BF16: PyTorch's `c10::BFloat16` rounding; every NaN becomes 0x7FC0.
/// - F16/BF16 to wider types: exact, NaN payloads kept (F16 to F64 too; BF16 to F64 goes
///   through F32, whose C cast to double quiets signalling NaNs).
/// - F64 to F32 and F32 to F64: the C casts. F64 to BF16 goes through F32, like PyTorch.
/// Pointers need no alignment; source and destination must not overlap.
public enum Conversion {
    /// Whether `convert` handles this type.
    public static func isSupported(_ t: DType) -> Bool { code(t) != nil }

    /// Converts `count` elements. Same type: a plain copy. Both types must be one of
    /// F16, BF16, F32, F64 (a precondition).
    public static func convert(
        _ src: UnsafeRawPointer, from srcType: DType,
        to dst: UnsafeMutableRawPointer, _ dstType: DType, count: Int
    ) {
        precondition(count >= 0, "negative count")
        guard count > 0 else { return }
        guard let s = code(srcType), let d = code(dstType) else {
            preconditionFailure("Conversion.convert: unsupported dtype pair \(srcType) -> \(dstType)")
        }
        if s == d {
            dst.copyMemory(from: src, byteCount: count * srcType.bitCount / 8)
            return
        }
        plain(s, d)(src, dst, count)
    }

    /// Like `convert`, and returns how many finite inputs became ±inf (overflow). Only
    /// narrowing pairs can overflow (F32/F64 to F16 or BF16, F64 to F32, BF16 to F16);
    /// for the others it returns 0 at no extra cost.
    @discardableResult
    public static func convertCountingOverflow(
        _ src: UnsafeRawPointer, from srcType: DType,
        to dst: UnsafeMutableRawPointer, _ dstType: DType,
        count: Int
    ) -> Int {
        precondition(count >= 0, "negative count")
        guard count > 0 else { return 0 }
        guard let s = code(srcType), let d = code(dstType) else {
            preconditionFailure("Conversion.convert: unsupported dtype pair \(srcType) -> \(dstType)")
        }
        return Int(gk_convert(src, s, dst, d, count))
    }

    /// `count` elements of `srcType` into fp32.
    public static func toFloat32(
        _ src: UnsafeRawPointer, from srcType: DType,
        _ dst: UnsafeMutablePointer<Float>, count: Int
    ) {
        convert(src, from: srcType, to: UnsafeMutableRawPointer(dst), .F32, count: count)
    }

    /// `count` fp32 values into `dstType`.
    public static func fromFloat32(
        _ src: UnsafePointer<Float>, to dst: UnsafeMutableRawPointer,
        _ dstType: DType, count: Int
    ) {
        convert(UnsafeRawPointer(src), from: .F32, to: dst, dstType, count: count)
    }

    /// Number of ±inf values among `count` elements of `type` (F16/BF16/F32/F64).
    public static func countInfinities(_ src: UnsafeRawPointer, _ type: DType, count: Int) -> Int {
        guard count > 0, let t = code(type) else { return 0 }
        return Int(gk_count_inf(src, t, count))
    }

    /// "avx512", "avx2" or "portable": the kernel variant in use.
    public static var cpuLevelName: String { String(cString: gk_cpu_level_name()) }

    /// 0 portable, 1 AVX2+F16C+FMA, 2 AVX-512.
    public static var cpuLevel: Int { Int(gk_cpu_level()) }

    /// The best level this machine supports.
    public static var detectedCPULevel: Int { Int(gk_cpu_level_detected()) }

    /// Forces a kernel level (tests, benchmarks); clamped to what the CPU supports, negative
    /// restores the detected level. Returns the level now active. Process-wide.
    @discardableResult
    package static func setCPULevel(_ level: Int) -> Int { Int(gk_set_cpu_level(Int32(level))) }

    /// The C type code (GK_F16 ...) of a dtype, nil for the others.
    package static func code(_ t: DType) -> Int32? {
        switch t {
        case .F16: return Int32(GK_F16)
        case .BF16: return Int32(GK_BF16)
        case .F32: return Int32(GK_F32)
        case .F64: return Int32(GK_F64)
        default: return nil
        }
    }

    private typealias Fn = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int) -> Void

    private static func plain(_ s: Int32, _ d: Int32) -> Fn {
        switch (s, d) {
        case (Int32(GK_F16), Int32(GK_BF16)): return gk_f16_to_bf16
        case (Int32(GK_F16), Int32(GK_F32)): return gk_f16_to_f32
        case (Int32(GK_F16), Int32(GK_F64)): return gk_f16_to_f64
        case (Int32(GK_BF16), Int32(GK_F16)): return gk_bf16_to_f16
        case (Int32(GK_BF16), Int32(GK_F32)): return gk_bf16_to_f32
        case (Int32(GK_BF16), Int32(GK_F64)): return gk_bf16_to_f64
        case (Int32(GK_F32), Int32(GK_F16)): return gk_f32_to_f16
        case (Int32(GK_F32), Int32(GK_BF16)): return gk_f32_to_bf16
        case (Int32(GK_F32), Int32(GK_F64)): return gk_f32_to_f64
        case (Int32(GK_F64), Int32(GK_F16)): return gk_f64_to_f16
        case (Int32(GK_F64), Int32(GK_BF16)): return gk_f64_to_bf16
        case (Int32(GK_F64), Int32(GK_F32)): return gk_f64_to_f32
        default: preconditionFailure("unreachable dtype pair")
        }
    }
}
