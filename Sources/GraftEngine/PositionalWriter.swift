#if canImport(Glibc)
import Glibc
#endif
import SafeTensors

/// Writes chunks at their file offsets on one dedicated thread.
///
/// Why one thread: concurrent `pwrite`s to one ext4 file serialize on the inode lock
/// and the waiting thread spins (a quarter of all CPU time of a 2-thread SDXL merge,
/// measured with perf). Workers hand over a buffer and go on filling their other one;
/// ``waitUntilFree(_:)`` gives it back.
///
/// Direct mode (the default where the file system supports `O_DIRECT`): chunks are
/// assembled into a 4096-byte aligned staging window and each full window is written
/// past the page cache. That removes the kernel's copy of every output byte into the
/// page cache (half of all CPU time of a merge) and the write-back at fsync time.
/// Chunks arrive nearly in file order (workers take them in order); a chunk that lies
/// beyond the current window waits, holding its buffer, until the window before it is
/// complete. That cannot deadlock: the missing bytes always belong to a chunk a worker
/// is still computing, and that worker's own buffers hold only earlier, already
/// placed chunks. ``Executor/directIO`` (GRAFT_NO_DIRECT=1 in the environment) turns it off.
final class PositionalWriter: @unchecked Sendable {
    private struct Item {
        var bytes: UnsafeRawBufferPointer
        var offset: Int
        let buffer: Int?     // id of the worker buffer to release, nil for bytes the caller keeps alive
    }

    private let output: AtomicOutput
    private let totalBytes: Int
    private var mutex = pthread_mutex_t()
    private var changed = pthread_cond_t()
    private var queue: [Item] = []
    private var head = 0
    private var busy: Set<Int> = []
    private var closed = false
    private(set) var error: Error?
    private var thread = pthread_t()
    private let onWritten: (Int) -> Void

    // Direct mode state (writer thread only, except the I/O ring below).
    static let windowBytes = 32 << 20
    static let alignment = 4096
    /// Staging windows: one being filled while the others are written. Several writes in
    /// flight also let the (virtual) disk work on more than one request at a time.
    static let windowCount = 3
    private var directFD: Int32?
    private var windows: [UnsafeMutableRawPointer] = []
    private var current = 0
    private var staging: UnsafeMutableRawPointer? { windows.isEmpty ? nil : windows[current] }
    private var windowStart = 0
    private var windowFilled = 0
    private var waiting: [Item] = []
    private var io: DirectWriteRing?

