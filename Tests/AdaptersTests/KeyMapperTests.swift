import Testing
import SafeTensors
@testable import Adapters

@Suite("KeyMapper on SDXL")
struct SDXLKeyMapperTests {
    let mapper = TestData.sdxlMapper
    let locon = AdapterAnalysis(tensors: TestData.sdxlLoCon.tensors, metadata: TestData.sdxlLoCon.metadata)

    @Test func everyLoConModuleResolves() throws {
        try mapper.checkCompatible(locon)
        let plan = mapper.plan(locon)
        #expect(plan.unresolved.isEmpty, "\(plan.unresolved.prefix(5).compactMap(\.error))")
        #expect(plan.resolved.count == 1052)
        #expect(plan.overlaps.isEmpty)
        // sd-scripts wrote this file, so its merge takes every module: 788 UNet + 264 TE (docs §3.1).
        #expect(plan.differingFromSDScripts.isEmpty)
        #expect(plan.resolved.filter { $0.component == .unet }.count == 788)
        #expect(plan.resolved.filter { $0.component != .unet }.count == 264)
    }

    @Test func shapesAndLayers() {
        let plan = mapper.plan(locon)
        for m in locon.modules {
            guard let t = mapper.resolve(m, adapterFamily: .sdxl).success else { continue }
            if m.layer.isSpatialConv {
                #expect(t.shape.count == 4 && t.shape[2...] == [3, 3], "\(m.name)")
            }
            #expect(m.delta?.fits(t.shape) == true)
        }
        // te2 q/k/v are row thirds of in_proj_weight; everything else is a whole tensor.
        let sliced = plan.resolved.filter { $0.target?.rows != nil }
        #expect(sliced.count == 32 * 3)
        #expect(
            sliced.allSatisfy { $0.target?.tensorName.hasSuffix("attn.in_proj_weight") == true && $0.component == .te2 }
        )
    }

    @Test(
        "worked examples of docs §3.4",
        arguments: [
            (
                "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", [640, 640], nil
            ),
            (
                "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_k",
                "model.diffusion_model.middle_block.1.transformer_blocks.9.attn2.to_k.weight", [1280, 2048], nil
            ),
            (
                "lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_0_proj",
                "model.diffusion_model.output_blocks.5.1.transformer_blocks.1.ff.net.0.proj.weight", [5120, 640], nil
            ),
            (
                "lora_unet_input_blocks_7_0_skip_connection",
                "model.diffusion_model.input_blocks.7.0.skip_connection.weight", [1280, 640, 1, 1], nil
            ),
            (
                "lora_unet_output_blocks_2_2_conv", "model.diffusion_model.output_blocks.2.2.conv.weight",
                [1280, 1280, 3, 3], nil
            ),
            (
                "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", [768, 768],
                nil
            ),
            (
                "lora_te2_text_model_encoder_layers_31_self_attn_v_proj",
                "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight", [1280, 1280], 2560..<3840
            ),
            (
                "lora_te2_text_model_encoder_layers_5_mlp_fc1",
                "conditioner.embedders.1.model.transformer.resblocks.5.mlp.c_fc.weight", [5120, 1280], nil
            ),
        ] as [(String, String, [Int], Range<Int>?)])
    func workedExample(module: String, tensor: String, shape: [Int], rows: Range<Int>?) throws {
        let m = try #require(locon.module(named: module))
        let t = try #require(mapper.resolve(m, adapterFamily: .sdxl).success)
        #expect(t.tensorName == tensor)
        #expect(t.shape == shape)
        #expect(t.rows == rows)
        #expect(mapper.sdScriptsTreatment(of: m, target: t) == .merges)
    }

    @Test(.enabled(if: TestData.casesAvailable, "../shared/conformance/cases.json missing"))
    func conformanceCasesTouchedBy() throws {
        // Every module cases.json says touches a key (for L1 and L2) must resolve to
        // that key and to the same rows; L1's modules are rebuilt from the shapes given.
        let keys = try #require(TestData.cases["keys"] as? [String: [String: Any]])
        var checked = 0
        for (key, entry) in keys {
            let touched = entry["touched_by"] as? [String: [[String: Any]]] ?? [:]
            for (_, list) in touched {
                for t in list {
                    let name = try #require(t["module"] as? String)
                    let down = try #require(t["down_shape"] as? [Int])
                    let up = try #require(t["up_shape"] as? [Int])
                    let a = AdapterAnalysis(tensors: [
                        TestData.info(name + ".lora_down.weight", down),
                        TestData.info(name + ".lora_up.weight", up),
                    ])
                    let r = mapper.resolve(a.modules[0], adapterFamily: .sdxl)
                    let target = try #require(r.success, "\(name): \(String(describing: r.failure))")
                    #expect(target.tensorName == key)
                    let rows = t["rows"] as? [Int]
                    #expect(target.rows.map { [$0.lowerBound, $0.upperBound] } == rows)
                    checked += 1
                }
            }
        }
        #expect(checked == 26)
    }

    @Test(
        "diffusers-block kohya names reach the same tensors as SGM names",
        arguments: [
            (
                "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
                "input_blocks_4_1_transformer_blocks_0_attn1_to_q"
            ),
            (
                "down_blocks_2_attentions_1_transformer_blocks_9_attn2_to_k",
                "input_blocks_8_1_transformer_blocks_9_attn2_to_k"
            ),
            ("down_blocks_0_resnets_1_conv2", "input_blocks_2_0_out_layers_3"),
            ("down_blocks_0_downsamplers_0_conv", "input_blocks_3_0_op"),
            ("down_blocks_2_resnets_0_conv_shortcut", "input_blocks_7_0_skip_connection"),
            ("mid_block_attentions_0_transformer_blocks_9_ff_net_2", "middle_block_1_transformer_blocks_9_ff_net_2"),
            ("mid_block_resnets_1_time_emb_proj", "middle_block_2_emb_layers_1"),
            ("up_blocks_0_upsamplers_0_conv", "output_blocks_2_2_conv"),
            ("up_blocks_1_upsamplers_0_conv", "output_blocks_5_2_conv"),
            ("up_blocks_1_attentions_2_proj_out", "output_blocks_5_1_proj_out"),
            ("up_blocks_2_resnets_2_conv1", "output_blocks_8_0_in_layers_2"),
            ("up_blocks_0_resnets_0_conv_shortcut", "output_blocks_0_0_skip_connection"),
        ])
    func diffusersBlocks(diffusers: String, sgm: String) throws {
        let original = try #require(locon.module(named: "lora_unet_" + sgm))
        let renamed = TestData.sdxlLoCon.tensors.filter { $0.name.hasPrefix(original.name + ".") }.map {
            TestData.info("lora_unet_" + diffusers + $0.name.dropFirst(original.name.count), $0.dims)
        }
        let teModule = TestData.loraModule("lora_te1_text_model_encoder_layers_0_mlp_fc1", out: 3072, in: 768, rank: 16)
        let a = AdapterAnalysis(tensors: renamed + teModule)
        #expect(a.scheme == .kohyaDiffusersSDXL)
        #expect(a.baseModel.family == .sdxl)
        let m = try #require(a.module(named: "lora_unet_" + diffusers))
        let viaDiffusers = try #require(mapper.resolve(m, adapterFamily: a.baseModel.family).success)
        let viaSGM = try #require(mapper.resolve(original, adapterFamily: .sdxl).success)
        #expect(viaDiffusers == viaSGM)
        // sd-scripts' SDXL merge finds no module for these names (kohya-ss/sd-scripts#972).
        #expect(mapper.sdScriptsTreatment(of: m, target: viaDiffusers) == .skipsName)
    }

    @Test func peftAndLegacyDiffusersNames() throws {
        let tensors = [
            TestData.info("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", [4, 640]),
            TestData.info("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight", [640, 4]),
            TestData.info(
                "unet.up_blocks.0.attentions.1.transformer_blocks.3.attn2.processor.to_out_lora.down.weight", [4, 1280]),
            TestData.info(
                "unet.up_blocks.0.attentions.1.transformer_blocks.3.attn2.processor.to_out_lora.up.weight", [1280, 4]),
            TestData.info("text_encoder_2.text_model.encoder.layers.3.self_attn.k_proj.lora_A.weight", [4, 1280]),
            TestData.info("text_encoder_2.text_model.encoder.layers.3.self_attn.k_proj.lora_B.weight", [1280, 4]),
        ]
        let a = AdapterAnalysis(tensors: tensors)
        #expect(a.scheme == .mixed)  // PEFT and attention-processor spellings together
        let plan = mapper.plan(a)
        #expect(plan.unresolved.isEmpty, "\(plan.unresolved.compactMap(\.error))")
        let targets = Dictionary(
            uniqueKeysWithValues: plan.mappings.compactMap { m in m.target.map { (m.module, $0) } })
        #expect(
            targets["unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"]?.tensorName
                == "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight")
        #expect(
            targets["unet.up_blocks.0.attentions.1.transformer_blocks.3.attn2.processor.to_out"]?.tensorName
                == "model.diffusion_model.output_blocks.1.1.transformer_blocks.3.attn2.to_out.0.weight")
        let k = try #require(targets["text_encoder_2.text_model.encoder.layers.3.self_attn.k_proj"])
        #expect(k.tensorName == "conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj_weight")
        #expect(k.rows == 1280..<2560)
        #expect(plan.mappings.allSatisfy { $0.sdScripts == .skipsName })
    }

    @Test func modulesOutsideSDScriptsTargetSet() throws {
        let tensors =
            TestData.loraModule("lora_unet_time_embed_0", out: 1280, in: 320, rank: 4)
            + TestData.loraModule("lora_unet_input_blocks_0_0", out: 320, in: 4, rank: 4, kernel: [3, 3])
            + TestData.loraModule("lora_te2_text_projection", out: 1280, in: 1280, rank: 4)
        let plan = mapper.plan(AdapterAnalysis(tensors: tensors))
        #expect(plan.unresolved.isEmpty, "\(plan.unresolved.compactMap(\.error))")
        #expect(plan.differingFromSDScripts.count == 3)
        #expect(plan.mappings.first { $0.module == "lora_te2_text_projection" }?.target?.transposed == true)
    }

    @Test func sd1LoRAIsRejectedOnSDXL() throws {
        let sd1 = AdapterAnalysis(
            tensors: TestData.loraModule(
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", out: 320, in: 768, rank: 4)
                + TestData.loraModule(
                    "lora_te_text_model_encoder_layers_0_self_attn_q_proj", out: 768, in: 768, rank: 4),
            metadata: ["ss_base_model_version": "sd_v1"])
        #expect(sd1.baseModel.family == .sd1)
        let c = mapper.compatibility(with: sd1)
        #expect(!c.isCompatible)
        #expect(c.adapterFamily == .sd1 && c.checkpointFamily == .sdxl)
        #expect(c.message != nil)
        let refusal = #expect(throws: MappingError.self) { try mapper.checkCompatible(sd1) }
        #expect(refusal?.kind == .wrongBaseModel)
        #expect(mapper.plan(sd1).mappings.allSatisfy { $0.error?.kind == .wrongBaseModel })
        // Without the family verdict, the module-level reasons still say why.
        let te = try #require(sd1.module(named: "lora_te_text_model_encoder_layers_0_self_attn_q_proj"))
        #expect(mapper.resolve(te).failure?.kind == .missingComponent)
        // SDXL's down_blocks.0 has no attentions at all.
        let toK = try #require(
            sd1.module(named: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"))
        #expect(mapper.resolve(toK).failure?.kind == .noSuchTensor)
        // down_blocks.1 has, but with a 2048-wide context: a shape mismatch of that module.
        let other = AdapterAnalysis(
            tensors: TestData.loraModule(
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", out: 640, in: 768, rank: 4))
        let mismatch = try #require(mapper.resolve(other.modules[0]).failure)
        #expect(mismatch.kind == .shapeMismatch)
        #expect(mismatch.module == other.modules[0].name, "\(mismatch)")
    }

    @Test func unknownPathAndBadModules() {
        let a = AdapterAnalysis(
            tensors: TestData.loraModule("lora_unet_input_blocks_99_1_proj_in", out: 640, in: 640, rank: 4)
                + [TestData.info("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", [640, 4])])
        let plan = TestData.sdxlMapper.plan(a)
        #expect(
            plan.mappings.first { $0.module == "lora_unet_input_blocks_99_1_proj_in" }?.error?.kind == .noSuchTensor)
        // A module with no down factor still maps by name; its issue stays on the module.
        #expect(a.module(named: "lora_unet_input_blocks_4_1_proj_in")?.isValid == false)
    }
}

@Suite("KeyMapper on a synthetic SD1.5 checkpoint")
struct SD15KeyMapperTests {
    let mapper = KeyMapper(tensors: TestData.sd15Checkpoint)

    @Test(
        "worked examples of docs §3.5",
        arguments: [
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                "input_blocks.1.1.transformer_blocks.0.attn1.to_q", [320, 320], [Int]()
            ),
            ("lora_unet_up_blocks_3_attentions_2_proj_out", "output_blocks.11.1.proj_out", [320, 320, 1, 1], []),
            (
                "lora_unet_down_blocks_1_resnets_0_conv_shortcut", "input_blocks.4.0.skip_connection",
                [640, 320, 1, 1], [1, 1]
            ),
            ("lora_unet_up_blocks_0_upsamplers_0_conv", "output_blocks.2.1.conv", [1280, 1280, 3, 3], [3, 3]),
            ("lora_unet_up_blocks_1_upsamplers_0_conv", "output_blocks.5.2.conv", [1280, 1280, 3, 3], [3, 3]),
            ("lora_unet_mid_block_resnets_1_time_emb_proj", "middle_block.2.emb_layers.1", [1280, 1280], []),
            ("lora_unet_down_blocks_2_downsamplers_0_conv", "input_blocks.9.0.op", [1280, 1280, 3, 3], [3, 3]),
            ("lora_unet_down_blocks_1_attentions_1_proj_in", "input_blocks.5.1.proj_in", [640, 640, 1, 1], []),
        ] as [(String, String, [Int], [Int])])
    func workedExample(module: String, path: String, shape: [Int], kernel: [Int]) throws {
        let conv = kernel.count == 2
        let tensors = TestData.loraModule(module, out: shape[0], in: shape[1], rank: 4, kernel: conv ? kernel : [])
        let a = AdapterAnalysis(
            tensors: tensors
                + TestData.loraModule("lora_te_text_model_encoder_layers_0_mlp_fc1", out: 3072, in: 768, rank: 4))
        #expect(a.scheme == .kohyaSD)
        #expect(a.baseModel.family == .sd1)
        let m = try #require(a.module(named: module))
        let t = try #require(mapper.resolve(m, adapterFamily: a.baseModel.family).success)
        #expect(t.tensorName == "model.diffusion_model." + path + ".weight")
        #expect(t.shape == shape)
        #expect(mapper.sdScriptsTreatment(of: m, target: t) == .merges)
    }

    @Test func projInAcceptsLinearAndConvFactors() throws {
        // SD1 proj_in is a 1×1 conv; kohya stores a 4-D factor, other trainers a 2-D one.
        for kernel in [[Int](), [1, 1]] {
            let a = AdapterAnalysis(
                tensors: TestData.loraModule(
                    "lora_unet_down_blocks_0_attentions_1_proj_in", out: 320, in: 320, rank: 8, kernel: kernel))
            let t = try #require(mapper.resolve(a.modules[0]).success)
            #expect(t.tensorName == "model.diffusion_model.input_blocks.2.1.proj_in.weight")
            #expect(t.layer == .conv(kernelHeight: 1, kernelWidth: 1))
        }
    }

    @Test func textEncoderAndSGMNames() throws {
        let a = AdapterAnalysis(
            tensors: TestData.loraModule("lora_te_text_model_encoder_layers_11_mlp_fc2", out: 768, in: 3072, rank: 4)
                + TestData.loraModule("lora_unet_input_blocks_1_1_proj_in", out: 320, in: 320, rank: 4))
        let plan = mapper.plan(a)
        #expect(plan.unresolved.isEmpty)
        let te = try #require(plan.mappings.first { $0.component == .te })
        #expect(te.target?.tensorName == "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight")
        #expect(te.sdScripts == .merges)
        // SGM-spelled UNet names resolve too, but merge_lora.py only reads diffusers names.
        #expect(plan.mappings.first { $0.component == .unet }?.sdScripts == .skipsName)
    }

    @Test func sdxlLoRAIsRejectedOnSD1() {
        let sdxl = AdapterAnalysis(
            tensors: TestData.loraModule(
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj", out: 1280, in: 1280, rank: 4))
        #expect(!mapper.compatibility(with: sdxl).isCompatible)
        #expect(mapper.resolve(sdxl.modules[0]).failure?.kind == .missingComponent)
    }

    @Test func sd2TextEncoderThirds() throws {
        var t: [TensorInfo] = [
            TestData.info("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", [320, 1024])
        ]
        for n in 0..<24 {
            t.append(
                TestData.info("cond_stage_model.model.transformer.resblocks.\(n).attn.in_proj_weight", [3072, 1024]))
        }
        let sd2 = KeyMapper(tensors: t)
        #expect(sd2.checkpoint.architecture == .sd2)
        let a = AdapterAnalysis(
            tensors: TestData.loraModule(
                "lora_te_text_model_encoder_layers_22_self_attn_k_proj", out: 1024, in: 1024, rank: 4)
                + TestData.loraModule(
                    "lora_te_text_model_encoder_layers_23_self_attn_q_proj", out: 1024, in: 1024, rank: 4))
        #expect(a.baseModel.family == .sd2)
        let plan = sd2.plan(a)
        let k = try #require(plan.mappings[0].target)
        #expect(k.rows == 1024..<2048 && k.shape == [1024, 1024])
        #expect(plan.mappings[0].sdScripts == .merges)
        // sd-scripts never loads the last OpenCLIP-H layer.
        #expect(plan.mappings[1].target?.rows == 0..<1024)
        #expect(plan.mappings[1].sdScripts == .skipsName)
    }
}

extension Result {
    var success: Success? { try? get() }
    var failure: Failure? {
        if case let .failure(e) = self { return e }
        return nil
    }
}
