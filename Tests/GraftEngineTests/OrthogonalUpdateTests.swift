import FileIO
import Foundation
import SafeTensors
import Testing

@testable import GraftEngine

// OFT and BOFT (docs/adapter-zoo.md §10, §11) against a plain-loop oracle in Double that
// follows the numpy reference line by line, and against the zoo fixtures.

/// One OFT/BOFT module and the weight it rotates.
struct OrthoCase {
    var rows: Int
    var columns: Int
    /// `(nb, bs, bs)` or `(L, nb, b, b)`.
    var blockShape: [Int]
    var blocks: [Float]
    var rescale: [Float]? = nil
    var alpha: Double = 0
    var legacy = false
    var butterfly: Bool { blockShape.count == 4 }
    var size: Int { blockShape.last! }

    /// Deterministic values in about ±scale.
    static func noise(_ n: Int, seed: Int, scale: Float) -> [Float] {
        (0..<n).map { i in
            let x = sin(Double(i) * 12.9898 + Double(seed) * 78.233) * 43758.5453
            return Float((x - x.rounded(.down)) * 2 - 1) * scale
        }
    }

    static func oft(rows: Int, columns: Int, bs: Int, scale: Float = 0.1, rescaled: Bool = false, seed: Int = 1)
        -> OrthoCase
    {
        let shape = [rows / bs, bs, bs]
        return OrthoCase(
            rows: rows, columns: columns, blockShape: shape,
            blocks: noise(shape.reduce(1, *), seed: seed, scale: scale),
            rescale: rescaled ? noise(rows, seed: seed + 7, scale: 0.1).map { 1 + $0 } : nil)
    }

    static func boft(
        rows: Int, columns: Int, levels: Int, b: Int, scale: Float = 0.1, rescaled: Bool = false, seed: Int = 2
    ) -> OrthoCase {
        let shape = [levels, rows / b, b, b]
        return OrthoCase(
            rows: rows, columns: columns, blockShape: shape,
            blocks: noise(shape.reduce(1, *), seed: seed, scale: scale),
            rescale: rescaled ? noise(rows, seed: seed + 7, scale: 0.1).map { 1 + $0 } : nil)
    }

    func weight(seed: Int = 3) -> [Float] { Self.noise(rows * columns, seed: seed, scale: 1) }
}

/// The reference arithmetic with plain loops in Double: `R = (I + Q)·inv(I − Q)` by
/// Gauss-Jordan, the OFT einsum and the BOFT reshapes/transposes written out.
enum OrthoOracle {
    typealias Mat = [[Double]]

    static func identity(_ n: Int) -> Mat { (0..<n).map { i in (0..<n).map { $0 == i ? 1 : 0 } } }

    static func product(_ a: Mat, _ b: Mat) -> Mat {
        let n = a.count, k = b.count, m = b[0].count
        return (0..<n).map { i in (0..<m).map { j in (0..<k).reduce(0.0) { $0 + a[i][$1] * b[$1][j] } } }
    }

    static func inverse(_ a: Mat) -> Mat {
        let n = a.count
        var m = a, inv = identity(n)
        for c in 0..<n {
            let p = (c..<n).max { abs(m[$0][c]) < abs(m[$1][c]) }!
            m.swapAt(c, p)
            inv.swapAt(c, p)
            let d = m[c][c]
            for j in 0..<n {
                m[c][j] /= d
                inv[c][j] /= d
            }
            for i in 0..<n where i != c {
                let f = m[i][c]
                for j in 0..<n {
                    m[i][j] -= f * m[c][j]
                    inv[i][j] -= f * inv[c][j]
                }
            }
        }
        return inv
    }

    /// The rotation per stored block (flat block order), after the constraint.
    static func rotations(_ t: OrthoCase, compat: MergeCompat) -> [Mat] {
        let s = t.size, count = t.blocks.count / (s * s)
        let stored: [Mat] = (0..<count).map { k in
            (0..<s).map { i in (0..<s).map { j in Double(t.blocks[k * s * s + i * s + j]) } }
        }
        if t.legacy { return stored }
        var q = stored.map { b in (0..<s).map { i in (0..<s).map { j in b[i][j] - b[j][i] } } }
        let n = q.flatMap { $0.flatMap { $0 } }.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
        let c = compat == .lycoris ? t.alpha * Double(t.rows) : t.alpha
        if c > 0 && n + 1e-8 > c {
            q = q.map { $0.map { $0.map { $0 * (c / (n + 1e-8)) } } }
        }
        let id = identity(s)
        return q.map { qk in
            let plus = (0..<s).map { i in (0..<s).map { j in id[i][j] + qk[i][j] } }
            let minus = (0..<s).map { i in (0..<s).map { j in id[i][j] - qk[i][j] } }
            return product(plus, inverse(minus))
        }
    }

