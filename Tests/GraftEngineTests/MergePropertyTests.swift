import Fixtures
import Foundation
import GraftEngine
import SafeTensors
import Testing

// Merge results against a plain-loop oracle written here, on synthetic SDXL checkpoints
// (real key names, width / 64) and kohya LoRA files whose values the tests choose.

/// One module of a synthetic adapter.
struct ModuleChoice {
    var target: LoRATarget
    var rank: Int
    /// nil: no `.alpha` key (sd-scripts then uses alpha = rank, scale 1).
    var alpha: Float?
}

/// A small SDXL checkpoint plus the modules the tests use, picked by kind.
struct SyntheticSDXL {
    static let architecture = SDXLArchitecture(widthDivisor: 64)
    static let extraIntegerTensor = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"

    let tensors: [SyntheticTensor]
    let targets: [LoRATarget]

    init(dtype: DType) {
        var list = Self.architecture.checkpointTensors(dtype: dtype)
        // An integer tensor, as real SDXL files have: never merged, never converted.
        list.append(SyntheticTensor(name: Self.extraIntegerTensor, dtype: .I64, shape: [1, 77], fill: .constant(3)))
        tensors = list
        targets = KohyaLoRA.sdxlTargets(checkpoint: Self.architecture.checkpointTensors(), includeConv: true)
    }

    func target(_ module: String) -> LoRATarget {
        guard let t = targets.first(where: { $0.moduleName == module }) else { fatalError("no target \(module)") }
        return t
    }

    /// Linear (UNet attention, TE1, feed-forward with in != out), conv 1x1, conv 3x3
    /// (LoCon, a Downsample op too) and all three TE2 q/k/v thirds of one in_proj_weight.
    var mixedModules: [ModuleChoice] {
        [
            ModuleChoice(
                target: target("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"), rank: 4, alpha: 2),
            ModuleChoice(
                target: target("lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_0_proj"), rank: 3, alpha: 1),
            ModuleChoice(target: target("lora_te1_text_model_encoder_layers_0_self_attn_out_proj"), rank: 4, alpha: 4),
            ModuleChoice(target: target("lora_unet_input_blocks_7_0_skip_connection"), rank: 4, alpha: 1),
            ModuleChoice(target: target("lora_unet_output_blocks_2_2_conv"), rank: 2, alpha: 1),
            ModuleChoice(target: target("lora_unet_input_blocks_3_0_op"), rank: 3, alpha: 3),
            ModuleChoice(target: target("lora_te2_text_model_encoder_layers_31_self_attn_q_proj"), rank: 4, alpha: 1),
            ModuleChoice(target: target("lora_te2_text_model_encoder_layers_31_self_attn_k_proj"), rank: 2, alpha: 2),
            ModuleChoice(target: target("lora_te2_text_model_encoder_layers_31_self_attn_v_proj"), rank: 8, alpha: 4),
            ModuleChoice(target: target("lora_te2_text_model_encoder_layers_5_mlp_fc1"), rank: 4, alpha: nil),
        ]
    }

    func writeCheckpoint(to path: String, seed: UInt64, metadata: [String: String]? = nil) throws {
        try writeSynthetic(tensors: tensors, metadata: metadata, to: path, seed: seed)
    }

    /// Writes a kohya LoRA with the given modules; values from SplitMix64(seed).
    static func writeAdapter(
        _ modules: [ModuleChoice], dtype: DType, seed: UInt64, to path: String,
        title: String = "adapter"
    ) throws {
        var rng = SplitMix64(seed: seed)
        var specs: [TensorSpec] = []
        for m in modules {
            let t = m.target
            let conv = !t.kernel.isEmpty
            let kernelCount = t.kernel.reduce(1, *)
            let down = (0..<(m.rank * t.inFeatures * kernelCount)).map { _ in rng.nextNormal() * 0.05 }
            let up = (0..<(t.outFeatures * m.rank)).map { _ in rng.nextNormal() * 0.015 }
            specs.append(
                TensorSpec(t.moduleName + ".lora_down.weight", dtype, [m.rank, t.inFeatures] + t.kernel, down))
            specs.append(
                TensorSpec(
                    t.moduleName + ".lora_up.weight", dtype, [t.outFeatures, m.rank] + (conv ? [1, 1] : []), up))
            if let a = m.alpha { specs.append(TensorSpec(t.moduleName + ".alpha", dtype, [], [a])) }
        }
        var metadata = KohyaLoRA.metadata(
            .sdxl, options: KohyaLoRAOptions(rank: 4, alpha: 1, convRank: 2), title: title)
        metadata["ss_network_dim"] = "4"
        try writeTensors(specs, metadata: metadata, to: path)
    }
}

