import SafeTensors

/// What a full model checkpoint contains: its architecture with the evidence for
/// it, and the components present with tensor and parameter counts.
///
/// Built from the header alone; no tensor data is read.
public struct CheckpointAnalysis: Sendable {
    /// One component found in the checkpoint (UNet, a text encoder, the VAE, or an
    /// other prefix such as `model_ema.`).
    public struct ComponentSummary: Sendable, Equatable {
        /// The component; `.other` for prefixes graft does not interpret.
        public let component: Component
        /// The key prefix the component was found under (`model.diffusion_model.`,
        /// `conditioner.embedders.1.model.`, `model_ema.` …).
        public let prefix: String
        /// Number of tensors under the prefix.
        public let tensorCount: Int
        /// Total number of elements of those tensors (saturating).
        public let parameterCount: Int
        /// Total bytes of tensor data under the prefix.
        public let byteCount: Int
    }

    /// The recognised architecture.
    public let architecture: CheckpointArchitecture
    /// Short reasons for ``architecture`` ("attn2.to_k context width 2048", …),
    /// including disagreements with the metadata.
    public let evidence: [String]
    /// Components in a stable order (unet, te, te1, te2, te3, vae, then others by prefix).
    public let components: [ComponentSummary]
    /// Input width of the UNet's cross-attention `attn2.to_k`, when present.
    public let contextWidth: Int?
    /// Input channels of the UNet's first conv (4, 9 for inpainting, 8 for pix2pix…).
    public let unetInputChannels: Int?
    /// The checkpoint's metadata, unchanged.
    public let metadata: [String: String]
    /// Number of tensors in the file.
    public let tensorCount: Int
    /// Total number of elements in the file (saturating).
    public let parameterCount: Int

    /// The family adapters must be made for to apply to this checkpoint.
    public var family: ModelFamily { architecture.family }

    /// The components present, without the `.other` entries.
    public var modelComponents: Set<Component> {
        Set(components.map(\.component).filter { $0 != .other })
    }

    /// The summary for one component, if present (the first one for `.other`).
    public func summary(of component: Component) -> ComponentSummary? {
        components.first { $0.component == component }
    }

