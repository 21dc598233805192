import SafeTensors

/// The factors of one adapter module, parsed once into the closed set of shapes the
/// adapter formats use. Every tensor of a module is either one of these factors, one of
/// its ``ModuleModifiers``, or an issue of the module: nothing is dropped silently.
public enum ModuleFactors: Sendable, Equatable {
    /// LoRA / LoCon: `up @ down` (with a Tucker core `mid` between them for 3×3 LoCon).
    case lowRank(LowRankFactors)
    /// LoHa: `(w1a @ w1b) ⊙ (w2a @ w2b)`, each side optionally through a Tucker core.
    case hadamard(HadamardFactors)
    /// LoKr: `kron(W1, W2)`, each side stored whole or as a product of two factors.
    case kronecker(KroneckerFactors)
    /// Full difference: `W += diff`, `b += diff_b` (either may be absent).
    case full(diff: TensorInfo?, bias: TensorInfo?)
    /// Norm-layer difference: `γ += w_norm`, `β += b_norm` (either may be absent).
    case norm(weight: TensorInfo?, bias: TensorInfo?)
    /// (IA)³: a learned vector scaling the weight's rows or (with `on_input`) columns.
    case ia3(weight: TensorInfo, onInput: TensorInfo)
    /// GLoRA: `W + W @ (a1 @ a2) + b1 @ b2` (layout decided by the shapes).
    case glora(GLoRAFactors)
    /// OFT / BOFT: block-diagonal (or butterfly) orthogonal rotations of the weight's rows.
    case orthogonal(OrthogonalFactors)
}

/// `up` `[out, rank(, 1, 1)]`, `down` `[rank, in(, kh, kw)]`, optional `mid` `[rank, rank, kh, kw]`.
public struct LowRankFactors: Sendable, Equatable {
    public let up: TensorInfo
    public let down: TensorInfo
    public let mid: TensorInfo?
    /// `down.shape[0]`, at least 1.
    public let rank: Int
}

/// The four LoHa factors and the optional Tucker cores.
public struct HadamardFactors: Sendable, Equatable {
    public let w1a: TensorInfo, w1b: TensorInfo, w2a: TensorInfo, w2b: TensorInfo
    public let t1: TensorInfo?, t2: TensorInfo?
    public let rank: Int
}

/// One side of a Kronecker product.
public enum KroneckerSide: Sendable, Equatable {
    /// Stored whole.
    case whole(TensorInfo)
    /// `a @ b`.
    case product(a: TensorInfo, b: TensorInfo)
    /// Tucker: `t` contracted with `a` and `b`.
    case tucker(t: TensorInfo, a: TensorInfo, b: TensorInfo)

    /// Whether the side is stored as factors (and so carries a rank).
    public var isFactorized: Bool {
        if case .whole = self { return false }
        return true
    }
}

/// `kron(W1, W2)`; `rank` is the factorized side's (nil when both sides are whole,
/// in which case LyCORIS ignores a stored alpha and uses scale 1).
public struct KroneckerFactors: Sendable, Equatable {
    public let w1: KroneckerSide
    public let w2: KroneckerSide
    public let rank: Int?
}

/// The GLoRA factors (`bm` is an unused extra some versions store).
public struct GLoRAFactors: Sendable, Equatable {
    /// Which of LyCORIS's two layouts the shapes say (ComfyUI's test).
    public enum Layout: String, Sendable, Equatable {
        /// Since 2024-05: `a1` `(in, r)`, `a2` `(r, in)`, `b1` `(out, r)`, `b2` `(r, in·kh·kw)`;
        /// `ΔW = b1 @ b2 + W @ a1 @ a2`.
        case current
        /// Up to 2024-04: `a1` `(r, in)`, `a2` `(in, r)`, `b1` `(r, in)`, `b2` `(out, r)`;
        /// `ΔW = b2 @ b1 + W @ a2 @ a1`.
        case legacy
        /// Both tests hold (square factors): ComfyUI takes the legacy layout only when
        /// `a2.shape[0]` equals the layer's in and out features.
        case ambiguous
    }
    public let a1: TensorInfo, a2: TensorInfo, b1: TensorInfo, b2: TensorInfo
    public let layout: Layout
    /// `a2.shape[0]` (current layout) or `a1.shape[0]` (legacy).
    public let rank: Int
}

