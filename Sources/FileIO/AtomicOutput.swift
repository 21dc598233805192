#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CFileIO

/// Where an output goes.
public enum OutputDestination: Sendable, Equatable {
    /// A file, replaced atomically when complete.
    case file(String)
    /// Standard output (a pipe or a file the shell opened): written in order, never a terminal.
    case standardOutput
}

/// An output file that appears under its final name only when it is complete.
///
/// Where the file system allows it (ext4, xfs, btrfs, tmpfs...), bytes go to an *unnamed*
/// file created with `O_TMPFILE` in the destination's directory: it has no name until
/// ``commit()`` links it into place (`linkat` through `/proc/self/fd/N`), so nothing is
/// left behind even by SIGKILL or a power cut. Replacing an existing file (`overwrite`)
/// links it to a unique temporary name and `rename`s that over the destination (a window
/// of two system calls). Elsewhere a named temporary file `.<name>.graft-partial-<pid>-<n>`
/// is used, removed on an error, on release without a commit, and by SIGINT, SIGTERM, SIGHUP
/// and SIGPIPE; one left by a process that no longer exists (SIGKILL) is removed by the
/// next output to the same name (``removedStalePartials``).
///
/// The destination is refused when it exists without `overwrite`, when it is one of the
/// inputs, and whenever it is not a regular file (directory, FIFO, device, socket, or a
/// symlink to one), even with `overwrite`. Writes are positional (`pwrite`), so several
/// threads may write disjoint ranges at once. ``standardOutput()`` gives an output that
/// only appends, for ``OutputDestination/standardOutput``.
public final class AtomicOutput: @unchecked Sendable {
    private enum Mode { case anonymous, named, stream }

    /// The final path, as given (`<stdout>` for standard output).
    public let path: String
    /// The named temporary file being written, or nil (an `O_TMPFILE` file has no name;
    /// standard output needs none).
    public let temporaryPath: String?
    /// Stale partial outputs of interrupted runs (their process is gone) that were removed
    /// from the destination directory, as file names. The library does not print; callers may.
    public let removedStalePartials: [String]
    /// True for standard output: only ``append(_:)`` works, and ``abort()`` cannot take back
    /// what was written.
    public var isStream: Bool { mode == .stream }

    /// The open descriptor of the file being written.
    package let descriptor: Int32
    private let mode: Mode
    private let overwrite: Bool
    private var finished = false
    private let slot: Int

