import Adapters
import Foundation
import GraftEngine
import SafeTensors
import Testing

// Every LyCORIS adapter kind merged through the library into a tiny checkpoint with real
// kohya names, against a plain-loop oracle in Double (docs/adapter-zoo.md §2–§9 and the
// numpy reference `merge`/`delta`): LoCon Tucker, LoHa (plain and Tucker), LoKr (every
// side layout and the rank rule), DoRA (both axes, both compats, LoRA and LoHa hosts),
// full, norm, (IA)³, GLoRA (current and legacy layouts), adapter order, and thread /
// chunking independence of the input-axis DoRA reduction.

/// Deterministic values in about ±scale (not all equal, no structure to hide a transpose).
private func kindNoise(_ n: Int, seed: Int, scale: Float = 0.5) -> [Float] {
    (0..<n).map { k in
        let x = sin(Double(k + 1) * 12.9898 + Double(seed) * 78.233) * 43758.5453
        return Float((x - x.rounded(.down)) * 2 - 1) * scale
    }
}

/// One checkpoint layer of `KindUNet`: its tensors and the kohya module that targets it.
private struct KindLayer {
    let tensor: String
    let module: String
    /// The weight's shape: `[O, I]`, `[O, I, kh, kw]` or `[C]`.
    let shape: [Int]
    let hasBias: Bool
    let seed: Int

    var rows: Int { shape[0] }
    var inFeatures: Int { shape.count > 1 ? shape[1] : 1 }
    var area: Int { shape.count > 2 ? shape[2...].reduce(1, *) : 1 }
    var columns: Int { shape.dropFirst().reduce(1, *) }
    var count: Int { shape.reduce(1, *) }
    var weightName: String { tensor + ".weight" }
    var biasName: String { tensor + ".bias" }
    var weight: [Float] { kindNoise(count, seed: seed) }
    var bias: [Float] { kindNoise(rows, seed: seed + 100, scale: 0.25) }
    var w0: [Double] { weight.map(Double.init) }
}

/// A UNet fragment like `TinyUNet` (the two-layer one the key mapper accepts), plus a
/// 3×3 resnet conv and a transformer norm.
private enum KindUNet {
    static let proj = KindLayer(
        tensor: "model.diffusion_model.input_blocks.4.1.proj_in", module: "lora_unet_input_blocks_4_1_proj_in",
        shape: [6, 4], hasBias: true, seed: 1)
    static let toQ = KindLayer(
        tensor: "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        module: "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", shape: [6, 4], hasBias: false, seed: 2)
    static let conv = KindLayer(
        tensor: "model.diffusion_model.input_blocks.1.0.in_layers.2",
        module: "lora_unet_input_blocks_1_0_in_layers_2", shape: [4, 2, 3, 3], hasBias: true, seed: 3)
    static let norm = KindLayer(
        tensor: "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.norm1",
        module: "lora_unet_input_blocks_4_1_transformer_blocks_0_norm1", shape: [5], hasBias: true, seed: 4)
    /// Square (O = I): where GLoRA's two layouts both fit the factor shapes.
    static let toK = KindLayer(
        tensor: "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_k",
        module: "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k", shape: [5, 5], hasBias: false, seed: 5)
    static let layers = [proj, toQ, conv, norm, toK]

    static func write(_ dir: ScratchDirectory) throws -> String {
        let path = dir.path("ckpt.safetensors")
        var specs: [TensorSpec] = []
        for l in layers {
            specs.append(TensorSpec(l.weightName, .F32, l.shape, l.weight))
            if l.hasBias { specs.append(TensorSpec(l.biasName, .F32, [l.rows], l.bias)) }
        }
        try writeTensors(specs, to: path)
        return path
    }
}

/// The merged checkpoint (the scratch directory lives as long as the result).
private struct KindMerged {
    let dir: ScratchDirectory
    let plan: MergePlan
    let file: SafeTensorsFile

    func values(_ name: String) throws -> [Float] { try floats(file, name) }
    var merged: MergedModule? { plan.adapters.first?.merged.first }
}

/// Merges `adapters` (in order, each with its ratio) into `KindUNet` with fp32 output.
private func kindMerge(
    _ adapters: [([TensorSpec], Double)], compat: MergeCompat = .lycoris, allowUnmatched: Bool = false,
    threads: Int? = nil, chunkElements: Int? = nil
) throws -> KindMerged {
    let dir = try ScratchDirectory("kinds")
    let ckpt = try KindUNet.write(dir)
    var inputs: [(String, Double)] = []
    for (i, a) in adapters.enumerated() {
        let path = dir.path("adapter\(i).safetensors")
        try writeTensors(a.0, to: path)
        inputs.append((path, a.1))
    }
    var m = LibraryMerge(savePrecision: .F32, compat: compat)
    m.allowUnmatched = allowUnmatched
    m.threads = threads
    m.chunkElements = chunkElements
    let out = dir.path("out.safetensors")
    let (plan, _) = try m.run(checkpoint: ckpt, adapters: inputs, output: out)
    return KindMerged(dir: dir, plan: plan, file: try SafeTensorsFile(path: out))
}

private func kindMerge(_ adapter: [TensorSpec], ratio: Double, compat: MergeCompat = .lycoris) throws -> KindMerged {
    try kindMerge([(adapter, ratio)], compat: compat)
}

/// `got` within 1e-5 of max |want| of `want`; and `want` itself differs from `w0` (so
/// the test would catch a merge that does nothing).
private func expectMerged(
    _ got: [Float], _ want: [Double], from w0: [Double], _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(
        got.count == want.count, "\(what): \(got.count) values, expected \(want.count)", sourceLocation: sourceLocation)
    let scale = want.map(abs).max() ?? 0
    let err = zip(got, want).map { abs(Double($0) - $1) }.max() ?? .infinity
    #expect(err <= 1e-5 * scale, "\(what): max error \(err) vs max |value| \(scale)", sourceLocation: sourceLocation)
    let change = zip(want, w0).map { abs($0 - $1) }.max() ?? 0
    #expect(change > 1e-3 * scale, "\(what): the oracle does not change the weight", sourceLocation: sourceLocation)
}

private func scalar(_ name: String, _ v: Float) -> TensorSpec { TensorSpec(name, .F32, [], [v]) }

// MARK: - KindOracle (Double, flat row-major arrays)

private enum KindOracle {
    static func d(_ x: [Float]) -> [Double] { x.map(Double.init) }

