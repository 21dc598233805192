/// The one way the engine spreads work over cores: items `0..<count` are handed out in
/// order to `threads` threads, each with a worker value of its own (buffers, caches) that
/// no other thread sees. The first error stops the others and is rethrown; results come
/// back in item order, so combining them is deterministic whatever the thread count.
enum ParallelChunks {
    /// Runs `perform(worker, item)` for every item.
    /// - Parameters:
    ///   - counter: hands out the items (and may carry shared progress); one is made when nil.
    ///   - makeWorker: called once on each thread before its first item.
    ///   - finish: called once on each thread after its last item (release buffers here).
    ///   - onError: called on the failing thread right after the first error is recorded.
    static func run<Worker>(
        count: Int, threads: Int, counter: WorkCounter? = nil,
        makeWorker: @escaping @Sendable (Int) throws -> Worker,
        finish: (@Sendable (Worker) -> Void)? = nil,
        onError: (@Sendable (Error) -> Void)? = nil,
        perform body: @escaping @Sendable (Worker, Int) throws -> Void
    ) throws {
        let counter = counter ?? WorkCounter(limit: count)
        let n = max(1, min(threads, count))
        runOnThreads(n) { index in
            let worker: Worker
            do {
                worker = try makeWorker(index)
            } catch {
                counter.fail(error)
                onError?(error)
                return
            }
            defer { finish?(worker) }
            while let i = counter.take() {
                do {
                    try body(worker, i)
                } catch {
                    counter.fail(error)
                    onError?(error)
                }
            }
        }
        if let e = counter.firstError { throw e }
    }

    /// Like ``run``, collecting one result per item, returned in item order.
    static func map<Worker, Result>(
        count: Int, threads: Int,
        makeWorker: @escaping @Sendable (Int) throws -> Worker,
        finish: (@Sendable (Worker) -> Void)? = nil,
        perform body: @escaping @Sendable (Worker, Int) throws -> Result
    ) throws -> [Result] {
        let slots = UnsafeMutablePointer<Result?>.allocate(capacity: max(count, 1))
        slots.initialize(repeating: nil, count: max(count, 1))
        defer {
            slots.deinitialize(count: max(count, 1))
            slots.deallocate()
        }
        nonisolated(unsafe) let out = slots
        try run(
            count: count, threads: threads, makeWorker: makeWorker, finish: finish,
            perform: { w, i in
                out[i] = try body(w, i)
            })
        return (0..<count).map { slots[$0]! }
    }
}
