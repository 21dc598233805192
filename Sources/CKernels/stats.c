/* Statistics and diff kernels.
 *
 * Determinism: element i always lands in lane i % 16 of a 16-lane state, the
 * lanes accumulate in element order (doubles, no contraction), and the lanes
 * are folded in a fixed order at the end. The code uses GCC/Clang vector
 * extensions, whose element-wise semantics do not depend on the target, so
 * every CPU level gives the same bits. Typed inputs are converted to fp32 in
 * chunks that are multiples of 16 elements, so they follow the same path. */
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

typedef struct {
    v8d s_lo, s_hi, q_lo, q_hi, a_lo, a_hi;
    v16f mn, mx;
    uint64_t nan, pinf, ninf;
} stats_state;

static void stats_init(stats_state *st) {
    memset(st, 0, sizeof *st);
    for (int l = 0; l < GK_LANES; l++) { st->mn[l] = INFINITY; st->mx[l] = -INFINITY; }
}

/* nvec * 16 fp32 values. */
GK_INLINE void stats_feed_body(stats_state *st, const void *x, size_t nvec) {
    v8d s_lo = st->s_lo, s_hi = st->s_hi, q_lo = st->q_lo, q_hi = st->q_hi;
    v8d a_lo = st->a_lo, a_hi = st->a_hi;
    v16f mn = st->mn, mx = st->mx;
    v16i cnan = {0}, cpinf = {0}, cninf = {0};
    const unsigned char *p = (const unsigned char *)x;
    for (size_t i = 0; i < nvec; i++) {
        v16f v = gk_load16(p + i * 64);
        v16i b = (v16i)v;
        v16i a = b & 0x7FFFFFFF;
        v16i fin = a < 0x7F800000;
        v16i inf = a == 0x7F800000;
        cnan -= a > 0x7F800000;
        cpinf -= inf & (b >= 0);
        cninf -= inf & (b < 0);
        v16f xf = (v16f)(b & fin);
        v16f xmin = gk_self(fin, v, (v16f)(v16i){0} + INFINITY);
        v16f xmax = gk_self(fin, v, (v16f)(v16i){0} - INFINITY);
        mn = gk_self(xmin < mn, xmin, mn);
        mx = gk_self(xmax > mx, xmax, mx);
        v8d lo = gk_lo(xf), hi = gk_hi(xf);
        s_lo += lo; s_hi += hi;
        q_lo += lo * lo; q_hi += hi * hi;   /* f32*f32 is exact in double */
        a_lo += gk_absd(lo); a_hi += gk_absd(hi);
    }
    st->s_lo = s_lo; st->s_hi = s_hi; st->q_lo = q_lo; st->q_hi = q_hi;
    st->a_lo = a_lo; st->a_hi = a_hi; st->mn = mn; st->mx = mx;
    st->nan += gk_hsum_i(cnan); st->pinf += gk_hsum_i(cpinf); st->ninf += gk_hsum_i(cninf);
}
GK_MULTI(stats_feed, (stats_state *st, const void *x, size_t nvec), (st, x, nvec))

static void stats_feed(stats_state *st, const void *x, size_t nvec) {
    const unsigned char *p = (const unsigned char *)x;
    while (nvec) {
        size_t k = nvec < GK_MAX_VEC_PER_CALL ? nvec : GK_MAX_VEC_PER_CALL;
        GK_DISPATCH(stats_feed, (st, p, k));
        p += k * 64; nvec -= k;
    }
}

/* Feeds the last n % 16 values padded with NaN, then folds the lanes. */
static void stats_finish(stats_state *st, const float *tail, size_t rem, size_t n, gk_stats *out) {
    if (rem) {
        float buf[GK_LANES];
        for (int l = 0; l < GK_LANES; l++) buf[l] = (size_t)l < rem ? tail[l] : NAN;
        stats_feed(st, buf, 1);
        st->nan -= GK_LANES - rem;
    }
    double s = 0, q = 0, a = 0;
    for (int l = 0; l < 8; l++) { s += st->s_lo[l]; q += st->q_lo[l]; a += st->a_lo[l]; }
    for (int l = 0; l < 8; l++) { s += st->s_hi[l]; q += st->q_hi[l]; a += st->a_hi[l]; }
    float mn = INFINITY, mx = -INFINITY;
    for (int l = 0; l < GK_LANES; l++) {
        if (st->mn[l] < mn) mn = st->mn[l];
        if (st->mx[l] > mx) mx = st->mx[l];
    }
    out->count = n;
    out->nan_count = st->nan;
    out->pinf_count = st->pinf;
    out->ninf_count = st->ninf;
    out->min = mn; out->max = mx;
    out->sum = s; out->sum_sq = q; out->sum_abs = a;
}

void gk_stats_f32(const float *x, size_t n, gk_stats *out) {
    stats_state st;
    stats_init(&st);
    stats_feed(&st, x, n / GK_LANES);
    float tail[GK_LANES];
    size_t rem = n % GK_LANES;
    if (rem) memcpy(tail, (const unsigned char *)x + (n - rem) * 4, rem * 4);
    stats_finish(&st, tail, rem, n, out);
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
    float buf[GK_CHUNK];
    const unsigned char *p = (const unsigned char *)x;
    size_t i = 0;
    for (; i + GK_CHUNK <= n; i += GK_CHUNK) {
        gk_to_f32(p + i * es, type, buf, GK_CHUNK);
        stats_feed(&st, buf, GK_CHUNK / GK_LANES);
    }
    size_t left = n - i;
    gk_to_f32(p + i * es, type, buf, left);
    stats_feed(&st, buf, left / GK_LANES);
    stats_finish(&st, buf + (left - left % GK_LANES), left % GK_LANES, n, out);
    return 0;
}

void gk_stats_combine(gk_stats *a, const gk_stats *b) {
    a->count += b->count;
    a->nan_count += b->nan_count;
    a->pinf_count += b->pinf_count;
    a->ninf_count += b->ninf_count;
    if (b->min < a->min) a->min = b->min;
    if (b->max > a->max) a->max = b->max;
    a->sum += b->sum; a->sum_sq += b->sum_sq; a->sum_abs += b->sum_abs;
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