    /// `a (n × k) @ b (k × m)`.
    static func mm(_ a: [Double], _ n: Int, _ k: Int, _ b: [Double], _ m: Int) -> [Double] {
        var out = [Double](repeating: 0, count: n * m)
        for i in 0..<n {
            for j in 0..<m {
                var s = 0.0
                for p in 0..<k { s += a[i * k + p] * b[p * m + j] }
                out[i * m + j] = s
            }
        }
        return out
    }

    static func transposed(_ a: [Double], _ n: Int, _ m: Int) -> [Double] {
        (0..<n * m).map { k in a[(k % n) * m + k / n] }
    }

    /// `w0 + coefficient · delta`.
    static func add(_ w0: [Double], _ delta: [Double], _ coefficient: Double) -> [Double] {
        zip(w0, delta).map { $0 + coefficient * $1 }
    }

    /// Tucker: `ΔW[o,i,hw] = Σ_p Σ_q up[o,p]·mid[p,q,hw]·down[q,i]`.
    static func tucker(up: [Double], mid: [Double], down: [Double], o: Int, i: Int, r: Int, area: Int) -> [Double] {
        var out = [Double](repeating: 0, count: o * i * area)
        for oo in 0..<o {
            for ii in 0..<i {
                for hw in 0..<area {
                    var s = 0.0
                    for p in 0..<r {
                        for q in 0..<r { s += up[oo * r + p] * mid[(p * r + q) * area + hw] * down[q * i + ii] }
                    }
                    out[(oo * i + ii) * area + hw] = s
                }
            }
        }
        return out
    }

    /// LoHa Tucker side: `M[o,c,hw] = Σ_i Σ_j t[i,j,hw]·a[i,o]·b[j,c]`, `a` (r, O), `b` (r, I).
    static func hadaTucker(t: [Double], a: [Double], b: [Double], o: Int, c: Int, r: Int, area: Int) -> [Double] {
        var out = [Double](repeating: 0, count: o * c * area)
        for oo in 0..<o {
            for cc in 0..<c {
                for hw in 0..<area {
                    var s = 0.0
                    for i in 0..<r {
                        for j in 0..<r { s += t[(i * r + j) * area + hw] * a[i * o + oo] * b[j * c + cc] }
                    }
                    out[(oo * c + cc) * area + hw] = s
                }
            }
        }
        return out
    }

    /// `kron(W1 (a × c), W2 (b × d))`: `ΔW[i1·b+i2, j1·d+j2] = W1[i1,j1]·W2[i2,j2]`.
    static func kron(_ w1: [Double], _ a: Int, _ c: Int, _ w2: [Double], _ b: Int, _ d: Int) -> [Double] {
        var out = [Double](repeating: 0, count: a * b * c * d)
        for i1 in 0..<a {
            for i2 in 0..<b {
                for j1 in 0..<c {
                    for j2 in 0..<d { out[(i1 * b + i2) * (c * d) + j1 * d + j2] = w1[i1 * c + j1] * w2[i2 * d + j2] }
                }
            }
        }
        return out
    }

    /// GLoRA: `outA (O×r) @ outB (r×cols) + W0·(inA (I×r) @ inB (r×I))`, `A` acting on the
    /// input channels at every kernel tap.
    static func glora(
        w0: [Double], layer: KindLayer, inA: [Double], inB: [Double], outA: [Double], outB: [Double], r: Int,
        rb: Int
    ) -> [Double] {
        let o = layer.rows, n = layer.inFeatures, area = layer.area, cols = layer.columns
        var delta = mm(outA, o, rb, outB, cols)
        let a = mm(inA, n, r, inB, n)
        for oo in 0..<o {
            for j in 0..<n {
                for hw in 0..<area {
                    var s = 0.0
                    for i in 0..<n { s += w0[(oo * n + i) * area + hw] * a[i * n + j] }
                    delta[(oo * n + j) * area + hw] += s
                }
            }
        }
        return delta
    }

