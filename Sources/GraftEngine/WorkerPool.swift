#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(worker)` on `count` threads and waits for all of them.
/// (DispatchQueue.concurrentPerform may run long items serially on Linux; plain
/// pthreads always give real parallelism.)
func runOnThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    if count <= 1 { body(0); return }
    final class Box: @unchecked Sendable {
        let body: @Sendable (Int) -> Void
        let index: Int
        init(_ body: @escaping @Sendable (Int) -> Void, _ index: Int) { self.body = body; self.index = index }
    }
    var threads: [pthread_t] = []
    for i in 1..<count {
        let box = Unmanaged.passRetained(Box(body, i)).toOpaque()
        var t = pthread_t()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setstacksize(&attr, 8 << 20)
        let rc = pthread_create(&t, &attr, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body(box.index)
            return nil
        }, box)
        pthread_attr_destroy(&attr)
        if rc == 0 {
            threads.append(t)
        } else {
            // Could not start a thread: run its share on this one.
            let b = Unmanaged<Box>.fromOpaque(box).takeRetainedValue()
            b.body(b.index)
        }
    }
    body(0)
    for t in threads { pthread_join(t, nil) }
}

/// A mutex-protected counter handing out work items in order, with a shared
/// first-error slot that stops everyone.
final class WorkCounter: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var next = 0
    private let limit: Int
    private(set) var firstError: Error?
    private var done = 0

    init(limit: Int) {
        self.limit = limit
        pthread_mutex_init(&mutex, nil)
    }

    /// The next item index, or nil when all are taken or a worker failed.
    func take() -> Int? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard firstError == nil, next < limit else { return nil }
        next += 1
        return next - 1
    }

    func fail(_ e: Error) {
        pthread_mutex_lock(&mutex)
        if firstError == nil { firstError = e }
        pthread_mutex_unlock(&mutex)
    }

    /// Adds to the shared progress total and returns the new value.
    func addDone(_ n: Int) -> Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        done += n
        return done
    }
}

/// The number of worker threads to use: the online CPU count, overridable with
/// GRAFT_THREADS.
public func defaultThreadCount() -> Int {
    if let s = getenv("GRAFT_THREADS"), let n = Int(String(cString: s)), n > 0 { return min(n, 256) }
    return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
}
