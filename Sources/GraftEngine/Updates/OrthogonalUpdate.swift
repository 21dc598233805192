import Adapters
import FileIO
import SafeTensors

/// OFT and BOFT: the rows of the target rotated by block-orthogonal matrices
/// (docs/adapter-zoo.md §10 and §11).
///
/// Common to both: `Q = B − Bᵀ` per stored block `B` (exactly skew), one Frobenius norm `n`
/// of `Q` over the whole tensor (every block of every level), the constraint
/// `C` (``MergeCompat/lycoris``: stored alpha × rows; ``MergeCompat/comfyui``: alpha itself;
/// 0 = none): when `C > 0` and `n + 1e-8 > C`, `Q ← Q·C/(n + 1e-8)`; then the Cayley transform
/// `R = (I + Q)(I − Q)⁻¹` per block. The legacy `oft_diag` part stores `R` itself (no Cayley,
/// no constraint; OFT only).
///
/// - OFT (`oft_blocks` `(nb, bs, bs)`, `nb·bs = O`): row block `k` becomes `R'_kᵀ · W0_k`.
///   LyCORIS: `R' = I + m(R − I)`, then every row times its `rescale`. ComfyUI:
///   `W0 + m·((mR − mI)ᵀ · W0)` (the strength applied twice), `rescale` ignored.
/// - BOFT (`oft_blocks` `(L, nb, b, b)`, `nb·b = O`, b even): level by level, the rows
///   permuted by the butterfly of level `i` (`k = 2^i·b/2`: the row `c·2k + g·k + t` goes
///   to position `c·2k + 2t + g`), grouped into blocks of `b` rows, multiplied by
///   `B_i = R_i` (m = 1) or `m·R_i + (1 − m)·I` (not transposed), and permuted back; then
///   every row times its `rescale`. LyCORIS: that is `W`; ComfyUI: `W0 + m·(W − W0)`.
///
/// The rotations are set up once per applier in Double; rows are accumulated in Double
/// and stored as fp32. The arithmetic is the same at every ``MergePrecision`` (sd-scripts'
/// fp16/bf16 emulation covers its LoRA arithmetic only).
public struct OrthogonalUpdate: WeightUpdate {
    public let source: SafeTensorsFile
    /// `oft_blocks` (or the legacy `oft_diag`): `(nb, bs, bs)` for OFT, `(L, nb, b, b)` for BOFT.
    public let blocks: TensorInfo
    /// BOFT (butterfly levels) rather than OFT.
    public let butterfly: Bool
    /// The stored blocks are the rotations themselves (LyCORIS' old `oft_diag`).
    public let legacyDiagonal: Bool
    /// Per-row scales, `(O, 1[, 1, 1])`.
    public let rescale: TensorInfo?
    /// The module's stored alpha (the constraint factor), 0 without one.
    public let constraint: Double
    public let rows: Range<Int>
    public let ratio: Float
    public let compat: MergeCompat
    public let label: String
    /// The rotations, computed by the first worker that needs them and shared: setting
    /// them up costs `O(blocks · size³)`, which one file can make large.
    private let cache = RotationCache()
    public var sourcePath: String { source.path }

    public init(
        source: SafeTensorsFile, blocks: TensorInfo, butterfly: Bool, legacyDiagonal: Bool,
        rescale: TensorInfo?, constraint: Double, rows: Range<Int>, ratio: Float, compat: MergeCompat,
        label: String
    ) {
        self.source = source
        self.blocks = blocks
        self.butterfly = butterfly
        self.legacyDiagonal = legacyDiagonal
        self.rescale = rescale
        self.constraint = constraint
        self.rows = rows
        self.ratio = ratio
        self.compat = compat
        self.label = label
    }

    /// Rows per block: `bs` (OFT) or `b` (BOFT).
    var blockSize: Int { blocks.dims.last ?? 0 }
    /// Butterfly levels `L` (1 for OFT).
    var levels: Int { butterfly ? (blocks.dims.first ?? 0) : 1 }
    /// Blocks per level `nb`.
    var blockCount: Int {
        let d = blocks.dims
        return butterfly ? (d.count > 1 ? d[1] : 0) : (d.first ?? 0)
    }

    public var requirements: UpdateRequirements {
        UpdateRequirements(rowAlignment: butterfly ? nil : max(blockSize, 1))
    }