    /// DoRA on `V = W0 + s·D`, ref.py's arithmetic.
    static func dora(
        w0: [Double], delta: [Double], scale s: Double, magnitude: [Double], axis: DoRAAxis, layer: KindLayer,
        ratio m: Double, compat: MergeCompat
    ) -> [Double] {
        let eps = Double(Float.ulpOfOne)
        let v = add(w0, delta, s)
        let rows = layer.rows, cols = layer.columns, area = layer.area, n = layer.inFeatures
        var factor = [Double](repeating: 0, count: rows * cols)
        switch axis {
        case .output:
            let src = compat == .lycoris ? v : w0
            for o in 0..<rows {
                let norm = (0..<cols).reduce(0.0) { $0 + src[o * cols + $1] * src[o * cols + $1] }.squareRoot()
                for j in 0..<cols { factor[o * cols + j] = magnitude[o] / (norm + eps) }
            }
        case .input:
            for i in 0..<n {
                var sum = 0.0
                for o in 0..<rows {
                    for hw in 0..<area { sum += v[(o * n + i) * area + hw] * v[(o * n + i) * area + hw] }
                }
                let norm = sum.squareRoot()
                for o in 0..<rows {
                    for hw in 0..<area { factor[(o * n + i) * area + hw] = magnitude[i] / (norm + eps) }
                }
            }
        }
        return (0..<rows * cols).map { k in
            switch compat {
            case .lycoris: return v[k] * (m * (factor[k] - 1) + 1)
            case .comfyui:
                let wd = v[k] * factor[k]
                return m == 1 ? wd : w0[k] + m * (wd - w0[k])
            }
        }
    }
}

// MARK: - Adapter modules

/// LoRA factors: `up` (O, r[, 1, 1]), `down` (r, I[, kh, kw]).
private struct LoRAFactors {
    let layer: KindLayer
    let rank: Int
    let alpha: Float
    var convDown: Bool { layer.area > 1 }
    var up: [Float] { kindNoise(layer.rows * rank, seed: 11 + layer.seed) }
    var down: [Float] { kindNoise(rank * layer.columns, seed: 12 + layer.seed) }
    var scale: Double { Double(alpha) / Double(rank) }
    var specs: [TensorSpec] {
        let upShape = convDown ? [layer.rows, rank, 1, 1] : [layer.rows, rank]
        let downShape = [rank] + Array(layer.shape.dropFirst())
        return [
            TensorSpec(layer.module + ".lora_up.weight", .F32, upShape, up),
            TensorSpec(layer.module + ".lora_down.weight", .F32, downShape, down),
            scalar(layer.module + ".alpha", alpha),
        ]
    }
    var delta: [Double] { KindOracle.mm(KindOracle.d(up), layer.rows, rank, KindOracle.d(down), layer.columns) }
}

/// Plain LoHa factors: `w_a` (O, r), `w_b` (r, I·k·k).
private struct LoHaFactors {
    let layer: KindLayer
    let rank: Int
    let alpha: Float
    var w1a: [Float] { kindNoise(layer.rows * rank, seed: 21) }
    var w1b: [Float] { kindNoise(rank * layer.columns, seed: 22) }
    var w2a: [Float] { kindNoise(layer.rows * rank, seed: 23) }
    var w2b: [Float] { kindNoise(rank * layer.columns, seed: 24) }
    var scale: Double { Double(alpha) / Double(rank) }
    var specs: [TensorSpec] {
        let m = layer.module
        return [
            TensorSpec(m + ".hada_w1_a", .F32, [layer.rows, rank], w1a),
            TensorSpec(m + ".hada_w1_b", .F32, [rank, layer.columns], w1b),
            TensorSpec(m + ".hada_w2_a", .F32, [layer.rows, rank], w2a),
            TensorSpec(m + ".hada_w2_b", .F32, [rank, layer.columns], w2b),
            scalar(m + ".alpha", alpha),
        ]
    }
    var delta: [Double] {
        let o = layer.rows, c = layer.columns
        let m1 = KindOracle.mm(KindOracle.d(w1a), o, rank, KindOracle.d(w1b), c)
        let m2 = KindOracle.mm(KindOracle.d(w2a), o, rank, KindOracle.d(w2b), c)
        return zip(m1, m2).map { $0 * $1 }
    }
}

/// The magnitude of a DoRA module on `axis`, with its stored shape.
private func doraScale(_ layer: KindLayer, _ axis: DoRAAxis) -> TensorSpec {
    let spatial = [Int](repeating: 1, count: layer.shape.count - 2)
    switch axis {
    case .output:
        return TensorSpec(
            layer.module + ".dora_scale", .F32, [layer.rows, 1] + spatial,
            kindNoise(layer.rows, seed: 31).map { 1 + 0.5 * $0 })
    case .input:
        return TensorSpec(
            layer.module + ".dora_scale", .F32, [1, layer.inFeatures] + spatial,
            kindNoise(layer.inFeatures, seed: 32).map { 1.5 + 0.5 * $0 })
    }
}

// MARK: - Tests

@Suite("LyCORIS kinds: library merges against a Double oracle")
struct LyCORISKindTests {
    private typealias U = KindUNet

    // MARK: LoCon with a Tucker core

    @Test("LoCon Tucker (lora_mid) on a 3x3 conv: ΔW = Σ up·mid·down, s = α / down rows", arguments: [true, false])
    func loconTucker(fourDimensionalDown: Bool) throws {
        let l = U.conv
        let r = 3, o = l.rows, i = l.inFeatures, area = l.area
        let up = kindNoise(o * r, seed: 41), mid = kindNoise(r * r * area, seed: 42), down = kindNoise(r * i, seed: 43)
        let specs = [
            TensorSpec(l.module + ".lora_up.weight", .F32, [o, r, 1, 1], up),
            TensorSpec(l.module + ".lora_mid.weight", .F32, [r, r, 3, 3], mid),
            TensorSpec(l.module + ".lora_down.weight", .F32, fourDimensionalDown ? [r, i, 1, 1] : [r, i], down),
            scalar(l.module + ".alpha", 1.5),
        ]
        let out = try kindMerge(specs, ratio: 0.7)
        #expect(out.merged?.kind == .lora)
        #expect(out.merged?.scale == 0.5)
        let delta = KindOracle.tucker(
            up: KindOracle.d(up), mid: KindOracle.d(mid), down: KindOracle.d(down), o: o, i: i, r: r, area: area)
        let want = KindOracle.add(l.w0, delta, 0.7 * 0.5)
        expectMerged(try out.values(l.weightName), want, from: l.w0, "conv weight")
        #expect(try out.values(l.biasName) == l.bias)
    }

    // MARK: LoHa

    @Test("LoHa plain, linear and conv (k flattened into the input axis): (w1a@w1b) ⊙ (w2a@w2b) · α/r")
    func lohaPlain() throws {
        for (layer, ratio) in [(U.proj, 0.8), (U.conv, 1.3)] {
            let f = LoHaFactors(layer: layer, rank: 2, alpha: 3)
            let out = try kindMerge(f.specs, ratio: ratio)
            #expect(out.merged?.kind == .loha)
            #expect(out.merged?.scale == 1.5)
            let want = KindOracle.add(layer.w0, f.delta, ratio * 1.5)
            expectMerged(try out.values(layer.weightName), want, from: layer.w0, layer.module)
        }
    }