/// OFT (`blocks` 3-D `(n, b, b)`, or the old `oft_diag`) and BOFT (`blocks` 4-D).
public struct OrthogonalFactors: Sendable, Equatable {
    public let blocks: TensorInfo
    /// BOFT: `blocks` is `(levels, n, b, b)`.
    public let butterfly: Bool
    /// Stored as the pre-2024 LyCORIS `oft_diag`.
    public let legacyDiagonal: Bool
    /// Optional per-row rescale `(out, 1, …)`.
    public let rescale: TensorInfo?
    /// Number of blocks and the block size.
    public let blockCount: Int
    public let blockSize: Int
}

/// Which axis a DoRA `dora_scale` normalises, decided by its shape.
public enum DoRAAxis: String, Sendable, Codable, Equatable {
    /// `(out, 1, …)`: one magnitude per output row (LyCORIS since 2025, PEFT).
    case output
    /// `(1, in, …)`: one magnitude per input column (A1111, OneTrainer, older LyCORIS).
    case input
}

/// A DoRA magnitude vector and its axis.
public struct DoRAModifier: Sendable, Equatable {
    public let scale: TensorInfo
    public let axis: DoRAAxis
}

/// Tensors that modify how a module's factors apply.
public struct ModuleModifiers: Sendable, Equatable {
    /// `alpha`: scale = alpha / rank.
    public var alpha: TensorInfo?
    /// `scale`: an explicit scale that replaces alpha / rank (A1111, stable-diffusion.cpp).
    public var scale: TensorInfo?
    /// `dora_scale`.
    public var dora: DoRAModifier?
    /// `lora_B.bias`: a bias delta carried by the up factor (PEFT `lora_bias`), applied as
    /// `bias += ratio · scale · up_bias`.
    public var upBias: TensorInfo?

    public init(
        alpha: TensorInfo? = nil, scale: TensorInfo? = nil, dora: DoRAModifier? = nil, upBias: TensorInfo? = nil
    ) {
        self.alpha = alpha
        self.scale = scale
        self.dora = dora
        self.upBias = upBias
    }
}

extension ModuleKind {
    /// The part roles a module of this kind consumes as factors or modifiers; any other
    /// role present is reported as an issue (`unused_part`, or `unsupported_part` for
    /// the formats graft recognises but cannot apply).
    var consumedRoles: Set<PartRole> {
        let scaled: Set<PartRole> = [.alpha, .scale, .doraScale]
        switch self {
        case .lora: return scaled.union([.down, .up, .mid, .upBias])
        case .loha: return scaled.union([.hadaW1A, .hadaW1B, .hadaW2A, .hadaW2B, .hadaT1, .hadaT2])
        case .lokr: return scaled.union([.lokrW1, .lokrW1A, .lokrW1B, .lokrW2, .lokrW2A, .lokrW2B, .lokrT2])
        case .full: return [.diff, .diffBias]
        case .norm: return [.wNorm, .bNorm]
        case .ia3: return [.ia3Weight, .onInput]
        case .glora: return [.alpha, .scale, .doraScale, .gloraA1, .gloraA2, .gloraB1, .gloraB2, .gloraBM]
        case .oft, .boft: return [.alpha, .oftBlocks, .oftDiag, .rescale, .doraScale]
        case .embedding, .unknown: return Set(PartRole.allCases)
        }
    }
}

extension PartRole {
    /// Roles of formats graft recognises but cannot apply (LyCORIS sparse bias, ComfyUI
    /// replacement tensors).
    static let unsupported: Set<PartRole> = [
        .biasIndices, .biasValues, .biasSize, .setWeight, .reshapeWeight, .tloraLambda, .tloraQ, .tloraP, .oftR,
        .peftBoftR, .peftBoftS,
    ]
}