    static func merge(_ t: OrthoCase, _ w0: [Float], ratio m: Double, compat: MergeCompat) -> [Double] {
        let o = t.rows, cols = t.columns, s = t.size
        let w = w0.map(Double.init)
        let r = rotations(t, compat: compat)
        let id = identity(s)
        if !t.butterfly {
            var out = [Double](repeating: 0, count: o * cols)
            for k in 0..<(o / s) {
                for j in 0..<s {
                    for c in 0..<cols {
                        var sum = 0.0
                        for n in 0..<s {
                            let x = w[(k * s + n) * cols + c]
                            switch compat {
                            case .lycoris: sum += (id[n][j] + m * (r[k][n][j] - id[n][j])) * x
                            case .comfyui: sum += (m * r[k][n][j] - m * id[n][j]) * x
                            }
                        }
                        let row = k * s + j
                        switch compat {
                        case .lycoris: out[row * cols + c] = sum * Double(t.rescale?[row] ?? 1)
                        case .comfyui: out[row * cols + c] = w[row * cols + c] + m * sum
                        }
                    }
                }
            }
            return out
        }
        let levels = t.blockShape[0], nb = t.blockShape[1]
        var inp = w
        for i in 0..<levels {
            let k = (1 << i) * s / 2
            // x = inp.reshape(-1, 2, k, C).transpose(0, 2, 1, 3): x[c, t, g] = inp[c, g, t].
            var x = [Double](repeating: 0, count: o * cols)
            for c in 0..<(o / (2 * k)) {
                for g in 0..<2 {
                    for tt in 0..<k {
                        for col in 0..<cols {
                            x[(c * 2 * k + tt * 2 + g) * cols + col] = inp[(c * 2 * k + g * k + tt) * cols + col]
                        }
                    }
                }
            }
            var y = [Double](repeating: 0, count: o * cols)
            for blk in 0..<nb {
                var bi = r[i * nb + blk]
                if m != 1 { bi = (0..<s).map { p in (0..<s).map { q in bi[p][q] * m + (1 - m) * id[p][q] } } }
                for p in 0..<s {
                    for col in 0..<cols {
                        var sum = 0.0
                        for q in 0..<s { sum += bi[p][q] * x[(blk * s + q) * cols + col] }
                        y[(blk * s + p) * cols + col] = sum
                    }
                }
            }
            // Back: y.reshape(-1, k, 2, C).transpose(0, 2, 1, 3): inp[c, g, t] = y[c, t, g].
            for c in 0..<(o / (2 * k)) {
                for g in 0..<2 {
                    for tt in 0..<k {
                        for col in 0..<cols {
                            inp[(c * 2 * k + g * k + tt) * cols + col] = y[(c * 2 * k + tt * 2 + g) * cols + col]
                        }
                    }
                }
            }
        }
        if let rs = t.rescale {
            for row in 0..<o { for col in 0..<cols { inp[row * cols + col] *= Double(rs[row]) } }
        }
        return compat == .lycoris ? inp : zip(w, inp).map { $0 + m * ($1 - $0) }
    }
}

/// max |got − want| / max |want|.
func relativeError(_ got: [Float], _ want: [Double]) -> Double {
    let scale = want.map(abs).max() ?? 0
    let diff = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
    return diff / max(scale, .leastNormalMagnitude)
}

/// Builds the target and the module as a safetensors file and runs the update through the
/// executor (fp32 output). `targetRows` > `t.rows` puts the update on `rows` of a taller
/// target (a q/k/v third of a fused projection).
struct OrthoRun {
    var targetRows: Int? = nil
    var first = 0
    var chunkElements = 1 << 20
    var threads = 1

