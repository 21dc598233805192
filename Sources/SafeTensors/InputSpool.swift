#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CZstd

/// Turns inputs that cannot be memory-mapped — a pipe on standard input, or a
/// zstd-compressed file — into a mapped file. The bytes are streamed into an
/// unlinked temporary file (in `$TMPDIR`, default /tmp) through a fixed 1 MiB
/// buffer, so memory use does not grow with the input.
enum InputSpool {
    static let zstdMagic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]
    static let bufferSize = 1 << 20

    /// Opens `path` (or standard input for "-") as a mapped, uncompressed safetensors image.
    static func open(_ path: String) throws -> MappedFile {
        let display = path == "-" ? "<stdin>" : path
        let fd: Int32
        if path == "-" {
            fd = 0
        } else {
            fd = retryingEINTR { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
            if fd < 0 { throw systemError("open", file: display) }
        }
        defer { if fd != 0 { close(fd) } }

        var st = stat()
        if fstat(fd, &st) != 0 { throw systemError("fstat", file: display) }
        let regular = (st.st_mode & S_IFMT) == S_IFREG
        if regular {
            // Peek at the magic without consuming the stream position of stdin.
            var magic = [UInt8](repeating: 0, count: 4)
            let n = magic.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 4, 0) }
            if n == 4 && magic == zstdMagic {
                return try spool(from: fd, display: display, firstBytes: [], compressed: true)
            }
            return try MappedFile(descriptor: fd, displayName: display)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw SafeTensorsError(.io, file: display, "is a directory, not a file")
        }
        // A pipe or other stream: read the first bytes to know whether it is zstd.
        var head = [UInt8](repeating: 0, count: 4)
        var got = 0
        while got < 4 {
            let n = head.withUnsafeMutableBytes { buf in retryingEINTR { read(fd, buf.baseAddress! + got, 4 - got) } }
            if n < 0 { throw systemError("read", file: display) }
            if n == 0 { break }
            got += n
        }
        let first = Array(head[0..<got])
        return try spool(from: fd, display: display, firstBytes: first, compressed: first == zstdMagic)
    }

    private static func makeTempFile(display: String) throws -> Int32 {
        var dir = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        if dir.isEmpty { dir = "/tmp" }
        var template = Array("\(dir)/graft-spool-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 { throw systemError("mkstemp", file: display, "creating a spool file in \(dir)") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fd
    }

    private static func writeAll(_ fd: Int32, _ p: UnsafeRawPointer, _ count: Int, display: String) throws {
        var done = 0
        while done < count {
            let n = retryingEINTR { write(fd, p + done, count - done) }
            if n < 0 { throw systemError("write", file: display, "spooling input to a temporary file") }
            done += n
        }
    }

    /// Writes a stream to the spool file, but never more than its own header declares:
    /// the header length is checked against the 100,000,000-byte limit as soon as the
    /// first 8 bytes are in, the header is validated as soon as it is complete, and the
    /// stream is cut off with an error the moment it runs past 8 + N + the end of the
    /// last tensor. A 30 KB zstd bomb or an endless pipe thus costs at most the header
    /// limit, not the disk.
    struct BoundedSpool {
        let fd: Int32
        let display: String
        private(set) var total: UInt64 = 0
        private var head: [UInt8] = []
        private var headLength: Int? = nil   // 8 + N once N is known
        private var declared: UInt64? = nil

        init(fd: Int32, display: String) {
            self.fd = fd
            self.display = display
        }

        mutating func write(_ p: UnsafeRawPointer, _ count: Int) throws {
            guard count > 0 else { return }
            if declared == nil { try collectHeader(p, count) }
            let (after, overflow) = total.addingReportingOverflow(UInt64(count))
            if let declared, overflow || after > declared {
                throw SafeTensorsError(.incompleteBuffer, file: display, offset: declared,
                                       "the stream goes on past the \(declared) bytes its header declares")
            }
            try InputSpool.writeAll(fd, p, count, display: display)
            total = after
        }

        private mutating func collectHeader(_ p: UnsafeRawPointer, _ count: Int) throws {
            let want = (headLength ?? 8) - head.count
            head.append(contentsOf: UnsafeRawBufferPointer(start: p, count: min(count, max(want, 0))))
            if headLength == nil && head.count >= 8 {
                var n: UInt64 = 0
                for i in (0..<8).reversed() { n = n << 8 | UInt64(head[i]) }
                guard n <= Header.maxByteCount else {
                    throw SafeTensorsError(.headerTooLarge, file: display, offset: 0,
                                           "header length \(n) exceeds the \(Header.maxByteCount)-byte limit")
                }
                headLength = 8 + Int(n)
                if count > want { try collectHeader(p + want, count - want); return }
            }
            if let headLength, head.count >= headLength {
                declared = try head.withUnsafeBytes { try Header.declaredFileSize(prefix: $0, source: display) }
                head = []
            }
        }
    }

    private static func spool(from fd: Int32, display: String, firstBytes: [UInt8], compressed: Bool) throws -> MappedFile {
        let out = try makeTempFile(display: display)
        defer { close(out) }
        var sink = BoundedSpool(fd: out, display: display)
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
                if n < 0 { throw systemError("read", file: display) }
                if n == 0 { break }
                try sink.write(inBuf, n)
            }
            return try MappedFile(descriptor: out, displayName: display)
        }

        guard let dctx = ZSTD_createDCtx() else {
            throw SafeTensorsError(.compression, file: display, "cannot create a zstd decompression context")
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
                if n < 0 { throw systemError("read", file: display) }
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
                    throw SafeTensorsError(.compression, file: display, offset: nil,
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
            throw SafeTensorsError(.compression, file: display,
                                   "truncated zstd stream: the last frame ends early (\(total) bytes decompressed)")
        }
        return try MappedFile(descriptor: out, displayName: display)
    }
}