    /// - Parameters:
    ///   - totalBytes: the final file size (direct mode writes whole windows, then truncates).
    ///   - onWritten: called on the writer thread with each chunk's byte count.
    ///   - direct: try O_DIRECT (falls back to buffered writes where unsupported).
    init(output: AtomicOutput, totalBytes: Int, direct: Bool, onWritten: @escaping (Int) -> Void) {
        self.output = output
        self.totalBytes = totalBytes
        self.onWritten = onWritten
        if direct, let fd = output.openDirectDescriptor() {
            // Probe: one aligned block at offset 0 (overwritten later by the header's window).
            let probe = UnsafeMutableRawPointer.allocate(byteCount: Self.alignment, alignment: Self.alignment)
            probe.initializeMemory(as: UInt8.self, repeating: 0, count: Self.alignment)
            let ok = pwrite(fd, probe, Self.alignment, 0) == Self.alignment
            probe.deallocate()
            if ok {
                directFD = fd
                windows = (0..<Self.windowCount).map { _ in
                    UnsafeMutableRawPointer.allocate(byteCount: Self.windowBytes, alignment: Self.alignment)
                }
                io = DirectWriteRing(output: output, descriptor: fd, windows: windows)
            } else {
                close(fd)
            }
        }
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&changed, nil)
        let me = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let w = Unmanaged<PositionalWriter>.fromOpaque(raw!).takeRetainedValue()
            w.loop()
            return nil
        }, me)
        precondition(rc == 0, "cannot start the writer thread")
    }

    deinit {
        io?.stop()
        if let directFD { close(directFD) }
        for w in windows { w.deallocate() }
        pthread_cond_destroy(&changed)
        pthread_mutex_destroy(&mutex)
    }

    /// Whether writes bypass the page cache.
    var isDirect: Bool { directFD != nil }

    /// Queues `bytes` for writing at `offset`. When `buffer` is given, the bytes live in
    /// that worker buffer, which stays busy until written; otherwise the caller keeps
    /// them alive until ``finish()``.
    func submit(_ bytes: UnsafeRawBufferPointer, at offset: Int, buffer: Int?) throws {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let error { throw error }
        if let buffer { busy.insert(buffer) }
        queue.append(Item(bytes: bytes, offset: offset, buffer: buffer))
        pthread_cond_broadcast(&changed)
    }

    /// Blocks until the writer no longer uses `buffer`.
    func waitUntilFree(_ buffer: Int) throws {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while busy.contains(buffer) { pthread_cond_wait(&changed, &mutex) }
        if let error { throw error }
    }

    /// Writes everything still queued, stops the thread and rethrows a write error.
    func finish() throws {
        pthread_mutex_lock(&mutex)
        closed = true
        pthread_cond_broadcast(&changed)
        pthread_mutex_unlock(&mutex)
        pthread_join(thread, nil)
        if let error { throw error }
    }

    private func loop() {
        while true {
            pthread_mutex_lock(&mutex)
            while head == queue.count && !closed { pthread_cond_wait(&changed, &mutex) }
            if head == queue.count && closed {
                pthread_mutex_unlock(&mutex)
                finishDirect()
                return
            }
            let item = queue[head]
            head += 1
            if head > 1024 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            let failed = error != nil
            pthread_mutex_unlock(&mutex)

            var released: [Int] = []
            do {
                if failed {
                    if let b = item.buffer { released.append(b) }
                } else if directFD != nil {
                    try placeDirect(item, released: &released)
                } else {
                    try output.write(item.bytes, at: item.offset)
                    onWritten(item.bytes.count)
                    if let b = item.buffer { released.append(b) }
                }
            } catch {
                record(error)
                // Nothing more will be written: give every held buffer back.
                if let b = item.buffer { released.append(b) }
                released += waiting.compactMap(\.buffer)
                waiting.removeAll()
            }
            if !released.isEmpty {
                pthread_mutex_lock(&mutex)
                for b in released { busy.remove(b) }
                pthread_cond_broadcast(&changed)
                pthread_mutex_unlock(&mutex)
            }
        }
    }

    private func record(_ e: Error) {
        pthread_mutex_lock(&mutex)
        if error == nil { error = e }
        pthread_cond_broadcast(&changed)
        pthread_mutex_unlock(&mutex)
    }

    // MARK: direct mode

    private var windowLength: Int { min(Self.windowBytes, totalBytes - windowStart) }

    /// Copies what falls into the current window; keeps the rest waiting; writes full windows.
    private func placeDirect(_ item: Item, released: inout [Int]) throws {
        waiting.append(item)
        var progressed = true
        while progressed {
            progressed = false
            var still: [Item] = []
            for var it in waiting {
                let windowEnd = windowStart + windowLength
                if it.offset >= windowEnd || it.bytes.isEmpty {
                    if it.bytes.isEmpty { if let b = it.buffer { released.append(b) } } else { still.append(it) }
                    continue
                }
                precondition(it.offset >= windowStart, "output bytes placed twice")
                let n = min(it.bytes.count, windowEnd - it.offset)
                staging!.advanced(by: it.offset - windowStart).copyMemory(from: it.bytes.baseAddress!, byteCount: n)
                windowFilled += n
                onWritten(n)
                if n == it.bytes.count {
                    if let b = it.buffer { released.append(b) }
                } else {
                    it.bytes = UnsafeRawBufferPointer(rebasing: it.bytes[n...])
                    it.offset += n
                    still.append(it)
                }
            }
            waiting = still
            if windowLength > 0 && windowFilled == windowLength {
                try flushWindow()
                progressed = !waiting.isEmpty
            }
        }
    }

    private func flushWindow() throws {
        let length = windowLength
        let rounded = (length + Self.alignment - 1) / Self.alignment * Self.alignment
        if rounded > length { staging!.advanced(by: length).initializeMemory(as: UInt8.self, repeating: 0, count: rounded - length) }
        try io!.write(window: current, byteCount: rounded, at: windowStart)
        windowStart += length
        windowFilled = 0
        current = (current + 1) % windows.count
        try io!.waitUntilFree(window: current)
    }

    private func finishDirect() {
        guard directFD != nil, error == nil else { return }
        do {
            if windowStart < totalBytes || !waiting.isEmpty {
                throw EngineError(.internalInconsistency, file: output.path, "output incomplete at byte \(windowStart + windowFilled) of \(totalBytes)")
            }
            try io!.drain()
            try output.truncate(to: totalBytes)
        } catch {
            record(error)
        }
    }
}

