import CZstd
import FileIO

/// A streaming zstd compressor writing one frame sequentially into an `AtomicOutput`
/// (`ZSTD_compressStream2`; with `workers` > 0 libzstd compresses on its own threads).
/// The frame carries the content size and a checksum, so `zstd -d` and `zstd -t`
/// verify it. Not thread-safe: one caller at a time (``OrderedSink`` ensures that).
public final class ZstdEncoder {
    private let context: OpaquePointer
    private let output: AtomicOutput
    private let buffer: UnsafeMutableRawPointer
    private let capacity: Int
    /// Compressed bytes written so far.
    public private(set) var compressedBytes = 0
    /// Uncompressed bytes consumed so far.
    public private(set) var inputBytes = 0

    /// Compression levels libzstd accepts (negative levels are the fast modes).
    public static var levelRange: ClosedRange<Int> { Int(ZSTD_minCLevel())...Int(ZSTD_maxCLevel()) }

    /// - Parameters:
    ///   - pledgedSize: the exact number of bytes that will be fed, stored in the frame header.
    /// - Throws: `EngineError` when libzstd rejects a parameter or cannot allocate.
    public init(output: AtomicOutput, level: Int, workers: Int, pledgedSize: Int?) throws {
        guard let cctx = ZSTD_createCCtx() else {
            throw EngineError(.compression, file: output.path, "zstd: cannot create a compression context")
        }
        context = cctx
        self.output = output
        capacity = max(Int(ZSTD_CStreamOutSize()), 1 << 20)
        buffer = .allocate(byteCount: capacity, alignment: 64)
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(clamping: level)), "level \(level)")
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1), "checksum")
        if workers > 0 {
            // A libzstd built without threads refuses this; compress single-threaded then.
            _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, Int32(clamping: workers))
        }
        if let pledgedSize {
            try check(ZSTD_CCtx_setPledgedSrcSize(cctx, UInt64(pledgedSize)), "pledged size")
        }
    }

    deinit {
        ZSTD_freeCCtx(context)
        buffer.deallocate()
    }

    private func check(_ code: Int, _ what: String) throws {
        if ZSTD_isError(code) != 0 {
            throw EngineError(
                .compression, file: output.path,
                "zstd (\(what)): \(String(cString: ZSTD_getErrorName(code)).lowercased())")
        }
    }

    /// Compresses `bytes` (buffered by libzstd; output is written as it appears).
    public func feed(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var input = ZSTD_inBuffer(src: base, size: bytes.count, pos: 0)
        while input.pos < input.size {
            var out = ZSTD_outBuffer(dst: buffer, size: capacity, pos: 0)
            let r = ZSTD_compressStream2(context, &out, &input, ZSTD_e_continue)
            try check(r, "compress")
            try output.append(UnsafeRawBufferPointer(start: buffer, count: out.pos))
            compressedBytes += out.pos
        }
        inputBytes += bytes.count
    }

    /// Ends the frame and writes what remains. Returns the compressed size.
    @discardableResult
    public func finish() throws -> Int {
        var input = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
        while true {
            var out = ZSTD_outBuffer(dst: buffer, size: capacity, pos: 0)
            let remaining = ZSTD_compressStream2(context, &out, &input, ZSTD_e_end)
            try check(remaining, "end of frame")
            try output.append(UnsafeRawBufferPointer(start: buffer, count: out.pos))
            compressedBytes += out.pos
            if remaining == 0 { break }
        }
        return compressedBytes
    }
}

/// Hands chunks produced out of order by worker threads to one consumer in index
/// order. A worker holding chunk `i` waits until chunks `0..<i` have been consumed,
/// then feeds its own bytes; so at most one finished chunk per worker is in flight
/// (the reorder window is the thread count) and memory stays bounded. Chunks must be
/// taken by workers in increasing index order (``WorkCounter`` does that), which
/// guarantees progress: the lowest unconsumed chunk is always held by a running worker.
final class OrderedSink: @unchecked Sendable {
    private let lock = Lock()
    private var next = 0
    private var cancelled = false
    private let consume: (UnsafeRawBufferPointer) throws -> Void

    struct Cancelled: Error, CustomStringConvertible {
        var description: String { "output cancelled after an earlier error" }
    }

    init(consume: @escaping (UnsafeRawBufferPointer) throws -> Void) {
        self.consume = consume
    }

    /// Blocks until it is chunk `index`'s turn, consumes `bytes`, passes the turn on.
    /// Throws ``Cancelled`` when another worker failed meanwhile.
    func submit(_ index: Int, _ bytes: UnsafeRawBufferPointer) throws {
        let stop = lock.withLock {
            while next != index && !cancelled { lock.wait() }
            return cancelled
        }
        if stop { throw Cancelled() }
        // Only the holder of the turn gets here, so the consumer needs no lock of its own.
        try consume(bytes)
        lock.withLock {
            next += 1
            lock.broadcast()
        }
        TestPause.pauseIfRequested()  // test hook (GRAFT_TEST_PAUSE_FILE); no-op otherwise
    }

    /// Wakes every waiting worker with ``Cancelled`` (after the real error was recorded).
    func cancel() {
        lock.withLock {
            cancelled = true
            lock.broadcast()
        }
    }
}
