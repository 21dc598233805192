/* Statistics and diff kernels.
 *
 * Determinism: element i always lands in lane i % 16 of a 16-lane state, the
 * lanes accumulate in element order (doubles, no contraction), and the lanes
 * are folded in a fixed order at the end. The code uses GCC/Clang vector
 * extensions, whose element-wise semantics do not depend on the target, so
 * every CPU level gives the same bits. F16/BF16 inputs are converted to fp32 in
 * chunks that are multiples of 16 elements (and of the statistics block), so
 * they follow the same path; F64 statistics read doubles directly. */
#include <math.h>
#include "gk_internal.h"

/* The small vector helpers below are always inlined into their caller, so the
 * "64-byte vector argument without avx512f" ABI note does not apply. */
#pragma clang diagnostic ignored "-Wpsabi"

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));

#define GK_LANES 16
#define GK_CHUNK 4096                 /* conversion chunk, multiple of 16 */
#define GK_MAX_VEC_PER_CALL (1u << 26) /* keeps the int32 lane counters safe */

GK_INLINE v16f gk_load16(const void *p) { v16f v; memcpy(&v, p, sizeof v); return v; }
GK_INLINE v8d gk_lo(v16f x) { return __builtin_convertvector(__builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7), v8d); }
GK_INLINE v8d gk_hi(v16f x) { return __builtin_convertvector(__builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15), v8d); }
GK_INLINE v8d gk_absd(v8d x) { return (v8d)((v8l)x & 0x7FFFFFFFFFFFFFFFll); }
GK_INLINE v16f gk_self(v16i m, v16f a, v16f b) { return (v16f)(((v16i)a & m) | ((v16i)b & ~m)); }
GK_INLINE v8d gk_seld(v8l m, v8d a, v8d b) { return (v8d)(((v8l)a & m) | ((v8l)b & ~m)); }
GK_INLINE uint64_t gk_hsum_i(v16i v) {
    uint64_t s = 0;
    for (int l = 0; l < GK_LANES; l++) s += (uint32_t)v[l];
    return s;
}

/* ------------------------------------------------------------------ stats */

/*
 * Moments without cancellation: each of the 16 lanes keeps (n, mean, M2) of its
 * finite values, M2 = sum (x - mean)^2, and blocks of GK_STATS_BLOCK vectors are
 * folded into it with Chan's formula (a block starts at a multiple of
 * GK_STATS_BLOCK vectors from the start of the call). The old sum_sq/n - mean^2
 * lost every digit of a small spread around a large mean (fp32 1000 +- 1e-3 gave
 * std 6.1e-4 instead of 1.0e-3).
 *
 * fp32 blocks take one pass over shifted data: d = x - K with K the lane's mean so
 * far rounded to fp32 (or the block's first finite value), so d is exact in double
 * and M2 = sum d^2 - (sum d)^2 / n cancels only as far as the block mean moved away
 * from K. A non-finite value is replaced by K (d = 0) in fp32, before widening. If
 * some lane still cancels more than 2^23-fold (its first block, or a jump in the
 * data), the block is redone in two passes (mean, then sum (x - mean)^2). fp64
 * blocks always take the two passes. Everything is element-wise double arithmetic
 * plus data-dependent (not level-dependent) decisions, so every CPU level gives
 * the same bits.
 */
#define GK_STATS_BLOCK 128  /* vectors: 2048 elements, 8 KiB of fp32 (16 KiB of fp64), in L1 */
#define GK_STATS_CANCEL 8388608.0 /* 2^23: M2 keeps ~30 of its 53 bits, error < 1e-9 */

typedef struct {
    v8d n_lo, n_hi, m_lo, m_hi, q_lo, q_hi;  /* per lane: finite count, mean, M2 */
    v8d a_lo, a_hi;                          /* sum |x| */
    v16f mn, mx;                             /* fp32 input */
    v8d mnd_lo, mnd_hi, mxd_lo, mxd_hi;      /* fp64 input */
    uint64_t nan, pinf, ninf;
} stats_state;

static void stats_init(stats_state *st) {
    memset(st, 0, sizeof *st);
    for (int l = 0; l < GK_LANES; l++) { st->mn[l] = INFINITY; st->mx[l] = -INFINITY; }
    for (int l = 0; l < 8; l++) {
        st->mnd_lo[l] = INFINITY; st->mnd_hi[l] = INFINITY;
        st->mxd_lo[l] = -INFINITY; st->mxd_hi[l] = -INFINITY;
    }
}

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