/// Writes full staging windows with O_DIRECT on two I/O threads, so the disk works
/// while the next window is assembled.
final class DirectWriteRing: @unchecked Sendable {
    private struct Job { let window: Int; let byteCount: Int; let offset: Int }
    private let output: AtomicOutput
    private let fd: Int32
    private let windows: [UnsafeMutableRawPointer]
    private var mutex = pthread_mutex_t()
    private var changed = pthread_cond_t()
    private var jobs: [Job] = []
    private var busy: Set<Int> = []
    private var stopping = false
    private var error: Error?
    private var threads: [pthread_t] = []

    init(output: AtomicOutput, descriptor: Int32, windows: [UnsafeMutableRawPointer], threads count: Int = 2) {
        self.output = output
        self.fd = descriptor
        self.windows = windows
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&changed, nil)
        for _ in 0..<count {
            var t = pthread_t()
            let me = Unmanaged.passRetained(self).toOpaque()
            if pthread_create(&t, nil, { raw in
                let ring = Unmanaged<DirectWriteRing>.fromOpaque(raw!).takeRetainedValue()
                ring.loop()
                return nil
            }, me) == 0 {
                threads.append(t)
            } else {
                Unmanaged<DirectWriteRing>.fromOpaque(me).release()
            }
        }
        precondition(!threads.isEmpty, "cannot start an I/O thread")
    }

    func write(window: Int, byteCount: Int, at offset: Int) throws {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let error { throw error }
        busy.insert(window)
        jobs.append(Job(window: window, byteCount: byteCount, offset: offset))
        pthread_cond_broadcast(&changed)
    }

    func waitUntilFree(window: Int) throws {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while busy.contains(window) && error == nil { pthread_cond_wait(&changed, &mutex) }
        if let error { throw error }
    }

    /// Waits for every queued write.
    func drain() throws {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while !busy.isEmpty && error == nil { pthread_cond_wait(&changed, &mutex) }
        if let error { throw error }
    }

    /// Stops the threads (after draining or after an error).
    func stop() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_broadcast(&changed)
        pthread_mutex_unlock(&mutex)
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }

    private func loop() {
        while true {
            pthread_mutex_lock(&mutex)
            while jobs.isEmpty && !stopping { pthread_cond_wait(&changed, &mutex) }
            if jobs.isEmpty {
                pthread_mutex_unlock(&mutex)
                return
            }
            let job = jobs.removeFirst()
            let failed = error != nil
            pthread_mutex_unlock(&mutex)
            var e: Error? = nil
            if !failed {
                do {
                    try output.write(UnsafeRawBufferPointer(start: windows[job.window], count: job.byteCount),
                                     at: job.offset, descriptor: fd)
                } catch { e = error }
            }
            pthread_mutex_lock(&mutex)
            if let e, error == nil { error = e }
            busy.remove(job.window)
            pthread_cond_broadcast(&changed)
            pthread_mutex_unlock(&mutex)
        }
    }
}
