import Adapters
import CKernels
import SafeTensors

/// The unscaled dense delta `D` of one adapter module, flattened to the target's
/// `rows × columns` (conv kernels in the columns), produced row block by row block.
/// LoCon with Tucker, LoHa and LoKr produce it from their factors alone; GLoRA also
/// reads the weight it is applied to. ``AdditiveUpdate`` adds `ratio · scale · D`;
/// ``DoRAUpdate`` normalises `W + scale · D`.
public protocol DeltaSource: Sendable {
    /// Checks the factors against a target slice of `rows × columns` (`inFeatures` input
    /// channels, `columns / inFeatures` kernel taps each).
    /// - Throws: ``EngineError`` `.shapeMismatch`.
    func validate(rows: Int, columns: Int, inFeatures: Int) throws(EngineError)
    /// Floating-point operations to produce all `rows` rows.
    func flops(rows: Int, columns: Int) -> Double
    /// Per-worker state (factors converted to fp32, products precomputed).
    func makeFiller(columns: Int, inFeatures: Int) -> any DeltaFiller
}

/// The per-worker half of a ``DeltaSource``.
public protocol DeltaFiller: AnyObject {
    /// `acc += coefficient · D` for rows `rows` (counted from the update's first row);
    /// `acc` is that block of the weight itself, as the updates before this one left it
    /// (fillers that read the weight must not see it change midway).
    func accumulate(_ rows: Range<Int>, into acc: UnsafeMutablePointer<Float>, columns: Int, coefficient: Float)
}

/// A filler that writes `D` row by row into a per-worker scratch buffer, then adds it:
/// for deltas that read the weight (GLoRA) or have no fused kernel (LoKr).
protocol BufferedDeltaFiller: DeltaFiller {
    /// Writes rows `rows` of `D` to `out` (`rows.count × columns`); `weight` holds the
    /// same rows of the weight.
    func fill(_ rows: Range<Int>, weight: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>)
    /// Reused across blocks; freed by the conforming class.
    var scratch: FloatBuffer { get set }
}

extension BufferedDeltaFiller {
    func accumulate(_ rows: Range<Int>, into acc: UnsafeMutablePointer<Float>, columns: Int, coefficient: Float) {
        let n = rows.count * columns
        scratch.ensure(n)
        let d = scratch.p
        fill(rows, weight: acc, into: d)
        for i in 0..<n { acc[i] += coefficient * d[i] }
    }
}

/// `A @ B` with `A` `rows × r` and `B` `r × columns`, rows on demand: LoRA / LoCon
/// (Tucker folded into `B`), and each half of LoHa.
struct LowRankProduct {
    let a: Matrix
    let b: Matrix

    /// `out[i] = (A @ B)[first + i]` for `count` rows.
    func fill(first: Int, count: Int, into out: UnsafeMutablePointer<Float>) {
        out.update(repeating: 0, count: count * b.columns)
        accumulate(first: first, count: count, into: out, coefficient: 1)
    }

    /// `acc[i] += coefficient · (A @ B)[first + i]` in one pass (the LoRA kernel).
    func accumulate(first: Int, count: Int, into acc: UnsafeMutablePointer<Float>, coefficient: Float) {
        a.values.withUnsafeBufferPointer { ap in
            b.values.withUnsafeBufferPointer { bp in
                LoRAKernel.accumulate(
                    acc, lda: b.columns, up: ap.baseAddress! + first * a.columns, ldu: a.columns,
                    down: bp.baseAddress!, ldd: b.columns, rows: count, columns: b.columns, rank: a.columns,
                    ratio: 1, scale: coefficient)
            }
        }
    }
}

/// Whether `count == a · b` without overflow (factor shapes come from the file).
func isProduct(_ count: Int, _ a: Int, _ b: Int) -> Bool {
    let (p, o) = a.multipliedReportingOverflow(by: b)
    return !o && p == count
}

extension EngineError {
    static func factors(_ file: String, _ module: String, _ message: String) -> EngineError {
        EngineError(.shapeMismatch, file: file, module: module, message)
    }
}

/// LoRA / LoCon as a dense delta: `up @ down`, or with a Tucker core
/// `ΔW[o,i,h,w] = Σ_p Σ_q up[o,p]·mid[p,q,h,w]·down[q,i]` (folded into `K = mid ×₂ down`
/// once, then `up @ K`). Plain LoRA merges go through ``LowRankUpdate`` (sd-scripts'
/// arithmetic); this serves Tucker LoCon and DoRA on LoRA hosts.
struct LowRankDelta: DeltaSource {
    let file: SafeTensorsFile
    let up: TensorInfo
    let down: TensorInfo
    let mid: TensorInfo?
    let rank: Int
    let label: String

