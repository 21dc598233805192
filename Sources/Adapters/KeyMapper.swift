import SafeTensors

/// Where one adapter module lands in a checkpoint.
public struct MappedTarget: Sendable, Equatable {
    /// The checkpoint tensor (`model.diffusion_model.input_blocks.4.1.…to_q.weight`).
    public let tensorName: String
    /// That tensor's full shape.
    public let tensorShape: [Int]
    /// The rows of the tensor the module owns, for the q/k/v thirds of a fused
    /// OpenCLIP `attn.in_proj_weight` (SDXL text encoder 2, SD2 text encoder); nil for the whole tensor.
    public let rows: Range<Int>?
    /// The shape the module's delta must fill: the row slice's shape, or the whole tensor's.
    public let shape: [Int]
    /// Whether the delta must be transposed first (OpenCLIP `text_projection`,
    /// stored as `x @ P`, targeted by `lora_te2_text_projection`).
    public let transposed: Bool
    /// The layer's bias (`….bias`, or the same row third of `in_proj_bias`), when the
    /// checkpoint has one of matching length.
    public let bias: BiasTarget?

    public init(
        tensorName: String, tensorShape: [Int], rows: Range<Int>?, shape: [Int], transposed: Bool,
        bias: BiasTarget? = nil
    ) {
        self.tensorName = tensorName
        self.tensorShape = tensorShape
        self.rows = rows
        self.shape = shape
        self.transposed = transposed
        self.bias = bias
    }

    /// The layer type of the target (`linear`, `conv1x1`, `conv3x3`).
    public var layer: LayerType { LayerType(weightShape: shape) }
}

/// The 1-D bias tensor of a mapped layer.
public struct BiasTarget: Sendable, Equatable {
    /// The checkpoint tensor (`….bias`, `….in_proj_bias`).
    public let tensorName: String
    /// Its length.
    public let length: Int
    /// The rows the layer owns (the q/k/v third of a fused `in_proj_bias`), nil for all.
    public let rows: Range<Int>?
}

/// Why a module (or a whole adapter) cannot be applied to a checkpoint.
public struct MappingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The closed set of reasons.
    public enum Kind: String, Sendable, Codable {
        /// The adapter was made for another model family.
        case wrongBaseModel = "wrong_base_model"
        /// The checkpoint has no component the module targets (e.g. `lora_te_` on SDXL).
        case missingComponent = "missing_component"
        /// No checkpoint tensor has the module's path.
        case noSuchTensor = "no_such_tensor"
        /// The tensor exists but its shape cannot take the module's delta.
        case shapeMismatch = "shape_mismatch"
        /// Embeddings and unrecognised modules have no weight target.
        case unsupportedModule = "unsupported_module"
    }
    /// The reason.
    public let kind: Kind
    /// The module concerned, when the error is about one module.
    public let module: String?
    /// One lowercase sentence; names both shapes for a mismatch.
    public let message: String

    public init(kind: Kind, module: String?, message: String) {
        self.kind = kind
        self.module = module
        self.message = message
    }

    public var description: String { module.map { "\($0): \(message)" } ?? message }
}

/// What kohya-ss/sd-scripts' own merge (`sdxl_merge_lora.py` / `merge_lora.py`)
/// would have done with a module graft resolves.
public enum SDScriptsTreatment: String, Sendable, Codable {
    /// Merged the same way.
    case merges
    /// Merged, but ignoring a Tucker `lora_mid` or a DoRA `dora_scale` (a different result).
    case partial
    /// Skipped with "no module found": a naming scheme it does not read, or a
    /// module outside its fixed target set (time_embed, conv_in, norms, text_projection…).
    case skipsName = "skips_name"
    /// Skipped: not a `lora_down` module (LoHa, LoKr, full, …).
    case ignoresFormat = "ignores_format"
    /// The checkpoint is not one it loads (refiner, inpaint, Flux, SD3…).
    case unsupportedCheckpoint = "unsupported_checkpoint"
}

