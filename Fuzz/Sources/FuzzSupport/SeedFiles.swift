import Fixtures
import SafeTensors

/// Seed inputs, generated at `make fuzz` time (no binaries are committed).
public enum SeedFiles {
    /// A complete file: FileLayout's header, zero data, and `values` written at their tensors.
    public static func file(_ tensors: [OutputTensor], metadata: [String: String]? = nil,
                            values: [String: [UInt8]] = [:]) -> [UInt8] {
        let layout = try! FileLayout(tensors: tensors, metadata: metadata)
        var bytes = layout.headerBytes + [UInt8](repeating: 0, count: layout.totalByteCount - layout.dataStart)
        for (i, t) in layout.tensors.enumerated() {
            guard let v = values[t.name] else { continue }
            let at = layout.fileOffset(ofTensorAt: i)
            bytes.replaceSubrange(at ..< at + min(v.count, t.byteCount), with: v.prefix(t.byteCount))
        }
        return bytes
    }

    /// A file from a recipe of the structured target.
    public static func file(recipe: [UInt8]) -> [UInt8]? {
        recipe.withUnsafeBytes { r in
            guard let (layout, values) = StructuredAdapter.file(from: r) else { return nil }
            var bytes = layout.headerBytes + [UInt8](repeating: 0, count: layout.totalByteCount - layout.dataStart)
            for v in values { bytes.replaceSubrange(v.offset ..< v.offset + v.bytes.count, with: v.bytes) }
            return bytes
        }
    }