    func validate(rows: Int, columns: Int, inFeatures: Int) throws(EngineError) {
        let upOK = isProduct(up.elementCount, rows, mid.map { Int($0.shape[0]) } ?? rank)
        var downOK = rank > 0 && down.elementCount % rank == 0
        if downOK {
            let area = mid.map { Int($0.shape[2]) * Int($0.shape[3]) } ?? 1
            downOK = isProduct(columns, down.elementCount / rank, area)
        }
        guard upOK, downOK else {
            throw .factors(
                file.path, label,
                "lora_up \(shapeText(up.dims)) / lora_down \(shapeText(down.dims))\(mid.map { " / lora_mid \(shapeText($0.dims))" } ?? "") do not fit \(rows) rows x \(columns) columns"
            )
        }
    }

    func flops(rows: Int, columns: Int) -> Double { 2 * Double(rows) * Double(columns) * Double(rank) }

    func makeFiller(columns: Int, inFeatures: Int) -> any DeltaFiller {
        let downM = Matrix(down, of: file, rows: rank)
        let b = mid.map { Matrix.tucker(core: $0, of: file, downM) } ?? downM
        let upM = Matrix(up, of: file)
        return ProductFiller(LowRankProduct(a: upM, b: b))
    }
}

final class ProductFiller: DeltaFiller {
    let product: LowRankProduct
    init(_ p: LowRankProduct) { product = p }
    func accumulate(_ rows: Range<Int>, into acc: UnsafeMutablePointer<Float>, columns: Int, coefficient: Float) {
        product.accumulate(first: rows.lowerBound, count: rows.count, into: acc, coefficient: coefficient)
    }
}

/// LoHa: `(A1 @ B1) ⊙ (A2 @ B2)`. Plain: `A = hada_w_a` `(out, r)`, `B = hada_w_b`
/// `(r, in·kh·kw)`. Tucker: `A = hada_w_aᵀ` (stored `(r, out)`), `B = hada_t ×₂ hada_w_b`.
struct HadamardDelta: DeltaSource {
    let file: SafeTensorsFile
    let w1a: TensorInfo, w1b: TensorInfo, w2a: TensorInfo, w2b: TensorInfo
    let t1: TensorInfo?, t2: TensorInfo?
    let rank: Int
    let label: String

    private var tucker: Bool { t1 != nil }

    func validate(rows: Int, columns: Int, inFeatures: Int) throws(EngineError) {
        func fits(_ b: TensorInfo, _ t: TensorInfo?) -> Bool {
            let r = Int(b.shape[0])
            guard r > 0, b.elementCount % r == 0 else { return false }
            return isProduct(columns, b.elementCount / r, t.map { Int($0.shape[2]) * Int($0.shape[3]) } ?? 1)
        }
        let out1 = tucker ? Int(w1a.shape[1]) : Int(w1a.shape[0])
        let out2 = tucker ? Int(w2a.shape[1]) : Int(w2a.shape[0])
        guard out1 == rows, out2 == rows, fits(w1b, t1), fits(w2b, t2) else {
            throw .factors(
                file.path, label,
                "hada_w1_a \(shapeText(w1a.dims)) / hada_w1_b \(shapeText(w1b.dims)) / hada_w2_a \(shapeText(w2a.dims)) / hada_w2_b \(shapeText(w2b.dims)) do not fit \(rows) rows x \(columns) columns"
            )
        }
    }

    func flops(rows: Int, columns: Int) -> Double { 2 * Double(rows) * Double(columns) * Double(2 * rank + 1) }

    func makeFiller(columns: Int, inFeatures: Int) -> any DeltaFiller {
        func side(_ a: TensorInfo, _ b: TensorInfo, _ t: TensorInfo?) -> LowRankProduct {
            let bm = Matrix(b, of: file)
            if let t {
                return LowRankProduct(a: Matrix(a, of: file).transposed(), b: Matrix.tucker(core: t, of: file, bm))
            }
            return LowRankProduct(a: Matrix(a, of: file), b: bm)
        }
        return HadamardFiller(side(w1a, w1b, t1), side(w2a, w2b, t2), columns: columns)
    }
}