    @Test("LoHa Tucker on a 3x3 conv: w_a (r, O), w_b (r, I), t (r, r, 3, 3)")
    func lohaTucker() throws {
        let l = U.conv
        let r = 3, o = l.rows, i = l.inFeatures, area = l.area
        let w1a = kindNoise(r * o, seed: 51), w1b = kindNoise(r * i, seed: 52), t1 = kindNoise(r * r * area, seed: 53)
        let w2a = kindNoise(r * o, seed: 54), w2b = kindNoise(r * i, seed: 55), t2 = kindNoise(r * r * area, seed: 56)
        let m = l.module
        let specs = [
            TensorSpec(m + ".hada_w1_a", .F32, [r, o], w1a), TensorSpec(m + ".hada_w1_b", .F32, [r, i], w1b),
            TensorSpec(m + ".hada_t1", .F32, [r, r, 3, 3], t1), TensorSpec(m + ".hada_w2_a", .F32, [r, o], w2a),
            TensorSpec(m + ".hada_w2_b", .F32, [r, i], w2b), TensorSpec(m + ".hada_t2", .F32, [r, r, 3, 3], t2),
            scalar(m + ".alpha", 6),
        ]
        let out = try kindMerge(specs, ratio: 0.9)
        #expect(out.merged?.kind == .loha)
        #expect(out.merged?.scale == 2)
        let m1 = KindOracle.hadaTucker(
            t: KindOracle.d(t1), a: KindOracle.d(w1a), b: KindOracle.d(w1b), o: o, c: i, r: r, area: area)
        let m2 = KindOracle.hadaTucker(
            t: KindOracle.d(t2), a: KindOracle.d(w2a), b: KindOracle.d(w2b), o: o, c: i, r: r, area: area)
        let want = KindOracle.add(l.w0, zip(m1, m2).map { $0 * $1 }, 0.9 * 2)
        expectMerged(try out.values(l.weightName), want, from: l.w0, "conv weight")
    }

    // MARK: LoKr

    /// One LoKr side: whole `(rows, cols)` or a product `(rows, r) @ (r, cols)`.
    struct LoKrSide: CustomTestStringConvertible {
        let rank: Int?
        var testDescription: String { rank.map { "factorized r=\($0)" } ?? "whole" }
        func specs(_ prefix: String, rows: Int, cols: Int, seed: Int) -> ([TensorSpec], [Double]) {
            guard let r = rank else {
                let w = kindNoise(rows * cols, seed: seed)
                return ([TensorSpec(prefix, .F32, [rows, cols], w)], KindOracle.d(w))
            }
            let a = kindNoise(rows * r, seed: seed), b = kindNoise(r * cols, seed: seed + 1)
            return (
                [TensorSpec(prefix + "_a", .F32, [rows, r], a), TensorSpec(prefix + "_b", .F32, [r, cols], b)],
                KindOracle.mm(KindOracle.d(a), rows, r, KindOracle.d(b), cols)
            )
        }
    }

    /// `(w1, w2, alpha, expected scale)`: r = w2_b rows if W2 is factorized, else w1_b rows
    /// if W1 is, else s = 1 and alpha (even 10000) is ignored.
    static let lokrCases: [(LoKrSide, LoKrSide, Float, Double)] = [
        (LoKrSide(rank: nil), LoKrSide(rank: nil), 10000, 1),
        (LoKrSide(rank: nil), LoKrSide(rank: 2), 3, 1.5),
        (LoKrSide(rank: 1), LoKrSide(rank: nil), 3, 3),
        (LoKrSide(rank: 1), LoKrSide(rank: 2), 3, 1.5),
    ]

    @Test("LoKr on a linear: kron(W1, W2), scale from the rank rule", arguments: lokrCases)
    func lokrLinear(w1: LoKrSide, w2: LoKrSide, alpha: Float, scale: Double) throws {
        // O = 6 = 3·2, I = 4 = 2·2.
        let l = U.proj, m = l.module
        let (s1, m1) = w1.specs(m + ".lokr_w1", rows: 3, cols: 2, seed: 61)
        let (s2, m2) = w2.specs(m + ".lokr_w2", rows: 2, cols: 2, seed: 63)
        let out = try kindMerge(s1 + s2 + [scalar(m + ".alpha", alpha)], ratio: 0.9)
        #expect(out.merged?.kind == .lokr)
        #expect(out.merged?.scale == scale)
        let want = KindOracle.add(l.w0, KindOracle.kron(m1, 3, 2, m2, 2, 2), 0.9 * scale)
        expectMerged(try out.values(l.weightName), want, from: l.w0, "proj weight")
    }

    @Test("LoKr on a 3x3 conv: W1 (2, 1) whole, W2 (2, 2, 3, 3) whole; alpha ignored")
    func lokrConv() throws {
        let l = U.conv, m = l.module
        let w1 = kindNoise(2, seed: 71), w2 = kindNoise(2 * 2 * 9, seed: 72)
        let specs = [
            TensorSpec(m + ".lokr_w1", .F32, [2, 1], w1), TensorSpec(m + ".lokr_w2", .F32, [2, 2, 3, 3], w2),
            scalar(m + ".alpha", 10000),
        ]
        let out = try kindMerge(specs, ratio: 0.75)
        #expect(out.merged?.kind == .lokr)
        #expect(out.merged?.scale == 1)
        let want = KindOracle.add(l.w0, KindOracle.kron(KindOracle.d(w1), 2, 1, KindOracle.d(w2), 2, 18), 0.75)
        expectMerged(try out.values(l.weightName), want, from: l.w0, "conv weight")
    }

    // MARK: DoRA

    static let doraCases: [(DoRAAxis, MergeCompat, Double)] = [DoRAAxis.output, .input].flatMap { axis in
        [MergeCompat.lycoris, .comfyui].flatMap { compat in [1.0, 0.6].map { (axis, compat, $0) } }
    }

