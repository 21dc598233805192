import Adapters
import CKernels
#if canImport(Glibc)
import Glibc
#endif
import SafeTensors

/// Everything `graft diff` was asked to do.
public struct DiffRequest: Sendable {
    public var a: SafeTensorsFile
    public var b: SafeTensorsFile
    /// Only tensors whose name matches one of these globs (all when empty).
    public var filters: [String]
    /// A tensor counts as changed only when max |A-B| exceeds this (NaN/Inf count
    /// mismatches always count). 0: any difference in value.
    public var threshold: Double
    /// Adapters whose merge should explain B - A (`--lora L[:RATIO]`), mapped onto A.
    public var adapters: [MergeInput]
    /// A LoRA-touched tensor is "explained" when its residual is at most this.
    public var loraTolerance: Double
    /// Whose arithmetic the prediction uses (as `graft merge --compat`).
    public var compat: MergeCompat = .lycoris

    public init(
        a: SafeTensorsFile, b: SafeTensorsFile, filters: [String] = [], threshold: Double = 0,
        adapters: [MergeInput] = [], loraTolerance: Double = 0.05
    ) {
        self.a = a
        self.b = b
        self.filters = filters
        self.threshold = threshold
        self.adapters = adapters
        self.loraTolerance = loraTolerance
    }
}

/// How much of one tensor's change the adapters' predicted delta accounts for.
public struct LoRAExplanation: Sendable, Encodable, Equatable {
    /// The adapter modules that target this tensor.
    public let modules: [String]
    /// ||Δ||, the predicted change (fp32 arithmetic, as `graft merge` computes it).
    public let deltaNorm: Double
    /// ||(B - A) - Δ|| over elements finite in both files.
    public let residualNorm: Double
    /// residualNorm / ||B - A||; nil when B equals A.
    public let residual: Double?

    enum CodingKeys: String, CodingKey {
        case modules, residual
        case deltaNorm = "delta_norm", residualNorm = "residual_norm"
    }
}

/// The comparison of one tensor present in both files.
public struct TensorComparison: Sendable, Encodable {
    public let name: String
    public let group: String
    public let dtypeA: DType
    public let dtypeB: DType
    public let shape: [UInt64]
    /// Byte-for-byte equal (same dtype and same bytes).
    public let identicalBytes: Bool
    /// Values were compared (both floating F16/BF16/F32/F64); otherwise only bytes.
    public let comparedValues: Bool
    /// Different after the threshold: the tensor counts for the exit status.
    public let changed: Bool
    public let elements: Int
    /// Elements that differ in value (NaN vs NaN and +0 vs -0 are equal).
    public let differing: Int
    public let maxAbsDiff: Double
    /// Mean |A-B| over elements finite in both.
    public let meanAbsDiff: Double
    public let normA: Double
    public let normB: Double
    public let normDiff: Double
    /// ||A-B|| / ||A||; nil when ||A|| is 0 and B differs.
    public let relativeChange: Double?
    /// Cosine similarity of A and B; nil when either is all zero.
    public let cosine: Double?
    public let nanA: Int, nanB: Int, infA: Int, infB: Int
    public let lora: LoRAExplanation?
    /// Elements finite on both sides (the moments are over these).
    public let bothFinite: Int
    // Raw sums for the group totals (not in the JSON).
    let sumAbsDiff: Double
    let sumAB: Double

    enum CodingKeys: String, CodingKey {
        case name, group, shape, changed, elements, differing, cosine, lora
        case dtypeA = "dtype_a", dtypeB = "dtype_b", identicalBytes = "identical_bytes", comparedValues =
            "compared_values"
        case maxAbsDiff = "max_abs_diff", meanAbsDiff = "mean_abs_diff", normA = "norm_a", normB = "norm_b"
        case normDiff = "norm_diff", relativeChange = "relative_change"
        case nanA = "nan_a", nanB = "nan_b", infA = "inf_a", infB = "inf_b", bothFinite = "both_finite"
    }
}

