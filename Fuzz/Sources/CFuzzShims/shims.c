#define _GNU_SOURCE
#include <sys/mman.h>
#include <zstd.h>
#include "CFuzzShims.h"

int graft_fuzz_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

size_t graft_fuzz_zstd_compress(void *dst, size_t dstCapacity, const void *src, size_t srcSize, int level) {
    size_t r = ZSTD_compress(dst, dstCapacity, src, srcSize, level);
    return ZSTD_isError(r) ? 0 : r;
}

size_t graft_fuzz_zstd_bound(size_t srcSize) { return ZSTD_compressBound(srcSize); }
