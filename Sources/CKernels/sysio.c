/* Small system-call helpers that need _GNU_SOURCE (not visible through Swift's Glibc). */
#define _GNU_SOURCE
#include <fcntl.h>
#include "CKernels.h"

int gk_open_direct_write(const char *path) {
#if defined(__linux__) && defined(O_DIRECT)
    return open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
#else
    (void)path;
    return -1;
#endif
}
