import FileIO
import SafeTensors

/// Runs an ``ExecutionPlan``: lays the output file out, then produces every tensor as a
/// stream of bounded chunks on all cores, each written at its final offset.
///
/// Memory: each worker owns one fp32 accumulator of at most ``chunkElements`` elements,
/// one output buffer of the same element count, and the fp32 copies of the LoRA factors
/// it is applying; nothing grows with the checkpoint. Inputs are read through their
/// read-only mappings. Output bytes do not depend on the thread count or chunk size:
/// every element is computed by the same sequence of operations.
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

    public init() {}

    struct Chunk {
        let tensor: Int       // index into `jobs`
        let start: Int        // first unit (byte, element or row, by operation)
        let end: Int
    }

    struct Job {
        let planned: PlannedTensor
        let outInfo: TensorInfo
        let outOffset: Int
        let rows: Int
        let columns: Int
    }

    /// Runs `plan`, writing into `output` (which the caller commits or aborts).
    /// - Throws: the first `SafeTensorsError` / `EngineError` any worker hit.
    public func run(_ plan: ExecutionPlan, into output: AtomicOutput, progress: ProgressCallback? = nil) throws -> ExecutionReport {
        let t0 = monotonicSeconds()
        let layout = try FileLayout(tensors: plan.tensors.map(\.output), metadata: plan.metadata, file: output.path)
        var byName: [[UInt8]: PlannedTensor] = [:]
        for p in plan.tensors { byName[Array(p.output.name.utf8)] = p }

        var jobs: [Job] = []
        var chunks: [Chunk] = []
        var flops = 0.0
        var merged = 0, converted = 0, copied = 0
        // A merge chunk holds whole rows: the buffers must take at least the widest row
        // (11,520 elements for a 1280x1280x3x3 conv), whatever chunkElements is.
        var bufferElements = chunkElements
        for (i, info) in layout.tensors.enumerated() {
            let p = byName[Array(info.name.utf8)]!
            let rows = p.input.shape.isEmpty ? 1 : Int(clamping: p.input.shape[0])
            let count = p.input.elementCount
            let columns = rows > 0 ? count / rows : 0
            let job = Job(planned: p, outInfo: info, outOffset: layout.fileOffset(ofTensorAt: i), rows: rows, columns: columns)
            jobs.append(job)
            let ji = jobs.count - 1
            switch p.operation {
            case .copy:
                copied += 1
                let n = info.byteCount
                var s = 0
                while s < n { let e = min(n, s + copyChunkBytes); chunks.append(Chunk(tensor: ji, start: s, end: e)); s = e }
            case .convert:
                converted += 1
                var s = 0
                while s < count { let e = min(count, s + chunkElements); chunks.append(Chunk(tensor: ji, start: s, end: e)); s = e }
            case .merge(let deltas):
                merged += 1
                try Executor.validate(deltas, of: p, rows: rows, columns: columns)
                for d in deltas { flops += 2 * Double(d.rows.count) * Double(columns) * Double(d.rank) }
                bufferElements = max(bufferElements, columns)
                let step = max(1, chunkElements / max(columns, 1))
                var s = 0
                while s < rows { let e = min(rows, s + step); chunks.append(Chunk(tensor: ji, start: s, end: e)); s = e }
            }
        }

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
        // Uncompressed output: one writer thread does every pwrite (see PositionalWriter).
        let writer: PositionalWriter? = orderedSink == nil
            ? PositionalWriter(output: output, totalBytes: total, direct: directIO, onWritten: { n in progress?(counter.addDone(n), total) })
            : nil
        // The header goes through the writer too (direct mode assembles whole blocks);
        // this copy lives until the writer has finished.
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.headerBytes.count, alignment: 64)
        defer { header.deallocate() }
        layout.headerBytes.withUnsafeBytes { header.copyMemory(from: $0) }
        if let writer { try writer.submit(UnsafeRawBufferPointer(header), at: 0, buffer: nil) }
        let maxOutSize = plan.tensors.map { $0.output.dtype.bitCount / 8 }.max() ?? 8
        runOnThreads(nThreads) { index in
            let worker = ChunkWorker(capacity: workerElements, precision: precision, worker: index,
                                     maxOutputElementSize: max(1, maxOutSize))
            if let writer { worker.waitUntilFree = { try writer.waitUntilFree($0) } }
            // The worker owns the output buffers the writer may still be reading: keep it
            // alive (Swift may release an object after its last use) until they are free.
            defer {
                withExtendedLifetime(worker) {
                    if let writer { for b in [2 * index, 2 * index + 1] { try? writer.waitUntilFree(b) } }
                }
            }
            while let ci = counter.take() {
                let c = chunksRef[ci]
                let job = jobsRef[c.tensor]
                do {
                    let r: (bytes: Int, overflow: Int)
                    if let orderedSink {
                        r = try worker.produce(c, of: job, c.tensor) { bytes, _, _ in try orderedSink.submit(ci, bytes) }
                        progress?(counter.addDone(r.bytes), total)
                    } else {
                        r = try worker.produce(c, of: job, c.tensor) { bytes, offset, id in
                            try writer!.submit(bytes, at: offset, buffer: id)
                        }
                    }
                    overflowSlots[ci] = r.overflow
                } catch {
                    // Record the real error before waking the workers waiting for their turn.
                    counter.fail(error)
                    orderedSink?.cancel()
                }
            }
        }
        if let writer {
            do { try writer.finish() } catch { counter.fail(error) }
        }
        if let e = counter.firstError { throw e }
        var compressed: Int? = nil
        if let encoder {
            guard encoder.inputBytes == total else {
                throw EngineError("\(output.path): internal error: \(encoder.inputBytes) of \(total) bytes reached the compressor")
            }
            compressed = try encoder.finish()
        }
        var perTensor = [Int](repeating: 0, count: jobs.count)
        for (ci, c) in chunks.enumerated() { perTensor[c.tensor] += overflowPerChunk[ci] }
        let overflows = perTensor.enumerated().compactMap { i, n in
            n > 0 ? TensorOverflow(name: jobs[i].outInfo.name, count: n) : nil
        }
        var report = ExecutionReport(bytesWritten: total, tensorsWritten: jobs.count, tensorsMerged: merged,
                                     tensorsConverted: converted, tensorsCopied: copied, flops: flops,
                                     seconds: monotonicSeconds() - t0, threads: nThreads)
        report.overflows = overflows
        report.compressedBytes = compressed
        return report
    }

    static func validate(_ deltas: [WeightDelta], of p: PlannedTensor, rows: Int, columns: Int) throws {
        guard p.input.dtype.isConvertibleFloat, p.output.dtype.isConvertibleFloat else {
            throw EngineError("\(p.source.path): tensor '\(p.input.name)': cannot merge into a \(p.input.dtype.rawValue) tensor")
        }
        for d in deltas {
            guard d.up.dtype.isConvertibleFloat, d.down.dtype.isConvertibleFloat else {
                throw EngineError("\(d.source.path): module '\(d.label)': factors are \(d.up.dtype.rawValue)/\(d.down.dtype.rawValue); only F16, BF16, F32 and F64 factors can be merged")
            }
            guard d.rows.lowerBound >= 0, d.rows.upperBound <= rows, d.rank > 0,
                  d.up.elementCount == d.rows.count * d.rank,
                  d.down.elementCount == d.rank * columns
            else {
                throw EngineError("\(d.source.path): module '\(d.label)': up \(d.up.shape) / down \(d.down.shape) (rank \(d.rank)) do not fit rows \(d.rows) x \(columns) columns of '\(p.input.name)' \(p.input.shape)")
            }
        }
    }
}

