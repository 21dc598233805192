import SafeTensors

/// Every update of one target tensor, with the geometry the executor chunks by and the
/// reductions computed before the write pass.
public struct TensorUpdates: Sendable {
    /// The updates in command-line order (they do not all commute).
    public let updates: [any WeightUpdate]
    /// Rows (first dimension; 1 for a scalar) and elements per row of the target.
    public let rows: Int
    public let columns: Int
    /// Per update, its reduction (one Double per column) once computed.
    var reductions: [[Double]?]

    /// - Throws: ``EngineError`` `.shapeMismatch` when an update does not fit the target.
    public init(updates: [any WeightUpdate], target: TensorInfo) throws(EngineError) {
        let rows = target.shape.isEmpty ? 1 : Int(clamping: target.shape[0])
        let count = target.elementCount
        self.rows = rows
        self.columns = rows > 0 ? count / rows : 0
        self.updates = updates
        self.reductions = Array(repeating: nil, count: updates.count)
        for u in updates {
            try u.validate(targetRows: rows, columns: columns)
            if let a = u.requirements.rowAlignment, a < 1 {
                throw EngineError(.internalInconsistency, module: u.label, "row alignment \(a)")
            }
        }
    }

    /// ``rowChunks(maxElements:)``, for tests of the chunking rule.
    public func rowChunksForTesting(maxElements: Int) -> [Range<Int>] { rowChunks(maxElements: maxElements) }

    /// Whether any update needs a pass over the whole weight before writing.
    var needsReduction: Bool { updates.contains { $0.requirements.reduction != nil } }

    public func flops() -> Double { updates.reduce(0) { $0 + $1.flops(columns: columns) } }

    /// Row ranges covering the tensor, each about `maxElements / columns` rows, cut only
    /// where every update allows: at its alignment from its first row, never inside an
    /// update that needs all its rows at once. Chunks may exceed `maxElements` for that.
    func rowChunks(maxElements: Int) -> [Range<Int>] {
        let step = max(1, maxElements / max(columns, 1))
        var chunks: [Range<Int>] = []
        var start = 0
        while start < rows {
            var end = min(rows, start + step)
            var moved = true
            while moved {
                moved = false
                for u in updates where u.rows.lowerBound < end && end < u.rows.upperBound {
                    let adjusted: Int
                    if let a = u.requirements.rowAlignment {
                        let offset = end - u.rows.lowerBound
                        let (q, r) = offset.quotientAndRemainder(dividingBy: a)
                        adjusted = min(u.rows.upperBound, u.rows.lowerBound + (r == 0 ? q : q + 1) * a)
                    } else {
                        adjusted = u.rows.upperBound
                    }
                    if adjusted != end { end = adjusted; moved = true }
                }
            }
            chunks.append(start..<end)
            start = end
        }
        return chunks
    }
}

/// A worker's appliers for the target it is working on, made on first use and dropped
/// when the worker moves to another target.
final class UpdateAppliers {
    private var target = -1
    private var appliers: [(any RowApplier)?] = []
    private let precision: MergePrecision

    init(precision: MergePrecision) { self.precision = precision }

    private func applier(_ t: TensorUpdates, id: Int, _ j: Int) throws -> any RowApplier {
        if target != id {
            appliers = Array(repeating: nil, count: t.updates.count)
            target = id
        }
        if let a = appliers[j] { return a }
        let a = try t.updates[j].makeApplier(columns: t.columns, precision: precision)
        appliers[j] = a
        return a
    }

    /// The block of `values` (rows `chunk`) that update `j` covers, if any.
    private func block(_ t: TensorUpdates, _ j: Int, _ values: UnsafeMutablePointer<Float>, _ chunk: Range<Int>)
        -> RowBlock?
    {
        let r = t.updates[j].rows
        let lo = max(chunk.lowerBound, r.lowerBound), hi = min(chunk.upperBound, r.upperBound)
        guard lo < hi else { return nil }
        return RowBlock(values: values + (lo - chunk.lowerBound) * t.columns, rows: lo..<hi, columns: t.columns)
    }

