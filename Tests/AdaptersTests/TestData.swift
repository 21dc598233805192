import Foundation
import SafeTensors
@testable import Adapters

/// Shared fixtures: the SDXL key lists from ../shared/models and synthetic key lists.
enum TestData {
    static let sharedDir: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared")

    static func url(_ relative: String) -> URL { sharedDir.appendingPathComponent(relative) }

    static var available: Bool {
        ["models/sdxl-checkpoint-keys.json", "models/sdxl-locon-keys.json", "conformance/cases.json"]
            .allSatisfy { FileManager.default.fileExists(atPath: url($0).path) }
    }

    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] != nil }

    /// A tensor with a fake data range of the right length.
    static func info(_ name: String, _ shape: [Int], _ dtype: DType = .F16) -> TensorInfo {
        let bytes = UInt64(shape.reduce(1, *) * max(dtype.bitCount / 8, 1))
        return TensorInfo(name: name, dtype: dtype, shape: shape.map(UInt64.init), dataOffsets: 0 ..< bytes)
    }

    static func load(_ relative: String) -> (tensors: [TensorInfo], metadata: [String: String]?) {
        guard let data = try? Data(contentsOf: url(relative)),
              let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let list = root["tensors"] as? [[String: Any]] else { return ([], nil) }
        let tensors = list.compactMap { t -> TensorInfo? in
            guard let name = t["name"] as? String, let d = t["dtype"] as? String, let dtype = DType(name: d),
                  let shape = t["shape"] as? [Int] else { return nil }
            return info(name, shape, dtype)
        }
        return (tensors, root["metadata"] as? [String: String])
    }

    static let sdxlCheckpoint = load("models/sdxl-checkpoint-keys.json")
    static let sdxlLoCon = load("models/sdxl-locon-keys.json")
    static let sdxlMapper = KeyMapper(tensors: sdxlCheckpoint.tensors, metadata: sdxlCheckpoint.metadata)

    static var cases: [String: Any] {
        guard let data = try? Data(contentsOf: url("conformance/cases.json")),
              let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return [:] }
        return root
    }

    /// A kohya LoRA module (down, up, scalar alpha) with the given delta shape.
    static func loraModule(_ name: String, out: Int, in inDim: Int, rank: Int, kernel: [Int] = [], dtype: DType = .F16) -> [TensorInfo] {
        [info("\(name).lora_down.weight", [rank, inDim] + kernel, dtype),
         info("\(name).lora_up.weight", kernel.isEmpty ? [out, rank] : [out, rank, 1, 1], dtype),
         info("\(name).alpha", [], dtype)]
    }

    /// A synthetic SD1.5 checkpoint in the LDM layout: full UNet block structure,
    /// CLIP-L text encoder, a few VAE keys.
    static let sd15Checkpoint: [TensorInfo] = {
        var t: [TensorInfo] = []
        let u = "model.diffusion_model."
        func res(_ p: String, _ cin: Int, _ c: Int) {
            t.append(info(u + p + ".in_layers.0.weight", [cin]))
            t.append(info(u + p + ".in_layers.2.weight", [c, cin, 3, 3]))
            t.append(info(u + p + ".emb_layers.1.weight", [c, 1280]))
            t.append(info(u + p + ".out_layers.0.weight", [c]))
            t.append(info(u + p + ".out_layers.3.weight", [c, c, 3, 3]))
            if cin != c { t.append(info(u + p + ".skip_connection.weight", [c, cin, 1, 1])) }
        }
        func attn(_ p: String, _ c: Int) {
            t.append(info(u + p + ".norm.weight", [c]))
            t.append(info(u + p + ".proj_in.weight", [c, c, 1, 1]))
            t.append(info(u + p + ".proj_out.weight", [c, c, 1, 1]))
            let b = u + p + ".transformer_blocks.0."
            for a in ["attn1", "attn2"] {
                t.append(info(b + a + ".to_q.weight", [c, c]))
                t.append(info(b + a + ".to_k.weight", [c, a == "attn1" ? c : 768]))
                t.append(info(b + a + ".to_v.weight", [c, a == "attn1" ? c : 768]))
                t.append(info(b + a + ".to_out.0.weight", [c, c]))
            }
            t.append(info(b + "ff.net.0.proj.weight", [8 * c, c]))
            t.append(info(b + "ff.net.2.weight", [c, 4 * c]))
            for n in 1 ... 3 { t.append(info(b + "norm\(n).weight", [c])) }
        }
        let ch = [320, 640, 1280, 1280]
        t.append(info(u + "input_blocks.0.0.weight", [320, 4, 3, 3]))
        var skips = [320]
        var cin = 320
        for level in 0 ..< 4 {
            for j in 0 ..< 2 {
                let n = 1 + 3 * level + j
                res("input_blocks.\(n).0", cin, ch[level])
                cin = ch[level]
                if level < 3 { attn("input_blocks.\(n).1", ch[level]) }
                skips.append(cin)
            }
            if level < 3 {
                t.append(info(u + "input_blocks.\(3 + 3 * level).0.op.weight", [cin, cin, 3, 3]))
                skips.append(cin)
            }
        }
        res("middle_block.0", 1280, 1280)
        attn("middle_block.1", 1280)
        res("middle_block.2", 1280, 1280)
        for i in 0 ..< 4 {
            let c = ch[3 - i]
            for j in 0 ..< 3 {
                let n = 3 * i + j
                res("output_blocks.\(n).0", cin + skips.removeLast(), c)
                cin = c
                if i > 0 { attn("output_blocks.\(n).1", c) }
                if i < 3 && j == 2 {
                    t.append(info(u + "output_blocks.\(n).\(i == 0 ? 1 : 2).conv.weight", [c, c, 3, 3]))
                }
            }
        }
        t.append(info(u + "time_embed.0.weight", [1280, 320]))
        t.append(info(u + "time_embed.2.weight", [1280, 1280]))
        t.append(info(u + "out.0.weight", [320]))
        t.append(info(u + "out.2.weight", [4, 320, 3, 3]))
        let te = "cond_stage_model.transformer.text_model.encoder.layers."
        for n in 0 ..< 12 {
            for p in ["q_proj", "k_proj", "v_proj", "out_proj"] { t.append(info(te + "\(n).self_attn.\(p).weight", [768, 768])) }
            t.append(info(te + "\(n).mlp.fc1.weight", [3072, 768]))
            t.append(info(te + "\(n).mlp.fc2.weight", [768, 3072]))
        }
        t.append(info("first_stage_model.encoder.conv_in.weight", [128, 3, 3, 3]))
        t.append(info("first_stage_model.decoder.conv_out.weight", [3, 128, 3, 3]))
        t.append(info("alphas_cumprod", [1000], .F32))
        return t
    }()
}