    @Test("DoRA on a LoRA host (linear): both axes, both compats, m = 1 and 0.6", arguments: doraCases)
    func doraLoRA(axis: DoRAAxis, compat: MergeCompat, ratio: Double) throws {
        let l = U.proj
        let f = LoRAFactors(layer: l, rank: 2, alpha: 1)
        let d = doraScale(l, axis)
        let out = try kindMerge(f.specs + [d], ratio: ratio, compat: compat)
        #expect(out.merged?.kind == .lora)
        #expect(out.merged?.doraAxis == axis)
        let want = KindOracle.dora(
            w0: l.w0, delta: f.delta, scale: f.scale, magnitude: KindOracle.d(d.values), axis: axis, layer: l,
            ratio: ratio, compat: compat)
        expectMerged(try out.values(l.weightName), want, from: l.w0, "\(axis) \(compat) x\(ratio)")
        #expect(try out.values(l.biasName) == l.bias)
    }

    @Test(
        "DoRA on a 3x3 conv LoCon: the norm runs over rows and kernel taps (input) or a row's taps (output)",
        arguments: [DoRAAxis.output, .input], [MergeCompat.lycoris, .comfyui])
    func doraConv(axis: DoRAAxis, compat: MergeCompat) throws {
        let l = U.conv
        let f = LoRAFactors(layer: l, rank: 3, alpha: 2)
        let d = doraScale(l, axis)
        let out = try kindMerge(f.specs + [d], ratio: 0.6, compat: compat)
        #expect(out.merged?.doraAxis == axis)
        let want = KindOracle.dora(
            w0: l.w0, delta: f.delta, scale: f.scale, magnitude: KindOracle.d(d.values), axis: axis, layer: l,
            ratio: 0.6, compat: compat)
        expectMerged(try out.values(l.weightName), want, from: l.w0, "conv \(axis) \(compat)")
    }

    @Test("DoRA on a LoHa host: V = W0 + (α/r)·(M1 ⊙ M2)", arguments: [DoRAAxis.output, .input])
    func doraLoHa(axis: DoRAAxis) throws {
        let l = U.proj
        let f = LoHaFactors(layer: l, rank: 2, alpha: 1)
        let d = doraScale(l, axis)
        for compat in [MergeCompat.lycoris, .comfyui] {
            let out = try kindMerge(f.specs + [d], ratio: 0.6, compat: compat)
            #expect(out.merged?.kind == .loha)
            #expect(out.merged?.doraAxis == axis)
            let want = KindOracle.dora(
                w0: l.w0, delta: f.delta, scale: f.scale, magnitude: KindOracle.d(d.values), axis: axis, layer: l,
                ratio: 0.6, compat: compat)
            expectMerged(try out.values(l.weightName), want, from: l.w0, "LoHa \(axis) \(compat)")
        }
    }

    @Test("input-axis DoRA (a reduction pass): the same bytes for 1 or 2 threads and any chunking")
    func doraDeterministic() throws {
        let adapter =
            LoRAFactors(layer: U.proj, rank: 2, alpha: 1).specs + [doraScale(U.proj, .input)]
            + LoRAFactors(layer: U.conv, rank: 3, alpha: 2).specs + [doraScale(U.conv, .input)]
        let reference = try kindMerge([(adapter, 0.6)], threads: 1)
        let names = [U.proj.weightName, U.conv.weightName]
        let refBytes = names.map { tensorBytes(reference.file, $0) }
        for (threads, chunk) in [(2, nil), (1, 8), (2, 8), (2, 3)] as [(Int, Int?)] {
            let out = try kindMerge([(adapter, 0.6)], threads: threads, chunkElements: chunk)
            #expect(
                names.map { tensorBytes(out.file, $0) } == refBytes,
                "threads \(threads), chunk \(chunk.map(String.init) ?? "default")")
        }
        let l = U.conv, f = LoRAFactors(layer: l, rank: 3, alpha: 2)
        let want = KindOracle.dora(
            w0: l.w0, delta: f.delta, scale: f.scale, magnitude: KindOracle.d(doraScale(l, .input).values),
            axis: .input,
            layer: l, ratio: 0.6, compat: .lycoris)
        expectMerged(try reference.values(l.weightName), want, from: l.w0, "conv input-axis DoRA")
    }

    // MARK: full

    @Test("full: W += m·diff and b += m·diff_b, linear and conv")
    func full() throws {
        var specs: [TensorSpec] = []
        for l in [U.proj, U.conv] {
            specs.append(TensorSpec(l.module + ".diff", .F32, l.shape, kindNoise(l.count, seed: 81 + l.seed)))
            specs.append(TensorSpec(l.module + ".diff_b", .F32, [l.rows], kindNoise(l.rows, seed: 91 + l.seed)))
        }
        let out = try kindMerge(specs, ratio: 0.6)
        #expect(out.plan.adapters[0].merged.map(\.kind) == [.full, .full])
        for l in [U.proj, U.conv] {
            let diff = kindNoise(l.count, seed: 81 + l.seed), diffB = kindNoise(l.rows, seed: 91 + l.seed)
            expectMerged(
                try out.values(l.weightName), KindOracle.add(l.w0, KindOracle.d(diff), 0.6), from: l.w0, l.module)
            let b0 = KindOracle.d(l.bias)
            expectMerged(
                try out.values(l.biasName), KindOracle.add(b0, KindOracle.d(diffB), 0.6), from: b0, l.module + " bias")
        }
    }

    @Test("full: a diff_b on a layer without a bias is refused, or skipped as noBias when allowed")
    func fullBiasWithoutBias() throws {
        let q = U.toQ
        let bad = [
            TensorSpec(q.module + ".diff", .F32, q.shape, kindNoise(q.count, seed: 85)),
            TensorSpec(q.module + ".diff_b", .F32, [q.rows], kindNoise(q.rows, seed: 86)),
        ]
        let e = #expect(throws: EngineError.self) { try kindMerge(bad, ratio: 1) }
        #expect(e?.kind == .unmergeableModules)
        #expect(e?.modules.map(\.reason) == [SkippedModule.Reason.noBias.rawValue])

        let good = LoRAFactors(layer: U.proj, rank: 2, alpha: 1)
        let out = try kindMerge([(bad + good.specs, 1)], allowUnmatched: true)
        #expect(out.plan.unmatched.map(\.module.module) == [q.module])
        #expect(out.plan.unmatched.map(\.module.reason) == [.noBias])
        #expect(out.plan.adapters[0].merged.map(\.module) == [U.proj.module])
        #expect(try out.values(q.weightName) == q.weight)
        let p = U.proj
        expectMerged(try out.values(p.weightName), KindOracle.add(p.w0, good.delta, good.scale), from: p.w0, "proj")
    }