/// The result of mapping one module.
public struct ModuleMapping: Sendable {
    /// The adapter module's name.
    public let module: String
    /// The component it targets.
    public let component: Component
    /// The target, or why there is none.
    public let result: Result<MappedTarget, MappingError>
    /// What sd-scripts would have done; nil when graft cannot map the module either.
    public let sdScripts: SDScriptsTreatment?

    /// The target when resolved.
    public var target: MappedTarget? { try? result.get() }
    /// The error when not resolved.
    public var error: MappingError? {
        if case let .failure(e) = result { return e }
        return nil
    }
}

/// How well an adapter fits a checkpoint before any tensor work.
public struct Compatibility: Sendable, Equatable {
    /// False only when the families are known and differ.
    public let isCompatible: Bool
    /// The adapter's detected family.
    public let adapterFamily: ModelFamily
    /// The checkpoint's family.
    public let checkpointFamily: ModelFamily
    /// Why it is incompatible, or a note when a family is unknown.
    public let message: String?
}

/// A mapping plan for one adapter against one checkpoint.
public struct MappingPlan: Sendable {
    /// One entry per adapter module, in module order.
    public let mappings: [ModuleMapping]
    /// The resolved mappings.
    public var resolved: [ModuleMapping] { mappings.filter { $0.target != nil } }
    /// The modules that cannot be placed.
    public var unresolved: [ModuleMapping] { mappings.filter { $0.target == nil } }
    /// Resolved modules sd-scripts would not have merged the same way.
    public var differingFromSDScripts: [ModuleMapping] {
        mappings.filter { $0.target != nil && $0.sdScripts != .merges }
    }
    /// Groups of modules that land on the same tensor rows (for example the same
    /// layer spelled with SGM and with diffusers names in one file).
    public var overlaps: [[String]] {
        var byTarget: [String: [String]] = [:]
        for m in mappings {
            guard let t = m.target else { continue }
            let key = t.tensorName + (t.rows.map { "[\($0.lowerBound)..<\($0.upperBound)]" } ?? "")
            byTarget[key, default: []].append(m.module)
        }
        return byTarget.values.filter { $0.count > 1 }.map { $0.sorted() }.sorted { $0[0] < $1[0] }
    }
}

/// Resolves adapter module names to checkpoint tensors.
///
/// Built once per checkpoint as a reverse index from the checkpoint's own keys:
/// every weight is registered under its component and its path with dots replaced
/// by underscores (the kohya spelling), plus the diffusers spelling of SD/SDXL UNet
/// blocks and the Hugging Face CLIP spelling of OpenCLIP text-encoder weights
/// (q/k/v as row thirds of `in_proj_weight`). Module names are never re-dotted.
public struct KeyMapper: Sendable {
    struct Entry: Sendable {
        let tensorName: String
        let tensorShape: [Int]
        let rows: Range<Int>?
        let transposed: Bool
        /// In sd-scripts' fixed set of targetable modules (docs §3.1).
        let sdScriptsTargetable: Bool
        var bias: BiasTarget? = nil
    }

    /// The checkpoint's analysis.
    public let checkpoint: CheckpointAnalysis
    private var index: [String: Entry] = [:]
    private var byName: [String: TensorInfo] = [:]
    private var componentsIndexed: Set<Component> = []

    /// Number of names in the reverse index (all spellings).
    public var indexCount: Int { index.count }

