import SafeTensors

/// Groups checkpoint tensor names into the parts users reason about when comparing
/// models: each text encoder, each UNet input/middle/output block, the VAE.
///
/// Labels (SGM/LDM layouts of SD1, SD2 and SDXL):
/// - `te` (SD1/SD2), `te1`, `te2`, `te3` for the text encoders, `vae` for the VAE;
/// - `unet.input_blocks.N`, `unet.middle_block`, `unet.output_blocks.N`, `unet.out`,
///   `unet.time_embed`, `unet.label_emb`; the diffusers spelling likewise
///   (`unet.down_blocks.N`, `unet.mid_block`, `unet.up_blocks.N`, `unet.conv_in`, ...);
///   DiT layouts by their first two path components after the prefix
///   (`unet.double_blocks.7`);
/// - other keys of a recognised checkpoint (EMA copies, schedule buffers): the first
///   component (`model_ema`, `alphas_cumprod`);
/// - keys of an unknown layout: the first two dot-separated components
///   (`encoder.layers`, `lm_head.weight`).
public struct BlockGrouping: Sendable {
    private let bareDiT: Bool
    private let bareVAE: Bool
    private let knownLayout: Bool

    /// - Parameter tensors: the file's tensors (used to recognise prefix-less DiT / VAE files).
    public init(tensors: [TensorInfo]) {
        let roots = Set(tensors.map { String($0.name.prefix { $0 != "." }) })
        bareDiT = roots.contains("double_blocks") || roots.contains("joint_blocks")
        bareVAE = roots.contains("decoder") && roots.contains("encoder")
        let (dit, vae) = (bareDiT, bareVAE)
        knownLayout = tensors.contains {
            CheckpointAnalysis.componentPrefix(of: $0.name, bareDiT: dit, bareVAE: vae).0 != .other
        }
    }

    /// The group label of one tensor name.
    public func group(of name: String) -> String {
        let (component, prefix) = CheckpointAnalysis.componentPrefix(of: name, bareDiT: bareDiT, bareVAE: bareVAE)
        switch component {
        case .te, .te1, .te2, .te3, .vae, .embedding:
            return component.rawValue
        case .unet:
            return "unet." + Self.unetBlock(name.dropFirst(prefix.count))
        case .other:
            return Self.firstComponents(name, knownLayout ? 1 : 2)
        }
    }

    /// The block of a UNet/DiT path (without the component prefix).
    static func unetBlock(_ path: Substring) -> String {
        let parts = path.split(separator: ".", omittingEmptySubsequences: false)
        guard let root = parts.first else { return String(path) }
        switch root {
        case "input_blocks", "output_blocks", "down_blocks", "up_blocks",
            "double_blocks", "single_blocks", "joint_blocks":
            if parts.count >= 2, Int(parts[1]) != nil { return "\(root).\(parts[1])" }
            return String(root)
        default:
            // middle_block, mid_block, out, time_embed, label_emb, conv_in, conv_out, ...
            return String(root)
        }
    }

    /// The first `n` dot-separated components of a key (the whole key when shorter).
    static func firstComponents(_ name: String, _ n: Int) -> String {
        let parts = name.split(separator: ".", maxSplits: n, omittingEmptySubsequences: false)
        return parts.prefix(n).joined(separator: ".")
    }
}
