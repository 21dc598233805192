/* The fused LoRA merge GEMM: acc += (ratio * (U @ D)) * scale, fp32.
 *
 * Every element of M = U @ D is one FMA chain over k = 0..r-1 in order,
 * starting from +0.0f, in every variant: vfmadd (AVX2/AVX-512) and C fmaf
 * (portable) are both a single correctly rounded a*b+c, so all variants and
 * all blockings give identical bits. The epilogue rounds t = M * ratio,
 * t = t * scale and acc + t separately (no contraction, see gk_internal.h).
 *
 * Blocking: the columns are cut into panels whose D slice (r x NC floats)
 * fits in ~256 KB (L2); inside a panel the rows are walked in register tiles of
 * MR rows x NB columns whose accumulators stay in registers for the whole
 * k loop (AVX-512: 4 x 64 = 16 zmm; AVX2: 6 x 16 = 12 ymm). acc is read and
 * written once per element. */
#include <math.h>
#include "gk_internal.h"

static size_t gk_panel_cols(size_t r, size_t nb) {
    /* 256 KB: the D panel stays in L2 and, for ranks <= 32, spans the whole
     * width of SD-sized layers so acc is streamed row by row (measured best
     * of 16 KB .. 4 MB on the dev machine). */
    size_t budget = (256 * 1024) / sizeof(float);
    size_t nc = r ? budget / r : budget;
    nc -= nc % nb;
    if (nc < nb) nc = nb;
    return nc;
}

/* ------------------------------------------------------------- portable */

#define P_MR 4
#define P_NB 16

GK_INLINE void gemm_tile_portable(size_t mr, size_t w, size_t r,
                                  float *acc, size_t lda,
                                  const float *U, size_t ldu,
                                  const float *D, size_t ldd,
                                  float ratio, float scale) {
    float c[P_MR][P_NB];
    for (size_t i = 0; i < P_MR; i++)
        for (size_t j = 0; j < P_NB; j++) c[i][j] = 0.0f;
    for (size_t k = 0; k < r; k++) {
        const gk_f32 *d = (const gk_f32 *)(D + k * ldd);
        for (size_t i = 0; i < mr; i++) {
            float u = ((const gk_f32 *)U)[i * ldu + k];
            for (size_t j = 0; j < w; j++) c[i][j] = fmaf(u, d[j], c[i][j]);
        }
    }
    for (size_t i = 0; i < mr; i++) {
        gk_f32 *a = (gk_f32 *)(acc + i * lda);
        for (size_t j = 0; j < w; j++) {
            float t = c[i][j] * ratio;
            t = t * scale;
            a[j] = a[j] + t;
        }
    }
}

static void gemm_l0(size_t m, size_t n, size_t r, float *acc, size_t lda,
                    const float *U, size_t ldu, const float *D, size_t ldd,
                    float ratio, float scale) {
    size_t nc = gk_panel_cols(r, P_NB);
    for (size_t jc = 0; jc < n; jc += nc) {
        size_t je = jc + nc < n ? jc + nc : n;
        for (size_t i = 0; i < m; i += P_MR) {
            size_t mr = m - i < P_MR ? m - i : P_MR;
            for (size_t j = jc; j < je; j += P_NB) {
                size_t w = je - j < P_NB ? je - j : P_NB;
                gemm_tile_portable(mr, w, r, acc + i * lda + j, lda, U + i * ldu, ldu,
                                   D + j, ldd, ratio, scale);
            }
        }
    }
}

#if GK_X86
/* ----------------------------------------------------------------- AVX2 */

#define A2_MR 6
#define A2_NV 2          /* ymm vectors per row */
#define A2_NB (8 * A2_NV)

/* MR rows (compile-time after inlining) x NV vectors; the last vector uses
 * `mask` (all ones when full). Masked-off lanes are never touched. */