    /// Builds the reverse index of a checkpoint.
    /// - Parameters:
    ///   - tensors: every tensor of the checkpoint.
    ///   - metadata: its metadata (only a hint for the architecture).
    public init(tensors: [TensorInfo], metadata: [String: String]? = nil) {
        checkpoint = CheckpointAnalysis(tensors: tensors, metadata: metadata)
        let prefixes = checkpoint.components.filter { $0.component != .other && $0.component != .vae }
        // Longest prefix first so `diffusion_model.` never shadows `model.diffusion_model.`.
        let ordered = prefixes.sorted { $0.prefix.count > $1.prefix.count }
        var byName: [String: TensorInfo] = [:]
        for t in tensors { byName[t.name] = t }
        self.byName = byName
        var lastOpenCLIPLayer: [String: Int] = [:]
        for t in tensors {
            guard let p = ordered.first(where: { t.name.hasPrefix($0.prefix) }), p.prefix == "cond_stage_model.model."
            else { continue }
            let c = t.name.dropFirst(p.prefix.count).split(separator: ".")
            if c.count > 2, c[0] == "transformer", c[1] == "resblocks", let n = Int(c[2]) {
                lastOpenCLIPLayer[p.prefix] = max(lastOpenCLIPLayer[p.prefix] ?? 0, n)
            }
        }
        for t in tensors {
            guard let p = ordered.first(where: { t.name.hasPrefix($0.prefix) }) else { continue }
            let rest = String(t.name.dropFirst(p.prefix.count))
            if p.component == .unet {
                registerUNet(t, path: rest)
            } else {
                registerTextEncoder(t, component: p.component, rest: rest, sd2LastLayer: lastOpenCLIPLayer[p.prefix])
            }
        }
    }

    private static func key(_ c: Component, _ path: String) -> String { c.rawValue + "|" + path }

    private mutating func register(_ c: Component, _ path: String, _ e: Entry) {
        componentsIndexed.insert(c)
        let k = Self.key(c, path)
        if index[k] == nil {
            var e = e
            e.bias = biasTarget(of: e)
            index[k] = e
        }
    }

    /// The bias of a weight entry: `x.weight` → `x.bias`, `in_proj_weight` → `in_proj_bias`
    /// (same rows), when it exists as a 1-D tensor as long as the weight has rows.
    private func biasTarget(of e: Entry) -> BiasTarget? {
        guard !e.transposed, let rows = e.tensorShape.first else { return nil }
        let name: String
        if e.tensorName.hasSuffix(".weight") {
            name = String(e.tensorName.dropLast("weight".count)) + "bias"
        } else if e.tensorName.hasSuffix("_weight") {
            name = String(e.tensorName.dropLast("weight".count)) + "bias"
        } else {
            return nil
        }
        guard let b = byName[name], b.shape.count == 1, b.dims[0] == rows, b.dtype.isFloatingPoint else { return nil }
        return BiasTarget(tensorName: name, length: rows, rows: e.rows)
    }

    private mutating func registerUNet(_ t: TensorInfo, path: String) {
        guard path.hasSuffix(".weight") else { return }
        let dotted = String(path.dropLast(".weight".count))
        let parts = dotted.split(separator: ".", omittingEmptySubsequences: false)
        let e = Entry(
            tensorName: t.name, tensorShape: t.dims, rows: nil, transposed: false,
            sdScriptsTargetable: UNetBlocks.isSDScriptsTarget(parts))
        register(.unet, underscored(dotted), e)
        if let alias = UNetBlocks.diffusersPath(ofSGM: parts) {
            register(.unet, underscored(alias), e)
        }
    }