final class HadamardFiller: DeltaFiller {
    let m1: LowRankProduct, m2: LowRankProduct
    let columns: Int

    init(_ m1: LowRankProduct, _ m2: LowRankProduct, columns: Int) {
        self.m1 = m1
        self.m2 = m2
        self.columns = columns
    }

    /// Both products and the Hadamard product in registers (`gk_hadamard_gemm_f32`).
    func accumulate(_ rows: Range<Int>, into acc: UnsafeMutablePointer<Float>, columns: Int, coefficient: Float) {
        let first = rows.lowerBound
        m1.a.values.withUnsafeBufferPointer { u1 in
            m1.b.values.withUnsafeBufferPointer { d1 in
                m2.a.values.withUnsafeBufferPointer { u2 in
                    m2.b.values.withUnsafeBufferPointer { d2 in
                        gk_hadamard_gemm_f32(
                            rows.count, columns, m1.a.columns, m2.a.columns, acc, columns,
                            u1.baseAddress! + first * m1.a.columns, m1.a.columns, d1.baseAddress!, columns,
                            u2.baseAddress! + first * m2.a.columns, m2.a.columns, d2.baseAddress!, columns,
                            coefficient)
                    }
                }
            }
        }
    }
}

/// LoKr: `kron(W1, W2)` with `W1` `(a, c)` and `W2` `(b, d·kh·kw)`, each side stored
/// whole, as a product, or (W2) through a Tucker core:
/// `ΔW[i1·b + i2, j1·d' + j2] = W1[i1, j1] · W2[i2, j2]`.
struct KroneckerDelta: DeltaSource {
    let file: SafeTensorsFile
    let w1: KroneckerSideTensors
    let w2: KroneckerSideTensors
    let label: String

    func validate(rows: Int, columns: Int, inFeatures: Int) throws(EngineError) {
        let (a, c) = w1.shape, (b, d) = w2.shape
        guard isProduct(rows, a, b), isProduct(columns, c, d) else {
            throw .factors(
                file.path, label,
                "kron of W1 (\(a), \(c)) and W2 (\(b), \(d)) does not fit \(rows) rows x \(columns) columns"
            )
        }
    }

    func flops(rows: Int, columns: Int) -> Double { Double(rows) * Double(columns) }

    func makeFiller(columns: Int, inFeatures: Int) -> any DeltaFiller {
        KroneckerFiller(w1: w1.matrix(file), w2: w2.matrix(file))
    }
}

/// One side of a Kronecker product as stored.
enum KroneckerSideTensors: Sendable {
    case whole(TensorInfo)
    case product(a: TensorInfo, b: TensorInfo)
    /// `W = aᵀ @ (t ×₂ b)` with `a` `(r, rows)`, `b` `(r, d)`, `t` `(r, r, kh, kw)`.
    case tucker(t: TensorInfo, a: TensorInfo, b: TensorInfo)

    /// `(rows, flattened columns)`.
    var shape: (Int, Int) {
        switch self {
        case .whole(let w):
            let r = Int(w.shape[0])
            return (r, r > 0 ? w.elementCount / r : 0)
        case .product(let a, let b):
            let r = Int(b.shape[0])
            return (Int(a.shape[0]), r > 0 ? b.elementCount / r : 0)
        case .tucker(let t, let a, let b):
            return (Int(a.shape[1]), Int(b.shape[1]) * Int(t.shape[2]) * Int(t.shape[3]))
        }
    }

    func matrix(_ file: SafeTensorsFile) -> Matrix {
        switch self {
        case .whole(let w): return Matrix(w, of: file)
        case .product(let a, let b): return Matrix(a, of: file).multiplied(by: Matrix(b, of: file))
        case .tucker(let t, let a, let b):
            return Matrix(a, of: file).transposed().multiplied(
                by: Matrix.tucker(core: t, of: file, Matrix(b, of: file)))
        }
    }
}

final class KroneckerFiller: BufferedDeltaFiller {
    let w1: Matrix, w2: Matrix
    var scratch = FloatBuffer()

    init(w1: Matrix, w2: Matrix) {
        self.w1 = w1
        self.w2 = w2
    }

    deinit { scratch.free() }

