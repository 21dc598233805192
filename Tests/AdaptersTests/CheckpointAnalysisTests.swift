import Testing
import SafeTensors
@testable import Adapters

/// The generated key lists these suites use are the reference lists in ../shared/models
/// (an extra check, when that directory is next to the repository; required on CI).
@Test("the generated SDXL key lists equal ../shared/models (when present)")
func generatedKeyListsMatchSharedModels() {
    guard TestData.sharedModelsAvailable else {
        if TestData.isCI { Issue.record("missing \(TestData.sharedDir.path)/models/*.json") }
        return
    }
    for (generated, file) in [
        (TestData.sdxlCheckpoint, "models/sdxl-checkpoint-keys.json"),
        (TestData.sdxlLoCon, "models/sdxl-locon-keys.json"),
    ] {
        let reference = TestData.load(file)
        func entries(_ list: [TensorInfo]) -> [String: String] {
            Dictionary(uniqueKeysWithValues: list.map { ($0.name, "\($0.dtype.rawValue) \($0.shape)") })
        }
        #expect(entries(generated.tensors) == entries(reference.tensors), "\(file)")
        for key in [
            "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_base_model_version", "ss_output_name",
            "modelspec.architecture", "modelspec.resolution",
        ] {
            #expect(generated.metadata?[key] == reference.metadata?[key], "\(file): \(key)")
        }
    }
}

@Suite("CheckpointAnalysis on the SDXL key list")
struct SDXLCheckpointTests {
    let analysis = CheckpointAnalysis(tensors: TestData.sdxlCheckpoint.tensors)

    @Test func recognisedAsSDXLBase() {
        #expect(analysis.architecture == .sdxlBase)
        #expect(analysis.family == .sdxl)
        #expect(analysis.contextWidth == 2048)
        #expect(analysis.unetInputChannels == 4)
        #expect(analysis.evidence.contains("attn2.to_k context width 2048"))
    }

    @Test func components() throws {
        #expect(analysis.modelComponents == [.unet, .te1, .te2, .vae])
        let unet = try #require(analysis.summary(of: .unet))
        #expect(unet.prefix == "model.diffusion_model.")
        #expect(unet.tensorCount == 1680)
        #expect(analysis.summary(of: .te1)?.prefix == "conditioner.embedders.0.transformer.")
        #expect(analysis.summary(of: .te2)?.prefix == "conditioner.embedders.1.model.")
        #expect(analysis.summary(of: .vae)?.tensorCount == 248)
        #expect(analysis.components.reduce(0) { $0 + $1.tensorCount } == 2514)
        #expect(analysis.parameterCount == analysis.components.reduce(0) { $0 + $1.parameterCount })
        // SDXL base is about 2.6 G UNet parameters.
        #expect((2_500_000_000...2_700_000_000).contains(unet.parameterCount))
    }

    @Test func inpaintAndRefinerVariants() {
        let inpaint = TestData.sdxlCheckpoint.tensors.map { t in
            t.name == "model.diffusion_model.input_blocks.0.0.weight" ? TestData.info(t.name, [320, 9, 3, 3]) : t
        }
        let a = CheckpointAnalysis(tensors: inpaint)
        #expect(a.architecture == .sdxlInpaint)
        #expect(a.unetInputChannels == 9)

        let refiner = [
            TestData.info(
                "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", [768, 1280]),
            TestData.info("conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight", [3840, 1280]),
        ]
        #expect(CheckpointAnalysis(tensors: refiner).architecture == .sdxlRefiner)
    }

    @Test func metadataDisagreementIsEvidence() {
        let a = CheckpointAnalysis(
            tensors: TestData.sdxlCheckpoint.tensors,
            metadata: ["modelspec.architecture": "stable-diffusion-v1"])
        #expect(a.architecture == .sdxlBase)
        #expect(a.evidence.contains { $0.contains("disagrees") })
    }
}

@Suite("CheckpointAnalysis on synthetic key lists")
struct SyntheticCheckpointTests {
    @Test func sd15() throws {
        let a = CheckpointAnalysis(tensors: TestData.sd15Checkpoint)
        #expect(a.architecture == .sd1)
        #expect(a.contextWidth == 768)
        #expect(a.modelComponents == [.unet, .te, .vae])
        let other = try #require(a.summary(of: .other))
        #expect(other.prefix == "alphas_cumprod")
    }

    @Test func sd2FromContextWidth() {
        let t = [
            TestData.info(
                "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", [320, 1024]),
            TestData.info("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", [3072, 1024]),
        ]
        let a = CheckpointAnalysis(tensors: t)
        #expect(a.architecture == .sd2)
        #expect(a.modelComponents == [.unet, .te])
    }

    @Test func vaeOnly() {
        let bare = ["encoder.conv_in.weight", "decoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.weight"]
        let a = CheckpointAnalysis(tensors: bare.map { TestData.info($0, [4, 4, 1, 1]) })
        #expect(a.architecture == .vaeOnly)
        #expect(a.modelComponents == [.vae])
    }

    @Test func fluxAndSD3() {
        let flux = CheckpointAnalysis(tensors: [
            TestData.info("double_blocks.0.img_attn.qkv.weight", [9216, 3072]),
            TestData.info("single_blocks.0.linear1.weight", [21504, 3072]),
        ])
        #expect(flux.architecture == .flux)
        #expect(flux.modelComponents == [.unet])
        let sd3 = CheckpointAnalysis(tensors: [
            TestData.info("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", [4608, 1536]),
            TestData.info("text_encoders.t5xxl.transformer.shared.weight", [32128, 4096]),
        ])
        #expect(sd3.architecture == .sd3)
        #expect(sd3.modelComponents == [.unet, .te3])
    }

    @Test func emptyAndMetadataOnlyHints() {
        #expect(CheckpointAnalysis(tensors: []).architecture == .unknown)
        let te = CheckpointAnalysis(
            tensors: [TestData.info("conditioner.embedders.1.model.ln_final.weight", [1280])],
            metadata: ["modelspec.architecture": "stable-diffusion-xl-v1-base"])
        #expect(te.architecture == .sdxlBase)
    }
}