    /// `prefix(n) + json + data`.
    public static func raw(_ json: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
        let header = Array(json.utf8)
        let n = declaredLength ?? UInt64(header.count)
        return (0 ..< 8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) } + header + data
    }

    static func entry(_ name: String, _ dtype: String, _ shape: [UInt64], _ begin: UInt64, _ end: UInt64) -> String {
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
    }

    /// One file per rule of the header format (the classes HeaderParserTests builds),
    /// valid and broken.
    public static var malformed: [String: [UInt8]] {
        var s: [String: [UInt8]] = [:]
        let f16 = entry("w", "F16", [2, 2], 0, 8)
        s["empty-file"] = []
        s["short-prefix"] = [1, 0, 0]
        s["empty-header"] = raw("{}")
        s["padded-header"] = raw("{}      ")
        s["one-tensor"] = raw("{\(f16)}", data: Array(repeating: 0x3C, count: 8))
        s["metadata"] = raw("{\"__metadata__\":{\"format\":\"pt\",\"ss_network_dim\":\"16\"},\(f16)}", data: Array(repeating: 0, count: 8))
        s["header-too-large"] = raw("{}", declaredLength: 100_000_001)
        s["header-length-past-end"] = raw("{}", declaredLength: 64)
        s["invalid-utf8"] = [2, 0, 0, 0, 0, 0, 0, 0, 0xC3, 0x28]
        s["invalid-json"] = raw("{\"w\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]")
        s["trailing-comma"] = raw("{\(f16),}", data: Array(repeating: 0, count: 8))
        s["duplicate"] = raw("{\(f16),\(f16)}", data: Array(repeating: 0, count: 8))
        s["offset-hole"] = raw("{\(entry("a", "F16", [2], 0, 4)),\(entry("b", "F16", [2], 8, 12))}", data: Array(repeating: 0, count: 12))
        s["offset-overlap"] = raw("{\(entry("a", "F16", [2], 0, 4)),\(entry("b", "F16", [2], 2, 6))}", data: Array(repeating: 0, count: 6))
        s["shape-overflow"] = raw("{\(entry("a", "F16", [1 << 62, 8], 0, 0))}")
        s["zero-dim-huge"] = raw("{\(entry("a", "F16", [UInt64.max, 0], 0, 0))}")
        s["misaligned-f4"] = raw("{\(entry("a", "F4", [3], 0, 2))}", data: [0, 0])
        s["wrong-byte-count"] = raw("{\(entry("a", "F32", [2], 0, 4))}", data: [0, 0, 0, 0])
        s["trailing-data"] = raw("{\(f16)}", data: Array(repeating: 0, count: 12))
        s["missing-data"] = raw("{\(f16)}", data: Array(repeating: 0, count: 4))
        s["metadata-not-string"] = raw("{\"__metadata__\":{\"a\":1},\(f16)}", data: Array(repeating: 0, count: 8))
        s["unknown-dtype"] = raw("{\(entry("a", "F17", [2], 0, 4))}", data: [0, 0, 0, 0])
        s["deep-nesting"] = raw("{\"__metadata__\":" + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + "}")
        s["escapes"] = raw("{\(entry("a\\u00e9\\n\\\"b\\ud83d\\ude00", "U8", [1], 0, 1))}", data: [7])
        s["bom"] = [0xEF, 0xBB, 0xBF] + raw("{}")
        s["number-forms"] = raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1e0]}}", data: [1])
        // The two files of review §4 #16: shape products that overflow in AdapterModule.
        s["lokr-overflow-176"] = file([
            OutputTensor(name: "lora_unet_m.lokr_w1", dtype: .F16, shape: [1 << 62, 0]),
            OutputTensor(name: "lora_unet_m.lokr_w2", dtype: .F16, shape: [4, 0]),
        ])
        s["locon-overflow"] = file([
            OutputTensor(name: "lora_unet_m.lora_down.weight", dtype: .F16, shape: [0, 1 << 62, 2, 2]),
            OutputTensor(name: "lora_unet_m.lora_up.weight", dtype: .F16, shape: [4, 0, 1, 1]),
            OutputTensor(name: "lora_unet_m.alpha", dtype: .F16, shape: []),
        ])
        return s
    }

    /// Small valid kohya files against ``FixedCheckpoint``: a few modules of each
    /// component, LoRA and LoCon (from `KohyaLoRA`), plus one file per structured template.
    public static var adapters: [String: [UInt8]] {
        var s: [String: [UInt8]] = [:]
        let targets = FixedCheckpoint.targets
        // A small spread: TE1, TE2 (a q/k/v row third), a UNet attention, a ResBlock conv.
        var picked: [LoRATarget] = []
        for want in ["lora_te1_", "lora_te2_text_model_encoder_layers_0_self_attn_k", "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
                     "lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_middle_block_1_proj_in"] {
            if let t = targets.first(where: { $0.moduleName.hasPrefix(want) }) { picked.append(t) }
        }
        for (name, options) in [("kohya-lora", KohyaLoRAOptions(rank: 4, alpha: 2)),
                                ("kohya-locon", KohyaLoRAOptions(rank: 4, alpha: 2, convRank: 2, convAlpha: 1)),
                                ("kohya-lora-bf16", KohyaLoRAOptions(rank: 8, alpha: 8, dtype: .BF16))] {
            let list = KohyaLoRA.tensors(for: picked.filter { options.convRank != nil || !$0.isSpatialConv }, options: options)
            var values: [String: [UInt8]] = [:]
            for t in list where t.name.hasSuffix(".alpha") {
                let v = Float16(options.alpha).bitPattern
                values[t.name] = options.dtype == .BF16 ? [0x00, 0x41] : [UInt8(v & 0xFF), UInt8(v >> 8)]
            }
            s[name] = file(list.map(\.outputTensor),
                           metadata: KohyaLoRA.metadata(.sdxl, options: options, title: name), values: values)
        }
        for (i, template) in StructuredAdapter.Template.allCases.enumerated() {
            // Module index: spread over the target list (the recipe's name choice is hi<<8|lo).
            if let bytes = file(recipe: StructuredAdapter.seed(template: template, name: (i * 97) % 1024)) {
                s["template-\(template)"] = bytes
            }
        }
        return s
    }

    /// Recipes for the structured target: each template clean, plus the overflow shapes.
    public static var recipes: [String: [UInt8]] {
        var s: [String: [UInt8]] = [:]
        for (i, template) in StructuredAdapter.Template.allCases.enumerated() {
            s["\(template)"] = StructuredAdapter.seed(template: template, name: (i * 97) % 1024)
            s["\(template)-sd1-meta"] = StructuredAdapter.seed(template: template, name: (i * 131) % 1024, rank: 3, flags: 0x0F)
            // Non-zero factors (flag 0x40): alpha 1.0 (F16), then the 8-byte data pattern.
            let pattern: [UInt8] = [0x00, 0x3C, 0, 0, 0, 0, 0, 0, 0x3C, 0x01, 0xB8, 0x22, 0x30, 0x00, 0x35, 0x91]
            s["\(template)-pattern"] = StructuredAdapter.seed(template: template, name: (i * 61) % 1024, flags: 0x40,
                                                               extra: pattern)
        }
        // The layouts and optional parts of the templates that read a variant byte (the
        // recipe's byte after the rank), each once.
        let variants: [StructuredAdapter.Template: [UInt8]] = [
            .dora: [1], .oft: [1, 2, 6, 8, 0x1A], .boft: [1, 2, 4, 9, 0x13], .diff: [1, 2], .ia3: [1, 2, 3, 4, 5],
            .glora: [1, 2], .norm: [1, 2], .lohaDoRA: [1, 2, 3], .lokrDoRA: [1, 2, 3, 4, 5, 6, 7],
        ]
        for (template, list) in variants {
            for (k, v) in list.enumerated() {
                let seed = StructuredAdapter.seed(template: template, name: (k * 211 + template.rawValue * 7) % 1024)
                s["\(template)-variant-\(v)"] = Array(seed.dropLast()) + [v, 0]
            }
        }
        return s
    }

    /// zstd seeds: compressed adapters and headers, plus broken frames.
    public static var zstd: [String: [UInt8]] {
        var s: [String: [UInt8]] = [:]
        let small = ["one-tensor", "metadata", "empty-header", "trailing-data", "header-too-large", "lokr-overflow-176"]
        let m = malformed
        for name in small { s[name] = zstdCompress(m[name]!) }
        if let lora = adapters["kohya-lora"] {
            let z = zstdCompress(lora, level: 19)
            s["kohya-lora"] = z
            s["kohya-lora-truncated"] = Array(z.prefix(z.count / 2))
            s["kohya-lora-two-frames"] = zstdCompress(Array(lora.prefix(100))) + zstdCompress(Array(lora.dropFirst(100)))
        }
        let one = m["one-tensor"]!
        // A skippable frame (magic 0x184D2A50, 4-byte length) before the data frame.
        s["skippable-then-frame"] = [0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4] + zstdCompress(one)
        s["empty-frame"] = zstdCompress([])
        s["frame-then-garbage"] = zstdCompress(one) + [0x28, 0xB5, 0x2F, 0xFD, 0xFF]
        return s
    }
}