/// Per-group totals (see `BlockGrouping`). Differences of tensors below the threshold
/// are left out of the sums; norms of A and B include every compared tensor.
public struct GroupSummary: Sendable, Encodable {
    public let group: String
    public let tensors: Int
    public let changed: Int
    public let elements: Int
    public let differing: Int
    public let maxAbsDiff: Double
    public let meanAbsDiff: Double
    public let relativeChange: Double?
    public let cosine: Double?

    enum CodingKeys: String, CodingKey {
        case group, tensors, changed, elements, differing, cosine
        case maxAbsDiff = "max_abs_diff", meanAbsDiff = "mean_abs_diff", relativeChange = "relative_change"
    }
}

/// A tensor only one file has.
public struct TensorEntry: Sendable, Encodable {
    public let name: String
    public let dtype: DType
    public let shape: [UInt64]
}

/// A tensor whose dtype or shape differs between the files.
public struct TensorChange: Sendable, Encodable {
    public let name: String
    public let dtypeA: DType
    public let dtypeB: DType
    public let shapeA: [UInt64]
    public let shapeB: [UInt64]
    enum CodingKeys: String, CodingKey {
        case name
        case dtypeA = "dtype_a", dtypeB = "dtype_b", shapeA = "shape_a", shapeB = "shape_b"
    }
}

/// Metadata keys that differ (reported; they do not affect the exit status).
public struct MetadataDifference: Sendable, Encodable {
    public let onlyInA: [String]
    public let onlyInB: [String]
    public let changed: [String]
    enum CodingKeys: String, CodingKey {
        case changed
        case onlyInA = "only_in_a", onlyInB = "only_in_b"
    }
}

/// What `--lora` found.
public struct LoRADiffSummary: Sendable, Encodable {
    public struct Adapter: Sendable, Encodable {
        public let path: String
        public let ratio: Double
        public let modules: Int
        public let mapped: Int
        /// Modules that map to no tensor of A or cannot be merged, with the reason.
        public let notMapped: [String]
        enum CodingKeys: String, CodingKey {
            case path, ratio, modules, mapped
            case notMapped = "not_mapped"
        }
    }
    public let adapters: [Adapter]
    public let tolerance: Double
    /// Changed tensors whose residual is within the tolerance.
    public let explained: [String]
    /// Changed tensors with a predicted delta but a residual above the tolerance.
    public let partiallyExplained: [String]
    /// Changed tensors no adapter module targets.
    public let unexplained: [String]
    /// Tensors an adapter module targets that did not change (a module the merge missed).
    public let unchanged: [String]
    /// Targets of adapter modules that could not be compared (missing in B, shape changed).
    public let notCompared: [String]
    enum CodingKeys: String, CodingKey {
        case adapters, tolerance, explained, unexplained, unchanged
        case partiallyExplained = "partially_explained", notCompared = "not_compared"
    }
}

/// The result of a diff.
public struct DiffReport: Sendable {
    public let pathA: String
    public let pathB: String
    public let tensorCountA: Int
    public let tensorCountB: Int
    public let threshold: Double
    /// Names present in both files (compared or not).
    public let tensorsInBoth: Int
    public let onlyInA: [TensorEntry]
    public let onlyInB: [TensorEntry]
    public let dtypeChanges: [TensorChange]
    public let shapeChanges: [TensorChange]
    /// Every tensor in both files with the same shape, in A's data order.
    public let tensors: [TensorComparison]
    /// Sorted by relative change, largest first.
    public let groups: [GroupSummary]
    public let metadata: MetadataDifference
    public let lora: LoRADiffSummary?
    public let bytesRead: Int
    public let seconds: Double
    public let threads: Int

    /// No tensor only on one side, no dtype or shape change, no value change above the threshold.
    public var isIdentical: Bool {
        onlyInA.isEmpty && onlyInB.isEmpty && dtypeChanges.isEmpty && shapeChanges.isEmpty
            && !tensors.contains { $0.changed }
    }