    // MARK: norm

    @Test("norm: γ += m·w_norm, β += m·b_norm")
    func norm() throws {
        let l = U.norm
        let w = kindNoise(l.rows, seed: 101), b = kindNoise(l.rows, seed: 102)
        let specs = [
            TensorSpec(l.module + ".w_norm", .F32, [l.rows], w), TensorSpec(l.module + ".b_norm", .F32, [l.rows], b),
        ]
        let out = try kindMerge(specs, ratio: 0.7)
        #expect(out.merged?.kind == .norm)
        expectMerged(try out.values(l.weightName), KindOracle.add(l.w0, KindOracle.d(w), 0.7), from: l.w0, "γ")
        let b0 = KindOracle.d(l.bias)
        expectMerged(try out.values(l.biasName), KindOracle.add(b0, KindOracle.d(b), 0.7), from: b0, "β")
    }

    // MARK: (IA)³

    private static func ia3Expected(_ l: KindLayer, _ w: [Float], onInput: Bool, ratio: Double) -> [Double] {
        (0..<l.count).map { k in
            let row = k / l.columns, channel = (k % l.columns) / l.area
            return l.w0[k] * (Double(w[onInput ? channel : row]) * ratio + 1)
        }
    }

    private func ia3Merge(_ l: KindLayer, onInput: Bool) throws {
        let n = onInput ? l.inFeatures : l.rows
        let shape = l.area > 1 ? [1, n, 1, 1] : [n]
        let w = kindNoise(n, seed: 111 + l.seed)
        let specs = [
            TensorSpec(l.module + ".weight", .F32, shape, w), scalar(l.module + ".on_input", onInput ? 1 : 0),
        ]
        let out = try kindMerge(specs, ratio: 0.8)
        #expect(out.merged?.kind == .ia3)
        let want = Self.ia3Expected(l, w, onInput: onInput, ratio: 0.8)
        expectMerged(try out.values(l.weightName), want, from: l.w0, "\(l.module) on_input \(onInput)")
        #expect(try out.values(l.biasName) == l.bias)
    }

    @Test(
        "(IA)³ on a linear: W ⊙ (w·m + 1) per output row (on_input 0) or per input column (on_input 1)",
        arguments: [false, true])
    func ia3Linear(onInput: Bool) throws {
        try ia3Merge(U.proj, onInput: onInput)
    }

    @Test("(IA)³ on a 3x3 conv, output axis: weight (1, O, 1, 1) scales each output row")
    func ia3ConvOutput() throws {
        try ia3Merge(U.conv, onInput: false)
    }

    /// Regression: the key mapper once accepted O or I·kh·kw elements only, so a conv
    /// on_input module never mapped.
    @Test("(IA)³ on a 3x3 conv, input axis: weight (1, I, 1, 1) scales each input channel at every tap")
    func ia3ConvInput() throws {
        try ia3Merge(U.conv, onInput: true)
    }

    // MARK: GLoRA

    @Test("GLoRA current layout, linear: b1@b2 + (W0@a1)@a2, s = α / a2 rows")
    func gloraLinear() throws {
        let l = U.proj, m = l.module
        let r = 3, o = l.rows, i = l.inFeatures
        let a1 = kindNoise(i * r, seed: 121), a2 = kindNoise(r * i, seed: 122)
        let b1 = kindNoise(o * r, seed: 123), b2 = kindNoise(r * i, seed: 124)
        let specs = [
            TensorSpec(m + ".a1.weight", .F32, [i, r], a1), TensorSpec(m + ".a2.weight", .F32, [r, i], a2),
            TensorSpec(m + ".b1.weight", .F32, [o, r], b1), TensorSpec(m + ".b2.weight", .F32, [r, i], b2),
            scalar(m + ".alpha", 1.5),
        ]
        let out = try kindMerge(specs, ratio: 0.8)
        #expect(out.merged?.kind == .glora)
        #expect(out.merged?.scale == 0.5)
        let delta = KindOracle.glora(
            w0: l.w0, layer: l, inA: KindOracle.d(a1), inB: KindOracle.d(a2), outA: KindOracle.d(b1),
            outB: KindOracle.d(b2), r: r,
            rb: r)
        expectMerged(try out.values(l.weightName), KindOracle.add(l.w0, delta, 0.8 * 0.5), from: l.w0, "proj weight")
    }

    @Test("GLoRA current layout, 3x3 conv: b2 (r, I, 3, 3), a1 (I, r, 1, 1), a2 (r, I, 1, 1)")
    func gloraConv() throws {
        let l = U.conv, m = l.module
        let r = 3, o = l.rows, i = l.inFeatures
        let a1 = kindNoise(i * r, seed: 131), a2 = kindNoise(r * i, seed: 132)
        let b1 = kindNoise(o * r, seed: 133), b2 = kindNoise(r * l.columns, seed: 134)
        let specs = [
            TensorSpec(m + ".a1.weight", .F32, [i, r, 1, 1], a1), TensorSpec(m + ".a2.weight", .F32, [r, i, 1, 1], a2),
            TensorSpec(m + ".b1.weight", .F32, [o, r, 1, 1], b1), TensorSpec(m + ".b2.weight", .F32, [r, i, 3, 3], b2),
            scalar(m + ".alpha", 6),
        ]
        let out = try kindMerge(specs, ratio: 0.5)
        #expect(out.merged?.kind == .glora)
        #expect(out.merged?.scale == 2)
        let delta = KindOracle.glora(
            w0: l.w0, layer: l, inA: KindOracle.d(a1), inB: KindOracle.d(a2), outA: KindOracle.d(b1),
            outB: KindOracle.d(b2), r: r,
            rb: r)
        expectMerged(try out.values(l.weightName), KindOracle.add(l.w0, delta, 0.5 * 2), from: l.w0, "conv weight")
    }