    func run(_ t: OrthoCase, _ w: [Float], ratio: Float, compat: MergeCompat) throws -> [Float] {
        let dir = try ScratchDirectory("oft")
        let path = dir.path("in.safetensors")
        let total = targetRows ?? t.rows
        var specs = [
            TensorSpec("w", .F32, [total, t.columns], w),
            TensorSpec("m.oft_blocks", .F32, t.blockShape, t.blocks),
        ]
        if let r = t.rescale { specs.append(TensorSpec("m.rescale", .F32, [t.rows, 1], r)) }
        try writeTensors(specs, to: path)
        let file = try SafeTensorsFile(path: path)
        let target = try #require(file.tensor(named: "w"))
        let u = OrthogonalUpdate(
            source: file, blocks: try #require(file.tensor(named: "m.oft_blocks")), butterfly: t.butterfly,
            legacyDiagonal: t.legacy, rescale: file.tensor(named: "m.rescale"), constraint: t.alpha,
            rows: first..<(first + t.rows), ratio: ratio, compat: compat, label: "m")
        let plan = ExecutionPlan(
            tensors: [
                PlannedTensor(
                    source: file, input: target, output: OutputTensor(name: "w", dtype: .F32, shape: target.shape),
                    operation: .update(try TensorUpdates(updates: [u], target: target)))
            ], metadata: nil)
        var executor = Executor()
        executor.chunkElements = chunkElements
        executor.threads = threads
        let out = try AtomicOutput(path: dir.path("out.safetensors"), overwrite: false)
        _ = try executor.run(plan, into: out)
        try out.commit()
        return try floats(try SafeTensorsFile(path: dir.path("out.safetensors")), "w")
    }
}

@Suite("OFT and BOFT: orthogonal updates")
struct OrthogonalUpdateTests {
    @Test("OFT matches the Double oracle", arguments: MergeCompat.allCases, [Float(1), 0.6, -0.75])
    func oftMatchesOracle(compat: MergeCompat, ratio: Float) throws {
        for rescaled in [false, true] {
            let t = OrthoCase.oft(rows: 12, columns: 18, bs: 4, rescaled: rescaled)
            let w = t.weight()
            let got = try OrthoRun().run(t, w, ratio: ratio, compat: compat)
            let want = OrthoOracle.merge(t, w, ratio: Double(ratio), compat: compat)
            #expect(relativeError(got, want) < 1e-5, "rescaled \(rescaled)")
            #expect(relativeError(got, w.map(Double.init)) > 1e-3, "the update changed the weight")
        }
    }

    @Test("BOFT matches the Double oracle", arguments: MergeCompat.allCases, [Float(1), 0.6, -0.75])
    func boftMatchesOracle(compat: MergeCompat, ratio: Float) throws {
        for (levels, b, rescaled) in [(3, 4, false), (3, 4, true), (4, 2, true), (1, 6, false)] {
            let rows = levels == 1 ? 12 : 16
            let t = OrthoCase.boft(rows: rows, columns: 7, levels: levels, b: b, rescaled: rescaled)
            let w = t.weight()
            let got = try OrthoRun().run(t, w, ratio: ratio, compat: compat)
            let want = OrthoOracle.merge(t, w, ratio: Double(ratio), compat: compat)
            #expect(relativeError(got, want) < 1e-5, "L \(levels) b \(b) rescaled \(rescaled)")
            #expect(relativeError(got, w.map(Double.init)) > 1e-3, "the update changed the weight")
        }
    }

    @Test("the butterfly really mixes blocks: BOFT with several levels is not block-diagonal")
    func butterflyMixes() throws {
        let t = OrthoCase.boft(rows: 16, columns: 3, levels: 3, b: 4)
        // A weight that is zero outside rows 0..<4: a block-diagonal update would keep it there.
        let w: [Float] = (0..<48).map { (i: Int) -> Float in i < 12 ? Float(i + 1) / 12 : 0 }
        let got = try OrthoRun().run(t, w, ratio: 1, compat: .lycoris)
        #expect(got[(4 * 3)...].contains { abs($0) > 1e-4 })
        #expect(relativeError(got, OrthoOracle.merge(t, w, ratio: 1, compat: .lycoris)) < 1e-5)
    }

    @Test("requirements and flops: OFT aligned to its block size, BOFT all rows at once")
    func requirements() throws {
        let (file, _) = try Self.placeholderFile()
        let oft = Self.update(file, blocks: [3, 4, 4], rows: 0..<12)
        #expect(oft.requirements.rowAlignment == 4)
        #expect(oft.requirements.reduction == nil)
        #expect(oft.flops(columns: 9) == 2 * 12 * 4 * 9)
        let boft = Self.update(file, blocks: [3, 4, 4, 4], rows: 0..<16, butterfly: true)
        #expect(boft.requirements.rowAlignment == nil)
        #expect(boft.flops(columns: 9) == 2 * 3 * 16 * 4 * 9)
    }

