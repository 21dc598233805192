#ifndef GRAFT_CKERNELS_H
#define GRAFT_CKERNELS_H
/*
 * CKernels: the hot loops of graft (dtype conversion, the fused LoRA merge GEMM,
 * tensor statistics), written in C with run-time CPU dispatch.
 *
 * Every kernel has one portable body. On x86-64 it is compiled three times:
 *   level 2  "avx512"   AVX-512F/BW/VL + F16C + FMA
 *   level 1  "avx2"     AVX2 + F16C + FMA
 *   level 0  "portable" baseline x86-64 (SSE2)
 * and the best level the CPU (and OS) supports is chosen once, on first use.
 * Elsewhere (arm64, ...) only the portable code exists and the level is 0.
 *
 * All levels produce bit-identical results for every function below (the tests
 * check this). Element counts are size_t; pointers need no alignment; source
 * and destination must not overlap. Half-precision values travel as raw
 * uint16_t bit patterns (IEEE binary16 for F16, bfloat16 for BF16).
 *
 * Floating-point environment: default (round to nearest even, no FTZ/DAZ).
 */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- dispatch */

/** Active level: 0 portable, 1 AVX2+F16C+FMA, 2 AVX-512. */
int gk_cpu_level(void);
/** Highest level this CPU supports (what is active unless overridden). */
int gk_cpu_level_detected(void);
/** Forces a level (for tests and benchmarks), clamped to [0, detected].
 *  A negative value restores the detected level. Returns the level now active.
 *  Not meant to be called while other threads run kernels (they may see
 *  either level; both give the same bits). */
int gk_set_cpu_level(int level);
/** "avx512", "avx2" or "portable" for the active level. Static storage. */
const char *gk_cpu_level_name(void);

/* ------------------------------------------------------------- conversions */

/** Element types understood by gk_convert and the typed statistics. */
enum {
    GK_F16 = 1,  /* IEEE binary16 */
    GK_BF16 = 2, /* bfloat16 */
    GK_F32 = 3,
    GK_F64 = 4
};

/*
 * Rounding is round-to-nearest-even everywhere. Exact semantics:
 *  - f32 -> f16, f64 -> f16: bit-identical to numpy's astype(np.float16)
 *    (numpy 2.4 checked): overflow to +-inf from |x| >= 65520 (65519.996 ->
 *    65504), subnormals rounded correctly, +-0 kept. NaNs are NOT quieted:
 *    sign | 0x7C00 | top 10 payload bits; if those bits are all zero the
 *    result is 0x7C01 (so a NaN stays a NaN). f64 -> f16 rounds directly
 *    from double (no double rounding through f32), like numpy.
 *  - f16 -> f32, f16 -> f64: exact; NaN payloads and the signalling bit are
 *    kept (numpy's software path), unlike vcvtph2ps which quiets sNaNs.
 *  - f32 -> bf16: PyTorch c10::BFloat16 rounding, (u + 0x7FFF + lsb) >> 16,
 *    and every NaN (either sign, any payload) becomes 0x7FC0.
 *  - bf16 -> f32: exact (u << 16), payload kept.
 *  - f64 -> f32, f32 -> f64: the C casts (hardware; NaNs are quieted, payload
 *    truncated/extended), as numpy and PyTorch do on this CPU.
 *  - f64 -> bf16 goes through f32 (double rounding), which is what PyTorch's
 *    static_cast<BFloat16>(double) does. bf16 -> f64 via exact f32, then the
 *    C cast. f16 <-> bf16 via f32 (f16 -> f32 exact, then f32 -> bf16 above;
 *    bf16 -> f32 exact, then f32 -> f16 above).
 */
void gk_f16_to_f32(const void *src, void *dst, size_t n);
void gk_f32_to_f16(const void *src, void *dst, size_t n);
void gk_bf16_to_f32(const void *src, void *dst, size_t n);
void gk_f32_to_bf16(const void *src, void *dst, size_t n);
void gk_f64_to_f32(const void *src, void *dst, size_t n);
void gk_f32_to_f64(const void *src, void *dst, size_t n);
void gk_f16_to_f64(const void *src, void *dst, size_t n);
void gk_f64_to_f16(const void *src, void *dst, size_t n);
void gk_bf16_to_f64(const void *src, void *dst, size_t n);
void gk_f64_to_bf16(const void *src, void *dst, size_t n);
void gk_f16_to_bf16(const void *src, void *dst, size_t n);
void gk_bf16_to_f16(const void *src, void *dst, size_t n);

/** Converts n elements between any two of GK_F16/BF16/F32/F64 (same type:
 *  memcpy). Returns the number of finite inputs that became +-inf (overflow),
 *  or (size_t)-1 for an unknown type code. Counting costs a re-read of a
 *  cache-resident chunk; use the plain functions when it is not needed. */