    /// Creates the temporary file.
    /// - Parameters:
    ///   - overwrite: allow replacing an existing regular file at `path`.
    ///   - inputs: files that must never be replaced (compared by device and inode).
    ///   - anonymousTemporary: try `O_TMPFILE` first (pass false to force the named temporary file).
    /// - Throws: ``FileIOError`` `.refused` (``FileIOError/Refusal`` `.exists`, `.sameAsInput`,
    ///   `.notRegularFile`), `.systemCall` when the file cannot be created.
    public init(path: String, overwrite: Bool, inputs: [String] = [], anonymousTemporary: Bool = true)
        throws(FileIOError)
    {
        self.path = path
        self.overwrite = overwrite
        var st = stat()
        if stat(path, &st) == 0 {
            for input in inputs where input != "-" {
                var ist = stat()
                if stat(input, &ist) == 0 && ist.st_dev == st.st_dev && ist.st_ino == st.st_ino {
                    throw .refused(
                        path, .sameAsInput,
                        "the output is the same file as the input \(input); choose another output path")
                }
            }
            try Self.requireRegular(path, st)
            if !overwrite {
                throw .refused(path, .exists, "the output already exists")
            }
        }
        let (dir, base) = Self.split(path)
        removedStalePartials = Self.removeStalePartials(in: dir, base: base)

        if anonymousTemporary {
            let fd = fio_open_tmpfile(dir, 0o644)
            // The link at commit goes through /proc/self/fd; without /proc use a named file.
            if fd >= 0 && access("/proc/self/fd/\(fd)", F_OK) == 0 {
                mode = .anonymous
                descriptor = fd
                temporaryPath = nil
                slot = -1
                return
            }
            if fd >= 0 { close(fd) }
            // EOPNOTSUPP / EISDIR / EINVAL (no O_TMPFILE here) or anything else: the named
            // file below either works or reports the real problem.
        }
        var made: (String, Int32)? = nil
        for attempt in 0..<100 {
            let candidate = "\(dir)/.\(base).graft-partial-\(getpid())-\(attempt)"
            let fd = retryingEINTR { open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
            if fd >= 0 { made = (candidate, fd); break }
            if errno != EEXIST {
                throw .systemCall("open", path: path, errno: errno, "creating a temporary file in \(dir)")
            }
        }
        guard let (tmp, fd) = made else {
            throw FileIOError(
                .systemCall, path: path, systemCall: "open", errnoCode: EEXIST,
                "cannot create a temporary file in \(dir)")
        }
        mode = .named
        temporaryPath = tmp
        descriptor = fd
        slot = CleanupRegistry.register(tmp)
    }

    private init(streamDescriptor fd: Int32, displayName: String) {
        path = displayName
        overwrite = false
        temporaryPath = nil
        removedStalePartials = []
        mode = .stream
        descriptor = fd
        slot = -1
    }

    /// An output that streams to standard output (file descriptor 1).
    /// - Throws: ``FileIOError`` `.refused` (`.terminal`) when standard output is a terminal:
    ///   binary data is never written to one (as `zstd` refuses).
    public static func standardOutput() throws(FileIOError) -> AtomicOutput {
        if Terminal.isTerminal(1) {
            throw .refused("<stdout>", .terminal, "stdout is a terminal; refusing to write binary data")
        }
        return AtomicOutput(streamDescriptor: 1, displayName: "<stdout>")
    }

    /// Opens `destination`, runs `body` with it, and commits when `body` returns or aborts
    /// when it throws (the scoped form of ``init(path:overwrite:inputs:anonymousTemporary:)``
    /// + ``commit()`` / ``abort()``).
    /// - Throws: what opening, `body` or committing throws.
    public static func write<R>(
        to destination: OutputDestination, overwrite: Bool, inputs: [String] = [],
        anonymousTemporary: Bool = true,
        _ body: (AtomicOutput) throws -> R
    ) throws -> R {
        let out: AtomicOutput
        switch destination {
        case .file(let path):
            out = try AtomicOutput(
                path: path, overwrite: overwrite, inputs: inputs, anonymousTemporary: anonymousTemporary)
        case .standardOutput:
            out = try AtomicOutput.standardOutput()
        }
        let result: R
        do {
            result = try body(out)
        } catch {
            out.abort()
            throw error
        }
        try out.commit()
        return result
    }

    /// Reserves `byteCount` bytes on disk up front, so that a full disk is reported
    /// before any work is done rather than as a truncated file. Does nothing on a stream.
    public func reserve(byteCount: Int) throws(FileIOError) {
        guard byteCount > 0, mode != .stream else { return }
        let r = posix_fallocate(descriptor, 0, off_t(byteCount))
        if r == 0 { return }
        if r == ENOSPC {
            throw FileIOError(
                .noSpace, path: path, systemCall: "posix_fallocate", errnoCode: r,
                "not enough disk space for \(byteCount) bytes (posix_fallocate: \(String(cString: strerror(r)).lowercased()))"
            )
        }
        // File systems without fallocate support: fall back to setting the size.
        if ftruncate(descriptor, off_t(byteCount)) != 0 { throw .systemCall("ftruncate", path: path, errno: errno) }
    }

    /// Writes all of `bytes` at absolute file offset `offset` (`pwrite(2)`, retried until complete).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(FileIOError) {
        precondition(mode != .stream, "positional write to a stream output")
        try writeAll(descriptor, bytes, at: offset, path: path)
    }

    /// Opens a second descriptor on the file being written that bypasses the page cache
    /// (`O_DIRECT`), or returns nil where the file system does not support it. Writes
    /// through it must use 4096-byte aligned buffers, offsets and lengths.
    package func openDirectDescriptor() -> DirectDescriptor? {
        guard mode != .stream else { return nil }
        // Through /proc/self/fd: the only name an O_TMPFILE file has, and certainly the file
        // this object created even if someone renamed another file over a temporary name.
        var fd = fio_open_direct_write("/proc/self/fd/\(descriptor)")
        if fd < 0 && errno == ENOENT, let temporaryPath { fd = fio_open_direct_write(temporaryPath) }  // no /proc
        return fd >= 0 ? DirectDescriptor(fd, path: path) : nil
    }

