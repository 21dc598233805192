import Fixtures
import SafeTensors

/// Reads a fuzz input as a sequence of choices; past the end every read is 0.
public struct ChoiceReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func u16() -> Int { Int(byte()) << 8 | Int(byte()) }

    public mutating func pick<T>(_ choices: [T]) -> T { choices[Int(byte()) % choices.count] }

    public mutating func bytes(_ n: Int) -> [UInt8] { (0 ..< n).map { _ in byte() } }
}

/// The structure-aware adapter target: the input is not a file but a recipe for one.
/// Every input decodes to a *valid* safetensors file (so it always gets past the
/// header parser) whose adapter keys are well-formed templates (kohya LoRA, LoCon,
/// Tucker, PEFT, DoRA, LoHa, LoKr in its four factorisations, OFT, full diff, IA3,
/// GLoRA, norms) on real SDXL module names, then mutated: dimensions set to
/// 0 / 2^31 / 2^62 / 2^64-1…, factors made 0-D…6-D, odd dtypes, parts dropped,
/// duplicated in another spelling or moved to another module, alpha values raw bytes.
///
/// Layout of the recipe (a zero byte always means "the plain choice", so short seeds
/// describe clean files):
///   [flags] [moduleCount-1] then per module: [name hi] [name lo] [template] [rank]
///   [variant: templates with layouts / optional parts read one or two bytes here]
///   [mutation count] (per mutation: [op] [part] [dim] [value]) [alpha: 8 bytes]
/// then the metadata choices of `flags` & 0x0F, and with `flags` & 0x40 an 8-byte data
/// pattern for the factors (else they are zeros).
public enum StructuredAdapter {
    public enum Template: Int, CaseIterable, Sendable {
        case lora, loraConvTucker, peft, dora, loha, lohaTucker, lokr, lokrLowRankW2, lokrLowRankW1, lokrTucker,
             oft, diff, ia3, glora, norm, randomParts, boft, lohaDoRA, lokrDoRA
    }

    static let ranks = [4, 1, 2, 8, 16, 3, 32, 64]

    /// Dimensions that have broken shape arithmetic somewhere.
    static let interesting: [UInt64] = [
        0, 1, 2, 3, 4, 7, 8, 9, 16, 320, 1 << 16, (1 << 31) - 1, 1 << 31, 1 << 32, (1 << 32) + 1,
        1 << 62, (1 << 62) + 1, 1 << 63, UInt64(Int64.max), UInt64.max, UInt64.max - 1, 3 << 61,
    ]

    static let oddNames = [
        "lora_unet_input_blocks_0_0", "lora_te2_text_projection", "lora_te1_text_model_final_layer_norm",
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "unet.up_blocks.0.attentions.1.transformer_blocks.3.attn2.processor.to_out",
        "text_encoder_2.text_model.encoder.layers.3.self_attn.k_proj",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj", "lycoris_input_blocks_4_1_proj_in",
        "lora_unet_input_blocks_99_1_proj_in", "m", "lora_unet_", "bundle_emb.x.string_to_param",
        "diffusion_model.input_blocks.4.1.proj_in", "lora_unet_middle_block_1_transformer_blocks_0_ff_net_0_proj",
    ]

    static let baseModels = ["sdxl_base_v1-0", "sd_v1", "sd_v2", "sd_v2_768_v", "sdxl_refiner", "flux", "", "\u{0}"]

    struct Part {
        var module: String
        var suffix: String
        var dtype: DType
        var shape: [UInt64]
        /// The first bytes of its data (the rest is zeros), e.g. the `on_input` flag.
        var value: [UInt8]? = nil
    }

    /// Norm layers of ``FixedCheckpoint`` as LyCORIS names them (`lora_unet_…_norm1`), with
    /// their channel count: the targets of the `norm` template.
    static let normTargets: [(name: String, channels: Int)] = FixedCheckpoint.tensors.compactMap { t in
        guard t.name.hasPrefix(SDXLArchitecture.unetPrefix), t.name.hasSuffix(".weight"), t.shape.count == 1,
              t.name.contains("norm") else { return nil }
        let path = t.name.dropFirst(SDXLArchitecture.unetPrefix.count).dropLast(".weight".count)
        return ("lora_unet_" + path.replacingOccurrences(of: ".", with: "_"), t.shape[0])
    }

