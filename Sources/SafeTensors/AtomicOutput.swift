#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CKernels

/// An output file that appears under its final name only when it is complete.
///
/// Bytes go to a temporary file in the destination's directory
/// (`.<name>.graft-partial-<pid>-<n>`); ``commit()`` fsyncs it, renames it into place
/// and fsyncs the directory. If the process is interrupted (SIGINT, SIGTERM, SIGHUP,
/// SIGPIPE) or the object is released without a commit, the temporary file is removed.
/// An existing destination is replaced only when `overwrite` is true, and never when it
/// is one of the inputs. Writes are positional (`pwrite`), so several threads may
/// write disjoint ranges at once.
public final class AtomicOutput: @unchecked Sendable {
    /// The final path, as given.
    public let path: String
    /// The temporary path being written.
    public let temporaryPath: String
    /// The open descriptor of the temporary file.
    public let descriptor: Int32
    private var finished = false
    private let slot: Int

    /// Creates the temporary file.
    /// - Parameters:
    ///   - overwrite: allow replacing an existing `path` (the `--force` flag).
    ///   - inputs: files that must never be replaced (compared by device and inode).
    /// - Throws: `.refused` when the destination exists without `overwrite` or is an input;
    ///   `.io` when the file cannot be created.
    public init(path: String, overwrite: Bool, inputs: [String] = []) throws {
        self.path = path
        var st = stat()
        if stat(path, &st) == 0 {
            for input in inputs where input != "-" {
                var ist = stat()
                if stat(input, &ist) == 0 && ist.st_dev == st.st_dev && ist.st_ino == st.st_ino {
                    throw SafeTensorsError(.refused, file: path, "the output is the same file as the input \(input); choose another output path")
                }
            }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                throw SafeTensorsError(.refused, file: path, "the output path is a directory")
            }
            if !overwrite {
                throw SafeTensorsError(.refused, file: path, "the output already exists; use --force to overwrite it")
            }
        }
        let dir: String, base: String
        if let slash = path.lastIndex(of: "/") {
            dir = String(path[..<slash]).isEmpty ? "/" : String(path[..<slash])
            base = String(path[path.index(after: slash)...])
        } else {
            dir = "."
            base = path
        }
        var made: (String, Int32)? = nil
        for attempt in 0..<100 {
            let candidate = "\(dir)/.\(base).graft-partial-\(getpid())-\(attempt)"
            let fd = retryingEINTR { open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
            if fd >= 0 { made = (candidate, fd); break }
            if errno != EEXIST { throw systemError("open", file: path, "creating a temporary file in \(dir)") }
        }
        guard let (tmp, fd) = made else {
            throw SafeTensorsError(.io, file: path, "cannot create a temporary file in \(dir)")
        }
        temporaryPath = tmp
        descriptor = fd
        slot = CleanupRegistry.register(tmp)
    }

    /// Reserves `byteCount` bytes on disk up front, so that a full disk is reported
    /// before any work is done rather than as a truncated file.
    public func reserve(byteCount: Int) throws {
        guard byteCount > 0 else { return }
        let r = posix_fallocate(descriptor, 0, off_t(byteCount))
        if r == 0 { return }
        if r == ENOSPC {
            throw SafeTensorsError(.io, file: path, "not enough disk space for \(byteCount) bytes (posix_fallocate: \(String(cString: strerror(r)).lowercased()))")
        }
        // File systems without fallocate support: fall back to setting the size.
        if ftruncate(descriptor, off_t(byteCount)) != 0 { throw systemError("ftruncate", file: path) }
    }

