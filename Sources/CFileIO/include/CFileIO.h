#ifndef CFILEIO_H
#define CFILEIO_H

/* The few system calls FileIO needs that Swift's Glibc module does not show
 * (they need _GNU_SOURCE). Each returns -1 with errno set on failure. */

#ifdef __cplusplus
extern "C" {
#endif

/** open(path, O_WRONLY | O_DIRECT | O_CLOEXEC): an existing file, bypassing the page cache.
 *  -1 where unsupported (some file systems, non-Linux). */
int fio_open_direct_write(const char *path);

/** open(directory, O_TMPFILE | O_WRONLY | O_CLOEXEC, mode): an unnamed regular file in
 *  `directory` that disappears with its last descriptor unless linked. -1 with errno
 *  EOPNOTSUPP / EISDIR / EINVAL where the file system or kernel lacks O_TMPFILE. */
int fio_open_tmpfile(const char *directory, unsigned int mode);

/** Gives the file open at `fd` (an O_TMPFILE file) the name `path`:
 *  linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, path, AT_SYMLINK_FOLLOW), or, without
 *  /proc, linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH). Fails with EEXIST when `path` exists. */
int fio_link_descriptor(int fd, const char *path);

#ifdef __cplusplus
}
#endif
#endif
