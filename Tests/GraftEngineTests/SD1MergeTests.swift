import Fixtures
import Foundation
import GraftEngine
import SafeTensors
import Testing

// SD 1.5 end to end: kohya SD1 names (diffusers-style module paths, `lora_te_`) merged
// into an LDM checkpoint (width / 16, real key names), every module against the oracle.
@Suite("SD 1.5 merge")
struct SD1MergeTests {
    static let architecture = SD15Architecture(widthDivisor: 16)

    /// Writes a kohya SD1 LoRA for `targets`; `linearProjections` stores proj_in/proj_out
    /// factors 2-D (a LoRA trained on linear projections), which must still fit the 1x1 convs.
    static func writeAdapter(_ targets: [LoRATarget], linearProjections: Bool, seed: UInt64, to path: String) throws {
        var rng = SplitMix64(seed: seed)
        var specs: [TensorSpec] = []
        for (n, t) in targets.enumerated() {
            let rank = 2 + n % 3
            let isProjection = t.moduleName.hasSuffix("_proj_in") || t.moduleName.hasSuffix("_proj_out")
            let kernel = linearProjections && isProjection ? [] : t.kernel
            let k = kernel.reduce(1, *)
            let down = (0..<(rank * t.inFeatures * k)).map { _ in rng.nextNormal() * 0.05 }
            let up = (0..<(t.outFeatures * rank)).map { _ in rng.nextNormal() * 0.015 }
            specs.append(TensorSpec(t.moduleName + ".lora_down.weight", .F16, [rank, t.inFeatures] + kernel, down))
            specs.append(
                TensorSpec(
                    t.moduleName + ".lora_up.weight", .F16, [t.outFeatures, rank] + (kernel.isEmpty ? [] : [1, 1]), up))
            specs.append(TensorSpec(t.moduleName + ".alpha", .F16, [], [Float(rank) / 2]))
        }
        let metadata = KohyaLoRA.metadata(
            .sd1, options: KohyaLoRAOptions(rank: 4, alpha: 2, convRank: 2), title: "sd1-lora")
        try writeTensors(specs, metadata: metadata, to: path)
    }

    @Test(
        "every SD1 module (attention, proj_in/out as conv 1x1, ResBlock and sampler convs, text encoder) matches the oracle",
        arguments: [false, true])
    func sd1MatchesOracle(linearProjections: Bool) throws {
        let dir = try ScratchDirectory()
        let checkpoint = Self.architecture.checkpointTensors(dtype: .F16)
        try writeSynthetic(tensors: checkpoint, metadata: nil, to: dir.path("sd15.safetensors"), seed: 5)
        let targets = KohyaLoRA.sd1Targets(checkpoint: checkpoint, includeConv: true)
        #expect(
            targets.contains {
                $0.moduleName == "lora_unet_up_blocks_0_upsamplers_0_conv"
                    && $0.targetKey.contains("output_blocks.2.1.conv")
            })
        #expect(targets.contains { $0.moduleName.hasPrefix("lora_te_text_model_encoder_layers_") })
        try Self.writeAdapter(targets, linearProjections: linearProjections, seed: 9, to: dir.path("lora.safetensors"))

        let (plan, _) = try LibraryMerge().run(
            checkpoint: dir.path("sd15.safetensors"),
            adapters: [(dir.path("lora.safetensors"), 0.8)],
            output: dir.path("out.safetensors"))
        #expect(plan.unmatched.isEmpty, "\(plan.unmatched.prefix(5))")
        #expect(plan.adapters[0].merged.count == targets.count)

        let ckpt = try SafeTensorsFile(path: dir.path("sd15.safetensors"))
        let lora = try SafeTensorsFile(path: dir.path("lora.safetensors"))
        let out = try SafeTensorsFile(path: dir.path("out.safetensors"))
        let expected = try Oracle.merge(
            checkpoint: ckpt, adapters: [.init(file: lora, ratio: 0.8)], targets: targets, fma: true)
        for t in targets {
            let got = try floats(out, t.targetKey)
            let a = agreement(
                got, try #require(expected[t.targetKey]).map { Encode.rounded($0, to: .F16) }, dtype: .F16,
                ulpsAllowed: 0)
            #expect(a.beyond == 0 && a.nanMismatch == 0, "\(t.moduleName) -> \(t.targetKey): \(a.firstBad ?? "")")
        }
        // Tensors no module targets are byte-identical.
        let targeted = Set(targets.map(\.targetKey))
        for t in ckpt.tensors where !targeted.contains(t.name) {
            #expect(tensorBytes(out, t.name) == tensorBytes(ckpt, t.name), "\(t.name)")
        }
    }
}
