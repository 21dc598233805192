#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A read-only memory mapping of a whole file. The corresponding C function is `mmap(2)`.
///
/// Pages are mapped lazily, so reading only the header of a 7 GB file touches only the
/// header's pages. The mapping is `MAP_PRIVATE` and `PROT_READ`: graft can never write
/// to an input through it. An empty file is not mapped (mmap rejects length 0).
public final class MappedFile: @unchecked Sendable {
    /// The path as the user named it (used in errors).
    public let path: String
    /// The size of the file in bytes.
    public let byteCount: Int
    private let base: UnsafeRawPointer?

    /// Maps the file at `path`.
    /// - Throws: ``FileIOError`` of kind `.systemCall` naming the failed call.
    public convenience init(path: String) throws(FileIOError) {
        let fd = retryingEINTR { open(path, O_RDONLY | O_CLOEXEC) }
        if fd < 0 { throw .systemCall("open", path: path, errno: errno) }
        defer { close(fd) }
        try self.init(descriptor: fd, displayName: path)
    }

    /// Maps the regular file open at `fd` (the descriptor may be closed afterwards).
    /// - Throws: ``FileIOError`` of kind `.systemCall` (errno EISDIR for a directory).
    package init(descriptor fd: Int32, displayName: String) throws(FileIOError) {
        var st = stat()
        if fstat(fd, &st) != 0 { throw .systemCall("fstat", path: displayName, errno: errno) }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw FileIOError(.systemCall, path: displayName, errnoCode: EISDIR, "is a directory, not a file")
        }
        path = displayName
        byteCount = Int(st.st_size)
        if byteCount == 0 {
            base = nil
            return
        }
        let p = mmap(nil, byteCount, PROT_READ, MAP_PRIVATE, fd, 0)
        if p == MAP_FAILED || p == nil { throw .systemCall("mmap", path: displayName, errno: errno) }
        base = UnsafeRawPointer(p!)
    }

    /// Lends the whole file to `body`. The pointer must not escape the closure.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(bytes) }
    }

    /// The whole file, valid as long as this object is alive. Package-internal: the
    /// format module and the engine borrow slices of it while they hold the object.
    package var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: byteCount) }

    /// Tells the kernel how a byte range will be read (`madvise(2)`); a hint only.
    public func advise(sequential: Bool, willNeed range: Range<Int>? = nil) {
        guard let base, byteCount > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let raw = UnsafeMutableRawPointer(mutating: base)
        if sequential { _ = madvise(raw, byteCount, MADV_SEQUENTIAL) }
        if let range, !range.isEmpty {
            let start = range.lowerBound / page * page
            let end = min(byteCount, range.upperBound)
            if end > start { _ = madvise(raw + start, end - start, MADV_WILLNEED) }
        }
    }

    /// Lets the kernel drop the pages of a range that will not be read again.
    public func dontNeed(_ range: Range<Int>) {
        guard let base, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound + page - 1) / page * page
        let end = range.upperBound / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(mutating: base) + start, end - start, MADV_DONTNEED) }
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), byteCount) }
    }
}