    public func flops(columns: Int) -> Double {
        2 * Double(levels) * Double(rows.count) * Double(blockSize) * Double(columns)
    }

    public func validate(targetRows: Int, columns: Int) throws(EngineError) {
        try checkRows(targetRows)
        func fail(_ message: String) -> EngineError {
            EngineError(.shapeMismatch, file: sourcePath, module: label, message)
        }
        let o = rows.count
        let d = blocks.dims
        guard blocks.dtype.isConvertibleFloat else {
            throw fail(
                "\(blocks.name) is \(blocks.dtype.rawValue); only F16, BF16, F32 and F64 blocks can be merged")
        }
        if legacyDiagonal && butterfly {
            throw fail("oft_diag blocks are OFT rotations; butterfly (BOFT) blocks are never stored as rotations")
        }
        if butterfly {
            guard d.count == 4, d[0] > 0, d[1] > 0, d[2] > 0, d[2] == d[3] else {
                throw fail("BOFT blocks \(shapeText(blocks.dims)) are not (levels, blocks, b, b)")
            }
            let (l, nb, b) = (d[0], d[1], d[2])
            guard b % 2 == 0 else { throw fail("BOFT block size \(b) is odd; the butterfly pairs rows") }
            let (n, overflow) = nb.multipliedReportingOverflow(by: b)
            guard !overflow, n == o else {
                throw fail("BOFT blocks \(shapeText(blocks.dims)): \(nb) blocks of \(b) do not fit \(o) rows")
            }
            // Level i views the rows as (c, 2, 2^i·b/2): rows must divide into spans of 2^i·b.
            var span = b
            for i in 0..<l {
                guard o % span == 0 else {
                    throw fail("BOFT level \(i) of \(l) permutes spans of \(span) rows, which do not divide \(o) rows")
                }
                if i + 1 < l {
                    let (next, over) = span.multipliedReportingOverflow(by: 2)
                    guard !over, next <= o else {
                        throw fail("BOFT blocks \(shapeText(blocks.dims)): \(l) levels do not fit \(o) rows")
                    }
                    span = next
                }
            }
        } else {
            guard d.count == 3, d[0] > 0, d[1] > 0, d[1] == d[2] else {
                throw fail("OFT blocks \(shapeText(blocks.dims)) are not (blocks, bs, bs)")
            }
            let (n, overflow) = d[0].multipliedReportingOverflow(by: d[1])
            guard !overflow, n == o else {
                throw fail("OFT blocks \(shapeText(blocks.dims)): \(d[0]) blocks of \(d[1]) do not fit \(o) rows")
            }
        }
        if let rescale {
            guard rescale.dtype.isConvertibleFloat, rescale.elementCount == o else {
                throw fail("rescale \(rescale.dtype.rawValue) \(shapeText(rescale.dims)) does not fit \(o) rows")
            }
        }
    }

    public func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier {
        OrthogonalApplier(self, columns: columns)
    }

    /// ``rotationMatrices()``, computed once per update.
    func sharedRotationMatrices() -> [Double] {
        cache.lock.withLock {
            if let m = cache.matrices { return m }
            let m = rotationMatrices()
            cache.matrices = m
            return m
        }
    }

