import FileIO
import SafeTensors

/// Runs an ``ExecutionPlan``: lays the output file out, then produces every tensor as a
/// stream of bounded chunks on all cores, each written at its final offset.
///
/// Memory: each worker owns one fp32 accumulator as large as the largest chunk (at least
/// ``chunkElements`` elements, more when an update needs more rows at once), two output
/// buffers of that many elements (one filled while the writer drains the other), and the
/// fp32 copies of the factors of the updates it is applying; nothing grows with the
/// checkpoint. Inputs are read through their read-only mappings. Output bytes do not
/// depend on the thread count or chunk size: every element is computed by the same
/// sequence of operations, and reductions are combined in chunk order.
public struct Executor: Sendable {
    /// Elements per chunk (1 Mi elements = 4 MiB of fp32 accumulator).
    public var chunkElements: Int = 1 << 20
    /// Bytes per chunk for plain copies.
    public var copyChunkBytes: Int = 16 << 20
    public var threads: Int = defaultThreadCount()
    /// `.raw` writes every chunk at its offset (any order, any thread); `.sequential` and
    /// `.zstd` feed chunks in file order through a bounded reorder window (to the output,
    /// or to the compressor). An output that is a stream (standard output) gets
    /// `.sequential` instead of `.raw`.
    public var encoding: OutputEncoding = .raw
    /// Write uncompressed output past the page cache (O_DIRECT) where the file system
    /// allows it; on by default unless GRAFT_NO_DIRECT is set. Same bytes either way.
    public var directIO: Bool = !environmentFlag("GRAFT_NO_DIRECT")
    /// Fail (before anything is committed) as soon as a finite value becomes ±inf in the
    /// output dtype, instead of counting it in ``ExecutionReport/overflows``.
    public var failOnOverflow = false

    public init() {}

    struct Chunk {
        let tensor: Int  // index into `jobs`
        let start: Int  // first unit (byte, element or row, by operation)
        let end: Int
    }

    struct Job {
        let planned: PlannedTensor
        let outInfo: TensorInfo
        let outOffset: Int
        /// The updates with their reductions, for `.update` jobs.
        var updates: TensorUpdates?
    }

