/* CPU level detection and selection. */
#include "gk_internal.h"

static int gk_detected = -1;   /* written once (idempotently) */
static int gk_active = -1;

static int gk_detect(void) {
#if GK_X86
    /* __builtin_cpu_supports also checks that the OS saves the ymm/zmm state. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c") &&
        __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
        __builtin_cpu_supports("fma"))
        return 1;
#endif
    return 0;
}

int gk_cpu_level_detected(void) {
    int d = __atomic_load_n(&gk_detected, __ATOMIC_RELAXED);
    if (d < 0) {
        d = gk_detect();
        __atomic_store_n(&gk_detected, d, __ATOMIC_RELAXED);
    }
    return d;
}

int gk__level(void) {
    int a = __atomic_load_n(&gk_active, __ATOMIC_RELAXED);
    if (__builtin_expect(a < 0, 0)) {
        a = gk_cpu_level_detected();
        int expected = -1;
        /* Keep a level set concurrently by gk_set_cpu_level. */
        if (!__atomic_compare_exchange_n(&gk_active, &expected, a, 0,
                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            a = expected;
    }
    return a;
}

int gk_cpu_level(void) { return gk__level(); }

int gk_set_cpu_level(int level) {
    int d = gk_cpu_level_detected();
    int a = level < 0 ? d : (level > d ? d : level);
    __atomic_store_n(&gk_active, a, __ATOMIC_RELAXED);
    return a;
}

const char *gk_cpu_level_name(void) {
    switch (gk__level()) {
    case 2: return "avx512";
    case 1: return "avx2";
    default: return "portable";
    }
}