    /// The matrices the applier multiplies by, in Double: per level and block `s × s`
    /// (`s` = block size), row-major, oriented as `y[p] = Σ_q M[p][q] · x[q]` on the rows of
    /// the block (OFT's transpose and strength folded in; ComfyUI's OFT as one matrix
    /// `I + m(mR − mI)ᵀ`). `rescale` is applied separately.
    func rotationMatrices() -> [Double] {
        let s = blockSize, count = levels * blockCount, area = s * s
        let stored = Matrix(blocks, of: source, rows: count * s).values.map(Double.init)
        var r = [Double](repeating: 0, count: count * area)
        if legacyDiagonal {
            r = stored
        } else {
            var q = [Double](repeating: 0, count: count * area)
            var norm2 = 0.0
            for blk in 0..<count {
                let base = blk * area
                for i in 0..<s {
                    for j in 0..<s {
                        let v = stored[base + i * s + j] - stored[base + j * s + i]
                        q[base + i * s + j] = v
                        norm2 += v * v
                    }
                }
            }
            let n = norm2.squareRoot()
            let c = compat == .lycoris ? constraint * Double(rows.count) : constraint
            if c > 0 && n + 1e-8 > c {
                let f = c / (n + 1e-8)
                for i in q.indices { q[i] *= f }
            }
            // R = (I + Q)(I − Q)⁻¹ = (I − Q)⁻¹(I + Q) (the two factors commute): solve (I − Q)·R = I + Q.
            var a = [Double](repeating: 0, count: area)
            var b = [Double](repeating: 0, count: area)
            for blk in 0..<count {
                let base = blk * area
                for i in 0..<s {
                    for j in 0..<s {
                        let e: Double = i == j ? 1 : 0
                        a[i * s + j] = e - q[base + i * s + j]
                        b[i * s + j] = e + q[base + i * s + j]
                    }
                }
                DenseSolve.solve(&a, &b, n: s, rightHandSides: s)
                for i in 0..<area { r[base + i] = b[i] }
            }
        }
        let m = Double(ratio)
        var out = [Double](repeating: 0, count: count * area)
        for blk in 0..<count {
            let base = blk * area
            for p in 0..<s {
                for q in 0..<s {
                    let e: Double = p == q ? 1 : 0
                    let v: Double
                    if butterfly {
                        let rv = r[base + p * s + q]
                        v = m == 1 ? rv : rv * m + (1 - m) * e
                    } else {
                        let rt = r[base + q * s + p]  // the transpose: y[j] = Σ_n R[n][j] x[n]
                        switch compat {
                        case .lycoris: v = e + m * (rt - e)
                        case .comfyui: v = e + m * (m * rt - m * e)
                        }
                    }
                    out[base + p * s + q] = v
                }
            }
        }
        return out
    }
}

/// The rotations of one ``OrthogonalUpdate`` set up once per worker, and the scratch rows
/// of one block (`s × columns` Doubles, plus for ComfyUI's BOFT at strength ≠ 1 a copy of
/// the original rows).
final class OrthogonalApplier: RowApplier {
    private let u: OrthogonalUpdate
    private let columns: Int
    private let size: Int
    private let matrices: [Double]
    /// Per row of the update (from its first row); nil without `rescale` or where it is ignored.
    private let rowScale: [Double]?
    private let input: UnsafeMutablePointer<Double>
    private let sum: UnsafeMutablePointer<Double>
    private var original = FloatBuffer()

    init(_ u: OrthogonalUpdate, columns: Int) {
        self.u = u
        self.columns = columns
        size = u.blockSize
        matrices = u.sharedRotationMatrices()
        if let t = u.rescale, u.butterfly || u.compat == .lycoris {
            rowScale = Matrix(t, of: u.source, rows: u.rows.count).values.map(Double.init)
        } else {
            rowScale = nil
        }
        input = .allocate(capacity: max(size * columns, 1))
        sum = .allocate(capacity: max(columns, 1))
    }