/// The plain-loop reference: W + ((ratio * sum_k U[i,k] D[k,j]) * scale), per element, in
/// Float, adapters in order; `fma` makes the k sum a fused multiply-add chain from +0
/// (what the engine's kernel documents), otherwise a separately rounded multiply and add.
/// `rounding` (fp16/bf16) follows PyTorch at reduced precision (sdscripts-merge.md §2.4):
/// operands rounded, then M, ratio*M, that*scale and W+that each rounded; the ratio
/// stays an fp32 "opmath" scalar, the scale (a tensor) is rounded.
enum Oracle {
    struct Adapter { let file: SafeTensorsFile; let ratio: Double }

    static func merge(
        checkpoint: SafeTensorsFile, adapters: [Adapter], targets: [LoRATarget],
        fma: Bool = false, rounding: DType? = nil, roundRatio: Bool = false
    ) throws -> [String: [Float]] {
        var result: [String: [Float]] = [:]
        func rnd(_ x: Float) -> Float { rounding.map { Encode.rounded(x, to: $0) } ?? x }
        for a in adapters {
            for t in targets {
                guard let downInfo = a.file.tensor(named: t.moduleName + ".lora_down.weight") else { continue }
                let info = try #require(checkpoint.tensor(named: t.targetKey))
                var w = try result[t.targetKey] ?? floats(checkpoint, t.targetKey).map(rnd)
                let up = try floats(a.file, t.moduleName + ".lora_up.weight").map(rnd)
                let down = try floats(a.file, t.moduleName + ".lora_down.weight").map(rnd)
                let rank = Int(downInfo.shape[0])
                var scale: Float = 1
                if a.file.tensor(named: t.moduleName + ".alpha") != nil {
                    scale = try floats(a.file, t.moduleName + ".alpha")[0] / Float(rank)
                }
                scale = rnd(scale)
                let ratio = roundRatio ? rnd(Float(a.ratio)) : Float(a.ratio)
                let rowCount = Int(info.shape[0])
                let columns = info.elementCount / rowCount
                let rows = t.rows ?? 0..<rowCount
                for (ui, i) in rows.enumerated() {
                    for j in 0..<columns {
                        var m: Float = 0
                        for k in 0..<rank {
                            let u = up[ui * rank + k], d = down[k * columns + j]
                            m = fma ? m.addingProduct(u, d) : m + u * d
                        }
                        let product = rnd(ratio * rnd(m))
                        let delta = rnd(product * scale)
                        w[i * columns + j] = rnd(w[i * columns + j] + delta)
                    }
                }
                result[t.targetKey] = w
            }
        }
        return result
    }
}

extension Oracle {
    /// Per element of each target: |ratio * scale| * sum_k |U[i,k] D[k,j]|, the size of the
    /// terms a delta is made of (rounding errors of the operands scale with it, not with
    /// the possibly cancelled sum).
    static func termMagnitude(checkpoint: SafeTensorsFile, adapters: [Adapter], targets: [LoRATarget]) throws
        -> [String: [Float]]
    {
        var result: [String: [Float]] = [:]
        for a in adapters {
            for t in targets {
                guard let downInfo = a.file.tensor(named: t.moduleName + ".lora_down.weight") else { continue }
                let info = try #require(checkpoint.tensor(named: t.targetKey))
                var acc = result[t.targetKey] ?? [Float](repeating: 0, count: info.elementCount)
                let up = try floats(a.file, t.moduleName + ".lora_up.weight")
                let down = try floats(a.file, t.moduleName + ".lora_down.weight")
                let rank = Int(downInfo.shape[0])
                let alpha =
                    a.file.tensor(named: t.moduleName + ".alpha") != nil
                    ? try floats(a.file, t.moduleName + ".alpha")[0] : Float(rank)
                let factor = abs(Float(a.ratio) * alpha / Float(rank))
                let rowCount = Int(info.shape[0]), columns = info.elementCount / rowCount
                for (ui, i) in (t.rows ?? 0..<rowCount).enumerated() {
                    for j in 0..<columns {
                        var m: Float = 0
                        for k in 0..<rank { m += abs(up[ui * rank + k] * down[k * columns + j]) }
                        acc[i * columns + j] += factor * m
                    }
                }
                result[t.targetKey] = acc
            }
        }
        return result
    }
}

