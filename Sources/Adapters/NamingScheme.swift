// Key-naming schemes of adapter files and the parse of a module name into
// (component, scheme, path inside the component).

/// How an adapter file names its modules.
public enum NamingScheme: String, Sendable, Codable, CaseIterable {
    /// kohya sd-scripts on SDXL: `lora_unet_` + SGM paths (`input_blocks_4_1_…`), `lora_te1_`, `lora_te2_`.
    case kohyaSDXL = "kohya_sdxl"
    /// kohya sd-scripts on SD1/SD2: `lora_unet_` + diffusers paths (`down_blocks_0_…`), `lora_te_`.
    case kohyaSD = "kohya_sd"
    /// kohya prefixes with diffusers block names on an SDXL base (OneTrainer legacy and
    /// others); sd-scripts' merge skips all of them (kohya-ss/sd-scripts#972).
    case kohyaDiffusersSDXL = "kohya_diffusers_sdxl"
    /// kohya names of the DiT models (`lora_unet_double_blocks_…`, `lora_unet_joint_blocks_…`).
    case kohyaDiT = "kohya_dit"
    /// diffusers/PEFT: `unet.` / `text_encoder.` / `text_encoder_2.` + diffusers paths.
    case diffusersPEFT = "diffusers_peft"
    /// diffusers attention processors (`…processor.to_q_lora.down.weight`, `lora_linear_layer`).
    case diffusersLegacy = "diffusers_legacy"
    /// diffusers DiT names (`transformer.transformer_blocks.N…`, Flux/SD3).
    case diffusersTransformer = "diffusers_transformer"
    /// PEFT library dumps: `base_model.model.` + diffusers path.
    case peftDump = "peft_dump"
    /// OneTrainer "OMI": `unet.` + SGM path with dots, `clip_l.`, `clip_g.`.
    case oneTrainerOMI = "onetrainer_omi"
    /// SimpleTuner LyCORIS: `lycoris_` + diffusers path with underscores.
    case simpleTunerLycoris = "simpletuner_lycoris"
    /// ComfyUI's extraction output: `diffusion_model.` + SGM path, `text_encoders.clip_l.…`.
    case comfyUI = "comfyui"
    /// Textual-inversion embeddings bundled in the adapter (`bundle_emb.*`); not a module scheme.
    case embedding = "embedding"
    /// Modules follow more than one scheme.
    case mixed = "mixed"
    case unknown = "unknown"

    /// A short human-readable name.
    public var displayName: String {
        switch self {
        case .kohyaSDXL: return "kohya SDXL (SGM block names)"
        case .kohyaSD: return "kohya SD1/SD2 (diffusers block names)"
        case .kohyaDiffusersSDXL: return "kohya names with diffusers blocks, on SDXL"
        case .kohyaDiT: return "kohya DiT (Flux/SD3)"
        case .diffusersPEFT: return "diffusers/PEFT"
        case .diffusersLegacy: return "diffusers legacy attention processors"
        case .diffusersTransformer: return "diffusers transformer (Flux/SD3)"
        case .peftDump: return "PEFT base_model.model dump"
        case .oneTrainerOMI: return "OneTrainer OMI"
        case .simpleTunerLycoris: return "SimpleTuner lycoris_"
        case .comfyUI: return "ComfyUI extraction (diffusion_model.)"
        case .embedding: return "bundled embeddings"
        case .mixed: return "mixed"
        case .unknown: return "unknown"
        }
    }
}

/// The parse of one module name.
struct ModuleAddress {
    var component: Component
    var scheme: NamingScheme
    /// Path inside the component, dots replaced by underscores.
    var pathKey: String
}

enum ModuleNames {
    static let sgmRoots = ["input_blocks_", "middle_block_", "output_blocks_", "time_embed_", "label_emb_", "out_"]
    static let diffusersRoots = [
        "down_blocks_", "mid_block_", "up_blocks_", "conv_in", "conv_out", "conv_norm_out",
        "time_embedding_", "add_embedding_",
    ]
    static let ditRoots = [
        "double_blocks_", "single_blocks_", "joint_blocks_", "img_in", "txt_in", "time_in_",
        "vector_in_", "guidance_in_", "final_layer_", "x_embedder", "context_embedder",
        "t_embedder_", "y_embedder_",
    ]

    /// kohya style for a UNet body already in underscore form.
    static func kohyaUNetScheme(_ body: String) -> NamingScheme {
        if ditRoots.contains(where: body.hasPrefix) { return .kohyaDiT }
        if diffusersRoots.contains(where: body.hasPrefix) { return .kohyaSD }
        return .kohyaSDXL
    }

