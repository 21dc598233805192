import Testing
import SafeTensors
@testable import Adapters

@Suite("AdapterAnalysis on the kohya SDXL LoCon")
struct SDXLLoConTests {
    let analysis = AdapterAnalysis(tensors: TestData.sdxlLoCon.tensors, metadata: TestData.sdxlLoCon.metadata) { t in
        // Stand-in for reading tensor data: the file's alphas are 8 (linear, 1×1) and 4 (3×3).
        t.name.hasSuffix("_in_layers_2.alpha") || t.name.hasSuffix("_out_layers_3.alpha")
            || t.name.hasSuffix("_op.alpha") || t.name.hasSuffix("_conv.alpha") ? 4 : 8
    }

    @Test func kindSchemeAndBase() {
        #expect(AdapterAnalysis.looksLikeAdapter(TestData.sdxlLoCon.tensors))
        #expect(!AdapterAnalysis.looksLikeAdapter(TestData.sdxlCheckpoint.tensors))
        #expect(analysis.kind == .locon)
        #expect(analysis.scheme == .kohyaSDXL)
        #expect(analysis.baseModel.family == .sdxl)
        #expect(analysis.baseModel.conflicts.isEmpty)
        #expect(analysis.contextWidth == 2048)
        #expect(analysis.baseModel.evidence.contains("ss_base_model_version = sdxl_base_v1-0"))
        #expect(!analysis.hasDoRA && !analysis.hasTucker)
    }

    @Test func moduleCountsMatchSDScripts() {
        // docs §3.1: 788 UNet modules with the conv classes, 72 + 192 = 264 text-encoder modules.
        #expect(analysis.modules.count == 1052)
        #expect(analysis.moduleCounts == [.unet: 788, .te1: 72, .te2: 192])
        #expect(analysis.kindCounts == [.lora: 1052])
        #expect(analysis.invalidModules.isEmpty)
        #expect(analysis.modules.allSatisfy { $0.loraSpelling == .kohya })
    }

    @Test func ranksAndAlphas() {
        #expect(analysis.ranks.map(\.value) == [16])
        #expect(analysis.convRanks.map(\.value) == [8])
        #expect(analysis.ranks[0].count + analysis.convRanks[0].count == 1052)
        #expect(analysis.alphas.map(\.value) == [8])
        #expect(analysis.convAlphas.map(\.value) == [4])
        #expect(analysis.layerCounts[.conv(kernelHeight: 3, kernelWidth: 3)] == analysis.convRanks[0].count)
        #expect(analysis.layerCounts[.conv(kernelHeight: 1, kernelWidth: 1)] == 11)
    }

    @Test(
        "per-module parts, rank and layer",
        arguments: [
            ("lora_unet_output_blocks_2_2_conv", Component.unet, 8, "conv3x3"),
            ("lora_unet_input_blocks_7_0_skip_connection", .unet, 16, "conv1x1"),
            ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", .unet, 16, "linear"),
            ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", .te1, 16, "linear"),
            ("lora_te2_text_model_encoder_layers_31_self_attn_v_proj", .te2, 16, "linear"),
        ])
    func module(name: String, component: Component, rank: Int, layer: String) throws {
        let m = try #require(analysis.module(named: name))
        #expect(m.component == component)
        #expect(m.rank == rank)
        #expect(m.layer.name == layer)
        #expect(m.kind == .lora)
        #expect(Set(m.parts.keys) == [.down, .up, .alpha])
        #expect(m.parts[.down]?.dims.first == rank)
    }

    @Test func trainingMetadata() {
        let t = analysis.training
        #expect(t.networkModule == "networks.lora")
        #expect(t.networkDim == 16)
        #expect(t.networkAlpha == 8)
        #expect(t.networkArgs == ["conv_dim": "8", "conv_alpha": "4.0"])
        #expect(t.baseModelVersion == "sdxl_base_v1-0")
        #expect(t.v2 == false)
        #expect(t.resolution == "(1024, 1024)")  // ss_resolution, as sd-scripts writes it
        #expect(t.outputName == "L2")
        #expect(t.trainingComment?.hasPrefix("synthetic random LoRA") == true)
        #expect(t.modelspec["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora")
        #expect(t.summaries["ss_network_args"]?.entryCount == 2)
    }
}

