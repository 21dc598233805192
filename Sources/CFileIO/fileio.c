/* System-call helpers that need _GNU_SOURCE (not visible through Swift's Glibc). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include "CFileIO.h"

int fio_open_direct_write(const char *path) {
#if defined(__linux__) && defined(O_DIRECT)
    return open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
#else
    (void)path;
    errno = EINVAL;
    return -1;
#endif
}

int fio_open_tmpfile(const char *directory, unsigned int mode) {
#if defined(__linux__) && defined(O_TMPFILE)
    return open(directory, O_TMPFILE | O_WRONLY | O_CLOEXEC, (mode_t)mode);
#else
    (void)directory; (void)mode;
    errno = EOPNOTSUPP;
    return -1;
#endif
}

int fio_link_descriptor(int fd, const char *path) {
#if defined(__linux__)
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    int r = linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
    if (r == 0 || errno != ENOENT) return r;
    /* No /proc (ENOENT from the source): needs CAP_DAC_READ_SEARCH. */
    if (access("/proc/self/fd", F_OK) == 0) { errno = ENOENT; return -1; }
    return linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH);
#else
    (void)fd; (void)path;
    errno = EOPNOTSUPP;
    return -1;
#endif
}