    deinit {
        input.deallocate()
        sum.deallocate()
        original.free()
    }

    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
        let first = block.rows.lowerBound - u.rows.lowerBound
        if u.butterfly {
            guard block.rows == u.rows else {
                throw EngineError(
                    .internalInconsistency, module: u.label,
                    "BOFT was handed rows \(block.rows), not all of its rows \(u.rows)")
            }
            applyButterfly(block.values)
        } else {
            guard first % size == 0, block.rows.count % size == 0 else {
                throw EngineError(
                    .internalInconsistency, module: u.label,
                    "OFT rows \(block.rows) are not aligned to blocks of \(size) from row \(u.rows.lowerBound)")
            }
            let s = size
            var rowsOfBlock = [Int](repeating: 0, count: s)
            matrices.withUnsafeBufferPointer { mp in
                for local in 0..<(block.rows.count / s) {
                    let k = first / s + local
                    for p in 0..<s { rowsOfBlock[p] = local * s + p }
                    transform(block.values, rows: rowsOfBlock, matrix: mp.baseAddress! + k * s * s, scaleFrom: k * s)
                }
            }
        }
    }

    /// All levels of the butterfly on the update's `O` rows at `w`.
    private func applyButterfly(_ w: UnsafeMutablePointer<Float>) {
        let s = size, nb = u.blockCount, levels = u.levels, o = u.rows.count
        let m = Double(u.ratio)
        let interpolate = u.compat == .comfyui && m != 1
        if interpolate {
            original.ensure(o * columns)
            original.p.update(from: w, count: o * columns)
        }
        var rowsOfBlock = [Int](repeating: 0, count: s)
        matrices.withUnsafeBufferPointer { mp in
            for level in 0..<levels {
                let k = (s / 2) << level
                for blk in 0..<nb {
                    for p in 0..<s {
                        // Permuted position P = c·2k + 2t + g holds the row c·2k + g·k + t.
                        let position = blk * s + p
                        let (c, rem) = position.quotientAndRemainder(dividingBy: 2 * k)
                        rowsOfBlock[p] = c * 2 * k + (rem % 2) * k + rem / 2
                    }
                    transform(
                        w, rows: rowsOfBlock, matrix: mp.baseAddress! + (level * nb + blk) * s * s,
                        scaleFrom: level == levels - 1 ? 0 : nil, scaleByRow: true)
                }
            }
        }
        if interpolate {
            let w0 = original.p
            for i in 0..<(o * columns) {
                let a = Double(w0[i])
                w[i] = Float(a + m * (Double(w[i]) - a))
            }
        }
    }

    /// `w[rows[p]] = Σ_q M[p][q] · w[rows[q]]` for the `s` rows `rows` (counted from `w`),
    /// accumulated in Double. Each output row is then multiplied by its `rescale`:
    /// `rowScale[scaleFrom + p]` (OFT) or, with `scaleByRow`, `rowScale[scaleFrom + rows[p]]`
    /// (BOFT's last level); `scaleFrom` nil: no scaling.
    private func transform(
        _ w: UnsafeMutablePointer<Float>, rows: [Int], matrix: UnsafePointer<Double>, scaleFrom: Int?,
        scaleByRow: Bool = false
    ) {
        let s = size, n = columns
        for q in 0..<s {
            let src = w + rows[q] * n, dst = input + q * n
            for c in 0..<n { dst[c] = Double(src[c]) }
        }
        let acc = sum
        for p in 0..<s {
            acc.update(repeating: 0, count: n)
            for q in 0..<s {
                let a = matrix[p * s + q], x = input + q * n
                for c in 0..<n { acc[c] += a * x[c] }
            }
            let out = w + rows[p] * n
            if let scaleFrom, let rowScale {
                let f = rowScale[scaleFrom + (scaleByRow ? rows[p] : p)]
                for c in 0..<n { out[c] = Float(acc[c] * f) }
            } else {
                for c in 0..<n { out[c] = Float(acc[c]) }
            }
        }
    }
}

/// Dense linear solves in Double for the small blocks of OFT/BOFT (`bs`, `b` ≤ a few
/// dozen). Issue #10 brings LAPACK; this can then move to `dgesv`.
enum DenseSolve {
    /// Solves `A · X = B` in place by LU with partial pivoting: `a` is `n × n`, `b` is
    /// `n × rightHandSides` (row-major) and holds `X` afterwards; `a` is overwritten.
    /// A singular `A` gives infinities or NaN, not a trap.
    static func solve(_ a: inout [Double], _ b: inout [Double], n: Int, rightHandSides r: Int) {
        precondition(a.count >= n * n && b.count >= n * r)
        for col in 0..<n {
            var pivot = col
            var best = abs(a[col * n + col])
            for i in (col + 1)..<n where abs(a[i * n + col]) > best {
                best = abs(a[i * n + col])
                pivot = i
            }
            if pivot != col {
                for j in 0..<n { a.swapAt(col * n + j, pivot * n + j) }
                for j in 0..<r { b.swapAt(col * r + j, pivot * r + j) }
            }
            let d = a[col * n + col]
            for i in (col + 1)..<n {
                let f = a[i * n + col] / d
                if f == 0 { continue }
                a[i * n + col] = 0
                for j in (col + 1)..<n { a[i * n + j] -= f * a[col * n + j] }
                for j in 0..<r { b[i * r + j] -= f * b[col * r + j] }
            }
        }
        for col in stride(from: n - 1, through: 0, by: -1) {
            let d = a[col * n + col]
            for j in 0..<r {
                var v = b[col * r + j]
                for k in (col + 1)..<n { v -= a[col * n + k] * b[k * r + j] }
                b[col * r + j] = v / d
            }
        }
    }
}

/// The rotations of one ``OrthogonalUpdate``, shared by its workers' appliers.
final class RotationCache: @unchecked Sendable {
    let lock = Lock()
    /// Guarded by `lock`.
    var matrices: [Double]? = nil
}
