// Splitting adapter tensor names into module name + part role, by known suffixes.

/// The role one tensor plays inside an adapter module, recognised from its key suffix.
public enum PartRole: String, Sendable, Codable, CaseIterable, Comparable {
    /// LoRA down factor (kohya `lora_down.weight`, PEFT `lora_A`, diffusers `.lora.down`…).
    case down
    /// LoRA up factor (kohya `lora_up.weight`, PEFT `lora_B`, diffusers `.lora.up`…).
    case up
    /// LoCon Tucker core `lora_mid.weight`.
    case mid
    /// The per-module `alpha` scalar.
    case alpha
    /// DoRA magnitude `dora_scale`.
    case doraScale = "dora_scale"
    /// Explicit scale overriding alpha/rank (A1111, stable-diffusion.cpp).
    case scale
    case hadaW1A = "hada_w1_a", hadaW1B = "hada_w1_b", hadaW2A = "hada_w2_a", hadaW2B = "hada_w2_b"
    case hadaT1 = "hada_t1", hadaT2 = "hada_t2"
    case lokrW1 = "lokr_w1", lokrW1A = "lokr_w1_a", lokrW1B = "lokr_w1_b"
    case lokrW2 = "lokr_w2", lokrW2A = "lokr_w2_a", lokrW2B = "lokr_w2_b", lokrT2 = "lokr_t2"
    /// Full/diff weight delta and its bias delta.
    case diff, diffBias = "diff_b"
    /// LyCORIS norm deltas.
    case wNorm = "w_norm", bNorm = "b_norm"
    /// (IA)³ vector (`.weight`, only together with `on_input`) and its axis flag.
    case ia3Weight = "weight", onInput = "on_input"
    case gloraA1 = "a1", gloraA2 = "a2", gloraB1 = "b1", gloraB2 = "b2", gloraBM = "bm"
    case oftBlocks = "oft_blocks", oftDiag = "oft_diag", rescale
    /// LyCORIS sparse-bias extras.
    case biasIndices = "bias_indices", biasValues = "bias_values", biasSize = "bias_size"
    /// Bias delta carried by a LoRA up factor (`lora_B.bias`, BFL control LoRAs).
    case upBias = "up_bias"
    /// ComfyUI replacement tensors.
    case setWeight = "set_weight", reshapeWeight = "reshape_weight"
    /// T-LoRA (timestep-masked; needs the base weight's SVD state).
    case tloraLambda = "lambda_layer", tloraQ = "q_layer", tloraP = "p_layer"
    /// PEFT / OneTrainer OFTv2 (`oft_R.weight`: packed skew blocks, Cayley–Neumann, input side).
    case oftR = "oft_R"
    /// PEFT BOFT (`boft_R`, `boft_s`).
    case peftBoftR = "boft_R", peftBoftS = "boft_s"

    public static func < (lhs: PartRole, rhs: PartRole) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// How the LoRA factors of a module were spelled; tells naming schemes apart.
public enum LoRASpelling: String, Sendable, Codable {
    /// `lora_down.weight` / `lora_up.weight` (kohya, LyCORIS, OneTrainer, ComfyUI).
    case kohya
    /// `lora_A` / `lora_B` (PEFT), with or without `.default` / `.weight`.
    case peft
    /// `.lora.down.weight` / `.lora.up.weight` (diffusers).
    case diffusers
    /// `…processor.to_q_lora.down.weight` (diffusers attention processors, 2023).
    case attnProcessor = "attn_processor"
    /// `.lora_linear_layer.down.weight` (diffusers text-encoder patches).
    case linearLayer = "linear_layer"
}

struct SplitKey {
    let module: String
    let role: PartRole
    let spelling: LoRASpelling?
}

enum AdapterKeys {
    // (suffix after the module name, role, spelling); the separator before the
    // suffix is "." except for the attention-processor spelling ("_").
    // Longest first, so `.lora_A.default.weight` wins over `.weight`-like tails.
    static let table: [(String, PartRole, LoRASpelling?)] = {
        var t: [(String, PartRole, LoRASpelling?)] = [
            (".lora_down.weight", .down, .kohya), (".lora_up.weight", .up, .kohya), (".lora_mid.weight", .mid, .kohya),
            (".lora_A.default.weight", .down, .peft), (".lora_B.default.weight", .up, .peft),
            (".lora_A.weight", .down, .peft), (".lora_B.weight", .up, .peft), (".lora_B.bias", .upBias, .peft),
            (".lora_A", .down, .peft), (".lora_B", .up, .peft),
            (".lora.down.weight", .down, .diffusers), (".lora.up.weight", .up, .diffusers),
            (".lora_linear_layer.down.weight", .down, .linearLayer),
            (".lora_linear_layer.up.weight", .up, .linearLayer),
            ("_lora.down.weight", .down, .attnProcessor), ("_lora.up.weight", .up, .attnProcessor),
            (".a1.weight", .gloraA1, nil), (".a2.weight", .gloraA2, nil), (".b1.weight", .gloraB1, nil),
            (".b2.weight", .gloraB2, nil), (".bm.weight", .gloraBM, nil),
            (".q_layer.weight", .tloraQ, nil), (".p_layer.weight", .tloraP, nil), (".oft_R.weight", .oftR, nil),
        ]
        let plain: [PartRole] = [
            .alpha, .doraScale, .scale, .hadaW1A, .hadaW1B, .hadaW2A, .hadaW2B, .hadaT1, .hadaT2,
            .lokrW1, .lokrW1A, .lokrW1B, .lokrW2, .lokrW2A, .lokrW2B, .lokrT2, .diff, .diffBias, .wNorm, .bNorm,
            .onInput, .oftBlocks, .oftDiag, .rescale, .biasIndices, .biasValues, .biasSize, .setWeight, .reshapeWeight,
            .tloraLambda, .peftBoftR, .peftBoftS,
        ]
        t += plain.map { ("." + $0.rawValue, $0, nil) }
        return t.sorted { $0.0.count > $1.0.count }
    }()

    /// Splits one key; nil when no adapter suffix matches (a bare `.weight` is
    /// decided later, with the module's other keys in view).
    static func split(_ key: String) -> SplitKey? {
        for (suffix, role, spelling) in table where key.hasSuffix(suffix) && key.count > suffix.count {
            return SplitKey(module: String(key.dropLast(suffix.count)), role: role, spelling: spelling)
        }
        return nil
    }
}