    @Test("GLoRA legacy layout: a1 (r, I), a2 (I, r), b1 (r, I), b2 (O, r); b2@b1 + (W0@a2)@a1, r = a1 rows")
    func gloraLegacy() throws {
        let l = U.proj, m = l.module
        let r = 3, o = l.rows, i = l.inFeatures
        let a1 = kindNoise(r * i, seed: 141), a2 = kindNoise(i * r, seed: 142)
        let b1 = kindNoise(r * i, seed: 143), b2 = kindNoise(o * r, seed: 144)
        let specs = [
            TensorSpec(m + ".a1.weight", .F32, [r, i], a1), TensorSpec(m + ".a2.weight", .F32, [i, r], a2),
            TensorSpec(m + ".b1.weight", .F32, [r, i], b1), TensorSpec(m + ".b2.weight", .F32, [o, r], b2),
            scalar(m + ".alpha", 1.5),
        ]
        let out = try kindMerge(specs, ratio: 0.8)
        #expect(out.merged?.kind == .glora)
        #expect(out.merged?.scale == 0.5)
        let delta = KindOracle.glora(
            w0: l.w0, layer: l, inA: KindOracle.d(a2), inB: KindOracle.d(a1), outA: KindOracle.d(b2),
            outB: KindOracle.d(b1), r: r,
            rb: r)
        expectMerged(try out.values(l.weightName), KindOracle.add(l.w0, delta, 0.8 * 0.5), from: l.w0, "proj weight")
    }

    // MARK: Order

    @Test("IA³ then LoRA differs from LoRA then IA³; each equals its sequential oracle")
    func order() throws {
        let l = U.proj
        let lora = LoRAFactors(layer: l, rank: 2, alpha: 1)
        let w = kindNoise(l.rows, seed: 151)
        let ia3 = [TensorSpec(l.module + ".weight", .F32, [l.rows], w), scalar(l.module + ".on_input", 0)]
        let iaRatio = 0.8, loraRatio = 0.9
        func applyIA3(_ x: [Double]) -> [Double] {
            (0..<l.count).map { k in x[k] * (Double(w[k / l.columns]) * iaRatio + 1) }
        }
        func applyLoRA(_ x: [Double]) -> [Double] { KindOracle.add(x, lora.delta, loraRatio * lora.scale) }

        let iaFirst = try kindMerge([(ia3, iaRatio), (lora.specs, loraRatio)])
        let loraFirst = try kindMerge([(lora.specs, loraRatio), (ia3, iaRatio)])
        #expect(iaFirst.plan.adapters.map { $0.merged.first?.kind } == [.ia3, .lora])
        #expect(loraFirst.plan.adapters.map { $0.merged.first?.kind } == [.lora, .ia3])
        let wantIAFirst = applyLoRA(applyIA3(l.w0)), wantLoRAFirst = applyIA3(applyLoRA(l.w0))
        let gotIAFirst = try iaFirst.values(l.weightName), gotLoRAFirst = try loraFirst.values(l.weightName)
        expectMerged(gotIAFirst, wantIAFirst, from: l.w0, "IA³ then LoRA")
        expectMerged(gotLoRAFirst, wantLoRAFirst, from: l.w0, "LoRA then IA³")
        let apart = zip(gotIAFirst, gotLoRAFirst).map { abs($0 - $1) }.max() ?? 0
        #expect(apart > 1e-3, "the two orders give the same weight (max difference \(apart))")
    }
}

// MARK: - Review cases: square GLoRA, skippable misfits, ignored scale keys, extra parts

@Suite("LyCORIS kinds: edge cases of planning")
struct LyCORISKindEdgeTests {
    fileprivate typealias U = KindUNet

    @Test("GLoRA legacy layout on a square layer (both layout tests hold): legacy, since a2 rows = O = I")
    func gloraLegacySquare() throws {
        let l = U.toK, m = l.module
        let r = 2, n = l.rows
        let a1 = kindNoise(r * n, seed: 151), a2 = kindNoise(n * r, seed: 152)
        let b1 = kindNoise(r * n, seed: 153), b2 = kindNoise(n * r, seed: 154)
        let specs = [
            TensorSpec(m + ".a1.weight", .F32, [r, n], a1), TensorSpec(m + ".a2.weight", .F32, [n, r], a2),
            TensorSpec(m + ".b1.weight", .F32, [r, n], b1), TensorSpec(m + ".b2.weight", .F32, [n, r], b2),
            scalar(m + ".alpha", 1),
        ]
        let out = try kindMerge(specs, ratio: 1)
        #expect(out.merged?.kind == .glora)
        #expect(out.merged?.scale == 0.5)
        // Legacy: ΔW = b2@b1 + (W0@a2)@a1.
        let delta = KindOracle.glora(
            w0: l.w0, layer: l, inA: KindOracle.d(a2), inB: KindOracle.d(a1), outA: KindOracle.d(b2),
            outB: KindOracle.d(b1), r: r, rb: r)
        expectMerged(try out.values(l.weightName), KindOracle.add(l.w0, delta, 0.5), from: l.w0, "to_k weight")
    }

    @Test("GLoRA current layout on a square layer merges with the current formula")
    func gloraCurrentSquare() throws {
        let l = U.toK, m = l.module
        let r = 2, n = l.rows
        let a1 = kindNoise(n * r, seed: 161), a2 = kindNoise(r * n, seed: 162)
        let b1 = kindNoise(n * r, seed: 163), b2 = kindNoise(r * n, seed: 164)
        let specs = [
            TensorSpec(m + ".a1.weight", .F32, [n, r], a1), TensorSpec(m + ".a2.weight", .F32, [r, n], a2),
            TensorSpec(m + ".b1.weight", .F32, [n, r], b1), TensorSpec(m + ".b2.weight", .F32, [r, n], b2),
            scalar(m + ".alpha", 1),
        ]
        let out = try kindMerge(specs, ratio: 1)
        let delta = KindOracle.glora(
            w0: l.w0, layer: l, inA: KindOracle.d(a1), inB: KindOracle.d(a2), outA: KindOracle.d(b1),
            outB: KindOracle.d(b2), r: r, rb: r)
        expectMerged(try out.values(l.weightName), KindOracle.add(l.w0, delta, 0.5), from: l.w0, "to_k weight")
    }