GK_TGT_AVX2 GK_INLINE void tile_avx2(const int MR, const int NV, __m256i mask, size_t r,
                                     float *acc, size_t lda, const float *U, size_t ldu,
                                     const float *D, size_t ldd, float ratio, float scale) {
    __m256 c[A2_MR][A2_NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) c[i][v] = _mm256_setzero_ps();
    for (size_t k = 0; k < r; k++) {
        const float *dk = D + k * ldd;
        __m256 d[A2_NV];
        for (int v = 0; v < NV; v++)
            d[v] = v == NV - 1 ? _mm256_maskload_ps(dk + 8 * v, mask) : _mm256_loadu_ps(dk + 8 * v);
        for (int i = 0; i < MR; i++) {
            __m256 u = _mm256_broadcast_ss(U + i * ldu + k);
            for (int v = 0; v < NV; v++) c[i][v] = _mm256_fmadd_ps(u, d[v], c[i][v]);
        }
    }
    __m256 vr = _mm256_set1_ps(ratio), vs = _mm256_set1_ps(scale);
    for (int i = 0; i < MR; i++) {
        float *a = acc + i * lda;
        for (int v = 0; v < NV; v++) {
            __m256 t = _mm256_mul_ps(c[i][v], vr);
            t = _mm256_mul_ps(t, vs);
            if (v == NV - 1) {
                __m256 x = _mm256_maskload_ps(a + 8 * v, mask);
                _mm256_maskstore_ps(a + 8 * v, mask, _mm256_add_ps(x, t));
            } else {
                _mm256_storeu_ps(a + 8 * v, _mm256_add_ps(_mm256_loadu_ps(a + 8 * v), t));
            }
        }
    }
}

#define A2_CASE_NV(MRC) \
    switch (nv) { \
    case 1: tile_avx2(MRC, 1, mask, r, a, lda, u, ldu, d, ldd, ratio, scale); break; \
    default: tile_avx2(MRC, 2, mask, r, a, lda, u, ldu, d, ldd, ratio, scale); break; \
    }

GK_TGT_AVX2 static void gemm_l1(size_t m, size_t n, size_t r, float *acc, size_t lda,
                                const float *U, size_t ldu, const float *D, size_t ldd,
                                float ratio, float scale) {
    size_t nc = gk_panel_cols(r, A2_NB);
    for (size_t jc = 0; jc < n; jc += nc) {
        size_t je = jc + nc < n ? jc + nc : n;
        for (size_t i = 0; i < m; i += A2_MR) {
            size_t mr = m - i < A2_MR ? m - i : A2_MR;
            for (size_t j = jc; j < je; j += A2_NB) {
                size_t w = je - j < A2_NB ? je - j : A2_NB;
                int nv = (int)((w + 7) / 8);
                int rem = (int)(w - 8 * (size_t)(nv - 1)); /* 1..8 lanes in the last vector */
                __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem),
                                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                float *a = acc + i * lda + j;
                const float *u = U + i * ldu, *d = D + j;
                switch (mr) {
                case 1: A2_CASE_NV(1) break;
                case 2: A2_CASE_NV(2) break;
                case 3: A2_CASE_NV(3) break;
                case 4: A2_CASE_NV(4) break;
                case 5: A2_CASE_NV(5) break;
                default: A2_CASE_NV(6) break;
                }
            }
        }
    }
}

/* -------------------------------------------------------------- AVX-512 */

#define A5_MR 4
#define A5_NV 4
#define A5_NB (16 * A5_NV)