    /// Changed tensors, largest relative change first (an infinite change — A all zero — first of all).
    public func topChanged(_ n: Int) -> [TensorComparison] {
        let changed = tensors.filter(\.changed)
        let sorted = changed.sorted { x, y in
            let rx = x.relativeChange ?? .infinity, ry = y.relativeChange ?? .infinity
            if rx != ry { return rx > ry }
            if x.maxAbsDiff != y.maxAbsDiff { return x.maxAbsDiff > y.maxAbsDiff }
            return x.name.utf8.lexicographicallyPrecedes(y.name.utf8)
        }
        return Array(sorted.prefix(max(0, n)))
    }
}

/// Compares two files tensor by tensor in bounded chunks on all cores: one pass over
/// both mappings, `gk_diff_typed` and a byte comparison per chunk, results combined in
/// chunk order (deterministic for any thread count). With adapters, each LoRA-touched
/// tensor is also compared with the predicted merge delta, computed chunk by chunk
/// with the merge GEMM.
public struct DiffRunner: Sendable {
    /// Elements per chunk: small enough that both sides of a chunk stay in L2 between
    /// the byte comparison and the statistics pass.
    public var chunkElements = 1 << 18
    public var threads = defaultThreadCount()

    public init() {}

    struct Pair {
        let a: TensorInfo
        let b: TensorInfo
        let values: Bool
        /// The adapters' updates of this tensor (the merge's own), for `--lora`.
        var updates: TensorUpdates?
        var modules: [String] { updates?.updates.map(\.label) ?? [] }
    }

    struct Chunk {
        let pair: Int
        let start: Int  // elements
        let end: Int
    }

    struct ChunkResult {
        var diff = gk_diff()
        var identical = true
        var residualSq = 0.0
        var deltaSq = 0.0
    }