    /// Decodes a recipe into tensors, alpha bytes and metadata; nil for a recipe whose
    /// file could not exist (the writer refuses it: duplicate names, overflowing sizes).
    public static func file(from input: UnsafeRawBufferPointer, dataLimit: Int = 1 << 30)
        -> (layout: FileLayout, values: [(offset: Int, bytes: [UInt8])])? {
        var r = ChoiceReader(input)
        let flags = r.byte()
        let moduleCount = 1 + Int(r.byte() % 6)
        var parts: [Part] = []
        var alphaBytes: [String: [UInt8]] = [:]
        let targets = FixedCheckpoint.targets
        for _ in 0 ..< moduleCount {
            let sel = r.u16()
            let name: String, out: Int, inF: Int, kernel: [Int]
            if sel % 16 == 15 {
                name = oddNames[(sel / 16) % oddNames.count]
                out = [8, 32, 80, 768][sel % 4]; inF = out; kernel = sel % 3 == 0 ? [3, 3] : []
            } else {
                let t = targets[(sel / 16 * 15 + sel % 16) % targets.count]
                name = t.moduleName; out = t.outFeatures; inF = t.inFeatures; kernel = t.kernel
            }
            let template = Template(rawValue: Int(r.byte()) % Template.allCases.count)!
            let rank = ranks[Int(r.byte()) % ranks.count]
            var module: [Part]
            var moduleName = name
            if template == .norm, sel % 16 != 15, !normTargets.isEmpty {
                // A norm layer (the LoRA target list has none): C channels.
                let t = normTargets[sel / 16 % normTargets.count]
                moduleName = t.name
                module = build(.norm, name: t.name, out: t.channels, in: t.channels, kernel: [], rank: rank, reader: &r)
            } else {
                module = build(template, name: name, out: out, in: inF, kernel: kernel, rank: rank, reader: &r)
            }
            let mutations = Int(r.byte() % 8)
            for _ in 0 ..< mutations { mutate(&module, reader: &r, names: targets) }
            parts += module
            alphaBytes[moduleName + ".alpha"] = r.bytes(8)
        }
        let dtypeSwap = flags & 0x80 != 0 ? r.pick(DType.allCases) : nil
        if let dtypeSwap { for i in parts.indices where parts[i].suffix == ".alpha" { parts[i].dtype = dtypeSwap } }

        var metadata: [String: String]? = nil
        if flags & 0x0F != 0 {
            var md: [String: String] = [:]
            if flags & 1 != 0 { md["ss_base_model_version"] = r.pick(baseModels) }
            if flags & 2 != 0 {
                md["ss_network_dim"] = String(Int(r.byte()) - 8)
                md["ss_network_alpha"] = r.pick(["8.0", "nan", "-inf", "1e400", "0", "x"])
            }
            if flags & 4 != 0 {
                md["ss_network_args"] = r.pick(["{\"conv_dim\": \"8\", \"conv_alpha\": \"4.0\"}", "{", "[]", "{\"conv_dim\": 1e999}",
                                                "{\"algo\": \"lokr\", \"factor\": \"-1\"}", "null"])
                md["ss_network_module"] = r.pick(["networks.lora", "lycoris.kohya", "networks.dylora", "networks.oft"])
            }
            if flags & 8 != 0 {
                md["modelspec.architecture"] = r.pick(["stable-diffusion-xl-v1-base/lora", "stable-diffusion-v1/lora", "sd3", ""])
                md["ss_v2"] = r.pick(["False", "True", "maybe"])
            }
            metadata = md
        }

        // Flag 0x40: every other tensor gets non-zero data, a pattern of 8 bytes from the recipe
        // (any bit pattern: NaN, inf, huge values), so that executed updates see factors that are not zero.
        let pattern = flags & 0x40 != 0 ? r.bytes(8) : nil
        var seen = Set<String>()
        var tensors: [OutputTensor] = []
        for p in parts where seen.insert(p.module + p.suffix).inserted {
            tensors.append(OutputTensor(name: p.module + p.suffix, dtype: p.dtype, shape: p.shape))
            if let v = p.value, alphaBytes[p.module + p.suffix] == nil { alphaBytes[p.module + p.suffix] = v }
        }
        guard let layout = try? FileLayout(tensors: tensors, metadata: metadata),
              layout.totalByteCount - layout.dataStart <= dataLimit else { return nil }
        var values: [(Int, [UInt8])] = []
        for (i, t) in layout.tensors.enumerated() {
            if let b = alphaBytes[t.name], t.byteCount > 0 {
                values.append((layout.fileOffset(ofTensorAt: i), Array(b.prefix(t.byteCount))))
            } else if let pattern, t.byteCount > 0, t.byteCount <= 1 << 16, i % 2 == 0 {
                let bytes = (0 ..< t.byteCount).map { pattern[$0 % 8] &+ UInt8(truncatingIfNeeded: $0 / 8) }
                values.append((layout.fileOffset(ofTensorAt: i), bytes))
            }
        }
        return (layout, values)
    }

