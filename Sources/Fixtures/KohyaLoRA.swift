import SafeTensors

/// One module a kohya LoRA can train, tied to the checkpoint tensor it modifies.
public struct LoRATarget: Sendable, Equatable, CustomStringConvertible {
    /// The kohya module name, e.g. `lora_unet_middle_block_1_proj_in`
    /// (tensor names add `.lora_down.weight`, `.lora_up.weight`, `.alpha`).
    public let moduleName: String
    /// The checkpoint tensor the module's delta is added to.
    public let targetKey: String
    /// For TE2 q/k/v: the rows of the fused `in_proj_weight` the delta covers.
    public let rows: Range<Int>?
    /// Output features (rows of the delta).
    public let outFeatures: Int
    /// Input features (columns, or input channels of a conv).
    public let inFeatures: Int
    /// `[]` for a Linear layer, `[kh, kw]` for a Conv2d.
    public let kernel: [Int]

    public init(
        moduleName: String, targetKey: String, rows: Range<Int>? = nil,
        outFeatures: Int, inFeatures: Int, kernel: [Int]
    ) {
        self.moduleName = moduleName
        self.targetKey = targetKey
        self.rows = rows
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.kernel = kernel
    }

    /// A conv with a kernel larger than 1×1: trained with the conv rank (LoCon).
    public var isSpatialConv: Bool { !kernel.isEmpty && kernel != [1, 1] }

    public var description: String {
        let rowText = rows.map { " rows \($0.lowerBound)..<\($0.upperBound)" } ?? ""
        return "\(moduleName) -> \(targetKey)\(rowText)"
    }
}

/// Options of a synthetic kohya LoRA (`networks.lora`).
public struct KohyaLoRAOptions: Sendable, Equatable {
    /// `network_dim`: rank of Linear and 1×1 conv modules.
    public var rank: Int
    /// `network_alpha`.
    public var alpha: Float
    /// `conv_dim`: when set, the LoCon conv modules (ResBlocks, down/upsamplers) are
    /// included and k×k convs get this rank; 1×1 convs and Linears inside them keep `rank`.
    public var convRank: Int?
    /// `conv_alpha` (kohya's default is 1).
    public var convAlpha: Float
    public var includeUNet: Bool
    public var includeTextEncoders: Bool
    public var dtype: DType
    /// Spread of `lora_up` values (trained LoRAs are of this order).
    public var upStd: Float
    /// Spread of `lora_down` values.
    public var downStd: Float

    public init(
        rank: Int = 16, alpha: Float = 8, convRank: Int? = nil, convAlpha: Float = 1,
        includeUNet: Bool = true, includeTextEncoders: Bool = true, dtype: DType = .F16,
        upStd: Float = 0.015, downStd: Float = 0.05
    ) {
        self.rank = rank
        self.alpha = alpha
        self.convRank = convRank
        self.convAlpha = convAlpha
        self.includeUNet = includeUNet
        self.includeTextEncoders = includeTextEncoders
        self.dtype = dtype
        self.upStd = upStd
        self.downStd = downStd
    }
}

/// Synthetic LoRA files in kohya-ss/sd-scripts' format, derived from a checkpoint
/// enumeration so that every module matches a real tensor of that checkpoint.
///
/// SDXL names follow the SGM paths (`lora_unet_input_blocks_4_1_…`, `lora_te1_…`,
/// `lora_te2_…` with TE2 q/k/v on row thirds of `in_proj_weight`); SD 1.x names follow
/// diffusers paths (`lora_unet_down_blocks_0_attentions_0_…`, `lora_te_…`).
public enum KohyaLoRA {
    public enum Base: Sendable {
        case sdxl, sd1
    }

    // MARK: Targets