@Suite("AdapterAnalysis: formats, schemes and malformed modules")
struct AdapterFormatTests {
    static let f = TestData.self

    @Test(
        "file kind from suffix sets",
        arguments: [
            (
                [
                    "m.hada_w1_a": [64, 4], "m.hada_w1_b": [4, 32], "m.hada_w2_a": [64, 4], "m.hada_w2_b": [4, 32],
                    "m.alpha": [],
                ], AdapterFileKind.loha
            ),
            (["m.lokr_w1": [4, 8], "m.lokr_w2_a": [16, 4], "m.lokr_w2_b": [4, 4], "m.alpha": []], .lokr),
            (["m.lora_down.weight": [4, 32], "m.lora_up.weight": [64, 4], "m.dora_scale": [64, 1]], .dora),
            (["m.lora_down.weight": [4, 32], "m.lora_up.weight": [64, 4]], .lora),
            (["m.diff": [64, 32], "m.diff_b": [64]], .full),
            (["m.weight": [64], "m.on_input": []], .ia3),
            (["m.oft_blocks": [4, 16, 16], "m.alpha": []], .oft),
            (["m.oft_blocks": [2, 4, 16, 16], "m.alpha": []], .boft),
            (
                ["m.a1.weight": [32, 4], "m.a2.weight": [4, 32], "m.b1.weight": [64, 4], "m.b2.weight": [4, 32]], .glora
            ),
            (["m.w_norm": [64], "m.b_norm": [64]], .norm),
            (
                [
                    "m.lora_down.weight": [4, 32], "m.lora_up.weight": [64, 4], "n.lokr_w1": [4, 8],
                    "n.lokr_w2": [16, 4],
                ], .mixed
            ),
        ] as [([String: [Int]], AdapterFileKind)])
    func fileKind(keys: [String: [Int]], kind: AdapterFileKind) {
        let a = AdapterAnalysis(tensors: keys.map { TestData.info($0.key, $0.value) })
        #expect(a.kind == kind)
        #expect(a.invalidModules.isEmpty, "\(a.invalidModules.flatMap(\.issues))")
    }

    @Test func loraShapesAndTucker() throws {
        let tucker = AdapterAnalysis(tensors: [
            TestData.info("c.lora_down.weight", [4, 320, 1, 1]), TestData.info("c.lora_mid.weight", [4, 4, 3, 3]),
            TestData.info("c.lora_up.weight", [640, 4, 1, 1]),
        ])
        let m = try #require(tucker.module(named: "c"))
        #expect(m.isTucker && m.isValid)
        #expect(m.layer == .conv(kernelHeight: 3, kernelWidth: 3))
        #expect(m.delta?.fits([640, 320, 3, 3]) == true)
        #expect(tucker.kind == .locon)
        let lokr = AdapterAnalysis(tensors: [
            TestData.info("k.lokr_w1", [8, 16]), TestData.info("k.lokr_w2", [80, 20]),
        ])
        #expect(lokr.modules[0].rank == nil)  // both factors full: no rank, alpha ignored
        #expect(lokr.modules[0].delta?.fits([640, 320]) == true)
    }

    @Test(
        "naming schemes",
        arguments: [
            (
                "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight", NamingScheme.kohyaSDXL,
                Component.unet
            ),
            ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", .kohyaSD, .unet),
            ("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", .kohyaSD, .te),
            ("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight", .kohyaDiT, .unet),
            ("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", .diffusersPEFT, .unet),
            (
                "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight",
                .diffusersLegacy, .unet
            ),
            (
                "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight",
                .diffusersLegacy, .te2
            ),
            ("unet.input_blocks.4.1.transformer_blocks.0.attn1.to_q.lora_down.weight", .oneTrainerOMI, .unet),
            ("clip_g.text_model.encoder.layers.0.mlp.fc1.lora_down.weight", .oneTrainerOMI, .te2),
            ("lycoris_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lokr_w1", .simpleTunerLycoris, .unet),
            ("diffusion_model.input_blocks.4.1.proj_in.lora_down.weight", .comfyUI, .unet),
            ("transformer.transformer_blocks.0.attn.to_q.lora_A.weight", .diffusersTransformer, .unet),
            ("base_model.model.down_blocks.1.attentions.0.proj_in.lokr_w1", .peftDump, .unet),
        ])
    func scheme(key: String, scheme: NamingScheme, component: Component) throws {
        let a = AdapterAnalysis(tensors: [TestData.info(key, [4, 4])])
        let m = try #require(a.modules.first)
        #expect(m.scheme == scheme)
        #expect(m.component == component)
        #expect(a.scheme == scheme)
    }