/// Whether an environment variable is set to something other than "", "0", "false" or "no".
func environmentFlag(_ name: String) -> Bool { SystemInfo.environmentFlag(name) }

/// An error of the engine (plan inconsistent with the data); one line.
public struct EngineError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}

/// Seconds on the monotonic clock (for durations).
public func monotonicSeconds() -> Double { SystemInfo.monotonicSeconds() }

/// Per-thread buffers and the per-chunk work.
final class ChunkWorker {
    private var acc: UnsafeMutablePointer<Float>
    private var scratch: UnsafeMutablePointer<Float>
    /// Two output buffers: one can be queued for writing while the other is filled.
    private var outBufs: [UnsafeMutableRawPointer]
    private var current = 0
    private let bufferIDs: [Int]
    /// Waits until the writer has released a buffer (nil: buffers are never queued).
    var waitUntilFree: ((Int) throws -> Void)?
    private let capacity: Int
    private var upBuf = FloatBuffer()
    private var downBuf = FloatBuffer()
    private var downKey: (tensor: Int, delta: Int)? = nil
    private let precision: MergePrecision

    init(capacity: Int, precision: MergePrecision, worker: Int = 0, maxOutputElementSize: Int = 8) {
        self.capacity = capacity
        self.precision = precision
        acc = .allocate(capacity: capacity)
        scratch = .allocate(capacity: precision == .fp32 ? 1 : capacity)
        outBufs = (0..<2).map { _ in .allocate(byteCount: capacity * maxOutputElementSize, alignment: 64) }
        bufferIDs = [2 * worker, 2 * worker + 1]
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
        scratch.deallocate()
        for b in outBufs { b.deallocate() }
        upBuf.p.deallocate()
        downBuf.p.deallocate()
    }

