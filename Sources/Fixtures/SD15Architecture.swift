import SafeTensors

/// The tensor layout of an SD 1.5 checkpoint in the original LDM naming: UNet
/// (`model.diffusion_model.`, conv 1×1 `proj_in`/`proj_out`, context width 768), CLIP-L
/// text encoder (`cond_stage_model.transformer.text_model.`) and the KL autoencoder
/// (`first_stage_model.`). The scheduler buffers (`alphas_cumprod`, …), EMA weights and
/// `position_ids` of real files are left out. Channel-like dimensions are divided by
/// ``widthDivisor``; note that the context width (768 / divisor) then no longer
/// identifies the family by itself, the `cond_stage_model.transformer.` prefix does.
public struct SD15Architecture: Sendable, Equatable {
    /// 1, 2, 4, 8, 16, 32 or 64.
    public let widthDivisor: Int

    public init(widthDivisor: Int = 1) {
        precondition(
            SDXLArchitecture.validDivisors.contains(widthDivisor),
            "SD 1.5 width divisor must be one of \(SDXLArchitecture.validDivisors), got \(widthDivisor)")
        self.widthDivisor = widthDivisor
    }

    public static let unetPrefix = "model.diffusion_model."
    public static let tePrefix = "cond_stage_model.transformer."
    public static let vaePrefix = "first_stage_model."

    public var modelChannels: Int { 320 / widthDivisor }
    public var teWidth: Int { 768 / widthDivisor }
    public var contextWidth: Int { teWidth }
    public var vocabularySize: Int { 49408 / widthDivisor }
    public var vaeChannels: Int { 128 / widthDivisor }
    public let teLayers = 12

    var unet: UNetShape {
        UNetShape(
            modelChannels: modelChannels, multipliers: [1, 2, 4, 4], resBlocksPerLevel: 2,
            depths: [1, 1, 1, 0], middleDepth: 1, contextWidth: contextWidth,
            linearProjection: false, labelInputWidth: nil)
    }

    /// Every tensor of the checkpoint, sorted by name.
    public func checkpointTensors(dtype: DType = .F16) -> [SyntheticTensor] {
        var b = TensorListBuilder(dtype: dtype)
        HFCLIPTextShape(width: teWidth, layers: teLayers, vocabulary: vocabularySize).add(to: &b, prefix: Self.tePrefix)
        AutoencoderShape(channels: vaeChannels).add(to: &b, prefix: Self.vaePrefix)
        unet.add(to: &b, prefix: Self.unetPrefix)
        return b.tensors.sortedByName()
    }
}