    /// - Throws: `EngineError` for adapters that cannot be mapped onto A; `.emptySelection`
    ///   when filters are given and match no tensor of either file.
    public func run(_ r: DiffRequest, progress: ProgressCallback? = nil) throws -> DiffReport {
        let t0 = monotonicSeconds()
        let selected = { (name: String) in r.filters.isEmpty || r.filters.contains { globMatches($0, name) } }
        let tensorsA = r.a.tensors.filter { selected($0.name) }
        let tensorsB = r.b.tensors.filter { selected($0.name) }
        if !r.filters.isEmpty && tensorsA.isEmpty && tensorsB.isEmpty {
            throw EngineError(.emptySelection, "the filter matches no tensor in either file")
        }
        var bIndex: [[UInt8]: TensorInfo] = [:]
        for t in tensorsB { bIndex[Array(t.name.utf8)] = t }
        let aNames = Set(tensorsA.map { Array($0.name.utf8) })

        // Adapters, mapped onto A exactly as `graft merge` maps them.
        var deltasByName: [String: TensorUpdates] = [:]
        var loraAdapters: [LoRADiffSummary.Adapter] = []
        if !r.adapters.isEmpty {
            var request = MergeRequest(
                checkpoint: r.a, adapters: r.adapters, savePrecision: nil, precision: .fp32,
                allowUnmatched: true, outputPath: "diff", graftVersion: "")
            request.compat = r.compat
            let plan = try MergePlanner.plan(request)
            for p in plan.execution.tensors {
                if case .update(let u) = p.operation { deltasByName[p.input.name] = u }
            }
            loraAdapters = plan.adapters.map {
                .init(
                    path: $0.path, ratio: $0.ratio, modules: $0.analysis.modules.count, mapped: $0.merged.count,
                    notMapped: $0.skipped.map { "\($0.module): \($0.message)" })
            }
        }

        var onlyInA: [TensorEntry] = [], onlyInB: [TensorEntry] = []
        var dtypeChanges: [TensorChange] = [], shapeChanges: [TensorChange] = []
        var pairs: [Pair] = []
        var notCompared: [String] = []
        for ta in tensorsA {
            guard let tb = bIndex[Array(ta.name.utf8)] else {
                onlyInA.append(TensorEntry(name: ta.name, dtype: ta.dtype, shape: ta.shape))
                if deltasByName[ta.name] != nil { notCompared.append(ta.name) }
                continue
            }
            let change = TensorChange(
                name: ta.name, dtypeA: ta.dtype, dtypeB: tb.dtype, shapeA: ta.shape, shapeB: tb.shape)
            if ta.shape != tb.shape {
                shapeChanges.append(change)
                if deltasByName[ta.name] != nil { notCompared.append(ta.name) }
                continue
            }
            if ta.dtype != tb.dtype { dtypeChanges.append(change) }
            let values = ta.dtype.isConvertibleFloat && tb.dtype.isConvertibleFloat
            if ta.dtype != tb.dtype && !values {
                // e.g. I64 vs I32: nothing comparable beyond the dtype change itself.
                if deltasByName[ta.name] != nil { notCompared.append(ta.name) }
                continue
            }
            pairs.append(Pair(a: ta, b: tb, values: values, updates: values ? deltasByName[ta.name] : nil))
        }
        for tb in tensorsB where !aNames.contains(Array(tb.name.utf8)) {
            onlyInB.append(TensorEntry(name: tb.name, dtype: tb.dtype, shape: tb.shape))
        }

        // Chunks: element ranges; row-aligned for tensors with a predicted delta.
        var chunks: [Chunk] = []
        var totalBytes = 0
        for (pi, p) in pairs.enumerated() {
            let n = p.a.elementCount
            totalBytes += p.a.byteCount + p.b.byteCount
            // Byte-compared chunks start on whole bytes even for 4- and 6-bit dtypes.
            let plain = p.values ? max(1, chunkElements) : max(8, chunkElements / 8 * 8)
            if let u = p.updates {
                // Row blocks the updates accept (whole OFT blocks, whole BOFT tensors…).
                for rows in u.rowChunks(maxElements: chunkElements) {
                    chunks.append(Chunk(pair: pi, start: rows.lowerBound * u.columns, end: rows.upperBound * u.columns))
                }
            } else {
                chunks += Executor.split(n, by: plain).map { Chunk(pair: pi, start: $0.lowerBound, end: $0.upperBound) }
            }
        }
        // Reductions over A (input-axis DoRA), exactly as the merge computes them.
        let reducing = pairs.indices.filter { pairs[$0].updates?.needsReduction == true }
        if !reducing.isEmpty {
            var targets = reducing.compactMap { pairs[$0].updates }
            let infos = reducing.map { pairs[$0].a }
            let widths = targets.map(\.columns)
            let fileA = r.a
            try Reductions.compute(&targets, threads: threads, maxElements: Reductions.groupElements, precision: .fp32)
            {
                id, rows, out in
                let t = infos[id], columns = widths[id], size = t.dtype.bitCount / 8
                fileA.withData(of: t) {
                    Conversion.toFloat32(
                        $0.baseAddress! + rows.lowerBound * columns * size, from: t.dtype, out,
                        count: rows.count * columns)
                }
            }
            for (k, pi) in reducing.enumerated() { pairs[pi].updates = targets[k] }
        }

        let nThreads = max(1, min(threads, chunks.count))
        let pairsRef = pairs
        let chunksRef = chunks
        let fileA = r.a, fileB = r.b
        let total = totalBytes
        let done = WorkCounter(limit: 0)
        let results = try ParallelChunks.map(
            count: chunks.count, threads: nThreads, makeWorker: { _ in DiffWorker() },
            perform: { worker, ci in
                let c = chunksRef[ci]
                let p = pairsRef[c.pair]
                let x = try worker.compare(c, p, fileA, fileB, key: c.pair)
                progress?(done.addDone((c.end - c.start) * (p.a.dtype.bitCount + p.b.dtype.bitCount) / 8), total)
                return x
            })

        // Combine in chunk order.
        var combined = [ChunkResult?](repeating: nil, count: pairs.count)
        for (ci, c) in chunks.enumerated() {
            let x = results[ci]
            if var acc = combined[c.pair] {
                var d = x.diff
                gk_diff_combine(&acc.diff, &d)
                acc.identical = acc.identical && x.identical
                acc.residualSq += x.residualSq
                acc.deltaSq += x.deltaSq
                combined[c.pair] = acc
            } else {
                combined[c.pair] = x
            }
        }

        let grouping = BlockGrouping(tensors: r.a.tensors)
        var comparisons: [TensorComparison] = []
        comparisons.reserveCapacity(pairs.count)
        for (pi, p) in pairs.enumerated() {
            let x = combined[pi] ?? ChunkResult()  // zero elements: empty stats, identical
            comparisons.append(Self.comparison(p, x, group: grouping.group(of: p.a.name), threshold: r.threshold))
        }

        let groups = Self.groups(comparisons)
        var lora: LoRADiffSummary? = nil
        if !r.adapters.isEmpty {
            var explained: [String] = [], partial: [String] = [], unexplained: [String] = [], unchanged: [String] = []
            for c in comparisons {
                if let l = c.lora {
                    if !c.changed {
                        if l.deltaNorm > 0 { unchanged.append(c.name) }
                    } else if let res = l.residual, res <= r.loraTolerance {
                        explained.append(c.name)
                    } else {
                        partial.append(c.name)
                    }
                } else if c.changed {
                    unexplained.append(c.name)
                }
            }
            lora = LoRADiffSummary(
                adapters: loraAdapters, tolerance: r.loraTolerance, explained: explained,
                partiallyExplained: partial, unexplained: unexplained, unchanged: unchanged,
                notCompared: notCompared)
        }
        return DiffReport(
            pathA: r.a.path, pathB: r.b.path, tensorCountA: r.a.tensors.count, tensorCountB: r.b.tensors.count,
            threshold: r.threshold, tensorsInBoth: tensorsA.count - onlyInA.count, onlyInA: onlyInA, onlyInB: onlyInB,
            dtypeChanges: dtypeChanges,
            shapeChanges: shapeChanges, tensors: comparisons, groups: groups,
            metadata: Self.metadataDifference(r.a.metadata, r.b.metadata), lora: lora,
            bytesRead: totalBytes, seconds: monotonicSeconds() - t0, threads: nThreads)
    }