    /// A geometry `validate` must refuse.
    struct BadShape: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var blocks: [Int]
        var butterfly = false
        var rows = 0..<16
        var dtype = DType.F32
        var rescale: [Int]? = nil
        var rescaleType = DType.F32
    }

    static let badShapes: [BadShape] = [
        BadShape(testDescription: "OFT nb·bs ≠ rows", blocks: [3, 4, 4]),
        BadShape(testDescription: "OFT blocks not square", blocks: [4, 4, 3]),
        BadShape(testDescription: "OFT blocks not 3-D", blocks: [16, 4]),
        BadShape(testDescription: "BOFT nb·b ≠ rows", blocks: [3, 4, 4, 4], butterfly: true, rows: 0..<12),
        BadShape(testDescription: "BOFT b odd", blocks: [1, 4, 3, 3], butterfly: true, rows: 0..<12),
        BadShape(
            testDescription: "BOFT level spans do not divide rows", blocks: [3, 6, 2, 2], butterfly: true, rows: 0..<12),
        BadShape(testDescription: "BOFT more levels than rows allow", blocks: [5, 4, 4, 4], butterfly: true),
        BadShape(testDescription: "rescale count ≠ rows", blocks: [4, 4, 4], rescale: [15, 1]),
        BadShape(testDescription: "rescale not float", blocks: [4, 4, 4], rescale: [16, 1], rescaleType: .I32),
        BadShape(testDescription: "blocks not float", blocks: [4, 4, 4], dtype: .I32),
        BadShape(testDescription: "rows outside the target", blocks: [4, 4, 4], rows: 8..<24),
    ]

    @Test("validate refuses shapes that do not fit, with .shapeMismatch", arguments: badShapes)
    func validateRejects(_ bad: BadShape) throws {
        let (file, _) = try Self.placeholderFile()
        let u = Self.update(
            file, blocks: bad.blocks, rows: bad.rows, butterfly: bad.butterfly, dtype: bad.dtype,
            rescale: bad.rescale.map { Self.info("m.rescale", bad.rescaleType, $0) })
        let e = #expect(throws: EngineError.self) { try u.validate(targetRows: 16, columns: 9) }
        #expect(e?.kind == .shapeMismatch)
        #expect(e?.module == "m")
    }

    @Test("validate accepts fitting shapes, and refuses oft_diag on a butterfly")
    func validateAccepts() throws {
        let (file, _) = try Self.placeholderFile()
        try Self.update(file, blocks: [4, 4, 4], rows: 0..<16, rescale: Self.info("r", .F16, [16, 1, 1, 1]))
            .validate(targetRows: 16, columns: 9)
        try Self.update(file, blocks: [2, 4, 4], rows: 4..<12).validate(targetRows: 16, columns: 9)
        try Self.update(file, blocks: [3, 4, 4, 4], rows: 0..<16, butterfly: true).validate(targetRows: 16, columns: 9)
        try Self.update(file, blocks: [1, 8, 2, 2], rows: 0..<16, butterfly: true).validate(targetRows: 16, columns: 9)
        let legacy = OrthogonalUpdate(
            source: file, blocks: Self.info("b", .F32, [3, 4, 4, 4]), butterfly: true, legacyDiagonal: true,
            rescale: nil, constraint: 0, rows: 0..<16, ratio: 1, compat: .lycoris, label: "m")
        let e = #expect(throws: EngineError.self) { try legacy.validate(targetRows: 16, columns: 9) }
        #expect(e?.kind == .shapeMismatch)
    }

    @Test("the constraint clamps Q when engaged (lycoris: alpha·rows, comfyui: alpha) and is a no-op when not")
    func constraint() throws {
        for var t in [
            OrthoCase.oft(rows: 12, columns: 5, bs: 4, scale: 1),
            OrthoCase.boft(rows: 16, columns: 5, levels: 3, b: 4, scale: 1),
        ] {
            let w = t.weight()
            let s = t.size
            var n2 = 0.0
            for k in 0..<(t.blocks.count / (s * s)) {
                for i in 0..<s {
                    for j in 0..<s {
                        let v = Double(t.blocks[k * s * s + i * s + j]) - Double(t.blocks[k * s * s + j * s + i])
                        n2 += v * v
                    }
                }
            }
            let n = n2.squareRoot(), o = Double(t.rows)
            let free = try OrthoRun().run(t, w, ratio: 1, compat: .lycoris)

            // Not engaged for lycoris (alpha·rows = 2n), engaged for comfyui (alpha = 2n/rows < n).
            t.alpha = 2 * n / o
            #expect(try OrthoRun().run(t, w, ratio: 1, compat: .lycoris) == free)
            let comfy = try OrthoRun().run(t, w, ratio: 1, compat: .comfyui)
            #expect(relativeError(comfy, OrthoOracle.merge(t, w, ratio: 1, compat: .comfyui)) < 1e-5)
            #expect(relativeError(comfy, free.map(Double.init)) > 1e-2)

            // Engaged for lycoris: alpha·rows = n/2.
            t.alpha = 0.5 * n / o
            let clamped = try OrthoRun().run(t, w, ratio: 1, compat: .lycoris)
            #expect(relativeError(clamped, OrthoOracle.merge(t, w, ratio: 1, compat: .lycoris)) < 1e-5)
            #expect(relativeError(clamped, free.map(Double.init)) > 1e-2)
            let unclampedOracle = OrthoOracle.merge(
                OrthoCase(rows: t.rows, columns: t.columns, blockShape: t.blockShape, blocks: t.blocks), w,
                ratio: 1, compat: .lycoris)
            #expect(relativeError(free, unclampedOracle) < 1e-5)
        }
    }

    @Test("lycoris and comfyui differ at strength ≠ 1 and agree at 1 without rescale or constraint")
    func compatibility() throws {
        for t in [
            OrthoCase.oft(rows: 12, columns: 6, bs: 3, scale: 0.3),
            OrthoCase.boft(rows: 16, columns: 6, levels: 3, b: 4, scale: 0.3),
        ] {
            let w = t.weight()
            let l = try OrthoRun().run(t, w, ratio: 0.6, compat: .lycoris)
            let c = try OrthoRun().run(t, w, ratio: 0.6, compat: .comfyui)
            #expect(relativeError(l, c.map(Double.init)) > 1e-3)
            let l1 = try OrthoRun().run(t, w, ratio: 1, compat: .lycoris)
            let c1 = try OrthoRun().run(t, w, ratio: 1, compat: .comfyui)
            #expect(relativeError(l1, c1.map(Double.init)) < 1e-6)
        }
    }

    @Test("comfyui ignores OFT's rescale; lycoris applies it")
    func oftRescaleCompat() throws {
        var t = OrthoCase.oft(rows: 12, columns: 6, bs: 4, rescaled: true)
        let w = t.weight()
        let lr = try OrthoRun().run(t, w, ratio: 1, compat: .lycoris)
        let cr = try OrthoRun().run(t, w, ratio: 1, compat: .comfyui)
        t.rescale = nil
        let l = try OrthoRun().run(t, w, ratio: 1, compat: .lycoris)
        let c = try OrthoRun().run(t, w, ratio: 1, compat: .comfyui)
        #expect(cr == c)
        #expect(relativeError(lr, l.map(Double.init)) > 1e-3)
    }

    @Test("legacy oft_diag: the stored block is the rotation (no Cayley, no constraint)")
    func legacyDiagonal() throws {
        // Blocks of Givens rotations by different angles.
        let bs = 4, nb = 3
        var blocks = [Float](repeating: 0, count: nb * bs * bs)
        for k in 0..<nb {
            let a = 0.3 + 0.2 * Double(k), base = k * bs * bs
            for i in 0..<bs { blocks[base + i * bs + i] = 1 }
            blocks[base + 0] = Float(cos(a))
            blocks[base + 1] = Float(-sin(a))
            blocks[base + bs] = Float(sin(a))
            blocks[base + bs + 1] = Float(cos(a))
            blocks[base + 2 * bs + 3] = 0.25  // not orthogonal: the block is used as is
        }
        var t = OrthoCase(rows: 12, columns: 5, blockShape: [nb, bs, bs], blocks: blocks, legacy: true)
        t.alpha = 1e-6  // would clamp Q to almost nothing if it were used
        let w = t.weight()
        for compat in MergeCompat.allCases {
            for ratio: Float in [1, 0.6] {
                let got = try OrthoRun().run(t, w, ratio: ratio, compat: compat)
                #expect(relativeError(got, OrthoOracle.merge(t, w, ratio: Double(ratio), compat: compat)) < 1e-5)
            }
        }
        // Row 0 of block 0 at strength 1: Σ_n R[n][0]·W0[n] = cos·W0[0] + sin·W0[1].
        let got = try OrthoRun().run(t, w, ratio: 1, compat: .lycoris)
        let c = cos(0.3), s = sin(0.3)
        #expect(abs(Double(got[0]) - (Double(Float(c)) * Double(w[0]) + Double(Float(s)) * Double(w[5]))) < 1e-6)
        var cayley = t
        cayley.legacy = false
        cayley.alpha = 0
        let other = try OrthoRun().run(cayley, w, ratio: 1, compat: .lycoris)
        #expect(relativeError(got, other.map(Double.init)) > 1e-2)
    }

    @Test("the result does not depend on how the executor chunks the rows or on the thread count")
    func chunkingInvariance() throws {
        let oft = OrthoCase.oft(rows: 12, columns: 6, bs: 4, rescaled: true)
        let boft = OrthoCase.boft(rows: 16, columns: 6, levels: 3, b: 4, rescaled: true)
        for t in [oft, boft] {
            for compat in MergeCompat.allCases {
                // On rows 4..<4+O of a taller target, so alignment counts from the update's first row.
                let total = t.rows + 9
                let w = OrthoCase.noise(total * t.columns, seed: 5, scale: 1)
                let whole = try OrthoRun(targetRows: total, first: 4).run(t, w, ratio: 0.8, compat: compat)
                for (rowsPerChunk, threads) in [(1, 1), (4, 2), (5, 2), (8, 1)] {
                    let r = OrthoRun(
                        targetRows: total, first: 4, chunkElements: rowsPerChunk * t.columns, threads: threads)
                    #expect(try r.run(t, w, ratio: 0.8, compat: compat) == whole, "\(rowsPerChunk) rows, \(threads)")
                }
                let c = t.columns
                #expect(whole[..<(4 * c)] == w[..<(4 * c)], "rows before the update untouched")
                #expect(whole[((4 + t.rows) * c)...] == w[((4 + t.rows) * c)...], "rows after the update untouched")
                let inside = Array(w[(4 * c)..<((4 + t.rows) * c)])
                let want = OrthoOracle.merge(t, inside, ratio: 0.8, compat: compat)
                #expect(relativeError(Array(whole[(4 * c)..<((4 + t.rows) * c)]), want) < 1e-5)
            }
        }
    }

    @Test("the applier refuses blocks that break its alignment")
    func applierChecksBlocks() throws {
        let t = OrthoCase.oft(rows: 8, columns: 2, bs: 4)
        let dir = try ScratchDirectory("oft")
        let path = dir.path("m.safetensors")
        try writeTensors([TensorSpec("b", .F32, t.blockShape, t.blocks)], to: path)
        let file = try SafeTensorsFile(path: path)
        let b = try #require(file.tensor(named: "b"))
        let oft = OrthogonalUpdate(
            source: file, blocks: b, butterfly: false, legacyDiagonal: false, rescale: nil, constraint: 0,
            rows: 0..<8, ratio: 1, compat: .lycoris, label: "m")
        let applier = try oft.makeApplier(columns: 2, precision: .fp32)
        var values = [Float](repeating: 1, count: 16)
        let e = #expect(throws: EngineError.self) {
            try values.withUnsafeMutableBufferPointer {
                try applier.apply(RowBlock(values: $0.baseAddress!, rows: 2..<6, columns: 2), reduced: nil)
            }
        }
        #expect(e?.kind == .internalInconsistency)
    }

    // MARK: helpers

    static func info(_ name: String, _ dtype: DType, _ shape: [Int]) -> TensorInfo {
        let n = shape.reduce(1, *)
        return TensorInfo(
            name: name, dtype: dtype, shape: shape.map(UInt64.init),
            dataOffsets: 0..<UInt64(n * max(dtype.bitCount / 8, 1)))
    }

    /// A file to name as the source of updates that are only validated.
    static func placeholderFile() throws -> (SafeTensorsFile, ScratchDirectory) {
        let dir = try ScratchDirectory("oft")
        let path = dir.path("p.safetensors")
        try writeTensors([TensorSpec("x", .F32, [1], [0])], to: path)
        return (try SafeTensorsFile(path: path), dir)
    }

    static func update(
        _ file: SafeTensorsFile, blocks: [Int], rows: Range<Int>, butterfly: Bool = false, dtype: DType = .F32,
        rescale: TensorInfo? = nil
    ) -> OrthogonalUpdate {
        OrthogonalUpdate(
            source: file, blocks: info("m.oft_blocks", dtype, blocks), butterfly: butterfly, legacyDiagonal: false,
            rescale: rescale, constraint: 0, rows: rows, ratio: 1, compat: .lycoris, label: "m")
    }
}
