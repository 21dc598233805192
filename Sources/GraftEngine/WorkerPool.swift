import FileIO

/// Runs `body(worker)` on `count` threads and waits for all of them.
/// (DispatchQueue.concurrentPerform may run long items serially on Linux; plain
/// pthreads, through FileIO's `SystemThread`, always give real parallelism.)
func runOnThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    if count <= 1 { body(0); return }
    var threads: [SystemThread] = []
    for i in 1..<count {
        if let t = SystemThread.start(stackSize: 8 << 20, { body(i) }) {
            threads.append(t)
        } else {
            // Could not start a thread: run its share on this one.
            body(i)
        }
    }
    body(0)
    for t in threads { t.join() }
}

/// A counter handing out work items in order, with a shared first-error slot that
/// stops everyone.
final class WorkCounter: @unchecked Sendable {
    private let lock = Lock()
    private var next = 0
    private let limit: Int
    private var error: Error?
    private var done = 0

    init(limit: Int) {
        self.limit = limit
    }

    /// The first error any worker reported.
    var firstError: Error? { lock.withLock { error } }

    /// The next item index, or nil when all are taken or a worker failed.
    func take() -> Int? {
        lock.withLock {
            guard error == nil, next < limit else { return nil }
            next += 1
            return next - 1
        }
    }

    func fail(_ e: Error) {
        lock.withLock { if error == nil { error = e } }
    }

    /// Adds to the shared progress total and returns the new value.
    func addDone(_ n: Int) -> Int {
        lock.withLock {
            done += n
            return done
        }
    }
}

/// The number of worker threads to use: the online CPU count, overridable with
/// GRAFT_THREADS.
public func defaultThreadCount() -> Int {
    if let s = SystemInfo.environment("GRAFT_THREADS"), let n = Int(s), n > 0 { return min(n, 256) }
    return SystemInfo.onlineProcessorCount
}