    /// Recognises a checkpoint from its tensor list and metadata.
    /// - Parameters:
    ///   - tensors: every tensor of the file (the header's tensors, any order).
    ///   - metadata: the `__metadata__` map, if any.
    public init(tensors: [TensorInfo], metadata: [String: String]? = nil) {
        self.metadata = metadata ?? [:]
        tensorCount = tensors.count

        // Bare DiT / VAE layouts (no prefix) are only believed when their
        // characteristic roots are present.
        let roots = Set(tensors.map { $0.name.prefix { $0 != "." } })
        let bareDiT = roots.contains("double_blocks") || roots.contains("joint_blocks")
        let bareVAE = roots.contains("decoder") && roots.contains("encoder")

        // Keyed by component and prefix: bare DiT and bare VAE keys share prefix "".
        var groups: [String: (Component, String, [TensorInfo])] = [:]
        for t in tensors {
            let (component, prefix) = Self.componentPrefix(of: t.name, bareDiT: bareDiT, bareVAE: bareVAE)
            groups[component.rawValue + "|" + prefix, default: (component, prefix, [])].2.append(t)
        }
        components = groups.values.map { value in
            let prefix = value.1
            return ComponentSummary(
                component: value.0, prefix: prefix, tensorCount: value.2.count,
                parameterCount: value.2.reduce(0) { $0 &+ $1.saturatedElementCount },
                byteCount: value.2.reduce(0) {
                    $0 &+ Int(clamping: $1.dataOffsets.upperBound &- $1.dataOffsets.lowerBound)
                })
        }.sorted { ($0.component, $0.prefix) < ($1.component, $1.prefix) }
        parameterCount = components.reduce(0) { $0 &+ $1.parameterCount }

        // Denoiser facts.
        let unetPrefixes = Set(components.filter { $0.component == .unet }.map(\.prefix))
        var unetPaths: [String: TensorInfo] = [:]
        for t in tensors {
            for p in unetPrefixes where t.name.hasPrefix(p) {
                unetPaths[String(t.name.dropFirst(p.count))] = t
            }
        }
        let toK = unetPaths.keys.filter { $0.hasSuffix("attn2.to_k.weight") }.sorted().first
        contextWidth = toK.flatMap { unetPaths[$0]?.dim(1) }
        let convIn = unetPaths["input_blocks.0.0.weight"] ?? unetPaths["conv_in.weight"]
        unetInputChannels = convIn.flatMap { $0.shape.count == 4 ? $0.dim(1) : nil }

        var evidence: [String] = []
        var arch = CheckpointArchitecture.unknown
        let has = { (c: Component) in groups.values.contains { $0.0 == c } }
        let prefixes = Set(groups.values.map(\.1))
        let unetRoots = Set(unetPaths.keys.map { $0.prefix { $0 != "." } })

        if unetRoots.contains("joint_blocks") {
            arch = .sd3
            evidence.append("denoiser has joint_blocks (MMDiT)")
        } else if unetRoots.contains("double_blocks") {
            arch = .flux
            evidence.append("denoiser has double_blocks/single_blocks (Flux DiT)")
        } else if unetRoots.contains("input_blocks") || unetRoots.contains("down_blocks") {
            if let w = contextWidth {
                evidence.append("attn2.to_k context width \(w)")
                switch w {
                case 768: arch = .sd1
                case 1024: arch = .sd2
                case 2048: arch = .sdxlBase
                case 1280: arch = .sdxlRefiner
                default: evidence.append("context width \(w) matches no known UNet")
                }
            }
            if arch == .unknown {
                if prefixes.contains("conditioner.embedders.1.model.") {
                    arch = .sdxlBase
                } else if prefixes.contains("conditioner.embedders.0.model.") {
                    arch = .sdxlRefiner
                } else if prefixes.contains("cond_stage_model.model.") {
                    arch = .sd2
                } else if prefixes.contains("cond_stage_model.transformer.") {
                    arch = .sd1
                }
            }
            if let ch = unetInputChannels, ch != 4 {
                evidence.append(ch == 9 ? "input conv has 9 channels (inpainting)" : "input conv has \(ch) channels")
                if ch == 9 && arch == .sdxlBase { arch = .sdxlInpaint }
            }
            if unetRoots.contains("label_emb") {
                evidence.append("label_emb present (SDXL size/crop conditioning)")
            }
        } else if has(.vae) && !has(.te) && !has(.te1) && !has(.te2) {
            arch = .vaeOnly
            evidence.append("only VAE tensors (\(prefixes.sorted().joined(separator: ", ")))")
        }

        // Text-encoder layout, reported as evidence whatever decided.
        if prefixes.contains("conditioner.embedders.0.transformer.")
            && prefixes.contains("conditioner.embedders.1.model.")
        {
            evidence.append("conditioner.embedders.0/1: CLIP-L + OpenCLIP-bigG text encoders (SDXL)")
        } else if prefixes.contains("conditioner.embedders.0.model.") {
            evidence.append("conditioner.embedders.0 is OpenCLIP-bigG only (SDXL refiner)")
        }
        if prefixes.contains("cond_stage_model.transformer.") {
            evidence.append("cond_stage_model.transformer: CLIP-L text encoder (SD 1.x)")
        }
        if prefixes.contains("cond_stage_model.model.") {
            evidence.append("cond_stage_model.model: OpenCLIP-H text encoder (SD 2.x)")
        }
        if has(.te3) { evidence.append("text_encoders.t5xxl: T5 text encoder") }

        if let spec = self.metadata["modelspec.architecture"] {
            let hinted = ModelFamily(modelspecArchitecture: spec)
            if arch == .unknown, let hinted, !tensors.isEmpty {
                switch hinted {
                case .sd1: arch = .sd1
                case .sd2: arch = .sd2
                case .sdxl: arch = .sdxlBase
                case .sdxlRefiner: arch = .sdxlRefiner
                case .sd3: arch = .sd3
                case .flux: arch = .flux
                case .unknown: break
                }
                evidence.append("modelspec.architecture = \(spec) (metadata only)")
            } else if let hinted, hinted != arch.family {
                evidence.append("modelspec.architecture = \(spec) disagrees with the keys; the keys win")
            } else {
                evidence.append("modelspec.architecture = \(spec)")
            }
        }
        if arch == .unknown && evidence.isEmpty {
            evidence.append("no UNet, text-encoder or VAE layout recognised")
        }
        architecture = arch
        self.evidence = evidence
    }

    /// The component and grouping prefix of one checkpoint key.
    static func componentPrefix(of name: String, bareDiT: Bool, bareVAE: Bool) -> (Component, String) {
        let known: [(String, Component)] = [
            ("model.diffusion_model.", .unet),
            ("diffusion_model.", .unet),
            ("conditioner.embedders.0.transformer.", .te1),
            ("conditioner.embedders.0.model.", .te2),
            ("conditioner.embedders.1.model.", .te2),
            ("cond_stage_model.transformer.", .te),
            ("cond_stage_model.model.", .te),
            ("text_encoders.clip_l.", .te1),
            ("text_encoders.clip_g.", .te2),
            ("text_encoders.t5xxl.", .te3),
            ("first_stage_model.", .vae),
        ]
        for (p, c) in known where name.hasPrefix(p) { return (c, p) }
        let root = String(name.prefix { $0 != "." })
        let dotted = root.count < name.count ? root + "." : root
        if bareDiT && Self.ditRoots.contains(root) { return (.unet, "") }
        if bareVAE && Self.vaeRoots.contains(root) { return (.vae, "") }
        return (.other, dotted)
    }

    static let ditRoots: Set<String> = [
        "double_blocks", "single_blocks", "img_in", "txt_in", "time_in", "vector_in", "guidance_in",
        "final_layer", "joint_blocks", "x_embedder", "t_embedder", "y_embedder", "context_embedder", "pos_embed",
    ]
    static let vaeRoots: Set<String> = ["encoder", "decoder", "quant_conv", "post_quant_conv"]
}