    func fill(_ rows: Range<Int>, weight: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let b = w2.rows, c = w1.columns, d = w2.columns
        let columns = c * d
        w1.values.withUnsafeBufferPointer { p1 in
            w2.values.withUnsafeBufferPointer { p2 in
                for (k, i) in rows.enumerated() {
                    let i1 = i / b, i2 = i % b
                    let row = out + k * columns
                    let r2 = p2.baseAddress! + i2 * d
                    for j1 in 0..<c {
                        let v = p1[i1 * c + j1]
                        let o = row + j1 * d
                        for j2 in 0..<d { o[j2] = v * r2[j2] }
                    }
                }
            }
        }
    }
}

/// GLoRA: `D = B1 @ B2 + W @ (A1 @ A2)`, where `W` is the weight it is applied to and
/// `A1 @ A2` acts on the input channels at every kernel tap. Current layout (LyCORIS
/// since 2024-05): `A1 = a1` `(in, r)`, `A2 = a2` `(r, in)`, `B1 = b1` `(out, r)`,
/// `B2 = b2` `(r, in·kh·kw)`; old layout: `A1 = a2`, `A2 = a1`, `B1 = b2`, `B2 = b1`.
struct GLoRADelta: DeltaSource {
    let file: SafeTensorsFile
    /// `(in, r)`, `(r, in)`, `(out, r)`, `(r, in·kh·kw)` as roles, after the layout swap.
    let inA: TensorInfo, inB: TensorInfo, outA: TensorInfo, outB: TensorInfo
    let label: String

    func validate(rows: Int, columns: Int, inFeatures: Int) throws(EngineError) {
        let r = Int(inB.shape[0]), q = Int(outB.shape[0])
        guard inFeatures > 0, columns % inFeatures == 0, Int(inA.shape[0]) == inFeatures, Int(inA.shape[1]) == r,
            isProduct(inA.elementCount, inFeatures, r), isProduct(inB.elementCount, r, inFeatures),
            Int(outA.shape[0]) == rows, Int(outA.shape[1]) == q, isProduct(outA.elementCount, rows, q),
            isProduct(outB.elementCount, q, columns)
        else {
            throw .factors(
                file.path, label,
                "GLoRA factors \(shapeText(inA.dims)), \(shapeText(inB.dims)), \(shapeText(outA.dims)), \(shapeText(outB.dims)) do not fit \(rows) rows x \(columns) columns (\(inFeatures) input channels)"
            )
        }
    }

    func flops(rows: Int, columns: Int) -> Double {
        2 * Double(rows) * Double(columns) * Double(Int(inB.shape[0]) * 2 + Int(outB.shape[0]))
    }

    func makeFiller(columns: Int, inFeatures: Int) -> any DeltaFiller {
        GLoRAFiller(
            b: LowRankProduct(a: Matrix(outA, of: file), b: Matrix(outB, of: file)),
            a1: Matrix(inA, of: file), a2: Matrix(inB, of: file), columns: columns, inFeatures: inFeatures)
    }
}

final class GLoRAFiller: BufferedDeltaFiller {
    let b: LowRankProduct
    let a1: Matrix  // in × r
    let a2: Matrix  // r × in
    let columns: Int, inFeatures: Int
    private var t = FloatBuffer()
    var scratch = FloatBuffer()

    init(b: LowRankProduct, a1: Matrix, a2: Matrix, columns: Int, inFeatures: Int) {
        self.b = b
        self.a1 = a1
        self.a2 = a2
        self.columns = columns
        self.inFeatures = inFeatures
    }

    deinit {
        t.free()
        scratch.free()
    }

    func fill(_ rows: Range<Int>, weight: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        b.fill(first: rows.lowerBound, count: rows.count, into: out)
        let r = a2.rows, n = inFeatures, area = columns / n
        t.ensure(r * area)
        let tp = t.p
        a1.values.withUnsafeBufferPointer { p1 in
            a2.values.withUnsafeBufferPointer { p2 in
                for k in 0..<rows.count {
                    let w = weight + k * columns, o = out + k * columns
                    // T[q, hw] = Σ_i W[i, hw] · a1[i, q]
                    tp.update(repeating: 0, count: r * area)
                    for i in 0..<n {
                        for q in 0..<r {
                            let a = p1[i * r + q]
                            for hw in 0..<area { tp[q * area + hw] += w[i * area + hw] * a }
                        }
                    }
                    // D[j, hw] += Σ_q T[q, hw] · a2[q, j]
                    for j in 0..<n {
                        for q in 0..<r {
                            let a = p2[q * n + j]
                            for hw in 0..<area { o[j * area + hw] += tp[q * area + hw] * a }
                        }
                    }
                }
            }
        }
    }
}
