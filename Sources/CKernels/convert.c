/* Element type conversions between F16, BF16, F32 and F64. See CKernels.h for
 * the exact semantics; the scalar helpers below are the reference definitions
 * and the vector paths must agree with them bit for bit. */
#include "gk_internal.h"

/* ---------------------------------------------------------------- scalars */

/* f32 -> f16, round to nearest even, numpy-compatible NaN handling:
 * numpy keeps the NaN's sign and the top 10 payload bits (no quieting) and
 * turns a payload that would vanish into 0x7C01. */
GK_INLINE uint16_t gk_f32_to_f16_1(uint32_t u) {
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    /* normal results: rebias the exponent (127 -> 15) and round at bit 13;
     * a carry out of the mantissa correctly bumps the exponent. */
    uint32_t rn = (a - 0x38000000u + 0x0FFFu + ((a >> 13) & 1u)) >> 13;
    /* |x| < 2^-14: f16 subnormal. Adding 0.5f (whose ulp is 2^-24, the
     * subnormal quantum) rounds |x| to a multiple of 2^-24 in hardware RNE;
     * the low mantissa bits are then the f16 encoding (0x400 = min normal). */
    uint32_t rs = gk_f32_bits(gk_bits_f32(a) + 0.5f) - 0x3F000000u;
    uint32_t rnan = 0x7C00u + ((a & 0x007FFFFFu) >> 13);
    rnan |= (uint32_t)(rnan == 0x7C00u);
    uint32_t r = a < 0x38800000u ? rs : rn;
    r = a >= 0x477FF000u ? 0x7C00u : r; /* >= 65520: +-inf (incl. inf) */
    r = a > 0x7F800000u ? rnan : r;
    return (uint16_t)(sign | r);
}

/* f16 -> f32, exact; NaN payload and signalling bit kept. */
GK_INLINE uint32_t gk_f16_to_f32_1(uint32_t h) {
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t a = h & 0x7FFFu;
    uint32_t rn = (a << 13) + 0x38000000u;          /* normal */
    uint32_t ri = (a << 13) + 0x70000000u;          /* inf / NaN */
    uint32_t rs = gk_f32_bits((float)(int32_t)a * 0x1p-24f); /* zero / subnormal */
    uint32_t r = a < 0x0400u ? rs : (a >= 0x7C00u ? ri : rn);
    return sign | r;
}

/* f64 -> f16 directly (one rounding), numpy-compatible NaNs. */
GK_INLINE uint16_t gk_f64_to_f16_1(uint64_t u) {
    uint32_t sign = (uint32_t)(u >> 48) & 0x8000u;
    uint64_t a = u & 0x7FFFFFFFFFFFFFFFull;
    uint64_t rn = (a - 0x3F00000000000000ull + 0x1FFFFFFFFFFull + ((a >> 42) & 1u)) >> 42;
    /* 2^28 has ulp 2^-24 in double: same trick as in the f32 version. */
    uint64_t rs = gk_f64_bits(gk_bits_f64(a) + 0x1p28) - 0x41B0000000000000ull;
    uint64_t rnan = 0x7C00u + ((a & 0x000FFFFFFFFFFFFFull) >> 42);
    rnan |= (uint64_t)(rnan == 0x7C00u);
    uint64_t r = a < 0x3F10000000000000ull ? rs : rn;   /* < 2^-14 */
    r = a >= 0x40EFFE0000000000ull ? 0x7C00u : r;         /* >= 65520 */
    r = a > 0x7FF0000000000000ull ? rnan : r;
    return (uint16_t)(sign | (uint32_t)r);
}

/* f16 -> f64, exact; NaN payload and signalling bit kept (like numpy). */
GK_INLINE uint64_t gk_f16_to_f64_1(uint32_t h) {
    uint64_t sign = (uint64_t)(h & 0x8000u) << 48;
    uint64_t a = h & 0x7FFFu;
    uint64_t rn = (a << 42) + 0x3F00000000000000ull;
    uint64_t ri = (a << 42) + 0x7E00000000000000ull;
    uint64_t rs = gk_f64_bits((double)(int64_t)a * 0x1p-24);
    uint64_t r = a < 0x0400u ? rs : (a >= 0x7C00u ? ri : rn);
    return sign | r;
}

/* f32 -> bf16 as PyTorch's c10::BFloat16 does it (c10/util/BFloat16.h,
 * round_to_nearest_even): every NaN becomes 0x7FC0, otherwise RNE via
 * (u + 0x7FFF + lsb) >> 16; values rounding past the max become +-inf.
 * (Written from knowledge of that header; torch cannot run here.) */
GK_INLINE uint16_t gk_f32_to_bf16_1(uint32_t u) {
    uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? (uint16_t)0x7FC0u : (uint16_t)r;
}

/* ------------------------------------------------- portable loop bodies */

#define GK_CONV_BODY(name, ST, DT, expr) \
    GK_INLINE void name##_body(const void *src, void *dst, size_t n) { \
        const ST *restrict s = (const ST *)src; \
        DT *restrict d = (DT *)dst; \
        for (size_t i = 0; i < n; i++) { d[i] = (expr); } \
    }