GK_TGT_AVX512 GK_INLINE void tile_avx512(const int MR, const int NV, __mmask16 mask, size_t r,
                                         float *acc, size_t lda, const float *U, size_t ldu,
                                         const float *D, size_t ldd, float ratio, float scale) {
    __m512 c[A5_MR][A5_NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) c[i][v] = _mm512_setzero_ps();
    for (size_t k = 0; k < r; k++) {
        const float *dk = D + k * ldd;
        __m512 d[A5_NV];
        for (int v = 0; v < NV; v++)
            d[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(mask, dk + 16 * v) : _mm512_loadu_ps(dk + 16 * v);
        for (int i = 0; i < MR; i++) {
            __m512 u = _mm512_set1_ps(U[i * ldu + k]);
            for (int v = 0; v < NV; v++) c[i][v] = _mm512_fmadd_ps(u, d[v], c[i][v]);
        }
    }
    __m512 vr = _mm512_set1_ps(ratio), vs = _mm512_set1_ps(scale);
    for (int i = 0; i < MR; i++) {
        float *a = acc + i * lda;
        for (int v = 0; v < NV; v++) {
            __m512 t = _mm512_mul_ps(c[i][v], vr);
            t = _mm512_mul_ps(t, vs);
            if (v == NV - 1) {
                __m512 x = _mm512_maskz_loadu_ps(mask, a + 16 * v);
                _mm512_mask_storeu_ps(a + 16 * v, mask, _mm512_add_ps(x, t));
            } else {
                _mm512_storeu_ps(a + 16 * v, _mm512_add_ps(_mm512_loadu_ps(a + 16 * v), t));
            }
        }
    }
}

#define A5_CASE_NV(MRC) \
    switch (nv) { \
    case 1: tile_avx512(MRC, 1, mask, r, a, lda, u, ldu, d, ldd, ratio, scale); break; \
    case 2: tile_avx512(MRC, 2, mask, r, a, lda, u, ldu, d, ldd, ratio, scale); break; \
    case 3: tile_avx512(MRC, 3, mask, r, a, lda, u, ldu, d, ldd, ratio, scale); break; \
    default: tile_avx512(MRC, 4, mask, r, a, lda, u, ldu, d, ldd, ratio, scale); break; \
    }

GK_TGT_AVX512 static void gemm_l2(size_t m, size_t n, size_t r, float *acc, size_t lda,
                                  const float *U, size_t ldu, const float *D, size_t ldd,
                                  float ratio, float scale) {
    size_t nc = gk_panel_cols(r, A5_NB);
    for (size_t jc = 0; jc < n; jc += nc) {
        size_t je = jc + nc < n ? jc + nc : n;
        for (size_t i = 0; i < m; i += A5_MR) {
            size_t mr = m - i < A5_MR ? m - i : A5_MR;
            for (size_t j = jc; j < je; j += A5_NB) {
                size_t w = je - j < A5_NB ? je - j : A5_NB;
                int nv = (int)((w + 15) / 16);
                int rem = (int)(w - 16 * (size_t)(nv - 1)); /* 1..16 */
                __mmask16 mask = (__mmask16)(0xFFFFu >> (16 - rem));
                float *a = acc + i * lda + j;
                const float *u = U + i * ldu, *d = D + j;
                switch (mr) {
                case 1: A5_CASE_NV(1) break;
                case 2: A5_CASE_NV(2) break;
                case 3: A5_CASE_NV(3) break;
                default: A5_CASE_NV(4) break;
                }
            }
        }
    }
}
#endif

void gk_lora_gemm_f32(size_t m, size_t n, size_t r, float *acc, size_t lda,
                      const float *U, size_t ldu, const float *D, size_t ldd,
                      float ratio, float scale) {
    if (m == 0 || n == 0) return;
#if GK_X86
    switch (gk__level()) {
    case 2: gemm_l2(m, n, r, acc, lda, U, ldu, D, ldd, ratio, scale); return;
    case 1: gemm_l1(m, n, r, acc, lda, U, ldu, D, ldd, ratio, scale); return;
    default: break;
    }
#endif
    gemm_l0(m, n, r, acc, lda, U, ldu, D, ldd, ratio, scale);
}

/* ------------------------------------------------- LoHa: two products, fused
 *
 * acc += ((U1 @ D1) * (U2 @ D2)) * coef, each product one FMA chain per element
 * in k order from +0.0f (fmaf: a single rounding, the same on every level), so
 * results do not depend on blocking or level. Both products of a tile stay in
 * registers; nothing is materialised. */
#define H_MR 4
#define H_NB 32

/* One tile of mr <= H_MR rows and w <= H_NB columns; inlined with constant bounds for
 * full tiles (see hadamard_tile), so that clang keeps the accumulators in registers. */
GK_INLINE void hadamard_tile_n(size_t mr, size_t w, size_t r1, size_t r2, float *acc, size_t lda,
                               const float *U1, size_t ldu1, const float *D1, size_t ldd1,
                               const float *U2, size_t ldu2, const float *D2, size_t ldd2, float coef) {
    float c1[H_MR][H_NB], c2[H_MR][H_NB];
    for (size_t i = 0; i < H_MR; i++)
        for (size_t j = 0; j < H_NB; j++) { c1[i][j] = 0.0f; c2[i][j] = 0.0f; }
    for (size_t k = 0; k < r1; k++) {
        const float *d = D1 + k * ldd1;
        for (size_t i = 0; i < mr; i++) {
            float u = U1[i * ldu1 + k];
            for (size_t j = 0; j < w; j++) c1[i][j] = fmaf(u, d[j], c1[i][j]);
        }
    }
    for (size_t k = 0; k < r2; k++) {
        const float *d = D2 + k * ldd2;
        for (size_t i = 0; i < mr; i++) {
            float u = U2[i * ldu2 + k];
            for (size_t j = 0; j < w; j++) c2[i][j] = fmaf(u, d[j], c2[i][j]);
        }
    }
    for (size_t i = 0; i < mr; i++) {
        float *a = acc + i * lda;
        for (size_t j = 0; j < w; j++) {
            float t = c1[i][j] * c2[i][j];
            t = t * coef;
            a[j] = a[j] + t;
        }
    }
}

GK_INLINE void hadamard_tile(size_t mr, size_t w, size_t r1, size_t r2, float *acc, size_t lda,
                             const float *U1, size_t ldu1, const float *D1, size_t ldd1,
                             const float *U2, size_t ldu2, const float *D2, size_t ldd2, float coef) {
    if (mr == H_MR && w == H_NB)
        hadamard_tile_n(H_MR, H_NB, r1, r2, acc, lda, U1, ldu1, D1, ldd1, U2, ldu2, D2, ldd2, coef);
    else
        hadamard_tile_n(mr, w, r1, r2, acc, lda, U1, ldu1, D1, ldd1, U2, ldu2, D2, ldd2, coef);
}

GK_INLINE void hadamard_gemm_body(size_t m, size_t n, size_t r1, size_t r2, float *acc, size_t lda,
                                  const float *U1, size_t ldu1, const float *D1, size_t ldd1,
                                  const float *U2, size_t ldu2, const float *D2, size_t ldd2, float coef) {
    size_t nc = gk_panel_cols(r1 + r2, H_NB);
    for (size_t jc = 0; jc < n; jc += nc) {
        size_t je = jc + nc < n ? jc + nc : n;
        for (size_t i = 0; i < m; i += H_MR) {
            size_t mr = m - i < H_MR ? m - i : H_MR;
            for (size_t j = jc; j < je; j += H_NB) {
                size_t w = je - j < H_NB ? je - j : H_NB;
                hadamard_tile(mr, w, r1, r2, acc + i * lda + j, lda, U1 + i * ldu1, ldu1, D1 + j, ldd1,
                              U2 + i * ldu2, ldu2, D2 + j, ldd2, coef);
            }
        }
    }
}

GK_MULTI(hadamard_gemm,
         (size_t m, size_t n, size_t r1, size_t r2, float *acc, size_t lda, const float *U1, size_t ldu1,
          const float *D1, size_t ldd1, const float *U2, size_t ldu2, const float *D2, size_t ldd2, float coef),
         (m, n, r1, r2, acc, lda, U1, ldu1, D1, ldd1, U2, ldu2, D2, ldd2, coef))

void gk_hadamard_gemm_f32(size_t m, size_t n, size_t r1, size_t r2, float *acc, size_t lda,
                          const float *U1, size_t ldu1, const float *D1, size_t ldd1,
                          const float *U2, size_t ldu2, const float *D2, size_t ldd2, float coef) {
    if (m == 0 || n == 0) return;
    GK_DISPATCH(hadamard_gemm, (m, n, r1, r2, acc, lda, U1, ldu1, D1, ldd1, U2, ldu2, D2, ldd2, coef));
}

/* ------------------------------------------------------ sum of squares (DoRA)
 * Sum of x[i]^2 in double with 8 interleaved partial sums (lane i % 8), combined
 * pairwise at the end: a fixed order for a given n, whatever the level. */
GK_INLINE double sumsq_acc(const float *x, size_t n) {
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t l = 0; l < 8; l++) { double v = (double)x[i + l]; s[l] += v * v; }
    for (size_t l = 0; i < n; i++, l++) { double v = (double)x[i]; s[l] += v * v; }
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

GK_INLINE void sumsq_body(const float *x, size_t n, double *out) { *out = sumsq_acc(x, n); }

GK_MULTI(sumsq, (const float *x, size_t n, double *out), (x, n, out))

double gk_sumsq_f32(const float *x, size_t n) {
    double out = 0;
    GK_DISPATCH(sumsq, (x, n, &out));
    return out;
}