    /// Produces one chunk and hands it to `emit` with its absolute file offset; returns
    /// the number of output bytes and how many finite values overflowed to ±inf.
    func produce(_ c: Executor.Chunk, of job: Executor.Job, _ jobIndex: Int,
                 emit: (UnsafeRawBufferPointer, Int, Int?) throws -> Void) throws -> (bytes: Int, overflow: Int) {
        let p = job.planned
        let src = p.source.data(of: p.input)
        let inSize = p.input.dtype.bitCount / 8
        let outSize = p.output.dtype.bitCount / 8
        switch p.operation {
        case .copy:
            let bytes = UnsafeRawBufferPointer(rebasing: src[c.start ..< c.end])
            try emit(bytes, job.outOffset + c.start, nil)
            return (c.end - c.start, 0)
        case .convert:
            let n = c.end - c.start
            let (outBuf, id) = try nextBuffer()
            // Counting re-reads the cache-resident chunk only for narrowing pairs.
            let overflow = Conversion.convertCountingOverflow(src.baseAddress! + c.start * inSize, from: p.input.dtype,
                                                              to: outBuf, p.output.dtype, count: n)
            try emit(UnsafeRawBufferPointer(start: outBuf, count: n * outSize), job.outOffset + c.start * outSize, id)
            return (n * outSize, overflow)
        case .merge(let deltas):
            let cols = job.columns
            let n = (c.end - c.start) * cols
            precondition(n <= capacity, "merge chunk larger than the worker buffer")
            Conversion.toFloat32(src.baseAddress! + c.start * cols * inSize, from: p.input.dtype, acc, count: n)
            if precision != .fp32 { roundInPlace(acc, n) }
            for (di, d) in deltas.enumerated() {
                let lo = max(c.start, d.rows.lowerBound), hi = min(c.end, d.rows.upperBound)
                if lo >= hi { continue }
                try apply(d, key: (jobIndex, di), rows: lo ..< hi, chunkStart: c.start, columns: cols)
            }
            let (outBuf, id) = try nextBuffer()
            let overflow = Conversion.convertCountingOverflow(UnsafeRawPointer(acc), from: .F32,
                                                              to: outBuf, p.output.dtype, count: n)
            try emit(UnsafeRawBufferPointer(start: outBuf, count: n * outSize), job.outOffset + c.start * cols * outSize, id)
            return (n * outSize, overflow)
        }
    }

    private func apply(_ d: WeightDelta, key: (Int, Int), rows: Range<Int>, chunkStart: Int, columns: Int) throws {
        let r = d.rank
        // down: [rank, columns] in fp32, converted once per (tensor, delta) per worker.
        if downKey == nil || downKey! != key {
            downBuf.ensure(r * columns)
            let dsrc = d.source.data(of: d.down)
            Conversion.toFloat32(dsrc.baseAddress!, from: d.down.dtype, downBuf.p, count: r * columns)
            if precision != .fp32 { roundInPlace(downBuf.p, r * columns) }
            downKey = key
        }
        // up rows for this chunk: [rows.count, rank].
        let m = rows.count
        upBuf.ensure(m * r)
        let usrc = d.source.data(of: d.up)
        let upSize = d.up.dtype.bitCount / 8
        Conversion.toFloat32(usrc.baseAddress! + (rows.lowerBound - d.rows.lowerBound) * r * upSize,
                             from: d.up.dtype, upBuf.p, count: m * r)
        if precision != .fp32 { roundInPlace(upBuf.p, m * r) }
        let target = acc + (rows.lowerBound - chunkStart) * columns
        if precision == .fp32 {
            LoRAKernel.accumulate(target, lda: columns, up: upBuf.p, ldu: r, down: downBuf.p, ldd: columns,
                                  rows: m, columns: columns, rank: r, ratio: d.ratio, scale: d.scale)
        } else {
            // PyTorch at reduced precision rounds after every operation: the GEMM result,
            // ratio * M, (ratio * M) * scale, and W + that.
            let count = m * columns
            scratch.update(repeating: 0, count: count)
            LoRAKernel.accumulate(scratch, lda: columns, up: upBuf.p, ldu: r, down: downBuf.p, ldd: columns,
                                  rows: m, columns: columns, rank: r, ratio: 1, scale: 1)
            let round = precision == .fp16 ? roundToHalf : roundToBFloat
            let ratio = d.ratio, scale = round(d.scale)  // the ratio is a Python float: fp32 opmath, not rounded (sdscripts-merge.md §2.2)
            for i in 0..<count {
                let mv = round(scratch[i])
                let a = round(ratio * mv)
                let b = round(a * scale)
                target[i] = round(target[i] + b)
            }
        }
    }

    private func roundInPlace(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
        let round = precision == .fp16 ? roundToHalf : roundToBFloat
        for i in 0..<n { p[i] = round(p[i]) }
    }
}

@inline(__always) func roundToHalf(_ x: Float) -> Float { Float(Float16(x)) }
@inline(__always) func roundToBFloat(_ x: Float) -> Float {
    if x.isNaN { return x }
    let u = x.bitPattern
    let r = (u &+ 0x7FFF &+ ((u >> 16) & 1)) & 0xFFFF_0000
    return Float(bitPattern: r)
}

/// A growable fp32 buffer owned by one worker.
struct FloatBuffer {
    private(set) var p: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    private var capacity = 1
    mutating func ensure(_ n: Int) {
        if n <= capacity { return }
        p.deallocate()
        p = .allocate(capacity: n)
        capacity = n
    }
}