    /// The trainable modules of an SDXL checkpoint (`SDXLArchitecture` naming).
    /// - Parameter includeConv: add the LoCon conv-class modules (ResBlock
    ///   `in_layers_2`/`out_layers_3`/`emb_layers_1`/`skip_connection`, `input_blocks_{3,6}_0_op`,
    ///   `output_blocks_{2,5}_2_conv`).
    public static func sdxlTargets(
        checkpoint: [SyntheticTensor], includeConv: Bool,
        includeUNet: Bool = true, includeTextEncoders: Bool = true
    ) -> [LoRATarget] {
        var out: [LoRATarget] = []
        let te2Layer = SDXLArchitecture.te2Prefix + "transformer.resblocks."
        for t in checkpoint {
            if includeUNet, let path = unetPath(t.name, prefix: SDXLArchitecture.unetPrefix),
                isUNetTarget(path, includeConv: includeConv)
            {
                out.append(target("lora_unet_" + underscored(path), t))
            } else if includeTextEncoders, let rest = strip(t.name, SDXLArchitecture.te1Prefix, ".weight"),
                isCLIPTarget(rest)
            {
                out.append(target("lora_te1_" + underscored(rest), t))
            } else if includeTextEncoders, let rest = strip(t.name, te2Layer, "") {
                // rest: "N.attn.in_proj_weight", "N.mlp.c_fc.weight", …
                guard let dot = rest.firstIndex(of: ".") else { continue }
                let layer = rest[..<dot], tail = rest[rest.index(after: dot)...]
                let module = "lora_te2_text_model_encoder_layers_\(layer)_"
                switch tail {
                case "attn.in_proj_weight":
                    let w = t.shape[0] / 3
                    for (i, proj) in ["q", "k", "v"].enumerated() {
                        out.append(
                            LoRATarget(
                                moduleName: module + "self_attn_\(proj)_proj", targetKey: t.name,
                                rows: i * w..<(i + 1) * w, outFeatures: w, inFeatures: t.shape[1], kernel: []))
                    }
                case "attn.out_proj.weight": out.append(target(module + "self_attn_out_proj", t))
                case "mlp.c_fc.weight": out.append(target(module + "mlp_fc1", t))
                case "mlp.c_proj.weight": out.append(target(module + "mlp_fc2", t))
                default: break
                }
            }
        }
        return out.sorted { $0.moduleName.utf8.lexicographicallyPrecedes($1.moduleName.utf8) }
    }

    /// The trainable modules of an SD 1.x checkpoint (`SD15Architecture` naming), with
    /// kohya's diffusers-style module names.
    public static func sd1Targets(
        checkpoint: [SyntheticTensor], includeConv: Bool,
        includeUNet: Bool = true, includeTextEncoders: Bool = true
    ) -> [LoRATarget] {
        var out: [LoRATarget] = []
        for t in checkpoint {
            if includeUNet, let path = unetPath(t.name, prefix: SD15Architecture.unetPrefix),
                isUNetTarget(path, includeConv: includeConv), let diffusers = diffusersPath(ldm: path)
            {
                out.append(target("lora_unet_" + underscored(diffusers), t))
            } else if includeTextEncoders, let rest = strip(t.name, SD15Architecture.tePrefix, ".weight"),
                isCLIPTarget(rest)
            {
                out.append(target("lora_te_" + underscored(rest), t))
            }
        }
        return out.sorted { $0.moduleName.utf8.lexicographicallyPrecedes($1.moduleName.utf8) }
    }

    // MARK: Tensors

    /// `.alpha` [], `.lora_down.weight` [r, in] (conv: [r, in, kh, kw]) and
    /// `.lora_up.weight` [out, r] (conv: [out, r, 1, 1]) for each target, sorted by name.
    public static func tensors(for targets: [LoRATarget], options o: KohyaLoRAOptions) -> [SyntheticTensor] {
        var out: [SyntheticTensor] = []
        out.reserveCapacity(targets.count * 3)
        for m in targets {
            let spatial = m.isSpatialConv
            let rank = spatial ? (o.convRank ?? o.rank) : o.rank
            let alpha = spatial ? o.convAlpha : o.alpha
            let isConv = !m.kernel.isEmpty
            out.append(
                SyntheticTensor(name: m.moduleName + ".alpha", dtype: o.dtype, shape: [], fill: .constant(alpha)))
            out.append(
                SyntheticTensor(
                    name: m.moduleName + ".lora_down.weight", dtype: o.dtype,
                    shape: [rank, m.inFeatures] + m.kernel, fill: .normal(std: o.downStd)))
            out.append(
                SyntheticTensor(
                    name: m.moduleName + ".lora_up.weight", dtype: o.dtype,
                    shape: [m.outFeatures, rank] + (isConv ? [1, 1] : []), fill: .normal(std: o.upStd)))
        }
        return out.sortedByName()
    }