    /// Runs `plan`, writing into `output` (which the caller commits or aborts).
    /// - Throws: the first `SafeTensorsError` / `EngineError` any worker hit.
    public func run(_ plan: ExecutionPlan, into output: AtomicOutput, progress: ProgressCallback? = nil) throws
        -> ExecutionReport
    {
        let t0 = monotonicSeconds()
        let layout = try FileLayout(tensors: plan.tensors.map(\.output), metadata: plan.metadata, file: output.path)

        var jobs: [Job] = []
        var chunks: [Chunk] = []
        var flops = 0.0
        var merged = 0, converted = 0, copied = 0
        var bufferElements = chunkElements
        for (i, info) in layout.tensors.enumerated() {
            let p = plan.tensors[layout.inputIndex[i]]
            var job = Job(planned: p, outInfo: info, outOffset: layout.fileOffset(ofTensorAt: i), updates: nil)
            let ji = jobs.count
            switch p.operation {
            case .copy:
                copied += 1
                chunks += Self.split(info.byteCount, by: copyChunkBytes).map {
                    Chunk(tensor: ji, start: $0.lowerBound, end: $0.upperBound)
                }
            case .convert:
                converted += 1
                chunks += Self.split(p.input.elementCount, by: chunkElements).map {
                    Chunk(tensor: ji, start: $0.lowerBound, end: $0.upperBound)
                }
            case .update(let u):
                merged += 1
                guard p.input.dtype.isConvertibleFloat, p.output.dtype.isConvertibleFloat else {
                    throw EngineError(
                        .invalidTarget, file: p.source.path, tensor: p.input.name,
                        "cannot apply updates to a \(p.input.dtype.rawValue) tensor")
                }
                flops += u.flops()
                for r in u.rowChunks(maxElements: chunkElements) {
                    bufferElements = max(bufferElements, r.count * u.columns)
                    chunks.append(Chunk(tensor: ji, start: r.lowerBound, end: r.upperBound))
                }
                job.updates = u
            }
            jobs.append(job)
        }
        try computeReductions(&jobs, precision: plan.precision)

        let total = layout.totalByteCount
        var encoder: ZstdEncoder? = nil
        var sink: OrderedSink? = nil
        let encoding = self.encoding == .raw && output.isStream ? .sequential : self.encoding
        switch encoding {
        case .raw:
            try output.reserve(byteCount: total)
        case .sequential:
            try layout.headerBytes.withUnsafeBytes { try output.append($0) }
            sink = OrderedSink(consume: { try output.append($0) })
        case .zstd(let level, let workers):
            let e = try ZstdEncoder(output: output, level: level, workers: workers, pledgedSize: total)
            try layout.headerBytes.withUnsafeBytes { try e.feed($0) }
            encoder = e
            nonisolated(unsafe) let unsafeEncoder = e
            sink = OrderedSink(consume: { try unsafeEncoder.feed($0) })
        }
        // Overflow counts per chunk, summed per tensor afterwards (in chunk order).
        let overflowPerChunk = UnsafeMutablePointer<Int>.allocate(capacity: max(chunks.count, 1))
        overflowPerChunk.initialize(repeating: 0, count: max(chunks.count, 1))
        defer { overflowPerChunk.deallocate() }
        nonisolated(unsafe) let overflowSlots = overflowPerChunk
        let counter = WorkCounter(limit: chunks.count)
        if encoding != .raw { _ = counter.addDone(layout.headerBytes.count) }
        let nThreads = max(1, min(threads, chunks.count))
        let precision = plan.precision
        let workerElements = bufferElements
        let jobsRef = jobs
        let chunksRef = chunks
        let orderedSink = sink
        let failOnOverflow = self.failOnOverflow
        // Uncompressed output: one writer thread does every pwrite (see PositionalWriter).
        let writer: PositionalWriter? =
            orderedSink == nil
            ? PositionalWriter(
                output: output, totalBytes: total, direct: directIO,
                onWritten: { n in progress?(counter.addDone(n), total) })
            : nil
        // The header goes through the writer too (direct mode assembles whole blocks);
        // this copy lives until the writer has finished.
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.headerBytes.count, alignment: 64)
        defer { header.deallocate() }
        layout.headerBytes.withUnsafeBytes { header.copyMemory(from: $0) }
        if let writer { try writer.submit(UnsafeRawBufferPointer(header), at: 0, buffer: nil) }
        let maxOutSize = plan.tensors.map { $0.output.dtype.bitCount / 8 }.max() ?? 8
        do {
            try ParallelChunks.run(
                count: chunks.count, threads: nThreads, counter: counter,
                makeWorker: { index in
                    let worker = ChunkWorker(
                        capacity: workerElements, precision: precision, worker: index,
                        maxOutputElementSize: max(1, maxOutSize))
                    if let writer { worker.waitUntilFree = { try writer.waitUntilFree($0) } }
                    return worker
                },
                finish: { worker in
                    // The worker owns the output buffers the writer may still be reading: keep
                    // it alive (Swift may release an object after its last use) until they are free.
                    withExtendedLifetime(worker) {
                        if let writer { for b in worker.bufferIDs { try? writer.waitUntilFree(b) } }
                    }
                },
                // Record the real error before waking the workers waiting for their turn.
                onError: { _ in orderedSink?.cancel() },
                perform: { worker, ci in
                    let c = chunksRef[ci]
                    let job = jobsRef[c.tensor]
                    let r: (bytes: Int, overflow: Int)
                    if let orderedSink {
                        r = try worker.produce(c, of: job, c.tensor) { bytes, _, _ in try orderedSink.submit(ci, bytes)
                        }
                        progress?(counter.addDone(r.bytes), total)
                    } else {
                        r = try worker.produce(c, of: job, c.tensor) { bytes, offset, id in
                            try writer!.submit(bytes, at: offset, buffer: id)
                        }
                    }
                    overflowSlots[ci] = r.overflow
                    if failOnOverflow && r.overflow > 0 {
                        throw EngineError(
                            .overflow, file: output.path, tensor: job.outInfo.name,
                            "\(r.overflow) finite value(s) become infinite in \(job.outInfo.dtype.rawValue)")
                    }
                })
        } catch {
            if let writer { try? writer.finish() }
            throw error
        }
        if let writer { try writer.finish() }
        var compressed: Int? = nil
        if let encoder {
            guard encoder.inputBytes == total else {
                throw EngineError(
                    .internalInconsistency, file: output.path,
                    "\(encoder.inputBytes) of \(total) bytes reached the compressor")
            }
            compressed = try encoder.finish()
        }
        var perTensor = [Int](repeating: 0, count: jobs.count)
        for (ci, c) in chunks.enumerated() { perTensor[c.tensor] += overflowPerChunk[ci] }
        let overflows = perTensor.enumerated().compactMap { i, n in
            n > 0 ? TensorOverflow(name: jobs[i].outInfo.name, count: n) : nil
        }
        var report = ExecutionReport(
            bytesWritten: total, tensorsWritten: jobs.count, tensorsMerged: merged,
            tensorsConverted: converted, tensorsCopied: copied, flops: flops,
            seconds: monotonicSeconds() - t0, threads: nThreads)
        report.overflows = overflows
        report.compressedBytes = compressed
        return report
    }

    /// `0..<n` in pieces of at most `step`.
    static func split(_ n: Int, by step: Int) -> [Range<Int>] {
        let step = max(1, step)
        return stride(from: 0, to: n, by: step).map { $0..<min(n, $0 + step) }
    }

    /// Runs the reduction passes of the updates that need one (input-axis DoRA).
    private func computeReductions(_ jobs: inout [Job], precision: MergePrecision) throws {
        let ids = jobs.indices.filter { jobs[$0].updates?.needsReduction == true }
        guard !ids.isEmpty else { return }
        var targets = ids.compactMap { jobs[$0].updates }
        let sources = ids.map { jobs[$0].planned }
        let widths = targets.map(\.columns)
        try Reductions.compute(&targets, threads: threads, maxElements: Reductions.groupElements, precision: precision)
        {
            id, rows, out in
            let p = sources[id]
            let columns = widths[id]
            p.source.withData(of: p.input) { d in
                let size = p.input.dtype.bitCount / 8
                Conversion.toFloat32(
                    d.baseAddress! + rows.lowerBound * columns * size, from: p.input.dtype, out,
                    count: rows.count * columns)
            }
            roundInPlace(out, rows.count * columns, precision)
        }
        for (k, id) in ids.enumerated() { jobs[id].updates = targets[k] }
    }
}