size_t gk_convert(const void *src, int src_type, void *dst, int dst_type, size_t n);

/** Number of +-inf elements among n values of the given type. */
size_t gk_count_inf(const void *src, int type, size_t n);

/* ---------------------------------------------------------- LoRA merge GEMM */

/**
 * acc[i*lda + j] += (ratio * M[i][j]) * scale   for i < m, j < n, where
 * M[i][j] = fma(U[i][r-1], D[r-1][j], ... fma(U[i][0], D[0][j], +0.0f)),
 * U[i][k] = U[i*ldu + k], D[k][j] = D[k*ldd + j]. Each multiply and the add
 * are separate fp32 operations (no contraction), mirroring PyTorch's
 * `W + ratio * (up @ down) * scale`. The k order and the FMA chain do not
 * depend on m, n, the level or on how a caller splits rows/columns into
 * blocks: results are bit-identical for any blocking and any level.
 * acc must not overlap U or D.
 */
void gk_lora_gemm_f32(size_t m, size_t n, size_t r,
                      float *acc, size_t lda,
                      const float *U, size_t ldu,
                      const float *D, size_t ldd,
                      float ratio, float scale);

/**
 * LoHa: acc[i*lda + j] += (M1[i][j] * M2[i][j]) * coef, with M1 = U1 @ D1 (rank r1)
 * and M2 = U2 @ D2 (rank r2), each element one FMA chain in k order from +0.0f as in
 * gk_lora_gemm_f32; bit-identical for any blocking and any level. acc must not
 * overlap the factors.
 */
void gk_hadamard_gemm_f32(size_t m, size_t n, size_t r1, size_t r2, float *acc, size_t lda,
                          const float *U1, size_t ldu1, const float *D1, size_t ldd1,
                          const float *U2, size_t ldu2, const float *D2, size_t ldd2, float coef);

/** Σ x[i]² in double, in a fixed order for a given n (8 interleaved partial sums). */
double gk_sumsq_f32(const float *x, size_t n);

/* -------------------------------------------------------------- statistics */

/** Statistics of a run of values. Moments skip NaN and +-inf; min/max are
 *  over finite values (+inf/-inf when there are none). */
typedef struct gk_stats {
    uint64_t count;      /* all elements */
    uint64_t nan_count;
    uint64_t pinf_count;
    uint64_t ninf_count;
    double min, max;     /* finite values only; +inf / -inf when there is none */
    /* Moments of the finite values (count - nan - pinf - ninf of them), kept as
     * mean and M2 = sum (x - mean)^2 (Welford/Chan), never as sum and sum of
     * squares: variance = m2 / finite count has no cancellation. 0 when none. */
    double mean, m2;
    double sum_abs;      /* sum |x| over the finite values */
    double sum_sq;       /* sum x^2 over the finite values (norms; not for variance) */
} gk_stats;

/** Statistics of n fp32 values. Deterministic for a given input: the
 *  element-to-lane assignment, the blocks and the combination order depend only
 *  on n. */
void gk_stats_f32(const float *x, size_t n, gk_stats *out);
/** Same for F16/BF16/F32/F64 input. F16/BF16 give exactly gk_stats_f32 of
 *  the converted values; F64 values are read as doubles (not rounded to fp32).
 *  Returns -1 for an unknown type code, else 0. */
int gk_stats_typed(const void *x, int type, size_t n, gk_stats *out);
/** The statistics of zero elements (min +inf, max -inf, everything else 0). */
void gk_stats_empty(gk_stats *out);
/** Folds b into a: counts and sums added, min/max combined, (mean, m2) merged
 *  with Chan's formula. Combine blocks in a fixed order for reproducible bits. */
void gk_stats_combine(gk_stats *a, const gk_stats *b);

/** Comparison of two equally long fp32 arrays. */
typedef struct gk_diff {
    uint64_t count;        /* elements compared */
    uint64_t differ_count; /* a != b by value; NaN vs NaN counts as equal,
                              +0 vs -0 as equal, NaN vs number as different */
    uint64_t both_finite;  /* elements where both are finite (the moments) */
    uint64_t nan_a, nan_b, inf_a, inf_b;
    double max_abs_diff;   /* over both-finite elements, in double */
    double sum_abs_diff, sum_sq_diff; /* d = (double)a - (double)b */
    double sum_sq_a, sum_sq_b, sum_ab; /* over both-finite elements */
} gk_diff;

void gk_diff_f32(const float *a, const float *b, size_t n, gk_diff *out);
/** Both inputs of the given types (may differ), converted to fp32 in chunks. */
int gk_diff_typed(const void *a, int type_a, const void *b, int type_b, size_t n, gk_diff *out);
void gk_diff_combine(gk_diff *a, const gk_diff *b);

#ifdef __cplusplus
}
#endif
#endif
