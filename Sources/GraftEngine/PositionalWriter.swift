import FileIO

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
        let buffer: Int?  // id of the worker buffer to release, nil for bytes the caller keeps alive
    }

    private let output: AtomicOutput
    private let totalBytes: Int
    private let lock = Lock()  // guards queue, head, busy, closed, error; its condition: "changed"
    private var queue: [Item] = []
    private var head = 0
    private var busy: Set<Int> = []
    private var closed = false
    private var error: Error?
    private var thread: SystemThread?
    private let onWritten: (Int) -> Void

    // Direct mode state (writer thread only, except the I/O ring below).
    static let windowBytes = 32 << 20
    static let alignment = 4096
    /// Staging windows: one being filled while the others are written. Several writes in
    /// flight also let the (virtual) disk work on more than one request at a time.
    static let windowCount = 3
    private var direct: DirectDescriptor?
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
            let ok = (try? fd.write(UnsafeRawBufferPointer(start: probe, count: Self.alignment), at: 0)) != nil
            probe.deallocate()
            if ok {
                self.direct = fd
                windows = (0..<Self.windowCount).map { _ in
                    UnsafeMutableRawPointer.allocate(byteCount: Self.windowBytes, alignment: Self.alignment)
                }
                io = DirectWriteRing(descriptor: fd, windows: windows)
            }
        }
        // The thread holds the writer until its loop ends (after finish()).
        thread = SystemThread.start { [self] in loop() }
        precondition(thread != nil, "cannot start the writer thread")
    }

    deinit {
        io?.stop()
        for w in windows { w.deallocate() }
    }

    /// Queues `bytes` for writing at `offset`. When `buffer` is given, the bytes live in
    /// that worker buffer, which stays busy until written; otherwise the caller keeps
    /// them alive until ``finish()``.
    func submit(_ bytes: UnsafeRawBufferPointer, at offset: Int, buffer: Int?) throws {
        try lock.withLock {
            if let error { throw error }
            if let buffer { busy.insert(buffer) }
            queue.append(Item(bytes: bytes, offset: offset, buffer: buffer))
            lock.broadcast()
        }
        // Test hook (GRAFT_TEST_PAUSE_FILE): pause once the first chunk after the header is queued.
        if offset > 0 { TestPause.pauseIfRequested() }
    }

    /// Blocks until the writer no longer uses `buffer`.
    func waitUntilFree(_ buffer: Int) throws {
        try lock.withLock {
            while busy.contains(buffer) { lock.wait() }
            if let error { throw error }
        }
    }

    /// Writes everything still queued, stops the thread and rethrows a write error.
    func finish() throws {
        lock.withLock {
            closed = true
            lock.broadcast()
        }
        thread?.join()
        thread = nil
        if let error = lock.withLock({ error }) { throw error }
    }

    private func loop() {
        while true {
            lock.lock()
            while head == queue.count && !closed { lock.wait() }
            if head == queue.count && closed {
                lock.unlock()
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
            lock.unlock()

            var released: [Int] = []
            do {
                if failed {
                    if let b = item.buffer { released.append(b) }
                } else if direct != nil {
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
                lock.withLock {
                    for b in released { busy.remove(b) }
                    lock.broadcast()
                }
            }
        }
    }

    private func record(_ e: Error) {
        lock.withLock {
            if error == nil { error = e }
            lock.broadcast()
        }
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
        if rounded > length {
            staging!.advanced(by: length).initializeMemory(as: UInt8.self, repeating: 0, count: rounded - length)
        }
        try io!.write(window: current, byteCount: rounded, at: windowStart)
        windowStart += length
        windowFilled = 0
        current = (current + 1) % windows.count
        try io!.waitUntilFree(window: current)
    }

    private func finishDirect() {
        guard direct != nil, lock.withLock({ error == nil }) else { return }
        do {
            if windowStart < totalBytes || !waiting.isEmpty {
                throw EngineError(
                    .internalInconsistency, file: output.path,
                    "output incomplete at byte \(windowStart + windowFilled) of \(totalBytes)")
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
    private let descriptor: DirectDescriptor
    private let windows: [UnsafeMutableRawPointer]
    private let lock = Lock()  // guards jobs, busy, stopping, error; its condition: "changed"
    private var jobs: [Job] = []
    private var busy: Set<Int> = []
    private var stopping = false
    private var error: Error?
    private var threads: [SystemThread] = []

    init(descriptor: DirectDescriptor, windows: [UnsafeMutableRawPointer], threads count: Int = 2) {
        self.descriptor = descriptor
        self.windows = windows
        for _ in 0..<count {
            // Each thread holds the ring until stop() ends its loop.
            if let t = SystemThread.start({ [self] in loop() }) { threads.append(t) }
        }
        precondition(!threads.isEmpty, "cannot start an I/O thread")
    }

    func write(window: Int, byteCount: Int, at offset: Int) throws {
        try lock.withLock {
            if let error { throw error }
            busy.insert(window)
            jobs.append(Job(window: window, byteCount: byteCount, offset: offset))
            lock.broadcast()
        }
    }

    func waitUntilFree(window: Int) throws {
        try lock.withLock {
            while busy.contains(window) && error == nil { lock.wait() }
            if let error { throw error }
        }
    }

    /// Waits for every queued write.
    func drain() throws {
        try lock.withLock {
            while !busy.isEmpty && error == nil { lock.wait() }
            if let error { throw error }
        }
    }

    /// Stops the threads (after draining or after an error).
    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        for t in threads { t.join() }
        threads.removeAll()
    }

    private func loop() {
        while true {
            lock.lock()
            while jobs.isEmpty && !stopping { lock.wait() }
            if jobs.isEmpty {
                lock.unlock()
                return
            }
            let job = jobs.removeFirst()
            let failed = error != nil
            lock.unlock()
            var e: Error? = nil
            if !failed {
                do {
                    try descriptor.write(
                        UnsafeRawBufferPointer(start: windows[job.window], count: job.byteCount),
                        at: job.offset)
                } catch { e = error }
            }
            lock.withLock {
                if let e, error == nil { error = e }
                busy.remove(job.window)
                lock.broadcast()
            }
        }
    }
}