    /// Drops the `processor.` of diffusers attention processors and turns their
    /// `to_out` into `to_out.0`, then underscores.
    static func diffusersPathKey(_ dotted: Substring) -> String {
        var parts = dotted.split(separator: ".", omittingEmptySubsequences: false)
        let hadProcessor = parts.contains("processor")
        parts.removeAll { $0 == "processor" }
        if hadProcessor, parts.last == "to_out" { parts.append("0") }
        return underscored(parts.joined(separator: "."))
    }

    /// Parses a module name. `spelling` tells the legacy attention-processor spelling apart.
    static func address(of name: String, spelling: LoRASpelling?) -> ModuleAddress {
        func after(_ p: String) -> Substring? { name.hasPrefix(p) ? name.dropFirst(p.count) : nil }

        if name.hasPrefix("bundle_emb.") {
            return ModuleAddress(component: .embedding, scheme: .embedding, pathKey: underscored(name))
        }
        let kohya: [(String, Component)] = [
            ("lora_unet_", .unet), ("lora_te1_", .te1), ("lora_te2_", .te2), ("lora_te3_", .te3),
            ("lora_te_", .te), ("oft_unet_", .unet), ("lora_transformer_", .unet),
        ]
        for (p, c) in kohya {
            guard let body = after(p) else { continue }
            let scheme: NamingScheme
            switch c {
            case .unet: scheme = p == "lora_transformer_" ? .kohyaDiT : kohyaUNetScheme(String(body))
            case .te: scheme = .kohyaSD
            case .te3: scheme = .kohyaDiT
            default: scheme = .kohyaSDXL
            }
            return ModuleAddress(component: c, scheme: scheme, pathKey: underscored(body))
        }
        if let body = after("lycoris_") {
            for (p, c) in [("te1_", Component.te1), ("te2_", .te2), ("te_", .te)] where body.hasPrefix(p) {
                return ModuleAddress(
                    component: c, scheme: .simpleTunerLycoris, pathKey: underscored(body.dropFirst(p.count)))
            }
            return ModuleAddress(component: .unet, scheme: .simpleTunerLycoris, pathKey: underscored(body))
        }
        if let body = after("base_model.model.") {
            return ModuleAddress(component: .unet, scheme: .peftDump, pathKey: diffusersPathKey(body))
        }
        let legacy = spelling == .attnProcessor || spelling == .linearLayer || name.contains(".processor.")
        if let body = after("unet.") {
            let key = diffusersPathKey(body)
            if sgmRoots.contains(where: key.hasPrefix) && !legacy {
                return ModuleAddress(component: .unet, scheme: .oneTrainerOMI, pathKey: key)
            }
            return ModuleAddress(component: .unet, scheme: legacy ? .diffusersLegacy : .diffusersPEFT, pathKey: key)
        }
        // `text_encoder.` is te on SD1/SD2 and te1 on SDXL; the file-level pass decides.
        for (p, c) in [("text_encoder_2.", Component.te2), ("text_encoder.", .te)] {
            if let body = after(p) {
                return ModuleAddress(
                    component: c, scheme: legacy ? .diffusersLegacy : .diffusersPEFT, pathKey: underscored(body))
            }
        }
        for (p, c) in [("clip_l.", Component.te1), ("clip_g.", .te2)] {
            if let body = after(p) {
                return ModuleAddress(component: c, scheme: .oneTrainerOMI, pathKey: underscored(body))
            }
        }
        if let body = after("diffusion_model.") {
            return ModuleAddress(component: .unet, scheme: .comfyUI, pathKey: underscored(body))
        }
        for (p, c) in [
            ("text_encoders.clip_l.transformer.", Component.te1), ("text_encoders.clip_g.transformer.", .te2),
            ("text_encoders.t5xxl.transformer.", .te3),
        ] {
            if let body = after(p) { return ModuleAddress(component: c, scheme: .comfyUI, pathKey: underscored(body)) }
        }
        if let body = after("transformer.") {
            return ModuleAddress(component: .unet, scheme: .diffusersTransformer, pathKey: underscored(body))
        }
        // Unprefixed diffusers UNet paths (old attention-processor files).
        let key = diffusersPathKey(Substring(name))
        if diffusersRoots.contains(where: key.hasPrefix) {
            return ModuleAddress(component: .unet, scheme: legacy ? .diffusersLegacy : .diffusersPEFT, pathKey: key)
        }
        return ModuleAddress(component: .other, scheme: .unknown, pathKey: underscored(name))
    }
}