    static func comparison(_ p: Pair, _ x: ChunkResult, group: String, threshold: Double) -> TensorComparison {
        let d = x.diff
        let sameBytes = p.a.dtype == p.b.dtype && x.identical
        let normA = d.sum_sq_a.squareRoot(), normB = d.sum_sq_b.squareRoot(), normDiff = d.sum_sq_diff.squareRoot()
        let changed: Bool
        if !p.values {
            changed = !sameBytes
        } else if threshold > 0 {
            changed = d.max_abs_diff > threshold || d.nan_a != d.nan_b || d.inf_a != d.inf_b
        } else {
            changed = d.differ_count > 0
        }
        let rel: Double? = normA > 0 ? normDiff / normA : (normDiff == 0 ? 0 : nil)
        // Equal values have a cosine of exactly 1 (the sums would give 1 - 1e-16).
        let cos: Double? =
            normA > 0 && normB > 0 ? (d.differ_count == 0 ? 1 : max(-1, min(1, d.sum_ab / (normA * normB)))) : nil
        var lora: LoRAExplanation? = nil
        if p.updates != nil {
            let residualNorm = x.residualSq.squareRoot()
            lora = LoRAExplanation(
                modules: p.modules, deltaNorm: x.deltaSq.squareRoot(),
                residualNorm: residualNorm, residual: normDiff > 0 ? residualNorm / normDiff : nil)
        }
        return TensorComparison(
            name: p.a.name, group: group, dtypeA: p.a.dtype, dtypeB: p.b.dtype, shape: p.a.shape,
            identicalBytes: sameBytes, comparedValues: p.values, changed: changed, elements: p.a.elementCount,
            differing: p.values ? Int(d.differ_count) : (sameBytes ? 0 : p.a.elementCount),
            maxAbsDiff: d.max_abs_diff, meanAbsDiff: d.both_finite > 0 ? d.sum_abs_diff / Double(d.both_finite) : 0,
            normA: normA, normB: normB, normDiff: normDiff, relativeChange: rel, cosine: p.values ? cos : nil,
            nanA: Int(d.nan_a), nanB: Int(d.nan_b), infA: Int(d.inf_a), infB: Int(d.inf_b), lora: lora,
            bothFinite: Int(d.both_finite), sumAbsDiff: d.sum_abs_diff, sumAB: d.sum_ab)
    }