    /// Sets the file's final size (after direct writes rounded up to whole blocks).
    package func truncate(to byteCount: Int) throws(FileIOError) {
        if ftruncate(descriptor, off_t(byteCount)) != 0 { throw .systemCall("ftruncate", path: path, errno: errno) }
    }

    /// Writes `bytes` at the current file position (for streamed formats such as zstd, and
    /// for standard output).
    public func append(_ bytes: UnsafeRawBufferPointer) throws(FileIOError) {
        try FileIO.writeAll(descriptor, bytes, path: path)
    }

    /// Makes the file durable and gives it its final name. After this the object owns nothing.
    /// - Throws: ``FileIOError``; `.refused` when the destination became a non-regular file
    ///   meanwhile, or appeared meanwhile and overwriting was not allowed.
    public func commit() throws(FileIOError) {
        precondition(!finished, "AtomicOutput committed twice")
        switch mode {
        case .stream:
            finished = true
        case .named:
            if fsync(descriptor) != 0 { throw .systemCall("fsync", path: path, errno: errno) }
            if close(descriptor) != 0 {
                finished = true
                CleanupRegistry.removeFile(slot: slot)
                throw .systemCall("close", path: path, errno: errno)
            }
            finished = true
            do throws(FileIOError) {
                try checkDestinationStillRegular()
                var st = stat()
                if !overwrite && lstat(path, &st) == 0 {
                    throw .refused(path, .exists, "the output appeared while it was being written")
                }
                if rename(temporaryPath!, path) != 0 {
                    throw FileIOError.systemCall("rename", path: path, errno: errno)
                }
            } catch {
                CleanupRegistry.removeFile(slot: slot)
                throw error
            }
            CleanupRegistry.forget(slot: slot)
            syncDirectory()
        case .anonymous:
            if fsync(descriptor) != 0 { throw .systemCall("fsync", path: path, errno: errno) }
            try linkIntoPlace()
            finished = true
            close(descriptor)
            syncDirectory()
        }
    }

    private func linkIntoPlace() throws(FileIOError) {
        var st = stat()
        let exists = lstat(path, &st) == 0
        if !exists || !overwrite {
            if fio_link_descriptor(descriptor, path) == 0 { return }
            let e = errno
            guard e == EEXIST else { throw .systemCall("linkat", path: path, errno: e) }
            guard overwrite else { throw .refused(path, .exists, "the output appeared while it was being written") }
        }
        // Replace: link under a unique temporary name (removed by a signal if one comes now),
        // then rename over the destination.
        try checkDestinationStillRegular()
        let (dir, base) = Self.split(path)
        for attempt in 0..<100 {
            let candidate = "\(dir)/.\(base).graft-partial-\(getpid())-r\(attempt)"
            let slot = CleanupRegistry.register(candidate)
            if fio_link_descriptor(descriptor, candidate) == 0 {
                if rename(candidate, path) != 0 {
                    let e = errno
                    CleanupRegistry.removeFile(slot: slot)
                    if slot < 0 { unlink(candidate) }
                    throw .systemCall("rename", path: path, errno: e)
                }
                CleanupRegistry.forget(slot: slot)
                return
            }
            let e = errno
            CleanupRegistry.forget(slot: slot)
            if e != EEXIST {
                throw .systemCall("linkat", path: path, errno: e, "linking the output under a temporary name")
            }
        }
        throw FileIOError(
            .systemCall, path: path, systemCall: "linkat", errnoCode: EEXIST,
            "cannot find a free temporary name in \(dir)")
    }

    /// Refuses to rename over something that became a FIFO, device... since the output was opened.
    private func checkDestinationStillRegular() throws(FileIOError) {
        var st = stat()
        if stat(path, &st) == 0 { try Self.requireRegular(path, st) }
    }