    private mutating func registerTextEncoder(_ t: TensorInfo, component: Component, rest: String, sd2LastLayer: Int?) {
        var rest = Substring(rest)
        if rest.hasPrefix("transformer.text_model.") || rest.hasPrefix("transformer.encoder.") {
            rest = rest.dropFirst("transformer.".count)
        }
        let dims = t.dims
        func entry(rows: Range<Int>? = nil, transposed: Bool = false, targetable: Bool) -> Entry {
            Entry(
                tensorName: t.name, tensorShape: dims, rows: rows, transposed: transposed,
                sdScriptsTargetable: targetable)
        }
        // Hugging Face CLIP layout (SD1, SDXL te1, SD3/Flux clip_l/clip_g).
        if rest.hasPrefix("text_model.") || rest.hasPrefix("encoder.") {
            guard rest.hasSuffix(".weight") else { return }
            var dotted = String(rest.dropLast(".weight".count))
            if dotted.hasPrefix("encoder.") { dotted = "text_model." + dotted }
            let c = dotted.split(separator: ".")
            let targetable =
                c.count == 6 && c[0] == "text_model" && c[1] == "encoder" && c[2] == "layers"
                && ((c[4] == "self_attn" && ["q_proj", "k_proj", "v_proj", "out_proj"].contains(c[5]))
                    || (c[4] == "mlp" && (c[5] == "fc1" || c[5] == "fc2")))
            register(component, underscored(dotted), entry(targetable: targetable))
            return
        }
        // OpenCLIP layout (SD2, SDXL te2, refiner): HF spellings as aliases.
        let c = rest.split(separator: ".", omittingEmptySubsequences: false)
        if c.count >= 4, c[0] == "transformer", c[1] == "resblocks", let n = Int(c[2]) {
            let hf = "text_model_encoder_layers_\(n)_"
            let tail = c[3...].joined(separator: ".")
            let targetable = n != sd2LastLayer
            switch tail {
            case "attn.in_proj_weight":
                if dims.count == 2, dims[0] % 3 == 0 {
                    let third = dims[0] / 3
                    for (j, name) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                        register(
                            component, hf + "self_attn_" + name,
                            entry(rows: j * third..<(j + 1) * third, targetable: targetable))
                    }
                }
            case "attn.out_proj.weight": register(component, hf + "self_attn_out_proj", entry(targetable: targetable))
            case "mlp.c_fc.weight": register(component, hf + "mlp_fc1", entry(targetable: targetable))
            case "mlp.c_proj.weight": register(component, hf + "mlp_fc2", entry(targetable: targetable))
            case "ln_1.weight": register(component, hf + "layer_norm1", entry(targetable: false))
            case "ln_2.weight": register(component, hf + "layer_norm2", entry(targetable: false))
            default: break
            }
        } else if rest == "text_projection" {
            register(component, "text_projection", entry(transposed: true, targetable: false))
        } else if rest == "ln_final.weight" {
            register(component, "text_model_final_layer_norm", entry(targetable: false))
        } else if rest == "token_embedding.weight" {
            register(component, "text_model_embeddings_token_embedding", entry(targetable: false))
        }
        // Identity spelling of every weight, for names that follow the file's own layout.
        if rest.hasSuffix(".weight") {
            register(component, underscored(rest.dropLast(".weight".count)), entry(targetable: false))
        } else if !rest.contains(".") || rest.hasSuffix("_weight") {
            register(component, underscored(rest), entry(targetable: false))
        }
    }

    /// Whether an adapter made for `adapter`'s detected family can apply here.
    public func compatibility(with adapter: AdapterAnalysis) -> Compatibility {
        let a = adapter.baseModel.family
        let c = checkpoint.family
        if a == .unknown || c == .unknown {
            let note =
                a == .unknown
                ? "the adapter's base model is unknown; modules are checked one by one"
                : "the checkpoint's architecture is unknown; modules are checked one by one"
            return Compatibility(isCompatible: true, adapterFamily: a, checkpointFamily: c, message: note)
        }
        if a == c { return Compatibility(isCompatible: true, adapterFamily: a, checkpointFamily: c, message: nil) }
        let why = adapter.baseModel.evidence.prefix(3).joined(separator: "; ")
        return Compatibility(
            isCompatible: false, adapterFamily: a, checkpointFamily: c,
            message:
                "the adapter is for \(a.displayName) (\(why)) but the checkpoint is \(checkpoint.architecture.displayName)"
        )
    }

    /// Throws when the adapter is for another model family (an SD1 LoRA on SDXL…).
    /// - Throws: ``MappingError`` of kind ``MappingError/Kind/wrongBaseModel``.
    public func checkCompatible(_ adapter: AdapterAnalysis) throws(MappingError) {
        let c = compatibility(with: adapter)
        if !c.isCompatible {
            throw MappingError(
                kind: .wrongBaseModel, module: nil, message: c.message ?? "the adapter is for another base model")
        }
    }

    /// Resolves one module.
    /// - Parameters:
    ///   - module: the adapter module.
    ///   - adapterFamily: the adapter's detected family; when known and different
    ///     from the checkpoint's, the module fails with ``MappingError/Kind/wrongBaseModel``.
    public func resolve(_ module: AdapterModule, adapterFamily: ModelFamily = .unknown) -> Result<
        MappedTarget, MappingError
    > {
        func fail(_ k: MappingError.Kind, _ m: String) -> Result<MappedTarget, MappingError> {
            .failure(MappingError(kind: k, module: module.name, message: m))
        }
        if adapterFamily != .unknown, checkpoint.family != .unknown, adapterFamily != checkpoint.family {
            return fail(
                .wrongBaseModel,
                "the adapter is for \(adapterFamily.displayName), the checkpoint is \(checkpoint.architecture.displayName)"
            )
        }
        if module.kind == .embedding || module.component == .embedding {
            return fail(.unsupportedModule, "bundled embeddings have no weight target")
        }
        if module.kind == .unknown {
            return fail(.unsupportedModule, "the module's keys are not a known adapter format")
        }
        guard componentsIndexed.contains(module.component) else {
            let have = componentsIndexed.sorted().map(\.rawValue).joined(separator: ", ")
            return fail(
                .missingComponent,
                "the checkpoint has no \(module.component.rawValue) component (it has \(have.isEmpty ? "none" : have)); the adapter is probably for another base model"
            )
        }
        guard let e = index[Self.key(module.component, module.pathKey)] else {
            return fail(
                .noSuchTensor, "no \(module.component.rawValue) tensor of the checkpoint has the path \(module.pathKey)"
            )
        }
        var shape = e.tensorShape
        if let rows = e.rows { shape[0] = rows.count }
        let target = MappedTarget(
            tensorName: e.tensorName, tensorShape: e.tensorShape, rows: e.rows, shape: shape,
            transposed: e.transposed, bias: e.bias)
        let checked = e.transposed ? Array(shape.reversed()) : shape
        if !Self.fits(module, checked) {
            let slice = e.rows.map { " rows \($0.lowerBound)..<\($0.upperBound) (\(shapeText(shape)))" } ?? ""
            let have = module.delta?.description ?? "?"
            return fail(
                .shapeMismatch, "adapter delta \(have) does not fit \(e.tensorName) \(shapeText(e.tensorShape))\(slice)"
            )
        }
        return .success(target)
    }

    static func fits(_ module: AdapterModule, _ shape: [Int]) -> Bool {
        switch module.kind {
        case .ia3:
            guard let w = module.parts[.ia3Weight], shape.count >= 2 else { return false }
            // One value per output row, or (on_input) per input channel at every kernel tap.
            let n = w.saturatedElementCount
            return n == shape[0] || n == shape[1]
        default:
            guard let d = module.delta else { return true }  // nothing to check against
            return d.fits(shape)
        }
    }

    /// What sd-scripts would have done with a module that resolves to `target`.
    public func sdScriptsTreatment(of module: AdapterModule, target: MappedTarget) -> SDScriptsTreatment {
        let expected: NamingScheme
        switch checkpoint.architecture {
        case .sdxlBase: expected = .kohyaSDXL
        case .sd1, .sd2: expected = .kohyaSD
        default: return .unsupportedCheckpoint
        }
        let ownOFT = module.kind == .oft && checkpoint.architecture == .sdxlBase
        guard module.kind == .lora || ownOFT else { return .ignoresFormat }
        guard module.scheme == expected, module.loraSpelling == .kohya || ownOFT else { return .skipsName }
        guard let e = index[Self.key(module.component, module.pathKey)], e.sdScriptsTargetable else {
            return .skipsName
        }
        return module.isTucker || module.hasDoRA ? .partial : .merges
    }

    /// Maps every module of an adapter.
    public func plan(_ adapter: AdapterAnalysis) -> MappingPlan {
        let family = adapter.baseModel.family
        return MappingPlan(
            mappings: adapter.modules.map { m in
                let r = resolve(m, adapterFamily: family)
                let treatment: SDScriptsTreatment? = (try? r.get()).map { sdScriptsTreatment(of: m, target: $0) }
                return ModuleMapping(module: m.name, component: m.component, result: r, sdScripts: treatment)
            })
    }
}