enum SaveChoice: String, CaseIterable, CustomTestStringConvertible {
    case keep, fp16, bf16, fp32
    var dtype: DType? {
        switch self {
        case .keep: return nil
        case .fp16: return .F16
        case .bf16: return .BF16
        case .fp32: return .F32
        }
    }
    var testDescription: String { "save \(rawValue)" }
}

@Suite struct MergePropertyTests {
    static let seeds: [UInt64] = [1, 0x5EED, 0xC0FFEE]
    static let inputTypes: [DType] = [.F16, .BF16, .F32]

    /// Every merged tensor within one output-dtype ulp of the non-FMA oracle, and bit-equal
    /// to the FMA-chain oracle; all other tensors untouched (or just converted).
    @Test(
        "merge matches the plain-loop oracle for every module kind, dtype and save precision",
        arguments: inputTypes, SaveChoice.allCases)
    func matchesOracle(input: DType, save: SaveChoice) throws {
        // One seed and ratio per combination (12 combinations cover every seed and ratio
        // several times), to keep the suite fast in debug builds.
        let i =
            (Self.inputTypes.firstIndex(of: input) ?? 0) * SaveChoice.allCases.count
            + (SaveChoice.allCases.firstIndex(of: save) ?? 0)
        let ratios = [1.0, -0.7, 0.3, 2.5]
        try checkAgainstOracle(
            input: input, save: save, seed: Self.seeds[i % Self.seeds.count], ratio: ratios[i % ratios.count])
    }

