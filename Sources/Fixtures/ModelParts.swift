// The building blocks shared by the SD 1.x and SDXL layouts, in the original
// (LDM / SGM) module naming: UNet, KL autoencoder, CLIP text encoders.

/// The shape-defining hyper-parameters of an LDM `UNetModel`.
struct UNetShape {
    var modelChannels: Int
    /// Channel multiplier per resolution level.
    var multipliers: [Int]
    var resBlocksPerLevel: Int
    /// Transformer depth per level; 0 means the level has no attention.
    var depths: [Int]
    var middleDepth: Int
    /// Input width of `attn2.to_k` / `to_v`.
    var contextWidth: Int
    /// `proj_in` / `proj_out` as Linear `[C, C]` (SDXL) instead of conv 1×1 (SD1).
    var linearProjection: Bool
    /// Input width of `label_emb.0.0` (SDXL's pooled text + size conditioning), if any.
    var labelInputWidth: Int?
    var inputChannels = 4
    var outputChannels = 4

    var timeEmbedWidth: Int { 4 * modelChannels }

    func add(to b: inout TensorListBuilder, prefix p: String) {
        let mc = modelChannels, t = timeEmbedWidth
        b.linear(p + "time_embed.0", out: t, in: mc)
        b.linear(p + "time_embed.2", out: t, in: t)
        if let label = labelInputWidth {
            b.linear(p + "label_emb.0.0", out: t, in: label)
            b.linear(p + "label_emb.0.2", out: t, in: t)
        }
        b.conv(p + "input_blocks.0.0", out: mc, in: inputChannels, kernel: 3)

        var skips = [mc]
        var ch = mc
        var n = 1
        for (level, mult) in multipliers.enumerated() {
            for _ in 0..<resBlocksPerLevel {
                resBlock(&b, p + "input_blocks.\(n).0", in: ch, out: mc * mult)
                ch = mc * mult
                if depths[level] > 0 { transformer(&b, p + "input_blocks.\(n).1", ch, depth: depths[level]) }
                skips.append(ch)
                n += 1
            }
            if level != multipliers.count - 1 {
                b.conv(p + "input_blocks.\(n).0.op", out: ch, in: ch, kernel: 3)
                skips.append(ch)
                n += 1
            }
        }

        resBlock(&b, p + "middle_block.0", in: ch, out: ch)
        transformer(&b, p + "middle_block.1", ch, depth: middleDepth)
        resBlock(&b, p + "middle_block.2", in: ch, out: ch)

        n = 0
        for (level, mult) in multipliers.enumerated().reversed() {
            for i in 0...resBlocksPerLevel {
                let skip = skips.removeLast()
                resBlock(&b, p + "output_blocks.\(n).0", in: ch + skip, out: mc * mult)
                ch = mc * mult
                var index = 1
                if depths[level] > 0 {
                    transformer(&b, p + "output_blocks.\(n).\(index)", ch, depth: depths[level])
                    index += 1
                }
                if level != 0 && i == resBlocksPerLevel {
                    b.conv(p + "output_blocks.\(n).\(index).conv", out: ch, in: ch, kernel: 3)
                }
                n += 1
            }
        }
        b.norm(p + "out.0", mc)
        b.conv(p + "out.2", out: outputChannels, in: mc, kernel: 3)
    }

    private func resBlock(_ b: inout TensorListBuilder, _ p: String, in ci: Int, out co: Int) {
        b.norm(p + ".in_layers.0", ci)
        b.conv(p + ".in_layers.2", out: co, in: ci, kernel: 3)
        b.linear(p + ".emb_layers.1", out: co, in: timeEmbedWidth)
        b.norm(p + ".out_layers.0", co)
        b.conv(p + ".out_layers.3", out: co, in: co, kernel: 3)
        if ci != co { b.conv(p + ".skip_connection", out: co, in: ci, kernel: 1) }
    }

    private func transformer(_ b: inout TensorListBuilder, _ p: String, _ c: Int, depth: Int) {
        b.norm(p + ".norm", c)
        projection(&b, p + ".proj_in", c)
        for k in 0..<depth {
            let q = p + ".transformer_blocks.\(k)"
            for (attn, kv) in [("attn1", c), ("attn2", contextWidth)] {
                b.linear(q + ".\(attn).to_q", out: c, in: c, bias: false)
                b.linear(q + ".\(attn).to_k", out: c, in: kv, bias: false)
                b.linear(q + ".\(attn).to_v", out: c, in: kv, bias: false)
                b.linear(q + ".\(attn).to_out.0", out: c, in: c)
            }
            b.linear(q + ".ff.net.0.proj", out: 8 * c, in: c)  // GEGLU: two halves of 4C
            b.linear(q + ".ff.net.2", out: c, in: 4 * c)
            for norm in ["norm1", "norm2", "norm3"] { b.norm(q + "." + norm, c) }
        }
        projection(&b, p + ".proj_out", c)
    }

    private func projection(_ b: inout TensorListBuilder, _ name: String, _ c: Int) {
        if linearProjection { b.linear(name, out: c, in: c) } else { b.conv(name, out: c, in: c, kernel: 1) }
    }
}

/// The KL autoencoder of SD 1.x / SDXL (`AutoencoderKL`, LDM naming).
struct AutoencoderShape {
    var channels: Int
    var multipliers = [1, 2, 4, 4]
    var resBlocks = 2
    var latentChannels = 4
    var imageChannels = 3