    static func build(_ t: Template, name: String, out o: Int, in i: Int, kernel k: [Int], rank r: Int,
                      reader: inout ChoiceReader) -> [Part] {
        let O = UInt64(o), I = UInt64(i), R = UInt64(r), K = k.map(UInt64.init)
        let area = UInt64(k.reduce(1, *))
        let conv: [UInt64] = k.isEmpty ? [] : [1, 1]
        func p(_ s: String, _ shape: [UInt64], _ dtype: DType = .F16) -> Part {
            Part(module: name, suffix: s, dtype: dtype, shape: shape)
        }
        let alpha = p(".alpha", [])
        // Small factors of out/in for LoKr (a·b = out, c·d = in).
        func factor(_ n: Int) -> Int { [8, 4, 2, 1].first { n % $0 == 0 && $0 < n } ?? 1 }
        let a = UInt64(factor(o)), c = UInt64(factor(i))
        switch t {
        case .lora:
            return [p(".lora_down.weight", [R, I] + K), p(".lora_up.weight", [O, R] + conv), alpha]
        case .loraConvTucker:
            return [p(".lora_down.weight", [R, I, 1, 1]), p(".lora_mid.weight", [R, R] + (k.isEmpty ? [3, 3] : K)),
                    p(".lora_up.weight", [O, R, 1, 1]), alpha]
        case .peft:
            return [p(".lora_A.weight", [R, I]), p(".lora_B.weight", [O, R])]
        case .dora:
            return [p(".lora_down.weight", [R, I] + K), p(".lora_up.weight", [O, R] + conv),
                    p(".dora_scale", reader.byte() & 1 == 0 ? [O, 1] : [1, I]), alpha]
        case .loha:
            return [p(".hada_w1_a", [O, R]), p(".hada_w1_b", [R, I] + K), p(".hada_w2_a", [O, R]),
                    p(".hada_w2_b", [R, I] + K), alpha]
        case .lohaTucker:
            let kk: [UInt64] = k.isEmpty ? [3, 3] : K
            return [p(".hada_w1_a", [R, O]), p(".hada_w1_b", [R, I]), p(".hada_w2_a", [R, O]), p(".hada_w2_b", [R, I]),
                    p(".hada_t1", [R, R] + kk), p(".hada_t2", [R, R] + kk), alpha]
        case .lokr:
            return [p(".lokr_w1", [a, c]), p(".lokr_w2", [O / a, I / c] + K), alpha]
        case .lokrLowRankW2:
            return [p(".lokr_w1", [a, c]), p(".lokr_w2_a", [O / a, R]), p(".lokr_w2_b", [R, I / c] + K), alpha]
        case .lokrLowRankW1:
            return [p(".lokr_w1_a", [a, R]), p(".lokr_w1_b", [R, c]), p(".lokr_w2", [O / a, I / c] + K), alpha]
        case .lokrTucker:
            let kk: [UInt64] = k.isEmpty ? [1, 1] : K
            return [p(".lokr_w1", [a, c]), p(".lokr_w2_a", [R, O / a]), p(".lokr_w2_b", [R, I / c]),
                    p(".lokr_t2", [R, R] + kk), alpha]
        case .oft:
            // (nb, bs, bs) with nb·bs = O: nb from the divisors of O; the stored alpha is the
            // constraint; optional rescale (O, 1[, 1, 1]); legacy oft_diag stores rotations.
            let v = reader.byte()
            let divisors = (1 ... min(o, 64)).filter { o % $0 == 0 }
            let nb = UInt64(divisors.isEmpty ? 1 : divisors[Int(v >> 3) % divisors.count])
            let bs = O / max(nb, 1)
            var parts = [p(v & 1 == 0 ? ".oft_blocks" : ".oft_diag", [nb, bs, bs]), alpha]
            if v & 2 != 0 { parts.append(p(".rescale", [O, 1] + (v & 4 != 0 ? [1, 1] : []))) }
            return parts
        case .boft:
            // (L, nb, b, b), b even, nb·b = O, spans of 2^(L-1)·b rows dividing O.
            let v = reader.byte()
            let even = (1 ... min(o, 64)).filter { $0 % 2 == 0 && o % $0 == 0 }
            let b = even.isEmpty ? 2 : even[Int(v >> 3) % even.count]
            var levels = 1
            while o % (b << levels) == 0 && (b << levels) <= o { levels += 1 }
            let l = UInt64(1 + Int((v >> 1) & 3) % levels)
            var parts = [p(".oft_blocks", [l, O / UInt64(b), UInt64(b), UInt64(b)]), alpha]
            if v & 1 != 0 { parts.append(p(".rescale", [O, 1])) }
            return parts
        case .diff:
            switch reader.byte() % 3 {
            case 0: return [p(".diff", [O, I] + K), p(".diff_b", [O])]
            case 1: return [p(".diff", [O, I] + K)]
            default: return [p(".diff_b", [O])]
            }
        case .ia3:
            // (O,) on the output, (I,) with on_input = 1; the flag as BOOL, F32 or I64.
            let v = reader.byte()
            let onInput = v & 1 != 0
            let flag: Part
            switch (v >> 1) % 3 {
            case 0: flag = Part(module: name, suffix: ".on_input", dtype: .BOOL, shape: [], value: [onInput ? 1 : 0])
            case 1: flag = Part(module: name, suffix: ".on_input", dtype: .F32, shape: [],
                                value: onInput ? [0, 0, 0x80, 0x3F] : [0, 0, 0, 0])
            default: flag = Part(module: name, suffix: ".on_input", dtype: .I64, shape: [1], value: [onInput ? 1 : 0])
            }
            return [p(".weight", [onInput ? I : O]), flag]
        case .glora:
            switch reader.byte() % 3 {
            case 0:  // current layout: a1 (I, r), a2 (r, I), b1 (O, r), b2 (r, I[, kh, kw])
                return [p(".a1.weight", [I, R]), p(".a2.weight", [R, I]), p(".b1.weight", [O, R]),
                        p(".b2.weight", [R, I] + K), alpha]
            case 1:  // legacy layout: a1 (r, I), a2 (I, r), b1 (r, I[, kh, kw]), b2 (O, r)
                return [p(".a1.weight", [R, I]), p(".a2.weight", [I, R]), p(".b1.weight", [R, I] + K),
                        p(".b2.weight", [O, R]), alpha]
            default:  // neither (unless the numbers coincide)
                return [p(".a1.weight", [R, I]), p(".a2.weight", [O, R]), p(".b1.weight", [R, I]),
                        p(".b2.weight", [O, R] + conv), alpha]
            }
        case .norm:
            switch reader.byte() % 3 {
            case 0: return [p(".w_norm", [O]), p(".b_norm", [O])]
            case 1: return [p(".w_norm", [O])]
            default: return [p(".b_norm", [O])]
            }
        case .lohaDoRA, .lokrDoRA:
            let v = reader.byte()
            let hosts: [Template] = t == .lohaDoRA
                ? [.loha, .lohaTucker] : [.lokr, .lokrLowRankW2, .lokrLowRankW1, .lokrTucker]
            let host = build(hosts[Int(v >> 1) % hosts.count], name: name, out: o, in: i, kernel: k, rank: r,
                             reader: &reader)
            return host + [p(".dora_scale", v & 1 == 0 ? [O, 1] : [1, I])]
        case .randomParts:
            let n = 1 + Int(reader.byte() % 4)
            return (0 ..< n).map { _ in
                let role = reader.pick(PartSuffixes.all)
                let dims = Int(reader.byte() % 5)
                return p(role, (0 ..< dims).map { _ in reader.pick([O, I, R, area, 1, 0, 3]) })
            }
        }
    }