    func checkAgainstOracle(input: DType, save: SaveChoice, seed: UInt64, ratio: Double) throws {
        let ctx = "seed \(seed), input \(input), \(save.testDescription), ratio \(ratio)"
        let dir = try ScratchDirectory("oracle")
        let model = SyntheticSDXL(dtype: input)
        let ckptPath = dir.path("ckpt.safetensors"), loraPath = dir.path("lora.safetensors")
        try model.writeCheckpoint(to: ckptPath, seed: seed)
        let modules = model.mixedModules
        try SyntheticSDXL.writeAdapter(modules, dtype: input, seed: seed &+ 1, to: loraPath)
        let out = dir.path("out.safetensors")
        let (plan, _) = try LibraryMerge(savePrecision: save.dtype).run(
            checkpoint: ckptPath, adapters: [(loraPath, ratio)], output: out)
        #expect(plan.unmatched.isEmpty, "\(ctx): \(plan.unmatched)")
        #expect(plan.adapters.first?.merged.count == modules.count, "\(ctx)")

        let ckpt = try SafeTensorsFile(path: ckptPath), lora = try SafeTensorsFile(path: loraPath)
        let got = try SafeTensorsFile(path: out)
        let targets = modules.map(\.target)
        let plain = try Oracle.merge(checkpoint: ckpt, adapters: [.init(file: lora, ratio: ratio)], targets: targets)
        let fused = try Oracle.merge(
            checkpoint: ckpt, adapters: [.init(file: lora, ratio: ratio)], targets: targets, fma: true)
        #expect(plain.count == 8, "\(ctx): 10 modules on 8 tensors (q/k/v share one)")

        for t in ckpt.tensors {
            let g = try #require(got.tensor(named: t.name), "\(ctx): '\(t.name)' missing from the output")
            let outType = (t.dtype.isConvertibleFloat ? save.dtype : nil) ?? t.dtype
            #expect(g.dtype == outType && g.shape == t.shape, "\(ctx): '\(t.name)' is \(g.dtype) \(g.shape)")
            if let expected = plain[t.name] {
                let values = try floats(got, t.name)
                let want = expected.map { Encode.rounded($0, to: outType) }
                // fp32 outputs: the FMA-vs-separate difference of an r-term sum is within a
                // few fp32 ulps of the delta, far below 1e-6 for these magnitudes.
                let a = agreement(values, want, dtype: outType, ulpsAllowed: 1, floor: outType == .F32 ? 1e-7 : 0)
                #expect(
                    a.beyond == 0 && a.nanMismatch == 0,
                    "\(ctx): '\(t.name)' vs plain oracle: \(a.beyond) beyond, first \(a.firstBad ?? "-")")
                let exact = fused[t.name]!.map { Encode.rounded($0, to: outType) }
                let mismatches = zip(values, exact).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(mismatches == 0, "\(ctx): '\(t.name)': \(mismatches) elements differ from the FMA-chain oracle")
                #expect(
                    values != (try floats(ckpt, t.name)).map { Encode.rounded($0, to: outType) },
                    "\(ctx): '\(t.name)' unchanged")
            } else if outType == t.dtype {
                #expect(
                    tensorBytes(got, t.name) == tensorBytes(ckpt, t.name),
                    "\(ctx): untouched '\(t.name)' not byte-identical")
            } else {
                let want = try floats(ckpt, t.name).map { Encode.rounded($0, to: outType) }
                #expect(try floats(got, t.name) == want, "\(ctx): converted '\(t.name)' wrong")
            }
        }
        #expect(got.tensors.count == ckpt.tensors.count, "\(ctx): every input tensor is written, nothing more")
    }

    @Test("ratio 0 leaves every tensor bit-identical", arguments: inputTypes)
    func ratioZeroIsIdentity(input: DType) throws {
        for seed in Self.seeds.prefix(2) {
            let dir = try ScratchDirectory("ratio0")
            let model = SyntheticSDXL(dtype: input)
            let ckptPath = dir.path("ckpt.safetensors"), loraPath = dir.path("lora.safetensors")
            try model.writeCheckpoint(to: ckptPath, seed: seed)
            try SyntheticSDXL.writeAdapter(model.mixedModules, dtype: input, seed: seed, to: loraPath)
            let out = dir.path("out.safetensors")
            try LibraryMerge(savePrecision: nil).run(checkpoint: ckptPath, adapters: [(loraPath, 0)], output: out)
            let ckpt = try SafeTensorsFile(path: ckptPath), got = try SafeTensorsFile(path: out)
            for t in ckpt.tensors {
                let before = try #require(tensorBytes(ckpt, t.name)), after = tensorBytes(got, t.name)
                if before == after { continue }
                // W + 0 is +0 for W = -0 (IEEE, and PyTorch does the same); anything else is a bug.
                let b = try floats(ckpt, t.name), a = try floats(got, t.name)
                let real = zip(b, a).filter { !($0 == 0 && $1 == 0) }.filter { $0.bitPattern != $1.bitPattern }.count
                #expect(real == 0, "seed \(seed), \(input): '\(t.name)' changed by a ratio-0 merge in \(real) elements")
            }
        }
    }

    @Test("a module without alpha uses scale 1; alpha = rank is the same")
    func missingAlphaIsScaleOne() throws {
        let dir = try ScratchDirectory("alpha")
        let model = SyntheticSDXL(dtype: .F16)
        let ckptPath = dir.path("ckpt.safetensors")
        try model.writeCheckpoint(to: ckptPath, seed: 11)
        let target = model.target("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k")
        let noAlpha = dir.path("no-alpha.safetensors"), rankAlpha = dir.path("rank-alpha.safetensors")
        try SyntheticSDXL.writeAdapter(
            [ModuleChoice(target: target, rank: 4, alpha: nil)], dtype: .F16, seed: 12, to: noAlpha)
        try SyntheticSDXL.writeAdapter(
            [ModuleChoice(target: target, rank: 4, alpha: 4)], dtype: .F16, seed: 12, to: rankAlpha)
        let (planA, _) = try LibraryMerge(savePrecision: .F32).run(
            checkpoint: ckptPath, adapters: [(noAlpha, 1)], output: dir.path("a-m.safetensors"))
        let (planB, _) = try LibraryMerge(savePrecision: .F32).run(
            checkpoint: ckptPath, adapters: [(rankAlpha, 1)], output: dir.path("b-m.safetensors"))
        #expect(
            planA.execution.tensors.contains {
                if case .update(let u) = $0.operation {
                    return (u.updates[0] as? LowRankUpdate)?.scale == 1
                } else {
                    return false
                }
            })
        #expect(
            planB.execution.tensors.contains {
                if case .update(let u) = $0.operation {
                    return (u.updates[0] as? LowRankUpdate)?.scale == 1
                } else {
                    return false
                }
            })
        let a = try SafeTensorsFile(path: dir.path("a-m.safetensors")),
            b = try SafeTensorsFile(path: dir.path("b-m.safetensors"))
        #expect(tensorBytes(a, target.targetKey) == tensorBytes(b, target.targetKey))
        let want = try Oracle.merge(
            checkpoint: SafeTensorsFile(path: ckptPath),
            adapters: [.init(file: SafeTensorsFile(path: noAlpha), ratio: 1)], targets: [target], fma: true)
        #expect(try floats(a, target.targetKey) == want[target.targetKey])
    }

    /// Several adapters in one run are applied in order on the fp32 value and rounded once;
    /// two successive runs round in between, so they agree within that rounding, and exactly
    /// when the intermediate file is fp32.
    @Test("A then B in one run vs two runs", arguments: seeds)
    func sequentialAdapters(seed: UInt64) throws {
        let dir = try ScratchDirectory("seq")
        let model = SyntheticSDXL(dtype: .F16)
        let ckptPath = dir.path("ckpt.safetensors")
        try model.writeCheckpoint(to: ckptPath, seed: seed)
        let a = dir.path("A.safetensors"), b = dir.path("B.safetensors")
        // B overlaps A on most tensors and adds others.
        let modsA = Array(model.mixedModules.prefix(7))
        let modsB =
            Array(model.mixedModules.suffix(6)) + [
                ModuleChoice(target: model.target("lora_unet_middle_block_1_proj_in"), rank: 2, alpha: 1)
            ]
        try SyntheticSDXL.writeAdapter(modsA, dtype: .F16, seed: seed &+ 10, to: a, title: "A")
        try SyntheticSDXL.writeAdapter(modsB, dtype: .F16, seed: seed &+ 20, to: b, title: "B")
        let (ra, rb) = (0.8, -1.3)

        let one = dir.path("one.safetensors")
        try LibraryMerge(savePrecision: .F16).run(checkpoint: ckptPath, adapters: [(a, ra), (b, rb)], output: one)
        let step16 = dir.path("step16.safetensors"), two16 = dir.path("two16.safetensors")
        try LibraryMerge(savePrecision: .F16).run(checkpoint: ckptPath, adapters: [(a, ra)], output: step16)
        try LibraryMerge(savePrecision: .F16).run(checkpoint: step16, adapters: [(b, rb)], output: two16)
        let step32 = dir.path("step32.safetensors"), two32 = dir.path("two32.safetensors")
        try LibraryMerge(savePrecision: .F32).run(checkpoint: ckptPath, adapters: [(a, ra)], output: step32)
        try LibraryMerge(savePrecision: .F16).run(checkpoint: step32, adapters: [(b, rb)], output: two32)

        let fOne = try SafeTensorsFile(path: one), fTwo16 = try SafeTensorsFile(path: two16)
        let fTwo32 = try SafeTensorsFile(path: two32), fStep = try SafeTensorsFile(path: step16)
        let touched = Set((modsA + modsB).map(\.target.targetKey))
        var maxUlps = 0.0
        for t in fOne.tensors {
            #expect(
                tensorBytes(fTwo32, t.name) == tensorBytes(fOne, t.name),
                "seed \(seed): '\(t.name)': fp32 intermediate should give identical bits")
            guard touched.contains(t.name) else {
                #expect(tensorBytes(fTwo16, t.name) == tensorBytes(fOne, t.name), "seed \(seed): untouched '\(t.name)'")
                continue
            }
            let x = try floats(fOne, t.name), y = try floats(fTwo16, t.name), mid = try floats(fStep, t.name)
            for i in x.indices {
                // |one - two| <= (ulp(mid) + ulp(one) + ulp(two)) / 2: one rounding each.
                let d = abs(Double(x[i]) - Double(y[i]))
                let bound = (ulpFP16(mid[i]) + ulpFP16(x[i]) + ulpFP16(y[i])) / 2
                maxUlps = max(maxUlps, d / max(ulpFP16(mid[i]), ulpFP16(x[i]), ulpFP16(y[i])))
                if d > bound {
                    Issue.record(
                        "seed \(seed): '\(t.name)'[\(i)]: one run \(x[i]), two runs \(y[i]), intermediate \(mid[i])")
                    break
                }
            }
        }
        #expect(maxUlps > 0, "seed \(seed): the two-step run should differ somewhere (it rounds in between)")
        #expect(maxUlps <= 1.5, "seed \(seed): max difference \(maxUlps) ulps (of the largest of the three values)")
    }

    /// --precision fp16 / bf16 round every step; the result stays within a few ulps of the
    /// fp32 merge.
    @Test("reduced-precision merges stay close to the fp32 merge", arguments: [MergePrecision.fp16, .bf16])
    func reducedPrecisionSanity(precision: MergePrecision) throws {
        let saveType: DType = precision == .fp16 ? .F16 : .BF16
        for seed in Self.seeds {
            let dir = try ScratchDirectory("precision")
            let model = SyntheticSDXL(dtype: .F16)
            let ckptPath = dir.path("ckpt.safetensors"), loraPath = dir.path("lora.safetensors")
            try model.writeCheckpoint(to: ckptPath, seed: seed)
            try SyntheticSDXL.writeAdapter(model.mixedModules, dtype: .F16, seed: seed &+ 1, to: loraPath)
            let reduced = dir.path("reduced.safetensors"), full = dir.path("full.safetensors")
            try LibraryMerge(savePrecision: saveType, precision: precision).run(
                checkpoint: ckptPath, adapters: [(loraPath, 0.75)], output: reduced)
            try LibraryMerge(savePrecision: saveType, precision: .fp32).run(
                checkpoint: ckptPath, adapters: [(loraPath, 0.75)], output: full)
            let r = try SafeTensorsFile(path: reduced), f = try SafeTensorsFile(path: full),
                c = try SafeTensorsFile(path: ckptPath)
            var differs = false
            let terms = try Oracle.termMagnitude(
                checkpoint: c, adapters: [.init(file: SafeTensorsFile(path: loraPath), ratio: 0.75)],
                targets: model.mixedModules.map(\.target))
            // Relative error of a product of two rounded operands (U, D: fp16 -> bf16 loses 3 bits).
            let operandError: Double = precision == .fp16 ? 0 : 2 * pow(2, -9)
            for key in Set(model.mixedModules.map(\.target.targetKey)).sorted() {
                let x = try floats(r, key), y = try floats(f, key), w = try floats(c, key), term = terms[key]!
                // Each rounding step errs by at most half an ulp of the larger operand, so
                // the bound is in ulps of max(|W|, |result|) (the result may be small when
                // the delta cancels W), plus the operand rounding (bf16) times the size of
                // the rank-sum terms (the sum itself may cancel).
                var beyond = 0, first = ""
                for i in x.indices {
                    let d = abs(Double(x[i]) - Double(y[i]))
                    if d > 0 { differs = true }
                    let magnitude = max(abs(w[i]), abs(y[i]))
                    if d > 3 * ulp(magnitude, saveType) + operandError * Double(term[i]) {
                        beyond += 1
                        if first.isEmpty { first = "element \(i): \(x[i]) vs fp32 path \(y[i]), W \(w[i])" }
                    }
                }
                #expect(
                    beyond == 0,
                    "seed \(seed), \(precision): '\(key)': \(beyond) elements beyond 3 ulps, first \(first)")
                #expect(tensorBytes(r, key) != tensorBytes(c, key), "seed \(seed): '\(key)' not merged")
            }
            if precision == .bf16 { #expect(differs, "seed \(seed): bf16 arithmetic should be visible somewhere") }
        }
    }

    /// PyTorch at reduced precision keeps a Python-float ratio as an fp32 "opmath" scalar
    /// (sdscripts-merge.md §2.2) while the scale, a 0-dim tensor, is rounded. Ratio 0.3 is
    /// not representable in fp16/bf16, so rounding it shows.
    @Test("--precision fp16/bf16 follow PyTorch's per-step rounding", arguments: [MergePrecision.fp16, .bf16])
    func reducedPathMatchesPyTorchModel(precision: MergePrecision) throws {
        let dtype: DType = precision == .fp16 ? .F16 : .BF16
        let dir = try ScratchDirectory("fp16path")
        let model = SyntheticSDXL(dtype: .F16)
        let ckptPath = dir.path("ckpt.safetensors"), loraPath = dir.path("lora.safetensors")
        try model.writeCheckpoint(to: ckptPath, seed: 77)
        try SyntheticSDXL.writeAdapter(model.mixedModules, dtype: .F16, seed: 78, to: loraPath)
        for ratio in [0.75, 0.3] {
            let out = dir.path("out-\(ratio).safetensors")
            try LibraryMerge(savePrecision: dtype, precision: precision).run(
                checkpoint: ckptPath, adapters: [(loraPath, ratio)], output: out)
            let got = try SafeTensorsFile(path: out)
            func mismatches(roundRatio: Bool) throws -> [String] {
                let want = try Oracle.merge(
                    checkpoint: SafeTensorsFile(path: ckptPath),
                    adapters: [.init(file: SafeTensorsFile(path: loraPath), ratio: ratio)],
                    targets: model.mixedModules.map(\.target), fma: true, rounding: dtype,
                    roundRatio: roundRatio)
                return try want.sorted(by: { $0.key < $1.key }).compactMap { name, values in
                    let n = zip(try floats(got, name), values).filter { $0.bitPattern != $1.bitPattern }.count
                    return n > 0 ? "\(name): \(n)/\(values.count)" : nil
                }
            }
            let m = try mismatches(roundRatio: false)
            #expect(m.isEmpty, "\(precision), ratio \(ratio): elements differing from the PyTorch-order oracle: \(m)")
            // The check has teeth: rounding the ratio (what the executor did before) differs.
            if Float(ratio) != Encode.rounded(Float(ratio), to: dtype) {
                #expect(try !mismatches(roundRatio: true).isEmpty, "\(precision), ratio \(ratio)")
            }
        }
    }

    @Test("metadata: input kept, modelspec.title / merged_from and graft provenance added")
    func metadata() throws {
        let dir = try ScratchDirectory("metadata")
        let model = SyntheticSDXL(dtype: .F16)
        let ckptPath = dir.path("base-model.safetensors"), loraPath = dir.path("lora.safetensors")
        let inputMetadata = [
            "modelspec.title": "Base XL", "custom.note": "kept \u{2713}",
            "modelspec.architecture": "stable-diffusion-xl-v1-base",
        ]
        try model.writeCheckpoint(to: ckptPath, seed: 5, metadata: inputMetadata)
        try SyntheticSDXL.writeAdapter(model.mixedModules, dtype: .F16, seed: 6, to: loraPath, title: "My LoRA")
        let out = dir.path("merged.result.safetensors")
        try LibraryMerge(savePrecision: nil).run(checkpoint: ckptPath, adapters: [(loraPath, 0.5)], output: out)
        let md = try #require(try SafeTensorsFile(path: out).metadata)
        #expect(md["custom.note"] == "kept \u{2713}")
        #expect(md["modelspec.architecture"] == "stable-diffusion-xl-v1-base")
        #expect(md["modelspec.title"] == "merged.result")
        #expect(md["modelspec.merged_from"] == "Base XL, My LoRA")
        #expect(md["graft.version"] == "test")
        struct Provenance: Decodable {
            struct Entry: Decodable { let file: String; let ratio: Double }
            let checkpoint: String
            let adapters: [Entry]
            let precision: String
            let save_precision: String
        }
        let p = try JSONDecoder().decode(Provenance.self, from: Data(try #require(md["graft.merge"]).utf8))
        #expect(p.checkpoint == "base-model.safetensors")
        #expect(p.adapters.map(\.file) == ["lora.safetensors"] && p.adapters.map(\.ratio) == [0.5])
        #expect(p.precision == "fp32" && p.save_precision == "keep")
    }

    @Test("same inputs give byte-identical files, whatever the thread count", arguments: [SaveChoice.keep, .bf16])
    func reproducible(save: SaveChoice) throws {
        let dir = try ScratchDirectory("repro")
        let model = SyntheticSDXL(dtype: .F16)
        let ckptPath = dir.path("ckpt.safetensors"), loraPath = dir.path("lora.safetensors")
        try model.writeCheckpoint(to: ckptPath, seed: 9)
        try SyntheticSDXL.writeAdapter(model.mixedModules, dtype: .F16, seed: 10, to: loraPath)
        var files: [Data] = []
        for (i, threads) in [1, 2, 2, 1].enumerated() {
            let sub = dir.url.appendingPathComponent("run\(i)")
            try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
            let out = sub.appendingPathComponent("merged.safetensors").path
            try LibraryMerge(savePrecision: save.dtype, threads: threads, chunkElements: i == 0 ? 1 << 20 : 1 << 9)
                .run(checkpoint: ckptPath, adapters: [(loraPath, 1)], output: out)
            files.append(try fileBytes(out))
        }
        #expect(files.allSatisfy { $0 == files[0] }, "\(save.testDescription): outputs differ between runs")
    }
}