    /// A kohya SDXL LoRA (or LoCon, when `options.convRank` is set) for the checkpoint.
    public static func sdxl(checkpoint: [SyntheticTensor], options: KohyaLoRAOptions) -> [SyntheticTensor] {
        tensors(
            for: sdxlTargets(
                checkpoint: checkpoint, includeConv: options.convRank != nil,
                includeUNet: options.includeUNet, includeTextEncoders: options.includeTextEncoders),
            options: options)
    }

    /// A kohya SD 1.x LoRA (or LoCon) for the checkpoint.
    public static func sd1(checkpoint: [SyntheticTensor], options: KohyaLoRAOptions) -> [SyntheticTensor] {
        tensors(
            for: sd1Targets(
                checkpoint: checkpoint, includeConv: options.convRank != nil,
                includeUNet: options.includeUNet, includeTextEncoders: options.includeTextEncoders),
            options: options)
    }

    // MARK: Metadata

    /// Training metadata as `sdxl_train_network.py` / `train_network.py` write it (all
    /// values strings, Python spellings): `ss_network_*`, `ss_base_model_version`, `ss_v2`,
    /// `modelspec.*`, a short `ss_tag_frequency` and a few counters. No `sshs_*` hashes.
    public static func metadata(
        _ base: Base, options o: KohyaLoRAOptions, title: String,
        comment: String = "None"
    ) -> [String: String] {
        var m: [String: String] = [
            "ss_network_module": "networks.lora",
            "ss_network_dim": String(o.rank),
            "ss_network_alpha": pythonFloat(o.alpha),
            "ss_v2": "False",
            "ss_output_name": title,
            "ss_training_comment": comment,
            "ss_network_train_unet_only": o.includeTextEncoders ? "False" : "True",
            "ss_network_train_text_encoder_only": o.includeUNet ? "False" : "True",
            "ss_num_train_images": "40",
            "ss_num_epochs": "10",
            "ss_epoch": "10",
            "ss_steps": "2000",
            "ss_max_train_steps": "2000",
            "ss_learning_rate": "0.0001",
            "ss_seed": "42",
            "ss_mixed_precision": "fp16",
            "ss_tag_frequency":
                #"{"10_graftcat": {"graftcat": 40, "cat": 31, "outdoors": 12, "looking at viewer": 9}}"#,
            "ss_training_started_at": "1717200000.0",
            "ss_training_finished_at": "1717203600.0",
            "modelspec.sai_model_spec": "1.0.1",
            "modelspec.title": title,
            "modelspec.date": "2024-06-01T00:00:00",
            "modelspec.prediction_type": "epsilon",
            "modelspec.implementation_version": "sd-scripts/unknown",
        ]
        if let conv = o.convRank {
            m["ss_network_args"] = #"{"conv_dim": "\#(conv)", "conv_alpha": "\#(pythonFloat(o.convAlpha))"}"#
        }
        switch base {
        case .sdxl:
            m["ss_base_model_version"] = "sdxl_base_v1-0"
            m["ss_resolution"] = "(1024, 1024)"
            m["modelspec.architecture"] = "stable-diffusion-xl-v1-base/lora"
            m["modelspec.implementation"] = "https://github.com/Stability-AI/generative-models"
            m["modelspec.resolution"] = "1024x1024"
        case .sd1:
            m["ss_base_model_version"] = "sd_v1"
            m["ss_resolution"] = "(512, 512)"
            m["modelspec.architecture"] = "stable-diffusion-v1/lora"
            m["modelspec.implementation"] = "diffusers"
            m["modelspec.resolution"] = "512x512"
        }
        return m
    }

    /// Python's `str(float)` for the values used here: `8.0`, `0.5`, `1e-05`.
    static func pythonFloat(_ v: Float) -> String {
        let s = v.description
        return s.contains(".") || s.contains("e") ? s : s + ".0"
    }

    // MARK: Name helpers

    private static let transformerTails: Set<String> = [
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
        "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
        "ff.net.0.proj", "ff.net.2",
    ]
    private static let clipTails: Set<String> = [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2",
    ]
    private static let resBlockTails = ["in_layers.2", "out_layers.3", "emb_layers.1", "skip_connection"]

