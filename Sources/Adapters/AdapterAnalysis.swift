import SafeTensors

/// What an adapter file as a whole is.
public enum AdapterFileKind: String, Sendable, Codable, CaseIterable {
    case lora
    /// LoRA with at least one k×k (k > 1) convolution module.
    case locon
    case loha
    case lokr
    /// LoRA/LoCon with `dora_scale` modifiers (other hosts report their own kind and ``AdapterAnalysis/hasDoRA``).
    case dora
    case full
    case norm
    case ia3
    case glora
    case oft
    case boft
    /// Only bundled textual-inversion embeddings.
    case embeddings
    /// Modules of more than one algorithm (besides norm and embedding extras).
    case mixed
    /// No module was recognised.
    case unknown

    /// A short human-readable name ("LoCon", "LoKr", …).
    public var displayName: String {
        switch self {
        case .lora: return "LoRA"
        case .locon: return "LoCon"
        case .loha: return "LoHa"
        case .lokr: return "LoKr"
        case .dora: return "DoRA"
        case .full: return "full/diff"
        case .norm: return "norm"
        case .ia3: return "(IA)³"
        case .glora: return "GLoRA"
        case .oft: return "OFT"
        case .boft: return "BOFT"
        case .embeddings: return "embeddings"
        case .mixed: return "mixed"
        case .unknown: return "unknown"
        }
    }
}

/// One value of a distribution and how many modules have it.
public struct ValueCount<Value: Sendable & Hashable & Comparable & Codable>: Sendable, Equatable, Codable {
    public let value: Value
    public let count: Int
}

/// The base model an adapter was made for, with the reasons.
public struct BaseModelDetection: Sendable, Equatable {
    /// The most supported family, or `.unknown` when nothing (or a tie) decides.
    public let family: ModelFamily
    /// Short reasons supporting ``family``.
    public let evidence: [String]
    /// Reasons that point to another family.
    public let conflicts: [String]
}

/// Everything graft knows about an adapter file from its header: modules with their
/// kinds, components, ranks and issues; the file kind, naming scheme and base model;
/// distributions; and the training metadata.
public struct AdapterAnalysis: Sendable {
    /// The modules, sorted by name.
    public let modules: [AdapterModule]
    /// The file's overall kind.
    public let kind: AdapterFileKind
    /// Whether any module carries a DoRA `dora_scale`.
    public let hasDoRA: Bool
    /// Whether any module has a Tucker/CP core.
    public let hasTucker: Bool
    /// The file's naming scheme (``NamingScheme/mixed`` when modules disagree).
    public let scheme: NamingScheme
    /// The base model, with evidence.
    public let baseModel: BaseModelDetection
    /// Cross-attention context width seen in an `attn2.to_k` module (768 / 1024 / 2048), if any.
    public let contextWidth: Int?
    /// The training metadata summary.
    public let training: TrainingMetadata
    /// Number of tensors in the file.
    public let tensorCount: Int

    /// Module counts per component.
    public var moduleCounts: [Component: Int] {
        modules.reduce(into: [:]) { $0[$1.component, default: 0] += 1 }
    }

    /// Module counts per kind.
    public var kindCounts: [ModuleKind: Int] {
        modules.reduce(into: [:]) { $0[$1.kind, default: 0] += 1 }
    }

    /// Module counts per layer type.
    public var layerCounts: [LayerType: Int] {
        modules.reduce(into: [:]) { $0[$1.layer, default: 0] += 1 }
    }

    /// Modules with structural issues.
    public var invalidModules: [AdapterModule] { modules.filter { !$0.isValid } }