    @Test func diffusersTextEncoderIsTE1OnSDXL() throws {
        let a = AdapterAnalysis(tensors: [
            TestData.info("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight", [4, 768]),
            TestData.info("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight", [768, 4]),
            TestData.info("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight", [4, 1280]),
            TestData.info("text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight", [1280, 4]),
        ])
        #expect(a.baseModel.family == .sdxl)
        #expect(a.moduleCounts == [.te1: 1, .te2: 1])
        #expect(a.scheme == .diffusersPEFT)
    }

    @Test func sd1AndSD2FromTextEncoderWidth() {
        let sd1 = AdapterAnalysis(
            tensors: TestData.loraModule(
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj", out: 768, in: 768, rank: 4))
        #expect(sd1.baseModel.family == .sd1)
        let sd2 = AdapterAnalysis(
            tensors: TestData.loraModule(
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj", out: 1024, in: 1024, rank: 4))
        #expect(sd2.baseModel.family == .sd2)
        let conflict = AdapterAnalysis(
            tensors: TestData.loraModule(
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", out: 320, in: 768, rank: 4),
            metadata: ["ss_base_model_version": "sdxl_base_v1-0"])
        #expect(conflict.baseModel.family == .sd1)
        #expect(conflict.baseModel.conflicts == ["ss_base_model_version = sdxl_base_v1-0"])
    }

    @Test(
        "malformed modules are reported, not fatal",
        arguments: [
            (["m.lora_up.weight": [64, 4], "m.alpha": []], ModuleIssue.Kind.missingPart),
            (["m.lora_down.weight": [4, 32]], .missingPart),
            (["m.lora_down.weight": [4, 32], "m.lora_up.weight": [64, 8]], .rankMismatch),
            (["m.lora_down.weight": [4, 32], "m.lora_up.weight": [64, 4], "m.alpha": [2]], .badAlpha),
            (["m.lora_down.weight": [4, 32, 3], "m.lora_up.weight": [64, 4]], .badShape),
            (["m.alpha": []], .orphan),
            (["m.hada_w1_a": [64, 4], "m.hada_w1_b": [4, 32], "m.hada_w2_a": [64, 4]], .missingPart),
            (["m.lokr_w1": [4, 8], "m.lokr_w2_a": [16, 4], "m.lokr_w2_b": [5, 4]], .rankMismatch),
            (["m.lora_down.weight": [4, 32], "m.lora_up.weight": [64, 4], "m.strange_suffix": [3]], .unknownSuffix),
        ] as [([String: [Int]], ModuleIssue.Kind)])
    func malformed(keys: [String: [Int]], issue: ModuleIssue.Kind) throws {
        let a = AdapterAnalysis(tensors: keys.map { TestData.info($0.key, $0.value) })
        let m = try #require(a.module(named: "m"))
        #expect(m.issues.map(\.kind).contains(issue), "\(m.issues)")
        #expect(!m.isValid)
    }

    @Test func nonFloatDTypeAndUnreadableAlpha() throws {
        struct ReadError: Error {}
        let a = AdapterAnalysis(tensors: [
            TestData.info("m.lora_down.weight", [4, 32], .I8), TestData.info("m.lora_up.weight", [64, 4]),
            TestData.info("m.alpha", [], .F32),
        ]) { _ in throw ReadError() }
        let m = try #require(a.module(named: "m"))
        #expect(Set(m.issues.map(\.kind)) == [.nonFloatDType, .badAlpha])
        #expect(m.alpha == nil)
    }

    @Test func emptyAndBundledEmbeddings() {
        let empty = AdapterAnalysis(tensors: [])
        #expect(empty.kind == .unknown && empty.scheme == .unknown)
        let emb = AdapterAnalysis(tensors: [TestData.info("bundle_emb.mychar.string_to_param.*", [2, 768])])
        #expect(emb.kind == .embeddings)
        #expect(emb.modules.first?.component == .embedding)
    }
}