    /// Applies updates `0..<end` of target `id` to `values`, the fp32 rows `chunk`.
    func apply(
        _ t: TensorUpdates, id: Int, values: UnsafeMutablePointer<Float>, rows chunk: Range<Int>,
        through end: Int? = nil
    ) throws {
        for j in 0..<(end ?? t.updates.count) {
            guard let b = block(t, j, values, chunk) else { continue }
            let a = try applier(t, id: id, j)
            if let red = t.reductions[j] {
                try red.withUnsafeBufferPointer { try a.apply(b, reduced: $0) }
            } else {
                try a.apply(b, reduced: nil)
            }
        }
    }

    /// Applies updates `0..<j`, then adds update `j`'s reduction share of `chunk` to `partial`.
    func reduce(
        _ t: TensorUpdates, id: Int, _ j: Int, values: UnsafeMutablePointer<Float>, rows chunk: Range<Int>,
        into partial: UnsafeMutableBufferPointer<Double>
    ) throws {
        try apply(t, id: id, values: values, rows: chunk, through: j)
        guard let b = block(t, j, values, chunk) else { return }
        try applier(t, id: id, j).reduce(b, into: partial)
    }
}

enum Reductions {
    /// Elements per row group of a reduction pass. Fixed (not the executor's chunk size),
    /// so that partial sums are grouped, and so rounded, the same way whatever the
    /// executor's settings: the reduction depends only on the tensor and its updates.
    static let groupElements = 1 << 20

    /// One reduction job: target `id`, update `j`, its row chunks.
    struct Work {
        let target: Int
        let update: Int
        let chunk: Range<Int>
    }

    /// Computes every reduction of `targets` in command-line order per target: the
    /// reduction of update `j` sees the weight after updates `0..<j`, so reductions are
    /// computed level by level. Partial sums per chunk are combined in chunk order, so
    /// the result does not depend on the thread count.
    /// - Parameters:
    ///   - load: fills fp32 rows of target `id` (the input as the executor reads it).
    static func compute(
        _ targets: inout [TensorUpdates], threads: Int, maxElements: Int, precision: MergePrecision,
        load: @escaping @Sendable (_ id: Int, _ rows: Range<Int>, UnsafeMutablePointer<Float>) -> Void
    ) throws {
        let levels = targets.map { t in t.updates.indices.filter { t.updates[$0].requirements.reduction != nil } }
        let depth = levels.map(\.count).max() ?? 0
        for level in 0..<depth {
            var work: [Work] = []
            for (id, t) in targets.enumerated() where level < levels[id].count {
                let j = levels[id][level]
                let r = t.updates[j].rows
                for c in t.rowChunks(maxElements: maxElements) where c.overlaps(r) {
                    work.append(Work(target: id, update: j, chunk: c))
                }
            }
            if work.isEmpty { continue }
            let snapshot = targets
            let capacity = work.map { $0.chunk.count * snapshot[$0.target].columns }.max() ?? 1
            let workRef = work
            let partials = try ParallelChunks.map(
                count: work.count, threads: threads,
                makeWorker: { _ in (UpdateAppliers(precision: precision), FloatBuffer.sized(capacity)) },
                finish: { $0.1.free() },
                perform: { worker, i -> [Double] in
                    let w = workRef[i]
                    let t = snapshot[w.target]
                    load(w.target, w.chunk, worker.1.p)
                    var partial = [Double](repeating: 0, count: t.columns)
                    try partial.withUnsafeMutableBufferPointer {
                        try worker.0.reduce(t, id: w.target, w.update, values: worker.1.p, rows: w.chunk, into: $0)
                    }
                    return partial
                })
            for (i, w) in work.enumerated() {
                if targets[w.target].reductions[w.update] == nil {
                    targets[w.target].reductions[w.update] = partials[i]
                } else {
                    for c in 0..<partials[i].count { targets[w.target].reductions[w.update]![c] += partials[i][c] }
                }
            }
        }
    }
}

extension FloatBuffer {
    static func sized(_ n: Int) -> FloatBuffer {
        var b = FloatBuffer()
        b.ensure(max(n, 1))
        return b
    }
}