    /// Writes all of `bytes` at absolute file offset `offset` (`pwrite(2)`, retried until complete).
    /// - Parameter fd: another descriptor of the temporary file (from ``openDirectDescriptor()``).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int, descriptor fd: Int32? = nil) throws {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let descriptor = fd ?? self.descriptor
        var done = 0
        while done < bytes.count {
            let n = retryingEINTR { pwrite(descriptor, base + done, bytes.count - done, off_t(offset + done)) }
            if n < 0 {
                let code = errno
                if code == ENOSPC || code == EDQUOT {
                    throw SafeTensorsError(.io, file: path, offset: UInt64(offset + done), "disk full while writing the output")
                }
                throw systemError("pwrite", file: path, errno: code)
            }
            if n == 0 { throw SafeTensorsError(.io, file: path, offset: UInt64(offset + done), "pwrite wrote nothing") }
            done += n
        }
    }

    /// Opens a second descriptor on the temporary file that bypasses the page cache
    /// (`O_DIRECT`), or returns nil where the file system does not support it. Writes
    /// through it must use 4096-byte aligned buffers, offsets and lengths; the caller
    /// closes it before ``commit()``.
    public func openDirectDescriptor() -> Int32? {
        // Through /proc/self/fd, so it is certainly the file this object created even if
        // someone renamed another file over the temporary name meanwhile.
        var fd = gk_open_direct_write("/proc/self/fd/\(descriptor)")
        if fd < 0 && errno == ENOENT { fd = gk_open_direct_write(temporaryPath) }  // no /proc
        return fd >= 0 ? fd : nil
    }

    /// Sets the file's final size (after direct writes rounded up to whole blocks).
    public func truncate(to byteCount: Int) throws {
        if ftruncate(descriptor, off_t(byteCount)) != 0 { throw systemError("ftruncate", file: path) }
    }

    /// Writes `bytes` at the current file position (for streamed formats such as zstd).
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var done = 0
        while done < bytes.count {
            let n = retryingEINTR { Glibc.write(descriptor, base + done, bytes.count - done) }
            if n < 0 {
                let code = errno
                if code == ENOSPC || code == EDQUOT {
                    throw SafeTensorsError(.io, file: path, "disk full while writing the output")
                }
                throw systemError("write", file: path, errno: code)
            }
            done += n
        }
    }

    /// Makes the file durable and gives it its final name. After this the object owns nothing.
    public func commit() throws {
        precondition(!finished, "AtomicOutput committed twice")
        if fsync(descriptor) != 0 { throw systemError("fsync", file: path) }
        if close(descriptor) != 0 { finished = true; CleanupRegistry.removeFile(slot: slot); throw systemError("close", file: path) }
        finished = true
        if rename(temporaryPath, path) != 0 {
            let e = errno
            CleanupRegistry.removeFile(slot: slot)
            throw systemError("rename", file: path, errno: e)
        }
        CleanupRegistry.forget(slot: slot)
        // Make the rename itself durable.
        let dir = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let dfd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Removes the temporary file (idempotent; also done on deinit if not committed).
    public func abort() {
        guard !finished else { return }
        finished = true
        close(descriptor)
        if slot >= 0 { CleanupRegistry.removeFile(slot: slot) } else { unlink(temporaryPath) }
    }

    deinit { abort() }
}

/// Paths of temporary files to delete if the process is killed by a signal. The
/// handler only calls async-signal-safe functions (unlink, signal, raise) on C strings
/// prepared ahead of time.
enum CleanupRegistry {
    static let capacity = 64
    nonisolated(unsafe) static let paths: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
        p.initialize(repeating: nil, count: capacity)
        return p
    }()
    nonisolated(unsafe) static var installed = false
    nonisolated(unsafe) static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    static func register(_ path: String) -> Int {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if !installed {
            installed = true
            // A parent may have started us with these signals blocked (the mask is
            // inherited); unblock them so Ctrl-C and kill still clean up.
            var set = sigset_t()
            sigemptyset(&set)
            for sig in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&set, sig) }
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
            for sig in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] {
                signal(sig) { sig in
                    for i in 0..<CleanupRegistry.capacity {
                        if let p = CleanupRegistry.paths[i] { unlink(p) }
                    }
                    signal(sig, SIG_DFL)
                    raise(sig)
                }
            }
        }
        for i in 0..<capacity where paths[i] == nil {
            paths[i] = strdup(path)
            return i
        }
        return -1  // registry full: the file is still removed on normal failure paths
    }

    // The path strings are deliberately never freed: a signal handler running on another
    // thread may have read a slot just before it was cleared, and must not find freed
    // memory. That is a few dozen bytes per output file for the life of the process.

    static func forget(slot: Int) {
        guard slot >= 0 else { return }
        pthread_mutex_lock(lock)
        paths[slot] = nil
        pthread_mutex_unlock(lock)
    }

    static func removeFile(slot: Int) {
        guard slot >= 0 else { return }
        pthread_mutex_lock(lock)
        let p = paths[slot]
        paths[slot] = nil
        pthread_mutex_unlock(lock)
        if let p { unlink(p) }
    }
}
