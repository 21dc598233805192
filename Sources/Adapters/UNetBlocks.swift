// The SGM/LDM UNet block layout of SD1, SD2 and SDXL and its diffusers spelling.
//
// Both layouts use two ResBlocks per level. In SGM/LDM, input_blocks.0 is conv_in,
// each level then takes three input_blocks (two ResBlock[+Transformer] and one
// Downsample, the last level has no Downsample), and each output level takes three
// output_blocks (ResBlock[+Transformer][+Upsample]). The index arithmetic below
// derives the diffusers name from the checkpoint's own key, so the structure
// differences (SDXL's three levels, down_blocks.0/up_blocks.2 without attentions,
// SD1's upsampler at output_blocks.2.1) follow from which keys exist.

enum UNetBlocks {
    /// The diffusers path of an SGM/LDM UNet path (without `.weight`), or nil
    /// when it has none (DiT paths, unknown layouts).
    static func diffusersPath(ofSGM p: [Substring]) -> String? {
        func join(_ head: String, _ tail: ArraySlice<Substring>) -> String {
            tail.isEmpty ? head : head + "." + tail.joined(separator: ".")
        }
        guard let root = p.first else { return nil }
        switch root {
        case "input_blocks":
            guard p.count >= 3, let n = Int(p[1]), let m = Int(p[2]) else { return nil }
            let rest = p[3...]
            if n == 0 { return m == 0 ? join("conv_in", rest) : nil }
            let level = (n - 1) / 3, j = (n - 1) % 3
            if j == 2 {
                guard m == 0, rest.first == "op" else { return nil }
                return join("down_blocks.\(level).downsamplers.0.conv", rest.dropFirst())
            }
            switch m {
            case 0: return resnet("down_blocks.\(level).resnets.\(j)", rest)
            case 1: return join("down_blocks.\(level).attentions.\(j)", rest)
            default: return nil
            }
        case "middle_block":
            guard p.count >= 2, let m = Int(p[1]) else { return nil }
            let rest = p[2...]
            if m == 1 { return join("mid_block.attentions.0", rest) }
            return m % 2 == 0 ? resnet("mid_block.resnets.\(m / 2)", rest) : nil
        case "output_blocks":
            guard p.count >= 3, let n = Int(p[1]), let m = Int(p[2]) else { return nil }
            let rest = p[3...]
            let level = n / 3, j = n % 3
            if m == 0 { return resnet("up_blocks.\(level).resnets.\(j)", rest) }
            // The upsampler closes a level: index 1 when the level has no attentions
            // (SD1 up_blocks.0), else 2.
            if j == 2, m == 1 || m == 2, rest.first == "conv" {
                return join("up_blocks.\(level).upsamplers.0.conv", rest.dropFirst())
            }
            return m == 1 ? join("up_blocks.\(level).attentions.\(j)", rest) : nil
        case "time_embed":
            guard p.count >= 2 else { return nil }
            switch p[1] {
            case "0": return join("time_embedding.linear_1", p[2...])
            case "2": return join("time_embedding.linear_2", p[2...])
            default: return nil
            }
        case "label_emb":
            guard p.count >= 3, p[1] == "0" else { return nil }
            switch p[2] {
            case "0": return join("add_embedding.linear_1", p[3...])
            case "2": return join("add_embedding.linear_2", p[3...])
            default: return nil
            }
        case "out":
            guard p.count >= 2 else { return nil }
            switch p[1] {
            case "0": return join("conv_norm_out", p[2...])
            case "2": return join("conv_out", p[2...])
            default: return nil
            }
        default:
            return nil
        }
    }

    /// ResBlock inner names: LDM → diffusers.
    static func resnet(_ head: String, _ rest: ArraySlice<Substring>) -> String? {
        let inner = rest.joined(separator: ".")
        let table: [(String, String)] = [
            ("in_layers.2", "conv1"), ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"),
            ("skip_connection", "conv_shortcut"), ("in_layers.0", "norm1"), ("out_layers.0", "norm2"),
        ]
        for (ldm, diffusers) in table where inner == ldm || inner.hasPrefix(ldm + ".") {
            return head + "." + diffusers + inner.dropFirst(ldm.count)
        }
        return nil
    }

    /// Whether an SGM/LDM UNet weight path (without `.weight`) is in sd-scripts'
    /// fixed target set: Linear/Conv2d of Transformer2D blocks, ResBlock convs and
    /// time-embedding projection, Downsample `op`, Upsample `conv`.
    static func isSDScriptsTarget(_ p: [Substring]) -> Bool {
        let inner: ArraySlice<Substring>
        switch p.first {
        case "input_blocks", "output_blocks":
            guard p.count > 3, Int(p[1]) != nil, Int(p[2]) != nil else { return false }
            inner = p[3...]
        case "middle_block":
            guard p.count > 2, Int(p[1]) != nil else { return false }
            inner = p[2...]
        default:
            return false
        }
        let s = inner.joined(separator: ".")
        switch s {
        case "proj_in", "proj_out", "in_layers.2", "out_layers.3", "emb_layers.1", "skip_connection", "op", "conv":
            return true
        default:
            break
        }
        let c = Array(inner)
        guard c.count >= 4, c[0] == "transformer_blocks", Int(c[1]) != nil else { return false }
        let t = c[2...].joined(separator: ".")
        return [
            "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
            "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
            "ff.net.0.proj", "ff.net.2",
        ].contains(t)
    }
}