    /// Rank distribution of the modules that are not k×k convolutions (kohya's `network_dim`).
    public var ranks: [ValueCount<Int>] { Self.tally(modules.filter { !$0.layer.isSpatialConv }.compactMap(\.rank)) }
    /// Rank distribution of the k×k convolution modules (kohya's `conv_dim`).
    public var convRanks: [ValueCount<Int>] { Self.tally(modules.filter { $0.layer.isSpatialConv }.compactMap(\.rank)) }
    /// Alpha distribution of the non-k×k modules; empty when alphas were not read.
    public var alphas: [ValueCount<Double>] {
        Self.tally(modules.filter { !$0.layer.isSpatialConv }.compactMap(\.alpha))
    }
    /// Alpha distribution of the k×k convolution modules; empty when alphas were not read.
    public var convAlphas: [ValueCount<Double>] {
        Self.tally(modules.filter { $0.layer.isSpatialConv }.compactMap(\.alpha))
    }

    /// The module with this name.
    public func module(named name: String) -> AdapterModule? {
        guard let i = index[name] else { return nil }
        return modules[i]
    }

    private let index: [String: Int]

    /// Analyses an adapter file.
    /// - Parameters:
    ///   - tensors: every tensor of the file.
    ///   - metadata: the `__metadata__` map, if any.
    ///   - alphaValue: reads the value of an `alpha` tensor (data access is the
    ///     caller's); nil leaves ``AdapterModule/alpha`` empty. A throw becomes a
    ///     ``ModuleIssue/Kind/badAlpha`` issue of that module.
    public init(
        tensors: [TensorInfo], metadata: [String: String]? = nil,
        alphaValue: ((TensorInfo) throws -> Double?)? = nil
    ) {
        tensorCount = tensors.count
        training = TrainingMetadata(metadata ?? [:])

        // 1. Group keys by module prefix.
        struct Group {
            var parts: [PartRole: TensorInfo] = [:]
            var spelling: LoRASpelling?
            var unknown: [String] = []
            var duplicates: [String] = []  // "down given twice (a and b)"
        }
        var groups: [String: Group] = [:]
        var unmatched: [TensorInfo] = []
        for t in tensors {
            if t.name.hasPrefix("bundle_emb.") {
                let parts = t.name.split(separator: ".", maxSplits: 2)
                let module = parts.count >= 2 ? "bundle_emb." + parts[1] : t.name
                groups[module, default: Group()].unknown.append(t.name)
                continue
            }
            guard let s = AdapterKeys.split(t.name) else { unmatched.append(t); continue }
            if let first = groups[s.module]?.parts[s.role] {
                // The same factor spelled twice (kohya and PEFT keys for one layer, say).
                groups[s.module]?.duplicates.append("\(s.role.rawValue) given twice (\(first.name) and \(t.name))")
            } else {
                groups[s.module, default: Group()].parts[s.role] = t
                if let sp = s.spelling, groups[s.module]?.spelling == nil { groups[s.module]?.spelling = sp }
            }
        }
        for t in unmatched {
            if t.name.hasSuffix(".weight") {
                let m = String(t.name.dropLast(".weight".count))
                if groups[m]?.parts[.onInput] != nil, groups[m]?.parts[.ia3Weight] == nil {
                    groups[m]?.parts[.ia3Weight] = t
                    continue
                }
            }
            let m = t.name.lastIndex(of: ".").map { String(t.name[..<$0]) } ?? t.name
            groups[m, default: Group()].unknown.append(t.name)
        }

        // 2. Classify each module.
        var modules: [AdapterModule] = groups.map { name, g in
            let a = ModuleNames.address(of: name, spelling: g.spelling)
            return AdapterModule(
                name: name, parts: g.parts, spelling: g.spelling, unknownKeys: g.unknown,
                duplicates: g.duplicates, component: a.component, scheme: a.scheme, pathKey: a.pathKey)
        }.sorted { $0.name < $1.name }

        if let alphaValue {
            for i in modules.indices {
                for role in [PartRole.alpha, .scale] {
                    guard let t = modules[i].parts[role], t.saturatedElementCount == 1, t.dtype != .BOOL else {
                        continue
                    }
                    do {
                        let v = try alphaValue(t)
                        if let v, !v.isFinite {
                            modules[i].issues.append(
                                ModuleIssue(kind: .badAlpha, message: "\(t.name) is \(v); expected a finite number"))
                        }
                        if role == .alpha { modules[i].alpha = v } else { modules[i].scaleValue = v }
                    } catch {
                        modules[i].issues.append(
                            ModuleIssue(kind: .badAlpha, message: "\(t.name) could not be read: \(error)"))
                    }
                }
            }
        }

        // 3. Base model and context width.
        let detection = Self.detectBase(modules: modules, training: training)
        baseModel = detection.0
        contextWidth = detection.1

        // 4. Decisions that need the base model: the diffusers `text_encoder.` is te1 on
        //    SDXL, and diffusers-block kohya names on SDXL are their own scheme.
        let isSDXL = baseModel.family == .sdxl || modules.contains { $0.component == .te2 }
        for i in modules.indices {
            let m = modules[i]
            if isSDXL, m.component == .te, m.scheme != .kohyaSD { modules[i].component = .te1 }
            if baseModel.family == .sdxl, m.scheme == .kohyaSD, m.component == .unet {
                modules[i].scheme = .kohyaDiffusersSDXL
            }
        }
        self.modules = modules
        index = Dictionary(modules.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })

