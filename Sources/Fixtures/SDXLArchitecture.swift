import SafeTensors

/// The tensor layout of an SDXL 1.0 base checkpoint in the original (SGM) single-file
/// naming, generated from the architecture, at full size or with every channel-like
/// dimension divided by ``widthDivisor``.
///
/// At full size ``checkpointTensors(dtype:)`` reproduces the 2514 tensors of a real
/// checkpoint exactly. At reduced width the depths (2514 tensors), kernel sizes,
/// latent/RGB channels, the 77 text positions and the ratios merge code relies on are
/// kept: TE2 `in_proj_weight` is `[3W, W]`, `attn2.to_k` reads the context width
/// `te1Width + te2Width`, `ff.net.0.proj` is `[8C, C]`. Vocabulary sizes shrink too,
/// so that tiny models are tiny. Note that divisor 2 gives a context width of 1024,
/// which shape-based detection may take for SD 2.x; use 1 or ≥ 4 where that matters.
public struct SDXLArchitecture: Sendable, Equatable {
    /// Divisor of the channel-like dimensions: 1 (full size), 2, 4, 8, 16, 32 or 64.
    public let widthDivisor: Int

    /// The divisors every channel-like dimension of SDXL is a multiple of.
    public static let validDivisors = [1, 2, 4, 8, 16, 32, 64]

    public init(widthDivisor: Int = 1) {
        precondition(
            Self.validDivisors.contains(widthDivisor),
            "SDXL width divisor must be one of \(Self.validDivisors), got \(widthDivisor)")
        self.widthDivisor = widthDivisor
    }

    public static let unetPrefix = "model.diffusion_model."
    public static let te1Prefix = "conditioner.embedders.0.transformer."
    public static let te2Prefix = "conditioner.embedders.1.model."
    public static let vaePrefix = "first_stage_model."

    /// UNet base width (320 at full size).
    public var modelChannels: Int { 320 / widthDivisor }
    /// Width of the CLIP-L text encoder (768).
    public var te1Width: Int { 768 / widthDivisor }
    /// Width of the OpenCLIP-bigG text encoder (1280).
    public var te2Width: Int { 1280 / widthDivisor }
    /// Cross-attention context width: both encoders' hidden states side by side (2048).
    public var contextWidth: Int { te1Width + te2Width }
    /// Token vocabulary of both encoders (49408).
    public var vocabularySize: Int { 49408 / widthDivisor }
    /// Width of the Fourier embedding of each of the six size/crop/target numbers (256).
    public var sizeEmbeddingWidth: Int { 256 / widthDivisor }
    /// Input width of `label_emb.0.0`: pooled TE2 output plus six size embeddings (2816).
    public var labelInputWidth: Int { te2Width + 6 * sizeEmbeddingWidth }
    /// Base width of the autoencoder (128).
    public var vaeChannels: Int { 128 / widthDivisor }
    public let te1Layers = 12
    public let te2Layers = 32
    public let textPositions = 77

    var unet: UNetShape {
        UNetShape(
            modelChannels: modelChannels, multipliers: [1, 2, 4], resBlocksPerLevel: 2,
            depths: [0, 2, 10], middleDepth: 10, contextWidth: contextWidth,
            linearProjection: true, labelInputWidth: labelInputWidth)
    }

    /// Every tensor of the checkpoint, sorted by name (2514 tensors).
    public func checkpointTensors(dtype: DType = .F16) -> [SyntheticTensor] {
        var b = TensorListBuilder(dtype: dtype)
        HFCLIPTextShape(width: te1Width, layers: te1Layers, vocabulary: vocabularySize, positions: textPositions)
            .add(to: &b, prefix: Self.te1Prefix)
        OpenCLIPTextShape(
            width: te2Width, layers: te2Layers, vocabulary: vocabularySize,
            projectionWidth: te2Width, positions: textPositions
        )
        .add(to: &b, prefix: Self.te2Prefix)
        AutoencoderShape(channels: vaeChannels).add(to: &b, prefix: Self.vaePrefix)
        unet.add(to: &b, prefix: Self.unetPrefix)
        return b.tensors.sortedByName()
    }
}