    static func mutate(_ parts: inout [Part], reader r: inout ChoiceReader, names: [LoRATarget]) {
        let op = r.byte() % 9
        guard !parts.isEmpty else { return }
        let i = Int(r.byte()) % parts.count
        let d = Int(r.byte())
        switch op {
        case 0:  // one dimension becomes an interesting value
            if !parts[i].shape.isEmpty { parts[i].shape[d % parts[i].shape.count] = r.pick(interesting) }
        case 1:  // one more dimension (up to 6-D)
            if parts[i].shape.count < 6 { parts[i].shape.insert(r.pick(interesting), at: d % (parts[i].shape.count + 1)) }
        case 2:  // one dimension fewer (down to a 0-D scalar)
            if !parts[i].shape.isEmpty { parts[i].shape.remove(at: d % parts[i].shape.count) }
        case 3:
            parts[i].dtype = r.pick(DType.allCases)
        case 4:
            parts.remove(at: i)
        case 5:  // the same part spelled twice, or another part added
            var p = parts[i]
            p.suffix = r.pick(PartSuffixes.all)
            parts.append(p)
        case 6:  // a small dimension, off by a little
            if !parts[i].shape.isEmpty { parts[i].shape[d % parts[i].shape.count] = UInt64(r.byte() % 17) }
        case 7:  // the part moves to another module
            parts[i].module = names[(d << 8 | Int(r.byte())) % names.count].moduleName
        default:  // shape replaced wholesale
            parts[i].shape = (0 ..< (d % 7)).map { _ in r.pick(interesting) }
        }
    }