        var schemes = Set(modules.map(\.scheme)).subtracting([.embedding])
        if schemes.contains(.kohyaDiffusersSDXL) { schemes.remove(.kohyaSDXL) }
        if schemes.count == 1, let only = schemes.first {
            scheme = only
        } else if schemes.isEmpty {
            scheme = modules.isEmpty ? .unknown : .embedding
        } else {
            scheme = .mixed
        }

        hasDoRA = modules.contains { $0.hasDoRA }
        hasTucker = modules.contains { $0.isTucker }
        var kinds = Set(modules.map(\.kind))
        if kinds.count > 1 { kinds.subtract([.embedding, .norm]) }
        if kinds.count > 1, kinds.contains(.unknown) { kinds.remove(.unknown) }
        switch (kinds.count, kinds.first) {
        case (0, _): kind = .unknown
        case (1, .lora?):
            kind = hasDoRA ? .dora : modules.contains { $0.kind == .lora && $0.layer.isSpatialConv } ? .locon : .lora
        case (1, .loha?): kind = .loha
        case (1, .lokr?): kind = .lokr
        case (1, .full?): kind = .full
        case (1, .norm?): kind = .norm
        case (1, .ia3?): kind = .ia3
        case (1, .glora?): kind = .glora
        case (1, .oft?): kind = .oft
        case (1, .boft?): kind = .boft
        case (1, .embedding?): kind = .embeddings
        case (1, _): kind = .unknown
        default: kind = .mixed
        }
    }

    /// Whether a tensor list looks like an adapter rather than a checkpoint: at
    /// least half of its keys carry an adapter suffix, or it uses kohya prefixes.
    public static func looksLikeAdapter(_ tensors: [TensorInfo]) -> Bool {
        guard !tensors.isEmpty else { return false }
        var hits = 0
        for t in tensors {
            if t.name.hasPrefix("lora_") || t.name.hasPrefix("lycoris_") || t.name.hasPrefix("oft_unet_")
                || t.name.hasPrefix("bundle_emb.")
            {
                hits += 1
            } else if let s = AdapterKeys.split(t.name), s.role != .alpha, s.role != .scale {
                hits += 1
            }
        }
        return hits * 2 >= tensors.count
    }

    static func tally<V: Sendable & Hashable & Comparable & Codable>(_ values: [V]) -> [ValueCount<V>] {
        values.reduce(into: [V: Int]()) { $0[$1, default: 0] += 1 }
            .map { ValueCount(value: $0.key, count: $0.value) }
            .sorted { $0.value < $1.value }
    }

    static func detectBase(modules: [AdapterModule], training: TrainingMetadata) -> (BaseModelDetection, Int?) {
        var votes: [(ModelFamily, Int, String)] = []

        // The input width of attn2.to_k is the context width of the UNet.
        let toK = modules.first {
            $0.component == .unet && $0.pathKey.hasSuffix("attn2_to_k") && $0.delta?.flatInFeatures != nil
        }
        let width = toK?.delta?.flatInFeatures
        if let toK, let width {
            if let f = ModelFamily(contextWidth: width) {
                votes.append((f, 4, "\(toK.name): attn2.to_k input width \(width) (\(f.displayName))"))
            } else {
                votes.append((.unknown, 0, "\(toK.name): attn2.to_k input width \(width) matches no known model"))
            }
        }
        let components = Set(modules.map(\.component))
        if components.contains(.te1) || components.contains(.te2) {
            let names = [Component.te1, .te2].filter(components.contains).map(\.rawValue).joined(separator: "/")
            votes.append((.sdxl, 2, "\(names) text-encoder modules (SDXL has two text encoders)"))
        }
        // The width of a single text encoder: 768 CLIP-L (SD1), 1024 OpenCLIP-H (SD2).
        // With a te2 present, a diffusers `text_encoder.` is SDXL's CLIP-L and says nothing.
        if components.contains(.te) && !components.contains(.te2) {
            let widths = modules.lazy.filter { $0.component == .te }.compactMap { m -> Int? in
                guard let flat = m.delta?.flatInFeatures else { return nil }
                if m.pathKey.hasSuffix("mlp_fc2") { return flat / 4 }
                let inputs = ["q_proj", "k_proj", "v_proj", "out_proj", "mlp_fc1"]
                return inputs.contains(where: m.pathKey.hasSuffix) ? flat : nil
            }
            switch widths.first {
            case 768?: votes.append((.sd1, 2, "single text encoder of width 768 (CLIP-L, SD 1.x)"))
            case 1024?: votes.append((.sd2, 2, "single text encoder of width 1024 (OpenCLIP-H, SD 2.x)"))
            default: votes.append((.unknown, 0, "single text encoder (lora_te_/text_encoder.): SD 1.x or SD 2.x"))
            }
        }
        let unetKeys = modules.filter { $0.component == .unet }.map(\.pathKey)
        if unetKeys.contains(where: { $0.hasPrefix("double_blocks_") || $0.hasPrefix("single_blocks_") }) {
            votes.append((.flux, 3, "double_blocks/single_blocks modules (Flux)"))
        }
        if unetKeys.contains(where: { $0.hasPrefix("joint_blocks_") }) {
            votes.append((.sd3, 3, "joint_blocks modules (SD3)"))
        }
        if unetKeys.contains(where: { $0.hasPrefix("label_emb_") || $0.hasPrefix("add_embedding_") }) {
            votes.append((.sdxl, 1, "label_emb/add_embedding modules (SDXL)"))
        }
        if let v = training.baseModelVersion, let f = ModelFamily(kohyaBaseModelVersion: v) {
            votes.append((f, 1, "ss_base_model_version = \(v)"))
        }
        if training.v2 == true { votes.append((.sd2, 1, "ss_v2 = True")) }
        if let a = training.modelspec["modelspec.architecture"], let f = ModelFamily(modelspecArchitecture: a) {
            votes.append((f, 1, "modelspec.architecture = \(a)"))
        }

        var score: [ModelFamily: Int] = [:]
        for (f, w, _) in votes where f != .unknown { score[f, default: 0] += w }
        let best = score.max { ($0.value, $1.key.rawValue) < ($1.value, $0.key.rawValue) }
        let tie = best.map { b in score.filter { $0.value == b.value }.count > 1 } ?? true
        let family = (tie ? nil : best?.key) ?? ModelFamily.unknown
        let evidence = votes.filter { $0.0 == family || $0.0 == .unknown }.map(\.2)
        let conflicts = votes.filter { $0.0 != family && $0.0 != .unknown }.map(\.2)
        return (BaseModelDetection(family: family, evidence: evidence, conflicts: conflicts), width)
    }
}
