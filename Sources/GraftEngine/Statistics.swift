import CKernels
import SafeTensors

/// Per-tensor value statistics (`graft list --stats`). Moments are over finite
/// values; NaN and ±inf are counted separately.
public struct TensorStatistics: Sendable, Codable, Equatable {
    public let name: String
    public let dtype: String
    public let count: Int
    public let nanCount: Int
    public let positiveInfinityCount: Int
    public let negativeInfinityCount: Int
    /// nil when the tensor has no finite value or its dtype has no numeric reading here.
    public let min: Double?
    public let max: Double?
    public let mean: Double?
    public let std: Double?
    public let absMean: Double?

    enum CodingKeys: String, CodingKey {
        case name, dtype, count, min, max, mean, std
        case nanCount = "nan_count"
        case positiveInfinityCount = "pos_inf_count"
        case negativeInfinityCount = "neg_inf_count"
        case absMean = "abs_mean"
    }

    /// - Parameter elementCount: reported as `count` when `s` is nil (a dtype without
    ///   statistics, e.g. integers): the moments are then absent, not zero.
    init(name: String, dtype: DType, stats s: gk_stats?, elementCount: Int = 0) {
        self.name = name
        self.dtype = dtype.rawValue
        guard let s else {
            count = elementCount; nanCount = 0; positiveInfinityCount = 0; negativeInfinityCount = 0
            min = nil; max = nil; mean = nil; std = nil; absMean = nil
            return
        }
        count = Int(s.count)
        nanCount = Int(s.nan_count)
        positiveInfinityCount = Int(s.pinf_count)
        negativeInfinityCount = Int(s.ninf_count)
        let finite = s.count - s.nan_count - s.pinf_count - s.ninf_count
        if finite > 0 {
            min = s.min
            max = s.max
            mean = s.mean
            // The kernel keeps M2 = sum (x - mean)^2 (Welford/Chan), so this has no
            // cancellation; M2 is never negative, the max only guards -0.
            std = (Swift.max(0, s.m2) / Double(finite)).squareRoot()
            absMean = s.sum_abs / Double(finite)
        } else {
            min = nil; max = nil; mean = nil; std = nil; absMean = nil
        }
    }
}

/// Computes ``TensorStatistics`` for many tensors, streamed in bounded chunks on all
/// cores. Each chunk gives (count, mean, M2) and the chunks of a tensor are combined
/// in chunk order with Chan's formula (`gk_stats_combine`), so the bits depend on the
/// data and `chunkElements` only, never on the thread count or scheduling; any chunk
/// size gives the same values to within rounding (no cancellation either way).
public struct StatisticsRunner: Sendable {
    public var chunkElements = 4 << 20
    public var threads = defaultThreadCount()

    public init() {}

    public func run(file: SafeTensorsFile, tensors: [TensorInfo], progress: ProgressCallback? = nil) throws
        -> [TensorStatistics]
    {
        struct Chunk { let tensor: Int; let start: Int; let end: Int }
        var chunks: [Chunk] = []
        var total = 0
        for (i, t) in tensors.enumerated() where Conversion.isSupported(t.dtype) {
            let n = t.elementCount
            var s = 0
            while s < n {
                let e = Swift.min(n, s + chunkElements); chunks.append(Chunk(tensor: i, start: s, end: e)); s = e
            }
            total += t.byteCount
        }
        let totalBytes = total
        let chunksRef = chunks
        let done = WorkCounter(limit: 0)
        let results = try ParallelChunks.map(
            count: chunks.count, threads: threads, makeWorker: { _ in () },
            perform: { _, ci -> gk_stats in
                let c = chunksRef[ci]
                let t = tensors[c.tensor]
                let size = t.dtype.bitCount / 8
                var st = gk_stats()
                file.withData(of: t) {
                    _ = gk_stats_typed(
                        $0.baseAddress! + c.start * size, Conversion.code(t.dtype)!, c.end - c.start, &st)
                }
                progress?(done.addDone((c.end - c.start) * size), totalBytes)
                return st
            })
        var perTensor = [gk_stats?](repeating: nil, count: tensors.count)
        for (ci, c) in chunks.enumerated() {
            if var a = perTensor[c.tensor] {
                var b = results[ci]
                gk_stats_combine(&a, &b)
                perTensor[c.tensor] = a
            } else {
                perTensor[c.tensor] = results[ci]
            }
        }
        return tensors.enumerated().map { i, t in
            if Conversion.isSupported(t.dtype) && perTensor[i] == nil {
                // Zero elements: counts are zero, no moments.
                var empty = gk_stats()
                gk_stats_empty(&empty)
                return TensorStatistics(name: t.name, dtype: t.dtype, stats: empty)
            }
            return TensorStatistics(name: t.name, dtype: t.dtype, stats: perTensor[i], elementCount: t.elementCount)
        }
    }
}