    static func groups(_ tensors: [TensorComparison]) -> [GroupSummary] {
        struct Acc {
            var tensors = 0, changed = 0, elements = 0, differing = 0, finite = 0.0
            var maxAbs = 0.0, sumAbs = 0.0, sqDiff = 0.0, sqA = 0.0, sqB = 0.0, ab = 0.0
            var allEqual = true
        }
        var order: [String] = []
        var accs: [String: Acc] = [:]
        for t in tensors {
            if accs[t.group] == nil { order.append(t.group); accs[t.group] = Acc() }
            var a = accs[t.group]!
            a.tensors += 1
            a.elements += t.elements
            a.sqA += t.normA * t.normA
            a.sqB += t.normB * t.normB
            a.ab += t.sumAB
            if t.differing > 0 { a.allEqual = false }
            if t.changed {
                a.changed += 1
                a.differing += t.differing
                a.maxAbs = max(a.maxAbs, t.maxAbsDiff)
                a.sumAbs += t.sumAbsDiff
                a.sqDiff += t.normDiff * t.normDiff
            }
            a.finite += Double(t.bothFinite)
            accs[t.group] = a
        }
        let list = order.map { g -> GroupSummary in
            let a = accs[g]!
            let na = a.sqA.squareRoot(), nb = a.sqB.squareRoot(), nd = a.sqDiff.squareRoot()
            return GroupSummary(
                group: g, tensors: a.tensors, changed: a.changed, elements: a.elements, differing: a.differing,
                maxAbsDiff: a.maxAbs, meanAbsDiff: a.finite > 0 ? a.sumAbs / a.finite : 0,
                relativeChange: na > 0 ? nd / na : (nd == 0 ? 0 : nil),
                cosine: na > 0 && nb > 0 ? (a.allEqual ? 1 : max(-1, min(1, a.ab / (na * nb)))) : nil)
        }
        return list.sorted { x, y in
            let rx = x.relativeChange ?? .infinity, ry = y.relativeChange ?? .infinity
            if rx != ry { return rx > ry }
            return x.group.utf8.lexicographicallyPrecedes(y.group.utf8)
        }
    }

    static func metadataDifference(_ a: [String: String]?, _ b: [String: String]?) -> MetadataDifference {
        let a = a ?? [:], b = b ?? [:]
        let byBytes = { (x: String, y: String) in x.utf8.lexicographicallyPrecedes(y.utf8) }
        return MetadataDifference(
            onlyInA: a.keys.filter { b[$0] == nil }.sorted(by: byBytes),
            onlyInB: b.keys.filter { a[$0] == nil }.sorted(by: byBytes),
            changed: a.keys.filter { b[$0] != nil && b[$0] != a[$0] }.sorted(by: byBytes))
    }
}