    /// The UNet module path of a `.weight` key, e.g. `input_blocks.4.1.proj_in`.
    private static func unetPath(_ name: String, prefix: String) -> String? {
        strip(name, prefix, ".weight")
    }

    private static func strip(_ name: String, _ prefix: String, _ suffix: String) -> String? {
        guard name.hasPrefix(prefix), name.hasSuffix(suffix) else { return nil }
        return String(name.dropFirst(prefix.count).dropLast(suffix.count))
    }

    /// Whether a UNet module path is one sd-scripts targets: the Linear/1×1 layers of a
    /// Transformer2D, and with `includeConv` those of ResBlocks, Downsample and Upsample.
    private static func isUNetTarget(_ path: String, includeConv: Bool) -> Bool {
        let parts = path.split(separator: ".")
        if path.hasSuffix(".proj_in") || path.hasSuffix(".proj_out") { return true }
        if let i = parts.firstIndex(of: "transformer_blocks"), i + 2 < parts.count {
            return transformerTails.contains(parts[(i + 2)...].joined(separator: "."))
        }
        guard includeConv, parts.first != "time_embed", parts.first != "label_emb" else { return false }
        if resBlockTails.contains(where: { path.hasSuffix("." + $0) }) { return true }
        if parts.count == 4, parts[0] == "input_blocks", parts[2] == "0", parts[3] == "op" { return true }
        if parts.count == 4, parts[0] == "output_blocks", parts[3] == "conv" { return true }
        return false
    }

    /// `text_model.encoder.layers.N.<tail>` with a trainable tail.
    private static func isCLIPTarget(_ rest: String) -> Bool {
        let prefix = "text_model.encoder.layers."
        guard rest.hasPrefix(prefix), let dot = rest.dropFirst(prefix.count).firstIndex(of: ".") else { return false }
        return clipTails.contains(String(rest[rest.index(after: dot)...]))
    }

    private static func target(_ module: String, _ t: SyntheticTensor) -> LoRATarget {
        LoRATarget(
            moduleName: module, targetKey: t.name, outFeatures: t.shape[0], inFeatures: t.shape[1],
            kernel: Array(t.shape.dropFirst(2)))
    }

    static func underscored(_ s: String) -> String {
        String(s.map { $0 == "." ? "_" : $0 })
    }

    /// The diffusers module path of an SD 1.x LDM UNet path (the inverse of
    /// sd-scripts' conversion), or nil for paths diffusers names differently.
    static func diffusersPath(ldm path: String) -> String? {
        let p = path.split(separator: ".").map(String.init)
        guard p.count >= 3, let n = Int(p[1]) else { return nil }
        let rest = p[3...].joined(separator: ".")
        func resnet(_ base: String) -> String? {
            let map = [
                "in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
                "skip_connection": "conv_shortcut",
            ]
            return map[rest].map { base + "." + $0 }
        }
        let block = p[2]
        switch p[0] {
        case "input_blocks" where n >= 1:
            let i = (n - 1) / 3, j = (n - 1) % 3
            if j == 2 { return block == "0" && rest == "op" ? "down_blocks.\(i).downsamplers.0.conv" : nil }
            if block == "0" { return resnet("down_blocks.\(i).resnets.\(j)") }
            return block == "1" && !rest.isEmpty ? "down_blocks.\(i).attentions.\(j).\(rest)" : nil
        case "middle_block":
            let inner = p[2...].joined(separator: ".")
            switch n {
            case 0, 2:
                let map = ["in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj"]
                return map[inner].map { "mid_block.resnets.\(n / 2).\($0)" }
            case 1: return "mid_block.attentions.0." + inner
            default: return nil
            }
        case "output_blocks":
            let i = n / 3, j = n % 3
            if p.count == 4 && p[3] == "conv" && block != "0" { return "up_blocks.\(i).upsamplers.0.conv" }
            if block == "0" { return resnet("up_blocks.\(i).resnets.\(j)") }
            return block == "1" ? "up_blocks.\(i).attentions.\(j).\(rest)" : nil
        default:
            return nil
        }
    }
}
