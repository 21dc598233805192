/* Internal helpers shared by the CKernels sources (not part of the API). */
#ifndef GK_INTERNAL_H
#define GK_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "CKernels.h"

/* No a*b+c contraction anywhere: every variant must round the same way. */
#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__) || defined(_M_X64)
#define GK_X86 1
#include <immintrin.h>
#define GK_TGT_AVX2 __attribute__((target("avx2,f16c,fma")))
#define GK_TGT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c,fma")))
#else
#define GK_X86 0
#endif

#define GK_INLINE static inline __attribute__((always_inline))

/* Byte-aligned element types: pointers into mmap'd files need no alignment. */
typedef uint16_t gk_u16 __attribute__((aligned(1), may_alias));
typedef uint32_t gk_u32 __attribute__((aligned(1), may_alias));
typedef uint64_t gk_u64 __attribute__((aligned(1), may_alias));
typedef float gk_f32 __attribute__((aligned(1), may_alias));
typedef double gk_f64 __attribute__((aligned(1), may_alias));

int gk__level(void); /* active level, initialised on first call */

GK_INLINE float gk_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
GK_INLINE uint32_t gk_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
GK_INLINE double gk_bits_f64(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }
GK_INLINE uint64_t gk_f64_bits(double f) { uint64_t u; memcpy(&u, &f, 8); return u; }

/*
 * GK_MULTI(name, (params), (args)) turns the always-inline portable body
 * name##_body into name##_l0/_l1/_l2 (one per level) and GK_DISPATCH calls
 * the one for the active level. The body is compiled for each target, so
 * clang vectorizes it with the widest registers available.
 */
#if GK_X86
#define GK_MULTI(name, params, args) \
    static void name##_l0 params { name##_body args; } \
    GK_TGT_AVX2 static void name##_l1 params { name##_body args; } \
    GK_TGT_AVX512 static void name##_l2 params { name##_body args; }
#define GK_DISPATCH(name, args) do { switch (gk__level()) { \
    case 2: name##_l2 args; break; \
    case 1: name##_l1 args; break; \
    default: name##_l0 args; break; } } while (0)
#else
#define GK_MULTI(name, params, args) \
    static void name##_l0 params { name##_body args; }
#define GK_DISPATCH(name, args) name##_l0 args
#endif

#endif
