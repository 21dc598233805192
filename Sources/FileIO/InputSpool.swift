#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CZstd

/// What a stream's first bytes say about its length (see ``InputSpool/open(_:bound:)``).
public enum SpoolBound: Sendable, Equatable {
    /// Call again once this many bytes (in total, from the start) are known.
    case needPrefix(Int)
    /// The stream must not be longer than this.
    case total(UInt64)
}

/// Turns inputs that cannot be memory-mapped — a pipe on standard input, or a
/// zstd-compressed file — into a mapped file. The bytes are streamed into an
/// unlinked temporary file (in `$TMPDIR`, default /tmp) through a fixed 1 MiB
/// buffer, so memory use does not grow with the input.
public enum InputSpool {
    static let zstdMagic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]
    static let bufferSize = 1 << 20

    /// Opens `path` (or standard input for "-") as a mapped, uncompressed image.
    /// - Parameter bound: asked with the first bytes of a spooled stream (first with an
    ///   empty prefix) until it answers ``SpoolBound/total(_:)``; the stream is then cut
    ///   off with an error the moment it runs past that size. Errors it throws end the spool.
    /// - Throws: ``FileIOError`` (`.systemCall`, `.compression`, `.exceedsDeclaredSize`) or
    ///   whatever `bound` throws.
    public static func open(_ path: String, bound: (UnsafeRawBufferPointer) throws -> SpoolBound) throws -> MappedFile {
        let display = path == "-" ? "<stdin>" : path
        let fd: Int32
        if path == "-" {
            fd = 0
        } else {
            fd = retryingEINTR { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
            if fd < 0 { throw FileIOError.systemCall("open", path: display, errno: errno) }
        }
        defer { if fd != 0 { close(fd) } }

        var st = stat()
        if fstat(fd, &st) != 0 { throw FileIOError.systemCall("fstat", path: display, errno: errno) }
        let regular = (st.st_mode & S_IFMT) == S_IFREG
        if regular {
            // Peek at the magic without consuming the stream position of stdin.
            var magic = [UInt8](repeating: 0, count: 4)
            let n = magic.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 4, 0) }
            if n == 4 && magic == zstdMagic {
                return try spool(from: fd, display: display, firstBytes: [], compressed: true, bound: bound)
            }
            return try MappedFile(descriptor: fd, displayName: display)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw FileIOError(.systemCall, path: display, errnoCode: EISDIR, "is a directory, not a file")
        }
        // A pipe or other stream: read the first bytes to know whether it is zstd.
        var head = [UInt8](repeating: 0, count: 4)
        var got = 0
        while got < 4 {
            let n = head.withUnsafeMutableBytes { buf in retryingEINTR { read(fd, buf.baseAddress! + got, 4 - got) } }
            if n < 0 { throw FileIOError.systemCall("read", path: display, errno: errno) }
            if n == 0 { break }
            got += n
        }
        let first = Array(head[0..<got])
        return try spool(from: fd, display: display, firstBytes: first, compressed: first == zstdMagic, bound: bound)
    }

    private static func makeTempFile(display: String) throws -> Int32 {
        var dir = SystemInfo.environment("TMPDIR") ?? "/tmp"
        if dir.isEmpty { dir = "/tmp" }
        var template = Array("\(dir)/graft-spool-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 {
            throw FileIOError.systemCall("mkstemp", path: display, errno: errno, "creating a spool file in \(dir)")
        }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fd
    }

    private static func writeAll(_ fd: Int32, _ p: UnsafeRawPointer, _ count: Int, display: String) throws {
        var done = 0
        while done < count {
            let n = retryingEINTR { write(fd, p + done, count - done) }
            if n < 0 {
                throw FileIOError.systemCall("write", path: display, errno: errno, "spooling input to a temporary file")
            }
            done += n
        }
    }

    /// Writes a stream to the spool file, but never more than the stream's own first bytes
    /// declare (for safetensors: the header length is checked against its limit as soon as
    /// the first 8 bytes are in, the header is validated as soon as it is complete, and the
    /// stream is cut off the moment it runs past 8 + N + the end of the last tensor). A 30 KB
    /// zstd bomb or an endless pipe thus costs at most what the prefix may claim, not the disk.
    struct BoundedSpool {
        let fd: Int32
        let display: String
        let bound: (UnsafeRawBufferPointer) throws -> SpoolBound
        private(set) var total: UInt64 = 0
        private var head: [UInt8] = []
        private var want: Int? = nil  // prefix length the bound asked for
        private var declared: UInt64? = nil

        init(fd: Int32, display: String, bound: @escaping (UnsafeRawBufferPointer) throws -> SpoolBound) {
            self.fd = fd
            self.display = display
            self.bound = bound
        }

        mutating func write(_ p: UnsafeRawPointer, _ count: Int) throws {
            guard count > 0 else { return }
            if declared == nil { try collectPrefix(p, count) }
            let (after, overflow) = total.addingReportingOverflow(UInt64(count))
            if let declared, overflow || after > declared {
                throw FileIOError(
                    .exceedsDeclaredSize, path: display, offset: declared,
                    "the stream goes on past the \(declared) bytes its header declares")
            }
            try InputSpool.writeAll(fd, p, count, display: display)
            total = after
        }

        private mutating func ask() throws {
            switch try head.withUnsafeBytes({ try bound($0) }) {
            case .needPrefix(let n): want = max(n, head.count + 1)
            case .total(let t): declared = t; want = nil; head = []
            }
        }

        private mutating func collectPrefix(_ p: UnsafeRawPointer, _ count: Int) throws {
            if want == nil { try ask() }
            var used = 0
            while declared == nil, let want, used < count {
                let n = min(count - used, want - head.count)
                head.append(contentsOf: UnsafeRawBufferPointer(start: p + used, count: n))
                used += n
                if head.count >= want { try ask() }
            }
        }
    }

    private static func spool(
        from fd: Int32, display: String, firstBytes: [UInt8], compressed: Bool,
        bound: (UnsafeRawBufferPointer) throws -> SpoolBound
    ) throws -> MappedFile {
        let out = try makeTempFile(display: display)
        defer { close(out) }
        return try withoutActuallyEscaping(bound) { bound in
            var sink = BoundedSpool(fd: out, display: display, bound: bound)
            return try spool(
                from: fd, into: &sink, out: out, display: display, firstBytes: firstBytes, compressed: compressed)
        }
    }

    private static func spool(
        from fd: Int32, into sink: inout BoundedSpool, out: Int32, display: String,
        firstBytes: [UInt8], compressed: Bool
    ) throws -> MappedFile {
        let inBuf = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 64)
        defer { inBuf.deallocate() }
        var pending = firstBytes.count
        firstBytes.withUnsafeBytes { src in
            if !src.isEmpty { inBuf.copyMemory(from: src.baseAddress!, byteCount: src.count) }
        }
        if !compressed {
            try sink.write(inBuf, pending)
            while true {
                let n = retryingEINTR { read(fd, inBuf, bufferSize) }
                if n < 0 { throw FileIOError.systemCall("read", path: display, errno: errno) }
                if n == 0 { break }
                try sink.write(inBuf, n)
            }
            return try MappedFile(descriptor: out, displayName: display)
        }

        guard let dctx = ZSTD_createDCtx() else {
            throw FileIOError(.compression, path: display, "cannot create a zstd decompression context")
        }
        defer { ZSTD_freeDCtx(dctx) }
        // Cap the window so a hostile frame cannot ask for gigabytes of history (2^27 = 128 MiB,
        // zstd's default limit for ordinary levels; `zstd --long` frames up to 2^31 are allowed
        // only with --long on the command line, which graft's writer never uses).
        ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 27)
        let outCap = ZSTD_DStreamOutSize()
        let outBuf = UnsafeMutableRawPointer.allocate(byteCount: outCap, alignment: 64)
        defer { outBuf.deallocate() }
        var total: UInt64 = 0
        var lastRet = 0
        var sawInput = pending > 0
        var eof = false
        while !eof || pending > 0 {
            if pending == 0 && !eof {
                let n = retryingEINTR { read(fd, inBuf, bufferSize) }
                if n < 0 { throw FileIOError.systemCall("read", path: display, errno: errno) }
                if n == 0 { eof = true; continue }
                pending = n
                sawInput = true
            }
            var input = ZSTD_inBuffer(src: UnsafeRawPointer(inBuf), size: pending, pos: 0)
            while input.pos < input.size {
                var output = ZSTD_outBuffer(dst: outBuf, size: outCap, pos: 0)
                let r = ZSTD_decompressStream(dctx, &output, &input)
                if ZSTD_isError(r) != 0 {
                    let name = String(cString: ZSTD_getErrorName(r))
                    throw FileIOError(
                        .compression, path: display,
                        "malformed zstd data after \(total) decompressed bytes: \(name.lowercased())")
                }
                lastRet = r
                if output.pos > 0 {
                    try sink.write(outBuf, output.pos)
                    total += UInt64(output.pos)
                }
            }
            // Move unconsumed bytes (none: the loop consumes all) and read more.
            pending = 0
        }
        // Flush any output still buffered inside the decoder (none once the last
        // frame is complete: another call would start a new frame).
        while lastRet != 0 {
            var input = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
            var output = ZSTD_outBuffer(dst: outBuf, size: outCap, pos: 0)
            let r = ZSTD_decompressStream(dctx, &output, &input)
            if ZSTD_isError(r) != 0 { break }
            if output.pos > 0 {
                try sink.write(outBuf, output.pos)
                total += UInt64(output.pos)
            }
            lastRet = r
            if output.pos < outCap { break }
        }
        if !sawInput || lastRet != 0 {
            throw FileIOError(
                .compression, path: display,
                "truncated zstd stream: the last frame ends early (\(total) bytes decompressed)")
        }
        return try MappedFile(descriptor: out, displayName: display)
    }
}