/// Per-thread buffers of the diff: fp32 copies of both sides and the prediction for
/// adapter-touched chunks, and the appliers of the updates being explained.
final class DiffWorker {
    private var a = FloatBuffer(), b = FloatBuffer(), pred = FloatBuffer()
    private let appliers = UpdateAppliers(precision: .fp32)

    init() {}

    deinit {
        a.free()
        b.free()
        pred.free()
    }

    func compare(_ c: DiffRunner.Chunk, _ p: DiffRunner.Pair, _ fa: SafeTensorsFile, _ fb: SafeTensorsFile, key: Int)
        throws -> DiffRunner.ChunkResult
    {
        var r = DiffRunner.ChunkResult()
        let n = c.end - c.start
        let sa = p.a.dtype.bitCount / 8, sb = p.b.dtype.bitCount / 8
        let da = fa.data(of: p.a), db = fb.data(of: p.b)
        if !p.values {
            // Byte comparison only; bit counts below 8 are compared as whole byte ranges.
            let lo = c.start * p.a.dtype.bitCount / 8
            let hi = c.end == p.a.elementCount ? da.count : c.end * p.a.dtype.bitCount / 8
            r.identical = hi <= lo || memcmp(da.baseAddress! + lo, db.baseAddress! + lo, hi - lo) == 0
            return r
        }
        let pa = da.baseAddress! + c.start * sa, pb = db.baseAddress! + c.start * sb
        r.identical = p.a.dtype == p.b.dtype && memcmp(pa, pb, n * sa) == 0
        if r.identical && p.updates == nil {
            // Equal bytes: the differences are zero and B's sums are A's, so one side's
            // statistics give everything, reading half the data (still in cache after memcmp).
            var st = gk_stats()
            _ = gk_stats_typed(pa, Conversion.code(p.a.dtype)!, n, &st)
            r.diff.count = UInt64(n)
            r.diff.nan_a = st.nan_count
            r.diff.nan_b = st.nan_count
            r.diff.inf_a = st.pinf_count + st.ninf_count
            r.diff.inf_b = r.diff.inf_a
            r.diff.both_finite = UInt64(n) - st.nan_count - r.diff.inf_a
            r.diff.sum_sq_a = st.sum_sq
            r.diff.sum_sq_b = st.sum_sq
            r.diff.sum_ab = st.sum_sq
        } else {
            _ = gk_diff_typed(pa, Conversion.code(p.a.dtype)!, pb, Conversion.code(p.b.dtype)!, n, &r.diff)
        }
        if let u = p.updates { try explain(c, u, p, pa, pb, key: key, into: &r) }
        return r
    }

    /// Runs the merge's own updates on A's rows (the prediction B̂ of B) and accumulates
    /// ||B − B̂||² and ||B̂ − A||² over elements finite in all three.
    private func explain(
        _ c: DiffRunner.Chunk, _ u: TensorUpdates, _ p: DiffRunner.Pair, _ pa: UnsafeRawPointer,
        _ pb: UnsafeRawPointer, key: Int, into r: inout DiffRunner.ChunkResult
    ) throws {
        let n = c.end - c.start
        let cols = max(u.columns, 1)
        a.ensure(n); b.ensure(n); pred.ensure(n)
        Conversion.toFloat32(pa, from: p.a.dtype, a.p, count: n)
        Conversion.toFloat32(pb, from: p.b.dtype, b.p, count: n)
        pred.p.update(from: a.p, count: n)
        try appliers.apply(u, id: key, values: pred.p, rows: c.start / cols..<c.end / cols)
        var res = 0.0, del = 0.0
        for i in 0..<n {
            let x = Double(a.p[i]), y = Double(b.p[i]), q = Double(pred.p[i])
            guard x.isFinite, y.isFinite, q.isFinite else { continue }
            let e = y - q, d = q - x
            res += e * e
            del += d * d
        }
        r.residualSq = res
        r.deltaSq = del
    }
}