GK_CONV_BODY(f16_to_f32, gk_u16, gk_u32, gk_f16_to_f32_1(s[i]))
GK_CONV_BODY(f32_to_f16, gk_u32, gk_u16, gk_f32_to_f16_1(s[i]))
GK_CONV_BODY(bf16_to_f32, gk_u16, gk_u32, (uint32_t)s[i] << 16)
GK_CONV_BODY(f32_to_bf16, gk_u32, gk_u16, gk_f32_to_bf16_1(s[i]))
GK_CONV_BODY(f64_to_f32, gk_f64, gk_f32, (float)s[i])
GK_CONV_BODY(f32_to_f64, gk_f32, gk_f64, (double)s[i])
GK_CONV_BODY(f16_to_f64, gk_u16, gk_u64, gk_f16_to_f64_1(s[i]))
GK_CONV_BODY(f64_to_f16, gk_u64, gk_u16, gk_f64_to_f16_1(s[i]))
GK_CONV_BODY(bf16_to_f64, gk_u16, gk_f64, (double)gk_bits_f32((uint32_t)s[i] << 16))
GK_CONV_BODY(f64_to_bf16, gk_f64, gk_u16, gk_f32_to_bf16_1(gk_f32_bits((float)s[i])))
GK_CONV_BODY(f16_to_bf16, gk_u16, gk_u16, gk_f32_to_bf16_1(gk_f16_to_f32_1(s[i])))
GK_CONV_BODY(bf16_to_f16, gk_u16, gk_u16, gk_f32_to_f16_1((uint32_t)s[i] << 16))

#define GK_CONV_PARAMS (const void *src, void *dst, size_t n)
#define GK_CONV_ARGS (src, dst, n)

GK_MULTI(bf16_to_f32, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(f32_to_bf16, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(f64_to_f32, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(f32_to_f64, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(f16_to_f64, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(f64_to_f16, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(bf16_to_f64, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(f64_to_bf16, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(f16_to_bf16, GK_CONV_PARAMS, GK_CONV_ARGS)
GK_MULTI(bf16_to_f16, GK_CONV_PARAMS, GK_CONV_ARGS)

/* -------------------------- f16 <-> f32 with the F16C / AVX-512 hardware
 * vcvtph2ps / vcvtps2ph round like IEEE RNE (= numpy) but quiet signalling
 * NaNs (0x7F800001 -> 0x7E00 where numpy gives 0x7C01; 0x7D00 -> 0x7FE00000
 * where numpy keeps 0x7FA00000). So vectors containing a NaN are redone with
 * the scalar helper; that branch is practically never taken on real weights. */

static void f16_to_f32_l0(const void *src, void *dst, size_t n) { f16_to_f32_body(src, dst, n); }
static void f32_to_f16_l0(const void *src, void *dst, size_t n) { f32_to_f16_body(src, dst, n); }

#if GK_X86
GK_TGT_AVX2 static void f16_to_f32_l1(const void *src, void *dst, size_t n) {
    const gk_u16 *restrict s = (const gk_u16 *)src;
    gk_u32 *restrict d = (gk_u32 *)dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i)));
        _mm256_storeu_ps((float *)(d + i), v);
        if (__builtin_expect(_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0, 0))
            for (size_t k = i; k < i + 8; k++) d[k] = gk_f16_to_f32_1(s[k]);
    }
    for (; i < n; i++) d[i] = gk_f16_to_f32_1(s[i]);
}

GK_TGT_AVX2 static void f32_to_f16_l1(const void *src, void *dst, size_t n) {
    const gk_u32 *restrict s = (const gk_u32 *)src;
    gk_u16 *restrict d = (gk_u16 *)dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps((const float *)(s + i));
        _mm_storeu_si128((__m128i *)(d + i),
                         _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        if (__builtin_expect(_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0, 0))
            for (size_t k = i; k < i + 8; k++) d[k] = gk_f32_to_f16_1(s[k]);
    }
    for (; i < n; i++) d[i] = gk_f32_to_f16_1(s[i]);
}

GK_TGT_AVX512 static void f16_to_f32_l2(const void *src, void *dst, size_t n) {
    const gk_u16 *restrict s = (const gk_u16 *)src;
    gk_u32 *restrict d = (gk_u32 *)dst;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i)));
        __m512 v1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i + 16)));
        _mm512_storeu_ps((float *)(d + i), v0);
        _mm512_storeu_ps((float *)(d + i + 16), v1);
        if (__builtin_expect((_mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q) |
                              _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q)) != 0, 0))
            for (size_t k = i; k < i + 32; k++) d[k] = gk_f16_to_f32_1(s[k]);
    }
    for (; i < n; i++) d[i] = gk_f16_to_f32_1(s[i]);
}