    /// Recipes of clean files, one per template, on the module picked by `name`.
    public static func seed(template: Template, name: Int, rank: Int = 0, flags: UInt8 = 1,
                            extra: [UInt8] = []) -> [UInt8] {
        [flags, 0, UInt8(name >> 8), UInt8(name & 0xFF), UInt8(template.rawValue), UInt8(rank), 0] + extra
    }
}

/// Every part suffix the analysis recognises, in each spelling, plus a few near misses.
enum PartSuffixes {
    static let all: [String] = [
        ".lora_down.weight", ".lora_up.weight", ".lora_mid.weight", ".lora_A.weight", ".lora_B.weight",
        ".lora_A.default.weight", ".lora_B.default.weight", ".lora_B.bias", ".lora_A", ".lora_B",
        ".lora.down.weight", ".lora.up.weight", ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight",
        "_lora.down.weight", "_lora.up.weight", ".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight", ".bm.weight",
        ".alpha", ".dora_scale", ".scale", ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1",
        ".hada_t2", ".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2",
        ".diff", ".diff_b", ".w_norm", ".b_norm", ".weight", ".on_input", ".oft_blocks", ".oft_diag", ".rescale",
        ".bias_indices", ".bias_values", ".bias_size", ".set_weight", ".reshape_weight", ".lora_down.bias", ".alpha.weight",
    ]
}