    /// An (IA)³ vector of I values without on_input passes the key mapper (which accepts
    /// O or I) but not the update (which wants O): the module's problem, skippable.
    @Test("a module that maps but does not fit its update is skippable, not fatal to the plan")
    func misfitIsSkippable() throws {
        let l = U.proj, m = l.module
        let bad = [
            TensorSpec(m + ".weight", .F32, [l.inFeatures], kindNoise(l.inFeatures, seed: 171)),
            scalar(m + ".on_input", 0),
        ]
        let q = U.toQ.module
        let good = [
            TensorSpec(q + ".diff", .F32, U.toQ.shape, kindNoise(U.toQ.count, seed: 172, scale: 0.1))
        ]
        do {
            _ = try kindMerge([(bad + good, 1)])
            Issue.record("expected the misfit to fail the merge")
        } catch let e as EngineError {
            #expect(e.kind == .unmergeableModules)
            #expect(e.modules.map(\.module) == [m])
            #expect(e.modules.first?.reason == SkippedModule.Reason.shapeMismatch.rawValue)
        }
        let out = try kindMerge([(bad + good, 1)], allowUnmatched: true)
        #expect(out.plan.unmatched.map(\.module.module) == [m])
        #expect(out.plan.unmatched.first?.module.reason == .shapeMismatch)
        #expect(try out.values(l.weightName) == l.weight, "the skipped module changed its weight")
    }

    @Test("a file holding only formats graft cannot apply names them (not 'not an adapter')")
    func onlyUnsupported() throws {
        let m = U.toQ.module
        let specs = [TensorSpec(m + ".oft_R.weight", .F32, [2, 3], kindNoise(6, seed: 181))]
        for allow in [false, true] {
            do {
                _ = try kindMerge([(specs, 1)], allowUnmatched: allow)
                Issue.record("expected an error")
            } catch let e as EngineError {
                #expect(e.kind == (allow ? .nothingMerged : .unmergeableModules))
                #expect(e.modules.map(\.module) == [m])
                #expect(e.modules.first?.reason == SkippedModule.Reason.unsupportedPart.rawValue)
            }
        }
    }

    @Test("a scale key is ignored on LoHa (as LyCORIS and ComfyUI do) and reported")
    func scaleKeyIgnoredOnLoHa() throws {
        let l = U.toQ, m = l.module, r = 2
        let w1a = kindNoise(l.rows * r, seed: 191), w1b = kindNoise(r * l.columns, seed: 192)
        let w2a = kindNoise(l.rows * r, seed: 193), w2b = kindNoise(r * l.columns, seed: 194)
        let specs = [
            TensorSpec(m + ".hada_w1_a", .F32, [l.rows, r], w1a),
            TensorSpec(m + ".hada_w1_b", .F32, [r, l.columns], w1b),
            TensorSpec(m + ".hada_w2_a", .F32, [l.rows, r], w2a),
            TensorSpec(m + ".hada_w2_b", .F32, [r, l.columns], w2b),
            scalar(m + ".alpha", 1), scalar(m + ".scale", 7),
        ]
        let out = try kindMerge(specs, ratio: 1)
        #expect(out.merged?.scale == 0.5)
        #expect(out.merged?.scaleSource == .alpha)
        #expect(out.merged?.ignoredScaleKey == true)
    }

    @Test("a PEFT LoHa without per-module alpha is refused (missing_alpha), not merged at scale 1")
    func peftLoHaWithoutAlpha() throws {
        let l = U.toQ, r = 2
        let m = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
        let specs = [
            TensorSpec(m + ".hada_w1_a", .F32, [l.rows, r], kindNoise(l.rows * r, seed: 211)),
            TensorSpec(m + ".hada_w1_b", .F32, [r, l.columns], kindNoise(r * l.columns, seed: 212)),
            TensorSpec(m + ".hada_w2_a", .F32, [l.rows, r], kindNoise(l.rows * r, seed: 213)),
            TensorSpec(m + ".hada_w2_b", .F32, [r, l.columns], kindNoise(r * l.columns, seed: 214)),
        ]
        do {
            _ = try kindMerge(specs, ratio: 1)
            Issue.record("expected an error")
        } catch let e as EngineError {
            #expect(e.kind == .unmergeableModules)
            #expect(e.modules.first?.reason == SkippedModule.Reason.missingAlpha.rawValue)
        }
        // With alpha it merges.
        let out = try kindMerge(specs + [scalar(m + ".alpha", 1)], ratio: 1)
        #expect(out.merged?.kind == .loha)
        #expect(out.merged?.scale == 0.5)
    }

    @Test("LoKr parts of a second layout next to a whole side make the module malformed")
    func lokrExtraParts() throws {
        let l = U.toQ, m = l.module
        let specs = [
            TensorSpec(m + ".lokr_w1", .F32, [2, 2], kindNoise(4, seed: 201)),
            TensorSpec(m + ".lokr_w1_a", .F32, [2, 1], kindNoise(2, seed: 202)),
            TensorSpec(m + ".lokr_w1_b", .F32, [1, 2], kindNoise(2, seed: 203)),
            TensorSpec(m + ".lokr_w2", .F32, [3, 2], kindNoise(6, seed: 204)),
        ]
        do {
            _ = try kindMerge(specs, ratio: 1)
            Issue.record("expected malformed_modules")
        } catch let e as EngineError {
            #expect(e.kind == .malformedModules)
            #expect(e.modules.first?.reason == ModuleIssue.Kind.unusedPart.rawValue)
        }
    }
}