/// Whether an environment variable is set to something other than "", "0", "false" or "no".
func environmentFlag(_ name: String) -> Bool { SystemInfo.environmentFlag(name) }

/// Seconds on the monotonic clock (for durations).
public func monotonicSeconds() -> Double { SystemInfo.monotonicSeconds() }

/// Per-thread buffers and the per-chunk work.
final class ChunkWorker {
    private var acc: UnsafeMutablePointer<Float>
    /// Two output buffers: one can be queued for writing while the other is filled.
    private var outBufs: [UnsafeMutableRawPointer]
    private var current = 0
    let bufferIDs: [Int]
    /// Waits until the writer has released a buffer (nil: buffers are never queued).
    var waitUntilFree: ((Int) throws -> Void)?
    private let capacity: Int
    private let precision: MergePrecision
    private let appliers: UpdateAppliers

    init(capacity: Int, precision: MergePrecision, worker: Int = 0, maxOutputElementSize: Int = 8) {
        self.capacity = capacity
        self.precision = precision
        acc = .allocate(capacity: capacity)
        outBufs = (0..<2).map { _ in .allocate(byteCount: capacity * maxOutputElementSize, alignment: 64) }
        bufferIDs = [2 * worker, 2 * worker + 1]
        appliers = UpdateAppliers(precision: precision)
    }

    /// The next output buffer and its id, once the writer is done with it.
    private func nextBuffer() throws -> (UnsafeMutableRawPointer, Int) {
        current ^= 1
        let id = bufferIDs[current]
        try waitUntilFree?(id)
        return (outBufs[current], id)
    }

    deinit {
        acc.deallocate()
        for b in outBufs { b.deallocate() }
    }

    /// Produces one chunk and hands it to `emit` with its absolute file offset; returns
    /// the number of output bytes and how many finite values overflowed to ±inf.
    func produce(
        _ c: Executor.Chunk, of job: Executor.Job, _ jobIndex: Int,
        emit: (UnsafeRawBufferPointer, Int, Int?) throws -> Void
    ) throws -> (bytes: Int, overflow: Int) {
        let p = job.planned
        let inSize = p.input.dtype.bitCount / 8
        let outSize = p.output.dtype.bitCount / 8
        return try p.source.withData(of: p.input) { src in
            switch p.operation {
            case .copy:
                let bytes = UnsafeRawBufferPointer(rebasing: src[c.start..<c.end])
                try emit(bytes, job.outOffset + c.start, nil)
                return (c.end - c.start, 0)
            case .convert:
                let n = c.end - c.start
                let (outBuf, id) = try nextBuffer()
                // Counting re-reads the cache-resident chunk only for narrowing pairs.
                let overflow = Conversion.convertCountingOverflow(
                    src.baseAddress! + c.start * inSize, from: p.input.dtype,
                    to: outBuf, p.output.dtype, count: n)
                try emit(
                    UnsafeRawBufferPointer(start: outBuf, count: n * outSize), job.outOffset + c.start * outSize, id)
                return (n * outSize, overflow)
            case .update:
                guard let updates = job.updates else {
                    throw EngineError(.internalInconsistency, tensor: p.input.name, "update job without updates")
                }
                let cols = updates.columns
                let n = (c.end - c.start) * cols
                guard n <= capacity else {
                    throw EngineError(
                        .internalInconsistency, tensor: p.input.name, "chunk of \(n) elements exceeds the worker buffer"
                    )
                }
                Conversion.toFloat32(src.baseAddress! + c.start * cols * inSize, from: p.input.dtype, acc, count: n)
                roundInPlace(acc, n, precision)
                try appliers.apply(updates, id: jobIndex, values: acc, rows: c.start..<c.end)
                let (outBuf, id) = try nextBuffer()
                let overflow = Conversion.convertCountingOverflow(
                    UnsafeRawPointer(acc), from: .F32,
                    to: outBuf, p.output.dtype, count: n)
                try emit(
                    UnsafeRawBufferPointer(start: outBuf, count: n * outSize), job.outOffset + c.start * cols * outSize,
                    id)
                return (n * outSize, overflow)
            }
        }
    }
}