GK_TGT_AVX512 static void f32_to_f16_l2(const void *src, void *dst, size_t n) {
    const gk_u32 *restrict s = (const gk_u32 *)src;
    gk_u16 *restrict d = (gk_u16 *)dst;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0 = _mm512_loadu_ps((const float *)(s + i));
        __m512 v1 = _mm512_loadu_ps((const float *)(s + i + 16));
        _mm256_storeu_si256((__m256i *)(d + i),
                            _mm512_cvtps_ph(v0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm256_storeu_si256((__m256i *)(d + i + 16),
                            _mm512_cvtps_ph(v1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        if (__builtin_expect((_mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q) |
                              _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q)) != 0, 0))
            for (size_t k = i; k < i + 32; k++) d[k] = gk_f32_to_f16_1(s[k]);
    }
    for (; i < n; i++) d[i] = gk_f32_to_f16_1(s[i]);
}
#endif

/* ------------------------------------------------------------ public API */

#define GK_CONV_API(name) \
    void gk_##name(const void *src, void *dst, size_t n) { GK_DISPATCH(name, (src, dst, n)); }

GK_CONV_API(f16_to_f32)
GK_CONV_API(f32_to_f16)
GK_CONV_API(bf16_to_f32)
GK_CONV_API(f32_to_bf16)
GK_CONV_API(f64_to_f32)
GK_CONV_API(f32_to_f64)
GK_CONV_API(f16_to_f64)
GK_CONV_API(f64_to_f16)
GK_CONV_API(bf16_to_f64)
GK_CONV_API(f64_to_bf16)
GK_CONV_API(f16_to_bf16)
GK_CONV_API(bf16_to_f16)

/* ---------------------------------------------------------- inf counting */

GK_INLINE void count_inf_body(const void *src, int type, size_t n, size_t *out) {
    size_t c = 0;
    switch (type) {
    case GK_F16: { const gk_u16 *s = (const gk_u16 *)src;
        for (size_t i = 0; i < n; i++) c += (s[i] & 0x7FFFu) == 0x7C00u; break; }
    case GK_BF16: { const gk_u16 *s = (const gk_u16 *)src;
        for (size_t i = 0; i < n; i++) c += (s[i] & 0x7FFFu) == 0x7F80u; break; }
    case GK_F32: { const gk_u32 *s = (const gk_u32 *)src;
        for (size_t i = 0; i < n; i++) c += (s[i] & 0x7FFFFFFFu) == 0x7F800000u; break; }
    case GK_F64: { const gk_u64 *s = (const gk_u64 *)src;
        for (size_t i = 0; i < n; i++) c += (s[i] & 0x7FFFFFFFFFFFFFFFull) == 0x7FF0000000000000ull; break; }
    default: break;
    }
    *out = c;
}
GK_MULTI(count_inf, (const void *src, int type, size_t n, size_t *out), (src, type, n, out))

size_t gk_count_inf(const void *src, int type, size_t n) {
    size_t c = 0;
    GK_DISPATCH(count_inf, (src, type, n, &c));
    return c;
}

static size_t gk_type_size(int t) {
    switch (t) {
    case GK_F16: case GK_BF16: return 2;
    case GK_F32: return 4;
    case GK_F64: return 8;
    default: return 0;
    }
}

typedef void (*gk_conv_fn)(const void *, void *, size_t);

static gk_conv_fn gk_conv_lookup(int from, int to) {
    /* index: (from-1)*4 + (to-1); the diagonal is handled by memcpy. */
    static const gk_conv_fn table[16] = {
        0, gk_f16_to_bf16, gk_f16_to_f32, gk_f16_to_f64,
        gk_bf16_to_f16, 0, gk_bf16_to_f32, gk_bf16_to_f64,
        gk_f32_to_f16, gk_f32_to_bf16, 0, gk_f32_to_f64,
        gk_f64_to_f16, gk_f64_to_bf16, gk_f64_to_f32, 0,
    };
    return table[(from - 1) * 4 + (to - 1)];
}

/* Can a finite value of `from` become +-inf in `to`? */
static int gk_can_overflow(int from, int to) {
    switch (from) {
    case GK_F16: return 0;
    case GK_BF16: return to == GK_F16;
    case GK_F32: return to == GK_F16 || to == GK_BF16;
    case GK_F64: return to != GK_F64;
    default: return 0;
    }
}

size_t gk_convert(const void *src, int src_type, void *dst, int dst_type, size_t n) {
    size_t ss = gk_type_size(src_type), ds = gk_type_size(dst_type);
    if (ss == 0 || ds == 0) return (size_t)-1;
    if (src_type == dst_type) {
        if (n) memmove(dst, src, n * ss);
        return 0;
    }
    gk_conv_fn f = gk_conv_lookup(src_type, dst_type);
    if (!gk_can_overflow(src_type, dst_type)) {
        f(src, dst, n);
        return 0;
    }
    /* Convert in cache-sized chunks and count the infinities the conversion
     * created (an inf input always stays inf, so the difference is exact). */
    const size_t chunk = 8192;
    size_t ovf = 0;
    const unsigned char *s = (const unsigned char *)src;
    unsigned char *d = (unsigned char *)dst;
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        f(s + i * ss, d + i * ds, k);
        ovf += gk_count_inf(d + i * ds, dst_type, k) - gk_count_inf(s + i * ss, src_type, k);
    }
    return ovf;
}