    func add(to b: inout TensorListBuilder, prefix p: String) {
        let top = channels * multipliers[multipliers.count - 1]
        // Encoder.
        b.conv(p + "encoder.conv_in", out: channels, in: imageChannels, kernel: 3)
        var ch = channels
        for (i, mult) in multipliers.enumerated() {
            for j in 0..<resBlocks {
                resnet(&b, p + "encoder.down.\(i).block.\(j)", in: ch, out: channels * mult)
                ch = channels * mult
            }
            if i != multipliers.count - 1 {
                b.conv(p + "encoder.down.\(i).downsample.conv", out: ch, in: ch, kernel: 3)
            }
        }
        middle(&b, p + "encoder.mid", top)
        b.norm(p + "encoder.norm_out", top)
        b.conv(p + "encoder.conv_out", out: 2 * latentChannels, in: top, kernel: 3)
        // Decoder (its `up` levels are numbered like the encoder's, built from the top).
        b.conv(p + "decoder.conv_in", out: top, in: latentChannels, kernel: 3)
        middle(&b, p + "decoder.mid", top)
        ch = top
        for (i, mult) in multipliers.enumerated().reversed() {
            for j in 0...resBlocks {
                resnet(&b, p + "decoder.up.\(i).block.\(j)", in: ch, out: channels * mult)
                ch = channels * mult
            }
            if i != 0 { b.conv(p + "decoder.up.\(i).upsample.conv", out: ch, in: ch, kernel: 3) }
        }
        b.norm(p + "decoder.norm_out", channels)
        b.conv(p + "decoder.conv_out", out: imageChannels, in: channels, kernel: 3)
        b.conv(p + "quant_conv", out: 2 * latentChannels, in: 2 * latentChannels, kernel: 1)
        b.conv(p + "post_quant_conv", out: latentChannels, in: latentChannels, kernel: 1)
    }

    private func resnet(_ b: inout TensorListBuilder, _ p: String, in ci: Int, out co: Int) {
        b.norm(p + ".norm1", ci)
        b.conv(p + ".conv1", out: co, in: ci, kernel: 3)
        b.norm(p + ".norm2", co)
        b.conv(p + ".conv2", out: co, in: co, kernel: 3)
        if ci != co { b.conv(p + ".nin_shortcut", out: co, in: ci, kernel: 1) }
    }

    private func middle(_ b: inout TensorListBuilder, _ p: String, _ c: Int) {
        resnet(&b, p + ".block_1", in: c, out: c)
        b.norm(p + ".attn_1.norm", c)
        for proj in ["q", "k", "v", "proj_out"] { b.conv(p + ".attn_1." + proj, out: c, in: c, kernel: 1) }
        resnet(&b, p + ".block_2", in: c, out: c)
    }
}

/// A CLIP text transformer in Hugging Face naming (`text_model.…`), as SD 1.x and
/// SDXL's first text encoder store it. `position_ids` is left out, as sd-scripts does.
struct HFCLIPTextShape {
    var width: Int
    var layers: Int
    var vocabulary: Int
    var positions = 77

    func add(to b: inout TensorListBuilder, prefix p: String) {
        let t = p + "text_model."
        b.weight(t + "embeddings.position_embedding.weight", [positions, width])
        b.weight(t + "embeddings.token_embedding.weight", [vocabulary, width])
        for n in 0..<layers {
            let l = t + "encoder.layers.\(n)."
            b.norm(l + "layer_norm1", width)
            b.norm(l + "layer_norm2", width)
            b.linear(l + "mlp.fc1", out: 4 * width, in: width)
            b.linear(l + "mlp.fc2", out: width, in: 4 * width)
            for proj in ["k_proj", "out_proj", "q_proj", "v_proj"] {
                b.linear(l + "self_attn." + proj, out: width, in: width)
            }
        }
        b.norm(t + "final_layer_norm", width)
    }
}

/// An OpenCLIP text transformer in its own naming (`transformer.resblocks.N…`, fused
/// `attn.in_proj_weight` [3W, W]), as SDXL's second text encoder stores it.
struct OpenCLIPTextShape {
    var width: Int
    var layers: Int
    var vocabulary: Int
    var projectionWidth: Int
    var positions = 77

    func add(to b: inout TensorListBuilder, prefix p: String) {
        b.norm(p + "ln_final", width)
        b.add(p + "logit_scale", [], .constant(4.6052))  // ln(100), as trained CLIP models end up
        b.weight(p + "positional_embedding", [positions, width])
        b.weight(p + "text_projection", [width, projectionWidth])
        b.weight(p + "token_embedding.weight", [vocabulary, width])
        for n in 0..<layers {
            let r = p + "transformer.resblocks.\(n)."
            b.bias(r + "attn.in_proj_bias", 3 * width)
            b.weight(r + "attn.in_proj_weight", [3 * width, width])
            b.linear(r + "attn.out_proj", out: width, in: width)
            b.norm(r + "ln_1", width)
            b.norm(r + "ln_2", width)
            b.linear(r + "mlp.c_fc", out: 4 * width, in: width)
            b.linear(r + "mlp.c_proj", out: width, in: 4 * width)
        }
    }
}