    /// Makes the new name itself durable.
    private func syncDirectory() {
        let (dir, _) = Self.split(path)
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Removes the temporary file (idempotent; also done on deinit if not committed). On a
    /// stream it only stops: bytes already written cannot be taken back.
    public func abort() {
        guard !finished else { return }
        finished = true
        switch mode {
        case .stream: break
        case .anonymous: close(descriptor)  // the unnamed file disappears with it
        case .named:
            close(descriptor)
            if slot >= 0 { CleanupRegistry.removeFile(slot: slot) } else if let temporaryPath { unlink(temporaryPath) }
        }
    }

    deinit { abort() }

    // MARK: helpers

    /// (directory, file name) of a path; "." for a bare name, "/" for a file at the root.
    static func split(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    private static func requireRegular(_ path: String, _ st: stat) throws(FileIOError) {
        let type = st.st_mode & S_IFMT
        guard type != S_IFREG else { return }
        let what: String
        switch type {
        case S_IFDIR: what = "a directory"
        case S_IFIFO: what = "a FIFO (named pipe)"
        case S_IFCHR: what = "a character device"
        case S_IFBLK: what = "a block device"
        case S_IFSOCK: what = "a socket"
        default: what = "not a regular file"
        }
        var lst = stat()
        let viaLink = lstat(path, &lst) == 0 && (lst.st_mode & S_IFMT) == S_IFLNK
        throw .refused(
            path, .notRegularFile,
            "the output path is \(viaLink ? "a symlink to " : "")\(what); only regular files are written")
    }

    /// Deletes `.<base>.graft-partial-<pid>-<n>` files in `dir` whose process no longer
    /// exists (left by SIGKILL or a crash) and returns their names.
    static func removeStalePartials(in dir: String, base: String) -> [String] {
        let prefix = ".\(base).graft-partial-"
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var removed: [String] = []
        while let entry = readdir(d) {
            // readdir's record is only as long as its name: read d_name in place up to its
            // NUL (copying the 256-byte field would read past a short record).
            let offset = MemoryLayout<dirent>.offset(of: \dirent.d_name) ?? 19
            let name = String(cString: (UnsafeRawPointer(entry) + offset).assumingMemoryBound(to: CChar.self))
            guard name.hasPrefix(prefix) else { continue }
            let rest = name.dropFirst(prefix.count)
            let parts = rest.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let pid = Int32(parts[0]), !parts[1].isEmpty,
                parts[1].allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "r") })
            else { continue }
            if pid == getpid() || SystemInfo.processExists(pid) { continue }
            if unlink("\(dir)/\(name)") == 0 { removed.append(name) }
        }
        return removed.sorted()
    }
}

/// A second descriptor on an output, opened with `O_DIRECT`; closed on release.
package final class DirectDescriptor: @unchecked Sendable {
    private let fd: Int32
    private let path: String

    init(_ fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// `pwrite(2)` of all of `bytes` at `offset` (aligned buffer, offset and length).
    package func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(FileIOError) {
        try writeAll(fd, bytes, at: offset, path: path)
    }
}

/// `pwrite` until all of `bytes` is written.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws(FileIOError) {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return }
    var done = 0
    while done < bytes.count {
        let n = retryingEINTR { pwrite(fd, base + done, bytes.count - done, off_t(offset + done)) }
        if n < 0 {
            let code = errno
            if code == ENOSPC || code == EDQUOT {
                throw FileIOError(
                    .noSpace, path: path, systemCall: "pwrite", errnoCode: code,
                    offset: UInt64(offset + done), "disk full while writing the output")
            }
            throw .systemCall("pwrite", path: path, errno: code)
        }
        if n == 0 {
            throw FileIOError(
                .systemCall, path: path, systemCall: "pwrite", offset: UInt64(offset + done), "pwrite wrote nothing")
        }
        done += n
    }
}

/// `write` until all of `bytes` is written (at the current position).
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(FileIOError) {
    guard let base = bytes.baseAddress, bytes.count > 0 else { return }
    var done = 0
    while done < bytes.count {
        let n = retryingEINTR { Glibc.write(fd, base + done, bytes.count - done) }
        if n < 0 { throw .systemCall("write", path: path, errno: errno) }
        if n == 0 { throw FileIOError(.systemCall, path: path, systemCall: "write", "write wrote nothing") }
        done += n
    }
}
