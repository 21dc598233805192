// Model families, checkpoint architectures and model components shared by the
// checkpoint and adapter analyses and by the key mapper.

/// The model family a checkpoint belongs to or an adapter was trained for.
///
/// Two files can only be combined when their families agree; the finer
/// ``CheckpointArchitecture`` (base, refiner, inpaint…) is a checkpoint property.
public enum ModelFamily: String, Sendable, Codable, CaseIterable {
    case sd1 = "sd1"
    case sd2 = "sd2"
    case sdxl = "sdxl"
    /// The SDXL refiner UNet (context width 1280, OpenCLIP-bigG text encoder only).
    case sdxlRefiner = "sdxl_refiner"
    case sd3 = "sd3"
    case flux = "flux"
    case unknown = "unknown"

    /// A short human-readable name ("SD 1.x", "SDXL", …).
    public var displayName: String {
        switch self {
        case .sd1: return "SD 1.x"
        case .sd2: return "SD 2.x"
        case .sdxl: return "SDXL"
        case .sdxlRefiner: return "SDXL refiner"
        case .sd3: return "SD3"
        case .flux: return "Flux.1"
        case .unknown: return "unknown"
        }
    }

    /// The cross-attention context width of the family's UNet (the input width of
    /// `attn2.to_k`), when it has one: 768, 1024, 2048 or 1280 (refiner).
    public var contextWidth: Int? {
        switch self {
        case .sd1: return 768
        case .sd2: return 1024
        case .sdxl: return 2048
        case .sdxlRefiner: return 1280
        default: return nil
        }
    }

    /// The family whose UNet has this cross-attention context width, if any.
    public init?(contextWidth: Int) {
        switch contextWidth {
        case 768: self = .sd1
        case 1024: self = .sd2
        case 2048: self = .sdxl
        case 1280: self = .sdxlRefiner
        default: return nil
        }
    }

    /// Reads a family from a `modelspec.architecture` value such as
    /// `stable-diffusion-xl-v1-base/lora` or `stable-diffusion-v1`.
    public init?(modelspecArchitecture value: String) {
        let v = value.lowercased()
        if v.hasPrefix("stable-diffusion-xl-v1-refiner") || v.hasPrefix("stable-diffusion-xl-v0-9-refiner") {
            self = .sdxlRefiner
        } else if v.hasPrefix("stable-diffusion-xl") {
            self = .sdxl
        } else if v.hasPrefix("stable-diffusion-v1") {
            self = .sd1
        } else if v.hasPrefix("stable-diffusion-v2") {
            self = .sd2
        } else if v.hasPrefix("stable-diffusion-3") {
            self = .sd3
        } else if v.hasPrefix("flux") {
            self = .flux
        } else {
            return nil
        }
    }

    /// Reads a family from kohya's `ss_base_model_version` (`sd_v1`, `sd_v2_v`,
    /// `sdxl_base_v1-0`, `sd3`, `flux1`, …).
    public init?(kohyaBaseModelVersion value: String) {
        let v = value.lowercased()
        if v.hasPrefix("sdxl") {
            self = .sdxl
        } else if v.hasPrefix("sd_v1") {
            self = .sd1
        } else if v.hasPrefix("sd_v2") {
            self = .sd2
        } else if v.hasPrefix("sd3") {
            self = .sd3
        } else if v.hasPrefix("flux") {
            self = .flux
        } else {
            return nil
        }
    }
}

/// What a full checkpoint file is, as far as its keys and shapes tell.
public enum CheckpointArchitecture: String, Sendable, Codable, CaseIterable {
    case sd1 = "sd1"
    case sd2 = "sd2"
    case sdxlBase = "sdxl_base"
    case sdxlRefiner = "sdxl_refiner"
    /// SDXL with a 9-channel input conv (latent + mask + masked image).
    case sdxlInpaint = "sdxl_inpaint"
    case vaeOnly = "vae_only"
    case flux = "flux"
    case sd3 = "sd3"
    case unknown = "unknown"

    /// A short human-readable name ("SDXL base", "VAE only", …).
    public var displayName: String {
        switch self {
        case .sd1: return "SD 1.x"
        case .sd2: return "SD 2.x"
        case .sdxlBase: return "SDXL base"
        case .sdxlRefiner: return "SDXL refiner"
        case .sdxlInpaint: return "SDXL inpaint"
        case .vaeOnly: return "VAE only"
        case .flux: return "Flux.1"
        case .sd3: return "SD3"
        case .unknown: return "unknown"
        }
    }

    /// The family adapters must be made for to apply to this architecture.
    public var family: ModelFamily {
        switch self {
        case .sd1: return .sd1
        case .sd2: return .sd2
        case .sdxlBase, .sdxlInpaint: return .sdxl
        case .sdxlRefiner: return .sdxlRefiner
        case .flux: return .flux
        case .sd3: return .sd3
        case .vaeOnly, .unknown: return .unknown
        }
    }
}

/// A sub-model inside a checkpoint, or the sub-model an adapter module targets.
public enum Component: String, Sendable, Codable, CaseIterable, Comparable {
    /// The denoiser: UNet (SD1/SD2/SDXL) or diffusion transformer (SD3/Flux).
    case unet = "unet"
    /// The single text encoder of SD1 (CLIP-L) or SD2 (OpenCLIP-H); kohya prefix `lora_te_`.
    case te = "te"
    /// The first text encoder of SDXL/SD3/Flux (CLIP-L); kohya prefix `lora_te1_`.
    case te1 = "te1"
    /// The second text encoder of SDXL/SD3 (OpenCLIP-bigG); kohya prefix `lora_te2_`.
    case te2 = "te2"
    /// The third text encoder (T5-XXL in SD3, T5 in kohya Flux: `lora_te3_`).
    case te3 = "te3"
    case vae = "vae"
    /// Textual-inversion embeddings bundled in an adapter (`bundle_emb.*`).
    case embedding = "embedding"
    /// Anything else (EMA weights, schedule buffers, unknown prefixes).
    case other = "other"

    public static func < (lhs: Component, rhs: Component) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}
