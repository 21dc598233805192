#ifndef GRAFT_CFUZZSHIMS_H
#define GRAFT_CFUZZSHIMS_H

#include <stddef.h>

/// memfd_create(name, MFD_CLOEXEC); -1 with errno set on failure.
int graft_fuzz_memfd(const char *name);

/// ZSTD_compress into dst; returns the compressed size, or 0 on error.
size_t graft_fuzz_zstd_compress(void *dst, size_t dstCapacity, const void *src, size_t srcSize, int level);

/// ZSTD_compressBound.
size_t graft_fuzz_zstd_bound(size_t srcSize);



/// libFuzzer's entry point for programs with their own main (SwiftPM executables get
/// their main renamed, so libFuzzer's own main cannot be used).
/// Provided by the fuzzer runtime that `-sanitize=fuzzer` links.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const unsigned char *data, size_t size));
#endif