GK_INLINE v8l gk_widen_lo(v16i m) { return __builtin_convertvector(__builtin_shufflevector(m, m, 0, 1, 2, 3, 4, 5, 6, 7), v8l); }
GK_INLINE v8l gk_widen_hi(v16i m) { return __builtin_convertvector(__builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15), v8l); }
GK_INLINE v16f gk_join_f(v8d lo, v8d hi) {
    v8f a = __builtin_convertvector(lo, v8f), b = __builtin_convertvector(hi, v8f);
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
GK_INLINE v16i gk_join_i(v8l lo, v8l hi) {
    v8i a = __builtin_convertvector(lo, v8i), b = __builtin_convertvector(hi, v8i);
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
GK_INLINE int gk_any(v8l m) {
    int64_t r = 0;
    for (int l = 0; l < 8; l++) r |= m[l];
    return r != 0;
}

/* Folds (nb, mb, qb) into (n, m, q), lane by lane (Chan et al.). A side with no
 * values leaves the other unchanged; nothing divides by zero. */
GK_INLINE void stats_chan(v8d *n, v8d *m, v8d *q, v8d nb, v8d mb, v8d qb) {
    v8d na = *n, nn = na + nb;
    v8d inv = ((v8d){0} + 1) / gk_seld(nn > 0, nn, (v8d){0} + 1);
    v8d delta = mb - *m;
    *m = *m + delta * (nb * inv);
    /* The cross term only when both sides have values: delta^2 may overflow for
     * huge fp64 values, and inf * 0 would be NaN. */
    v8d cross = (delta * delta) * ((na * nb) * inv);
    *q = (*q + qb) + gk_seld((na > 0) & (nb > 0), cross, (v8d){0});
    *n = nn;
}

/* Sixteen values (fp32, or fp64 when is64) as two halves of doubles with the
 * non-finite ones zeroed, and the finite masks (-1 where finite). */
GK_INLINE void stats_load(const unsigned char *p, int is64, v8d *lo, v8d *hi, v8l *flo, v8l *fhi) {
    if (is64) {
        v8d x0, x1;
        memcpy(&x0, p, 64); memcpy(&x1, p + 64, 64);
        *flo = ((v8l)x0 & 0x7FFFFFFFFFFFFFFFll) < 0x7FF0000000000000ll;
        *fhi = ((v8l)x1 & 0x7FFFFFFFFFFFFFFFll) < 0x7FF0000000000000ll;
        *lo = (v8d)((v8l)x0 & *flo); *hi = (v8d)((v8l)x1 & *fhi);
    } else {
        v16i b = (v16i)gk_load16(p);
        v16i fin = (b & 0x7FFFFFFF) < 0x7F800000;
        v16f xf = (v16f)(b & fin);
        *lo = gk_lo(xf); *hi = gk_hi(xf);
        *flo = gk_widen_lo(fin); *fhi = gk_widen_hi(fin);
    }
}

/* The two-pass moments of one block: block mean per lane, then sum (x - mean)^2. */
GK_INLINE void stats_block_exact(const unsigned char *p, size_t nb, int is64, v8d n_lo, v8d n_hi,
                                 v8d *m_lo, v8d *m_hi, v8d *q_lo, v8d *q_hi) {
    const size_t stride = is64 ? 128 : 64;
    v8d s_lo = {0}, s_hi = {0};
    for (size_t i = 0; i < nb; i++) {
        v8d lo, hi; v8l flo, fhi;
        stats_load(p + i * stride, is64, &lo, &hi, &flo, &fhi);
        s_lo += lo; s_hi += hi;
    }
    v8d one = (v8d){0} + 1;
    *m_lo = s_lo / gk_seld(n_lo > 0, n_lo, one);
    *m_hi = s_hi / gk_seld(n_hi > 0, n_hi, one);
    v8d a_lo = {0}, a_hi = {0};
    for (size_t i = 0; i < nb; i++) {
        v8d lo, hi; v8l flo, fhi;
        stats_load(p + i * stride, is64, &lo, &hi, &flo, &fhi);
        v8d d0 = (v8d)((v8l)(lo - *m_lo) & flo), d1 = (v8d)((v8l)(hi - *m_hi) & fhi);
        a_lo += d0 * d0; a_hi += d1 * d1;
    }
    *q_lo = a_lo; *q_hi = a_hi;
}

/* nvec vectors of 16 fp32 values. */
GK_INLINE void stats_feed_body(stats_state *st, const void *x, size_t nvec) {
    stats_state s = *st;
    v16i cnan = {0}, cpinf = {0}, cninf = {0};
    v16f mn = s.mn, mx = s.mx;
    const v16f pinf = (v16f)(v16i){0} + INFINITY, ninf = (v16f)(v16i){0} - INFINITY;
    const unsigned char *p = (const unsigned char *)x;
    for (size_t i0 = 0; i0 < nvec; i0 += GK_STATS_BLOCK) {
        size_t iend = nvec - i0 < GK_STATS_BLOCK ? nvec : i0 + GK_STATS_BLOCK;
        const unsigned char *bp = p + i0 * 64;
        /* The shift: the lane's mean so far, else the block's first value, else 0. */
        v16i first = (v16i)gk_load16(bp);
        v16i ffin = (first & 0x7FFFFFFF) < 0x7F800000;
        v16f kf = gk_self(gk_join_i(s.n_lo > 0, s.n_hi > 0), gk_join_f(s.m_lo, s.m_hi), (v16f)(first & ffin));
        v8d k_lo = gk_lo(kf), k_hi = gk_hi(kf);
        v16i cnt = {0};
        v8d d_lo = {0}, d_hi = {0}, q_lo = {0}, q_hi = {0};
        for (size_t i = i0; i < iend; i++) {
            v16f v = gk_load16(p + i * 64);
            v16i b = (v16i)v;
            v16i a = b & 0x7FFFFFFF;
            v16i fin = a < 0x7F800000;
            v16i inf = a == 0x7F800000;
            cnan -= a > 0x7F800000;
            cpinf -= inf & (b >= 0);
            cninf -= inf & (b < 0);
            cnt -= fin;
            v16f xmin = gk_self(fin, v, pinf), xmax = gk_self(fin, v, ninf);
            mn = gk_self(xmin < mn, xmin, mn);
            mx = gk_self(xmax > mx, xmax, mx);
            v16f xs = gk_self(fin, v, kf);
            v8d e0 = gk_lo(xs) - k_lo, e1 = gk_hi(xs) - k_hi;  /* exact */
            d_lo += e0; d_hi += e1;
            q_lo += e0 * e0; q_hi += e1 * e1;
            v16f ax = (v16f)(a & fin);
            s.a_lo += gk_lo(ax); s.a_hi += gk_hi(ax);
        }
        v8d n_lo = __builtin_convertvector(gk_widen_lo(cnt), v8d), n_hi = __builtin_convertvector(gk_widen_hi(cnt), v8d);
        v8d one = (v8d){0} + 1;
        v8d i_lo = one / gk_seld(n_lo > 0, n_lo, one), i_hi = one / gk_seld(n_hi > 0, n_hi, one);
        v8d m_lo = k_lo + d_lo * i_lo, m_hi = k_hi + d_hi * i_hi;
        v8d r_lo = q_lo - (d_lo * d_lo) * i_lo, r_hi = q_hi - (d_hi * d_hi) * i_hi;
        /* q > 2^23 * M2 (also catches M2 <= 0 < q): too much cancelled. */
        if (gk_any(q_lo > r_lo * GK_STATS_CANCEL) || gk_any(q_hi > r_hi * GK_STATS_CANCEL))
            stats_block_exact(bp, iend - i0, 0, n_lo, n_hi, &m_lo, &m_hi, &r_lo, &r_hi);
        stats_chan(&s.n_lo, &s.m_lo, &s.q_lo, n_lo, m_lo, r_lo);
        stats_chan(&s.n_hi, &s.m_hi, &s.q_hi, n_hi, m_hi, r_hi);
    }
    s.mn = mn; s.mx = mx;
    s.nan += gk_hsum_i(cnan); s.pinf += gk_hsum_i(cpinf); s.ninf += gk_hsum_i(cninf);
    *st = s;
}

/* nvec vectors of 16 fp64 values (128 bytes each), always two passes per block. */
GK_INLINE void stats_feed64_body(stats_state *st, const void *x, size_t nvec) {
    stats_state s = *st;
    v8l cnan = {0}, cpinf = {0}, cninf = {0};
    const v8d pinf = (v8d){0} + INFINITY, ninf = (v8d){0} - INFINITY;
    const unsigned char *p = (const unsigned char *)x;
    for (size_t i0 = 0; i0 < nvec; i0 += GK_STATS_BLOCK) {
        size_t iend = nvec - i0 < GK_STATS_BLOCK ? nvec : i0 + GK_STATS_BLOCK;
        v8l c_lo = {0}, c_hi = {0};
        for (size_t i = i0; i < iend; i++) {
            const unsigned char *q = p + i * 128;
            v8l x0, x1;
            memcpy(&x0, q, 64); memcpy(&x1, q + 64, 64);
            v8l a0 = x0 & 0x7FFFFFFFFFFFFFFFll, a1 = x1 & 0x7FFFFFFFFFFFFFFFll;
            cnan -= a0 > 0x7FF0000000000000ll; cnan -= a1 > 0x7FF0000000000000ll;
            v8l i0m = a0 == 0x7FF0000000000000ll, i1m = a1 == 0x7FF0000000000000ll;
            cpinf -= i0m & (x0 >= 0); cpinf -= i1m & (x1 >= 0);
            cninf -= i0m & (x0 < 0); cninf -= i1m & (x1 < 0);
            v8d lo, hi; v8l flo, fhi;
            stats_load(q, 1, &lo, &hi, &flo, &fhi);
            c_lo -= flo; c_hi -= fhi;
            s.a_lo += gk_absd(lo); s.a_hi += gk_absd(hi);
            v8d mnl = gk_seld(flo, lo, pinf), mnh = gk_seld(fhi, hi, pinf);
            v8d mxl = gk_seld(flo, lo, ninf), mxh = gk_seld(fhi, hi, ninf);
            s.mnd_lo = gk_seld(mnl < s.mnd_lo, mnl, s.mnd_lo); s.mnd_hi = gk_seld(mnh < s.mnd_hi, mnh, s.mnd_hi);
            s.mxd_lo = gk_seld(mxl > s.mxd_lo, mxl, s.mxd_lo); s.mxd_hi = gk_seld(mxh > s.mxd_hi, mxh, s.mxd_hi);
        }
        v8d n_lo = __builtin_convertvector(c_lo, v8d), n_hi = __builtin_convertvector(c_hi, v8d);
        v8d m_lo, m_hi, r_lo, r_hi;
        stats_block_exact(p + i0 * 128, iend - i0, 1, n_lo, n_hi, &m_lo, &m_hi, &r_lo, &r_hi);
        stats_chan(&s.n_lo, &s.m_lo, &s.q_lo, n_lo, m_lo, r_lo);
        stats_chan(&s.n_hi, &s.m_hi, &s.q_hi, n_hi, m_hi, r_hi);
    }
    for (int l = 0; l < 8; l++) {
        s.nan += (uint64_t)cnan[l]; s.pinf += (uint64_t)cpinf[l]; s.ninf += (uint64_t)cninf[l];
    }
    *st = s;
}
GK_MULTI(stats_feed, (stats_state *st, const void *x, size_t nvec), (st, x, nvec))
GK_MULTI(stats_feed64, (stats_state *st, const void *x, size_t nvec), (st, x, nvec))

/* Whole blocks per call (GK_MAX_VEC_PER_CALL is a multiple of GK_STATS_BLOCK), so
 * splitting a long input into calls does not move block boundaries. */
static void stats_feed(stats_state *st, const void *x, size_t nvec, int is64) {
    const unsigned char *p = (const unsigned char *)x;
    while (nvec) {
        size_t k = nvec < GK_MAX_VEC_PER_CALL ? nvec : GK_MAX_VEC_PER_CALL;
        if (is64) { GK_DISPATCH(stats_feed64, (st, p, k)); } else { GK_DISPATCH(stats_feed, (st, p, k)); }
        p += k * (is64 ? 128 : 64); nvec -= k;
    }
}

/* The scalar form of stats_chan, for folding lanes and whole results. */
static void stats_chan1(double *n, double *m, double *q, double nb, double mb, double qb) {
    double na = *n;
    if (nb == 0) return;
    if (na == 0) { *n = nb; *m = mb; *q = qb; return; }
    double nn = na + nb, delta = mb - *m;
    *m = *m + delta * (nb / nn);
    *q = (*q + qb) + (delta * delta) * ((na * nb) / nn);
    *n = nn;
}

/* Feeds the last n % 16 values padded with NaN, then folds the lanes 0..15. */
static void stats_finish(stats_state *st, const void *tail, size_t rem, int is64, size_t n, gk_stats *out) {
    if (rem) {
        if (is64) {
            double buf[GK_LANES];
            for (int l = 0; l < GK_LANES; l++) buf[l] = (size_t)l < rem ? ((const double *)tail)[l] : NAN;
            stats_feed(st, buf, 1, 1);
        } else {
            float buf[GK_LANES];
            for (int l = 0; l < GK_LANES; l++) buf[l] = (size_t)l < rem ? ((const float *)tail)[l] : NAN;
            stats_feed(st, buf, 1, 0);
        }
        st->nan -= GK_LANES - rem;
    }
    double cnt = 0, mean = 0, m2 = 0, a = 0, mn = INFINITY, mx = -INFINITY;
    for (int l = 0; l < GK_LANES; l++) {
        int h = l >= 8, k = l & 7;
        stats_chan1(&cnt, &mean, &m2, h ? st->n_hi[k] : st->n_lo[k], h ? st->m_hi[k] : st->m_lo[k],
                    h ? st->q_hi[k] : st->q_lo[k]);
        a += h ? st->a_hi[k] : st->a_lo[k];
        double lmn = h ? st->mnd_hi[k] : st->mnd_lo[k], lmx = h ? st->mxd_hi[k] : st->mxd_lo[k];
        if (st->mn[l] < lmn) lmn = st->mn[l];
        if (st->mx[l] > lmx) lmx = st->mx[l];
        if (lmn < mn) mn = lmn;
        if (lmx > mx) mx = lmx;
    }
    out->count = n;
    out->nan_count = st->nan;
    out->pinf_count = st->pinf;
    out->ninf_count = st->ninf;
    out->min = mn; out->max = mx;
    out->mean = mean; out->m2 = m2;
    out->sum_abs = a;
    out->sum_sq = m2 + cnt * (mean * mean);
}

void gk_stats_f32(const float *x, size_t n, gk_stats *out) {
    stats_state st;
    stats_init(&st);
    stats_feed(&st, x, n / GK_LANES, 0);
    float tail[GK_LANES];
    size_t rem = n % GK_LANES;
    if (rem) memcpy(tail, (const unsigned char *)x + (n - rem) * 4, rem * 4);
    stats_finish(&st, tail, rem, 0, n, out);
}

static size_t gk_tsize(int t) {
    return t == GK_F16 || t == GK_BF16 ? 2 : t == GK_F32 ? 4 : t == GK_F64 ? 8 : 0;
}

static void gk_to_f32(const void *src, int type, float *dst, size_t n) {
    switch (type) {
    case GK_F16: gk_f16_to_f32(src, dst, n); break;
    case GK_BF16: gk_bf16_to_f32(src, dst, n); break;
    case GK_F32: memcpy(dst, src, n * 4); break;
    case GK_F64: gk_f64_to_f32(src, dst, n); break;
    }
}

int gk_stats_typed(const void *x, int type, size_t n, gk_stats *out) {
    size_t es = gk_tsize(type);
    if (!es) return -1;
    if (type == GK_F32) { gk_stats_f32((const float *)x, n, out); return 0; }
    stats_state st;
    stats_init(&st);
    if (type == GK_F64) {
        /* Read as double directly: converting to fp32 would erase a spread below 6e-8 of the mean. */
        stats_feed(&st, x, n / GK_LANES, 1);
        double tail[GK_LANES];
        size_t rem = n % GK_LANES;
        if (rem) memcpy(tail, (const unsigned char *)x + (n - rem) * 8, rem * 8);
        stats_finish(&st, tail, rem, 1, n, out);
        return 0;
    }
    float buf[GK_CHUNK];
    const unsigned char *p = (const unsigned char *)x;
    size_t i = 0;
    for (; i + GK_CHUNK <= n; i += GK_CHUNK) {
        gk_to_f32(p + i * es, type, buf, GK_CHUNK);
        stats_feed(&st, buf, GK_CHUNK / GK_LANES, 0);
    }
    size_t left = n - i;
    gk_to_f32(p + i * es, type, buf, left);
    stats_feed(&st, buf, left / GK_LANES, 0);
    stats_finish(&st, buf + (left - left % GK_LANES), left % GK_LANES, 0, n, out);
    return 0;
}

void gk_stats_empty(gk_stats *out) {
    memset(out, 0, sizeof *out);
    out->min = INFINITY;
    out->max = -INFINITY;
}

void gk_stats_combine(gk_stats *a, const gk_stats *b) {
    double na = (double)(a->count - a->nan_count - a->pinf_count - a->ninf_count);
    double nb = (double)(b->count - b->nan_count - b->pinf_count - b->ninf_count);
    stats_chan1(&na, &a->mean, &a->m2, nb, b->mean, b->m2);
    a->count += b->count;
    a->nan_count += b->nan_count;
    a->pinf_count += b->pinf_count;
    a->ninf_count += b->ninf_count;
    if (b->min < a->min) a->min = b->min;
    if (b->max > a->max) a->max = b->max;
    a->sum_abs += b->sum_abs; a->sum_sq += b->sum_sq;
}

/* ------------------------------------------------------------------- diff */

typedef struct {
    v8d mx_lo, mx_hi, sad_lo, sad_hi, sqd_lo, sqd_hi;
    v8d sa_lo, sa_hi, sb_lo, sb_hi, sab_lo, sab_hi;
    uint64_t differ, both, nan_a, nan_b, inf_a, inf_b;
} diff_state;

typedef _Float16 v16h __attribute__((vector_size(32)));

/* Sixteen f16 values widened to f32 in registers (vcvtph2ps where the target has
 * F16C). NaN payloads may be quieted, which the diff never looks at: it only tells
 * NaN from non-NaN. Every other value converts exactly, so the fused F16 diff gives
 * the same bits as converting to f32 first. */
GK_INLINE v16f gk_load16h(const void *p) { v16h h; memcpy(&h, p, sizeof h); return __builtin_convertvector(h, v16f); }

/* Vectors per fp32 partial sum in the fast diff (see diff_feed_any). */
#define GK_DIFF_BLOCK 16

/*
 * half != 0: the inputs are f16 (32 bytes per vector), widened on the fly.
 * wide != 0: every difference and product in double, as the statistics kernel does.
 * wide == 0 (the fast path): differences and products in fp32 — the issue asks for
 * tensors compared in fp32 — summed per lane in fp32 over blocks of GK_DIFF_BLOCK
 * vectors (a block always starts at a multiple of GK_DIFF_BLOCK vectors from the start
 * of the call), each block's partial sums then added to the double accumulators in
 * order. That is three times fewer vector operations than the wide path. A block whose
 * fp32 products overflow makes the caller redo the whole call wide (diff_feed).
 */
GK_INLINE void diff_feed_any(diff_state *st, const void *xa, const void *xb, size_t nvec, int half, int wide) {
    diff_state s = *st;
    v16i cdiff = {0}, cboth = {0}, cna = {0}, cnb = {0}, cia = {0}, cib = {0};
    v16f mxf = {0};
    const unsigned char *pa = (const unsigned char *)xa, *pb = (const unsigned char *)xb;
    for (size_t i0 = 0; i0 < nvec; i0 += GK_DIFF_BLOCK) {
        size_t iend = nvec - i0 < GK_DIFF_BLOCK ? nvec : i0 + GK_DIFF_BLOCK;
        v16f pad = {0}, psq = {0}, pa2 = {0}, pb2 = {0}, pab = {0};
        for (size_t i = i0; i < iend; i++) {
            v16f va = half ? gk_load16h(pa + i * 32) : gk_load16(pa + i * 64);
            v16f vb = half ? gk_load16h(pb + i * 32) : gk_load16(pb + i * 64);
            v16i ba = (v16i)va, bb = (v16i)vb;
            v16i aa = ba & 0x7FFFFFFF, ab = bb & 0x7FFFFFFF;
            v16i na = aa > 0x7F800000, nb = ab > 0x7F800000;
            v16i both = (aa < 0x7F800000) & (ab < 0x7F800000);
            cna -= na; cnb -= nb;
            cia -= aa == 0x7F800000; cib -= ab == 0x7F800000;
            cdiff -= (va != vb) & ~(na & nb);
            cboth -= both;
            v16f fa = (v16f)(ba & both), fb = (v16f)(bb & both);
            if (wide) {
                v8d da = gk_lo(fa), db = gk_lo(fb), d = da - db, ad = gk_absd(d);
                s.mx_lo = gk_seld(ad > s.mx_lo, ad, s.mx_lo);
                s.sad_lo += ad; s.sqd_lo += d * d;
                s.sa_lo += da * da; s.sb_lo += db * db; s.sab_lo += da * db;
                da = gk_hi(fa); db = gk_hi(fb); d = da - db; ad = gk_absd(d);
                s.mx_hi = gk_seld(ad > s.mx_hi, ad, s.mx_hi);
                s.sad_hi += ad; s.sqd_hi += d * d;
                s.sa_hi += da * da; s.sb_hi += db * db; s.sab_hi += da * db;
            } else {
                v16f d = fa - fb, ad = (v16f)((v16i)d & 0x7FFFFFFF);
                mxf = gk_self(ad > mxf, ad, mxf);
                pad += ad; psq += d * d;
                pa2 += fa * fa; pb2 += fb * fb; pab += fa * fb;
            }
        }
        if (!wide) {
            s.sad_lo += gk_lo(pad); s.sad_hi += gk_hi(pad);
            s.sqd_lo += gk_lo(psq); s.sqd_hi += gk_hi(psq);
            s.sa_lo += gk_lo(pa2); s.sa_hi += gk_hi(pa2);
            s.sb_lo += gk_lo(pb2); s.sb_hi += gk_hi(pb2);
            s.sab_lo += gk_lo(pab); s.sab_hi += gk_hi(pab);
        }
    }
    if (!wide) {
        v8d ml = gk_lo(mxf), mh = gk_hi(mxf);
        s.mx_lo = gk_seld(ml > s.mx_lo, ml, s.mx_lo);
        s.mx_hi = gk_seld(mh > s.mx_hi, mh, s.mx_hi);
    }
    s.differ += gk_hsum_i(cdiff); s.both += gk_hsum_i(cboth);
    s.nan_a += gk_hsum_i(cna); s.nan_b += gk_hsum_i(cnb);
    s.inf_a += gk_hsum_i(cia); s.inf_b += gk_hsum_i(cib);
    *st = s;
}
GK_INLINE void diff_fast_body(diff_state *st, const void *a, const void *b, size_t nvec) { diff_feed_any(st, a, b, nvec, 0, 0); }
GK_INLINE void diff_fast_h_body(diff_state *st, const void *a, const void *b, size_t nvec) { diff_feed_any(st, a, b, nvec, 1, 0); }
GK_INLINE void diff_wide_body(diff_state *st, const void *a, const void *b, size_t nvec) { diff_feed_any(st, a, b, nvec, 0, 1); }
GK_INLINE void diff_wide_h_body(diff_state *st, const void *a, const void *b, size_t nvec) { diff_feed_any(st, a, b, nvec, 1, 1); }
GK_MULTI(diff_fast, (diff_state *st, const void *a, const void *b, size_t nvec), (st, a, b, nvec))
GK_MULTI(diff_fast_h, (diff_state *st, const void *a, const void *b, size_t nvec), (st, a, b, nvec))
GK_MULTI(diff_wide, (diff_state *st, const void *a, const void *b, size_t nvec), (st, a, b, nvec))
GK_MULTI(diff_wide_h, (diff_state *st, const void *a, const void *b, size_t nvec), (st, a, b, nvec))

GK_INLINE int diff_sums_finite(const diff_state *s) {
    for (int l = 0; l < 8; l++) {
        if (!isfinite(s->sad_lo[l]) || !isfinite(s->sad_hi[l]) || !isfinite(s->sqd_lo[l]) || !isfinite(s->sqd_hi[l]) ||
            !isfinite(s->sa_lo[l]) || !isfinite(s->sa_hi[l]) || !isfinite(s->sb_lo[l]) || !isfinite(s->sb_hi[l]) ||
            !isfinite(s->sab_lo[l]) || !isfinite(s->sab_hi[l]))
            return 0;
    }
    return 1;
}

/* One call of the fast path; if an fp32 product overflowed (finite inputs beyond
 * ~1.8e19), the call is redone in double from the saved state. */
static void diff_call(diff_state *st, const void *a, const void *b, size_t k, int half) {
    diff_state saved = *st;
    if (half) { GK_DISPATCH(diff_fast_h, (st, a, b, k)); } else { GK_DISPATCH(diff_fast, (st, a, b, k)); }
    if (!diff_sums_finite(st) && diff_sums_finite(&saved)) {
        *st = saved;
        if (half) { GK_DISPATCH(diff_wide_h, (st, a, b, k)); } else { GK_DISPATCH(diff_wide, (st, a, b, k)); }
    }
}

/* Both inputs f16: no intermediate f32 buffers (a third less memory traffic). */
static void diff_feed_f16(diff_state *st, const void *a, const void *b, size_t nvec) {
    const unsigned char *pa = (const unsigned char *)a, *pb = (const unsigned char *)b;
    while (nvec) {
        size_t k = nvec < GK_MAX_VEC_PER_CALL ? nvec : GK_MAX_VEC_PER_CALL;
        diff_call(st, pa, pb, k, 1);
        pa += k * 32; pb += k * 32; nvec -= k;
    }
}

static void diff_feed(diff_state *st, const void *a, const void *b, size_t nvec) {
    const unsigned char *pa = (const unsigned char *)a, *pb = (const unsigned char *)b;
    while (nvec) {
        size_t k = nvec < GK_MAX_VEC_PER_CALL ? nvec : GK_MAX_VEC_PER_CALL;
        diff_call(st, pa, pb, k, 0);
        pa += k * 64; pb += k * 64; nvec -= k;
    }
}

static void diff_finish(diff_state *st, const float *ta, const float *tb, size_t rem, size_t n, gk_diff *out) {
    if (rem) {
        /* Pad with NaN on both sides: equal, not finite, counted and removed. */
        float ba[GK_LANES], bb[GK_LANES];
        for (int l = 0; l < GK_LANES; l++) {
            ba[l] = (size_t)l < rem ? ta[l] : NAN;
            bb[l] = (size_t)l < rem ? tb[l] : NAN;
        }
        diff_feed(st, ba, bb, 1);
        st->nan_a -= GK_LANES - rem;
        st->nan_b -= GK_LANES - rem;
    }
    double mx = 0, sad = 0, sqd = 0, sa = 0, sb = 0, sab = 0;
    for (int l = 0; l < 8; l++) {
        if (st->mx_lo[l] > mx) mx = st->mx_lo[l];
        sad += st->sad_lo[l]; sqd += st->sqd_lo[l];
        sa += st->sa_lo[l]; sb += st->sb_lo[l]; sab += st->sab_lo[l];
    }
    for (int l = 0; l < 8; l++) {
        if (st->mx_hi[l] > mx) mx = st->mx_hi[l];
        sad += st->sad_hi[l]; sqd += st->sqd_hi[l];
        sa += st->sa_hi[l]; sb += st->sb_hi[l]; sab += st->sab_hi[l];
    }
    out->count = n;
    out->differ_count = st->differ;
    out->both_finite = st->both;
    out->nan_a = st->nan_a; out->nan_b = st->nan_b;
    out->inf_a = st->inf_a; out->inf_b = st->inf_b;
    out->max_abs_diff = mx;
    out->sum_abs_diff = sad; out->sum_sq_diff = sqd;
    out->sum_sq_a = sa; out->sum_sq_b = sb; out->sum_ab = sab;
}

void gk_diff_f32(const float *a, const float *b, size_t n, gk_diff *out) {
    diff_state st;
    memset(&st, 0, sizeof st);
    diff_feed(&st, a, b, n / GK_LANES);
    size_t rem = n % GK_LANES;
    float ta[GK_LANES], tb[GK_LANES];
    if (rem) {
        memcpy(ta, (const unsigned char *)a + (n - rem) * 4, rem * 4);
        memcpy(tb, (const unsigned char *)b + (n - rem) * 4, rem * 4);
    }
    diff_finish(&st, ta, tb, rem, n, out);
}

int gk_diff_typed(const void *a, int type_a, const void *b, int type_b, size_t n, gk_diff *out) {
    size_t ea = gk_tsize(type_a), eb = gk_tsize(type_b);
    if (!ea || !eb) return -1;
    if (type_a == GK_F32 && type_b == GK_F32) { gk_diff_f32((const float *)a, (const float *)b, n, out); return 0; }
    diff_state st;
    memset(&st, 0, sizeof st);
    if (type_a == GK_F16 && type_b == GK_F16) {
        size_t full = n / GK_LANES, rem = n % GK_LANES;
        diff_feed_f16(&st, a, b, full);
        float ta[GK_LANES], tb[GK_LANES];
        gk_to_f32((const unsigned char *)a + full * GK_LANES * 2, GK_F16, ta, rem);
        gk_to_f32((const unsigned char *)b + full * GK_LANES * 2, GK_F16, tb, rem);
        diff_finish(&st, ta, tb, rem, n, out);
        return 0;
    }
    float bufa[GK_CHUNK], bufb[GK_CHUNK];
    const unsigned char *pa = (const unsigned char *)a, *pb = (const unsigned char *)b;
    size_t i = 0;
    for (; i + GK_CHUNK <= n; i += GK_CHUNK) {
        gk_to_f32(pa + i * ea, type_a, bufa, GK_CHUNK);
        gk_to_f32(pb + i * eb, type_b, bufb, GK_CHUNK);
        diff_feed(&st, bufa, bufb, GK_CHUNK / GK_LANES);
    }
    size_t left = n - i;
    gk_to_f32(pa + i * ea, type_a, bufa, left);
    gk_to_f32(pb + i * eb, type_b, bufb, left);
    diff_feed(&st, bufa, bufb, left / GK_LANES);
    size_t off = left - left % GK_LANES;
    diff_finish(&st, bufa + off, bufb + off, left % GK_LANES, n, out);
    return 0;
}

void gk_diff_combine(gk_diff *a, const gk_diff *b) {
    a->count += b->count;
    a->differ_count += b->differ_count;
    a->both_finite += b->both_finite;
    a->nan_a += b->nan_a; a->nan_b += b->nan_b;
    a->inf_a += b->inf_a; a->inf_b += b->inf_b;
    if (b->max_abs_diff > a->max_abs_diff) a->max_abs_diff = b->max_abs_diff;
    a->sum_abs_diff += b->sum_abs_diff; a->sum_sq_diff += b->sum_sq_diff;
    a->sum_sq_a += b->sum_sq_a; a->sum_sq_b += b->sum_sq_b; a->sum_ab += b->sum_ab;
}
