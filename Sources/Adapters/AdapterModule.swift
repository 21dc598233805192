import SafeTensors

/// The algorithm of one adapter module, decided by its set of key suffixes.
public enum ModuleKind: String, Sendable, Codable, CaseIterable, Comparable {
    /// LoRA / LoCon (any spelling of down/up), including Tucker `lora_mid`.
    case lora
    /// LyCORIS LoHa (Hadamard product), including Tucker `hada_t1/t2`.
    case loha
    /// LyCORIS LoKr (Kronecker product), including Tucker `lokr_t2`.
    case lokr
    /// Full weight difference `diff` (+ `diff_b`).
    case full
    /// LayerNorm/GroupNorm deltas `w_norm`/`b_norm`.
    case norm
    /// (IA)³ `weight` + `on_input`.
    case ia3
    /// GLoRA `a1/a2/b1/b2`.
    case glora
    /// OFT with 3-D `oft_blocks` (kohya, LyCORIS diag-OFT) or old `oft_diag`.
    case oft
    /// BOFT: 4-D `oft_blocks`.
    case boft
    /// Textual-inversion embedding bundled in the adapter (`bundle_emb.*`).
    case embedding
    /// Keys graft does not recognise, or only `alpha`/`dora_scale` with nothing to modify.
    case unknown

    public static func < (lhs: ModuleKind, rhs: ModuleKind) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// The kind of layer an adapter module's delta has, as far as its shapes tell.
public enum LayerType: Sendable, Equatable, Hashable, Comparable {
    case linear
    /// A 2-D convolution with the given kernel (1×1 included).
    case conv(kernelHeight: Int, kernelWidth: Int)
    /// The shapes do not tell (flattened LoHa/LoKr factors, OFT, IA³…).
    case unknown

    /// `linear`, `conv1x1`, `conv3x3`, `unknown`.
    public var name: String {
        switch self {
        case .linear: return "linear"
        case let .conv(h, w): return "conv\(h)x\(w)"
        case .unknown: return "unknown"
        }
    }

    /// A convolution with a kernel larger than 1×1 (what makes a LoRA a LoCon,
    /// and what kohya trains with `conv_dim`).
    public var isSpatialConv: Bool {
        // h·w > 1 without the product: a file can claim any kernel (found by the fuzzer).
        if case let .conv(h, w) = self { return h > 0 && w > 0 && (h > 1 || w > 1) }
        return false
    }

    /// The layer type of a weight of this shape: 2-D linear, 4-D conv.
    public init(weightShape dims: [Int]) {
        switch dims.count {
        case 2: self = .linear
        case 4: self = .conv(kernelHeight: dims[2], kernelWidth: dims[3])
        default: self = .unknown
        }
    }
}

/// The shape of the weight delta a module produces, as far as its factors tell.
public struct DeltaShape: Sendable, Equatable {
    /// Output features (rows of the delta), when known.
    public let outFeatures: Int?
    /// Input features times kernel area (columns of the flattened delta), when known.
    public let flatInFeatures: Int?
    /// `[]` for linear, `[kh, kw]` for conv, nil when the factors do not tell.
    public let kernel: [Int]?
    /// The exact delta shape for formats that store it whole (`diff`, `w_norm`).
    public let exact: [Int]?

    /// The delta as the docs write it: `[out, in, kh, kw]`, `[out, in]`, or the exact shape.
    public var description: String {
        if let exact { return shapeText(exact) }
        let o = outFeatures.map(String.init) ?? "?"
        guard let flat = flatInFeatures else { return "[\(o), ?]" }
        if let k = kernel, k.count == 2, k[0] > 0, k[1] > 0 {
            let area = saturatedProduct(k)
            if area < Int.max, flat % area == 0 { return "[\(o), \(flat / area), \(k[0]), \(k[1])]" }
        }
        return "[\(o), \(flat)]"
    }

    /// Whether a target weight (or row slice) of shape `target` can receive this
    /// delta: same rows, same number of elements per row, same kernel when both
    /// are convolutions. A linear delta fits a 1×1 conv and back.
    public func fits(_ target: [Int]) -> Bool {
        guard !target.isEmpty else { return false }
        if let exact { return saturatedProduct(exact) == saturatedProduct(target) && exact.first == target.first }
        if let o = outFeatures, o != target[0] { return false }
        if let flat = flatInFeatures, flat != saturatedProduct(Array(target.dropFirst())) { return false }
        if let k = kernel, k.count == 2, target.count == 4, Array(target[2...]) != k { return false }
        return outFeatures != nil || flatInFeatures != nil
    }
}

/// A structural problem of one adapter module; reported, never fatal.
public struct ModuleIssue: Sendable, Equatable, Codable {
    /// The closed set of problems.
    public enum Kind: String, Sendable, Codable {
        /// A factor the module's kind needs is absent (up without down…).
        case missingPart = "missing_part"
        /// Factor shapes disagree on the rank (or on out/in between two products).
        case rankMismatch = "rank_mismatch"
        /// A factor has an unusable number of dimensions, a zero or an overflowing size.
        case badShape = "bad_shape"
        /// `alpha` is not a scalar or 1-element tensor, or could not be read.
        case badAlpha = "bad_alpha"
        /// A factor is not a floating-point tensor.
        case nonFloatDType = "non_float_dtype"
        /// Keys with suffixes graft does not know.
        case unknownSuffix = "unknown_suffix"
        /// One factor spelled twice in one module (e.g. `lora_down.weight` and `lora_A.weight`).
        case duplicatePart = "duplicate_part"
        /// Only `alpha`/`dora_scale`/`scale` with no weights to go with them.
        case orphan = "orphan"
        /// A known part that the module's kind does not use (a `lora_mid` in a LoHa module,
        /// `alpha` on a full-difference module…): applying the rest would drop it silently.
        case unusedPart = "unused_part"
        /// A part of a format graft recognises but cannot apply (LyCORIS sparse bias,
        /// ComfyUI `set_weight`/`reshape_weight`).
        case unsupportedPart = "unsupported_part"
    }
    /// What is wrong.
    public let kind: Kind
    /// One lowercase sentence naming the keys and shapes involved.
    public let message: String

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }
}

/// One adapter module: the tensors that share a module prefix, with its kind,
/// target component, rank, layer type and structural issues.
public struct AdapterModule: Sendable {
    /// The module prefix, e.g. `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`.
    public let name: String
    /// The component the module targets (unet, te, te1, te2, te3, embedding, other).
    public internal(set) var component: Component
    /// The naming scheme of this module's name.
    public internal(set) var scheme: NamingScheme
    /// The module's path inside its component with dots replaced by underscores
    /// (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`,
    /// `text_model_encoder_layers_0_self_attn_q_proj`); what the key mapper looks up.
    public let pathKey: String
    /// The algorithm.
    public let kind: ModuleKind
    /// Whether the module carries a Tucker/CP core (`lora_mid`, `hada_t1/t2`, `lokr_t2`).
    public let isTucker: Bool
    /// The module's tensors by role (for listing; appliers use ``factors`` and ``modifiers``).
    public let parts: [PartRole: TensorInfo]
    /// The factors, parsed once; nil when the module has structural issues or no weights.
    public let factors: ModuleFactors?
    /// alpha, scale, DoRA magnitude and up-factor bias.
    public let modifiers: ModuleModifiers
    /// How its LoRA factors were spelled (LoRA modules only).
    public let loraSpelling: LoRASpelling?
    /// Keys of the module whose suffix is not recognised.
    public let unknownKeys: [String]
    /// The rank: `down.shape[0]` for LoRA, `hada_w1_b.shape[0]` for LoHa, the
    /// factorised side's rank for LoKr (nil when both LoKr factors are full), `a2.shape[0]` for GLoRA.
    public let rank: Int?
    /// The alpha value, when the analysis was given a reader for tensor data.
    public internal(set) var alpha: Double?
    /// The value of an explicit `scale` key (replaces alpha / rank), when read.
    public internal(set) var scaleValue: Double?
    /// The layer type of the delta as stored.
    public let layer: LayerType
    /// The delta's shape, as far as the factors tell (nil for OFT/IA³/unknown).
    public let delta: DeltaShape?
    /// Structural problems; empty for a well-formed module.
    public internal(set) var issues: [ModuleIssue]

    /// Whether the module has a DoRA `dora_scale` modifier.
    public var hasDoRA: Bool { parts[.doraScale] != nil }
    /// Whether the module has no structural problems.
    public var isValid: Bool { issues.isEmpty }
    /// Whether every issue is a part graft recognises but cannot apply (the module is
    /// well-formed, just not mergeable).
    public var isOnlyUnsupported: Bool { !issues.isEmpty && issues.allSatisfy { $0.kind == .unsupportedPart } }
    /// Every tensor name of the module, sorted.
    public var keys: [String] { (parts.values.map(\.name) + unknownKeys).sorted() }

    /// The DoRA axis from `dora_scale`'s shape; nil without DoRA.
    public var doraAxis: DoRAAxis? {
        guard let d = parts[.doraScale] else { return nil }
        return Self.doraAxis(of: d, outFeatures: delta?.outFeatures)
    }

    /// `.output` when the first dimension of `dora_scale` equals the output features
    /// (and is not 1), `.input` otherwise.
    static func doraAxis(of d: TensorInfo, outFeatures: Int?) -> DoRAAxis {
        if let out = outFeatures, d.dim(0) == out, out != 1 { return .output }
        return .input
    }
}

extension AdapterModule {
    /// Classifies and validates one group of keys.
    init(
        name: String, parts: [PartRole: TensorInfo], spelling: LoRASpelling?, unknownKeys: [String],
        duplicates: [String] = [], component: Component, scheme: NamingScheme, pathKey: String
    ) {
        self.name = name
        self.parts = parts
        self.unknownKeys = unknownKeys.sorted()
        self.component = component
        self.scheme = scheme
        self.pathKey = pathKey
        self.alpha = nil
        self.scaleValue = nil

        let r = Set(parts.keys)
        var issues: [ModuleIssue] = []
        let kind: ModuleKind
        if component == .embedding {
            kind = .embedding
        } else if !r.isDisjoint(with: [.hadaW1A, .hadaW1B, .hadaW2A, .hadaW2B]) {
            kind = .loha
        } else if !r.isDisjoint(with: [.lokrW1, .lokrW1A, .lokrW1B, .lokrW2, .lokrW2A, .lokrW2B]) {
            kind = .lokr
        } else if !r.isDisjoint(with: [.down, .up, .mid]) {
            kind = .lora
        } else if !r.isDisjoint(with: [.gloraA1, .gloraA2, .gloraB1, .gloraB2]) {
            kind = .glora
        } else if let b = parts[.oftBlocks] {
            kind = b.shape.count == 4 ? .boft : .oft
        } else if r.contains(.oftDiag) {
            kind = .oft
        } else if r.contains(.diff) || r.contains(.diffBias) {
            kind = .full
        } else if r.contains(.wNorm) || r.contains(.bNorm) {
            kind = .norm
        } else if r.contains(.onInput) {
            kind = .ia3
        } else {
            kind = .unknown
        }
        self.kind = kind
        self.loraSpelling = kind == .lora ? spelling : nil
        self.isTucker = r.contains(.mid) || r.contains(.hadaT1) || r.contains(.hadaT2) || r.contains(.lokrT2)

        var check = FactorCheck(module: name, parts: parts)
        var rank: Int? = nil
        var delta: DeltaShape? = nil
        var factors: ModuleFactors? = nil
        switch kind {
        case .lora: (rank, delta, factors) = check.lora()
        case .loha: (rank, delta, factors) = check.loha()
        case .lokr: (rank, delta, factors) = check.lokr()
        case .glora: (rank, delta, factors) = check.glora()
        case .full:
            let d = parts[.diff], b = parts[.diffBias]
            if let d {
                if d.shape.isEmpty { check.fail(.badShape, "\(d.name) is a scalar; expected the weight's shape") }
                delta = DeltaShape(outFeatures: d.dim(0), flatInFeatures: nil, kernel: nil, exact: d.dims)
            } else if let b {
                delta = DeltaShape(outFeatures: b.dim(0), flatInFeatures: nil, kernel: nil, exact: nil)
            }
            if let b, b.shape.count != 1 {
                check.fail(.badShape, "\(b.name) has shape \(shapeText(b.dims)); expected 1-D (out)")
            }
            factors = .full(diff: d, bias: b)
        case .norm:
            let w = parts[.wNorm], b = parts[.bNorm]
            for t in [w, b].compactMap({ $0 }) where t.shape.count != 1 {
                check.fail(.badShape, "\(t.name) has shape \(shapeText(t.dims)); expected 1-D (channels)")
            }
            if let w, let b, w.dims != b.dims {
                check.fail(.rankMismatch, "\(name): w_norm \(shapeText(w.dims)) and b_norm \(shapeText(b.dims)) differ")
            }
            if let t = w ?? b {
                delta = DeltaShape(outFeatures: t.dim(0), flatInFeatures: nil, kernel: nil, exact: t.dims)
            }
            factors = .norm(weight: w, bias: b)
        case .oft, .boft:
            factors = check.orthogonal()
            if case .orthogonal(let o)? = factors {
                let (out, overflow) = o.blockCount.multipliedReportingOverflow(by: o.blockSize)
                if overflow {
                    check.fail(.badShape, "\(name): \(o.blockCount) blocks of \(o.blockSize) rows overflow")
                } else {
                    delta = DeltaShape(outFeatures: out, flatInFeatures: nil, kernel: nil, exact: nil)
                }
            }
        case .ia3:
            if let w = check.require(.ia3Weight), let flag = parts[.onInput] {
                if w.shape.isEmpty || w.saturatedElementCount == 0 {
                    check.fail(.badShape, "\(w.name) has shape \(shapeText(w.dims)); expected a vector")
                }
                factors = .ia3(weight: w, onInput: flag)
            }
        case .embedding:
            break
        case .unknown:
            if unknownKeys.isEmpty && r.isDisjoint(with: PartRole.unsupported) {
                check.fail(
                    .orphan, "\(name) has only \(r.sorted().map(\.rawValue).joined(separator: ", ")) and no weights")
            }
        }
        issues += check.issues
        for d in duplicates { issues.append(ModuleIssue(kind: .duplicatePart, message: d)) }
        if !unknownKeys.isEmpty && kind != .embedding {
            issues.append(
                ModuleIssue(
                    kind: .unknownSuffix, message: "unrecognised keys: \(self.unknownKeys.joined(separator: ", "))"))
        }
        // Every part is consumed by the kind, or reported.
        let consumed = kind.consumedRoles
        for (role, t) in parts.sorted(by: { $0.key < $1.key }) {
            if PartRole.unsupported.contains(role) {
                issues.append(
                    ModuleIssue(
                        kind: .unsupportedPart,
                        message: "\(t.name): \(role.unsupportedDescription) cannot be applied by graft"))
            } else if !consumed.contains(role) {
                issues.append(
                    ModuleIssue(
                        kind: .unusedPart,
                        message: "\(t.name): \(kind.rawValue) modules have no use for a \(role.rawValue) tensor"))
            }
        }

        // dtype and alpha checks apply to every kind.
        for (role, t) in parts.sorted(by: { $0.key < $1.key }) {
            switch role {
            case .alpha, .scale:
                if t.saturatedElementCount != 1 {
                    issues.append(
                        ModuleIssue(
                            kind: .badAlpha,
                            message: "\(t.name) has shape \(shapeText(t.dims)); expected a scalar or 1-element tensor"))
                } else if t.dtype == .BOOL {
                    issues.append(ModuleIssue(kind: .badAlpha, message: "\(t.name) is BOOL; expected a number"))
                }
            case .onInput, .biasIndices, .biasSize:
                break
            default:
                if !t.dtype.isFloatingPoint {
                    issues.append(
                        ModuleIssue(
                            kind: .nonFloatDType,
                            message: "\(t.name) is \(t.dtype.rawValue); expected a floating-point type"))
                }
            }
        }
        var modifiers = ModuleModifiers(alpha: parts[.alpha], scale: parts[.scale], upBias: parts[.upBias])
        if let d = parts[.doraScale] {
            modifiers.dora = DoRAModifier(scale: d, axis: Self.doraAxis(of: d, outFeatures: delta?.outFeatures))
        }
        if let b = parts[.upBias], b.shape.count != 1 || b.dim(0) != delta?.outFeatures {
            issues.append(
                ModuleIssue(
                    kind: .badShape,
                    message:
                        "\(b.name) has shape \(shapeText(b.dims)); expected 1-D (out = \(delta?.outFeatures.map(String.init) ?? "?"))"
                ))
        }
        self.issues = issues
        self.modifiers = modifiers
        self.factors = issues.isEmpty ? factors : nil
        self.rank = rank
        self.delta = delta
        if let delta, let k = delta.kernel {
            self.layer = k.isEmpty ? .linear : .conv(kernelHeight: k[0], kernelWidth: k[1])
        } else if let exact = delta?.exact {
            self.layer = LayerType(weightShape: exact)
        } else {
            self.layer = .unknown
        }
    }
}

extension PartRole {
    /// What a part of an unsupported format is, for messages.
    var unsupportedDescription: String {
        switch self {
        case .biasIndices, .biasValues, .biasSize: return "a LyCORIS sparse bias"
        case .setWeight: return "a ComfyUI replacement weight (set_weight)"
        case .reshapeWeight: return "a ComfyUI reshape (reshape_weight)"
        case .tloraLambda, .tloraQ, .tloraP: return "a T-LoRA factor (timestep-masked, needs the base weight's SVD)"
        case .oftR: return "a PEFT/OneTrainer OFTv2 rotation (oft_R)"
        case .peftBoftR, .peftBoftS: return "a PEFT BOFT factor"
        default: return rawValue
        }
    }
}

/// Shape checks of the factor formats; collects issues instead of failing. All
/// arithmetic on dimensions is checked: a file can claim any shape.
struct FactorCheck {
    typealias Result = (rank: Int?, delta: DeltaShape?, factors: ModuleFactors?)
    let module: String
    let parts: [PartRole: TensorInfo]
    var issues: [ModuleIssue] = []

    init(module: String, parts: [PartRole: TensorInfo]) {
        self.module = module
        self.parts = parts
    }

    mutating func fail(_ kind: ModuleIssue.Kind, _ message: String) {
        issues.append(ModuleIssue(kind: kind, message: message))
    }

    /// The part, or an issue naming it as missing.
    mutating func require(_ role: PartRole) -> TensorInfo? {
        if let t = parts[role] { return t }
        fail(.missingPart, "\(module) has no \(role.rawValue) tensor")
        return nil
    }

    /// The part if its rank (number of dimensions) is one of `ranks` and no dimension is 0.
    mutating func shaped(_ role: PartRole, _ ranks: Set<Int>) -> TensorInfo? {
        guard let t = require(role) else { return nil }
        guard ranks.contains(t.shape.count) else {
            fail(
                .badShape,
                "\(t.name) has shape \(shapeText(t.dims)); expected \(ranks.sorted().map { "\($0)-D" }.joined(separator: " or "))"
            )
            return nil
        }
        guard !t.shape.contains(0) else {
            fail(.badShape, "\(t.name) has shape \(shapeText(t.dims)); a factor cannot have a zero dimension")
            return nil
        }
        return t
    }

    mutating func expectEqual(_ a: Int?, _ b: Int?, _ what: String) {
        if let a, let b, a != b { fail(.rankMismatch, "\(module): \(what) (\(a) vs \(b))") }
    }

    /// `a * b`, or nil with an issue when it overflows.
    mutating func product(_ a: Int, _ b: Int, _ what: String) -> Int? {
        let (p, o) = a.multipliedReportingOverflow(by: b)
        if o || a < 0 || b < 0 {
            fail(.badShape, "\(module): \(what) (\(a) x \(b)) overflows")
            return nil
        }
        return p
    }

    /// The product of a tensor's dimensions from `i` on, or nil with an issue when it overflows.
    mutating func tail(_ t: TensorInfo, from i: Int) -> Int? {
        let n = t.product(from: i)
        if n == Int.max {
            fail(.badShape, "\(t.name) has shape \(shapeText(t.dims)); its size overflows")
            return nil
        }
        return n
    }

    mutating func lora() -> Result {
        let down = shaped(.down, [2, 4])
        let up = shaped(.up, [2, 4])
        var kernel: [Int]? = nil
        let rank = down?.dim(0)
        let mid = parts[.mid]
        if let mid {
            guard mid.shape.count == 4, !mid.shape.contains(0) else {
                fail(.badShape, "\(mid.name) has shape \(shapeText(mid.dims)); expected (rank, rank, kh, kw)")
                return (rank, nil, nil)
            }
            expectEqual(mid.dim(1), down?.dim(0), "lora_mid columns and lora_down rows differ")
            expectEqual(up?.dim(1), mid.dim(0), "lora_up columns and lora_mid rows differ")
            kernel = [mid.dims[2], mid.dims[3]]
            if let d = down, d.shape.count == 4, d.product(from: 2) != 1 {
                fail(
                    .badShape,
                    "\(d.name) has shape \(shapeText(d.dims)); with lora_mid it must be (rank, in) or (rank, in, 1, 1)")
            }
        } else {
            expectEqual(up?.dim(1), down?.dim(0), "lora_up columns and lora_down rows differ")
            if let d = down { kernel = d.shape.count == 4 ? [d.dims[2], d.dims[3]] : [] }
        }
        if let u = up, u.shape.count == 4, u.product(from: 2) != 1 {
            fail(.badShape, "\(u.name) has shape \(shapeText(u.dims)); expected (out, rank) or (out, rank, 1, 1)")
        }
        guard let down, let up, let rank else { return (rank, nil, nil) }
        guard let area = product(kernel?.first ?? 1, kernel?.last ?? 1, "kernel area"),
            let inFeatures = down.dim(1),
            let flat = product(inFeatures, area, "input features times kernel area")
        else { return (rank, nil, nil) }
        let delta = DeltaShape(outFeatures: up.dim(0), flatInFeatures: flat, kernel: kernel, exact: nil)
        return (rank, delta, .lowRank(LowRankFactors(up: up, down: down, mid: mid, rank: rank)))
    }

    mutating func loha() -> Result {
        let tucker = parts[.hadaT1] != nil || parts[.hadaT2] != nil
        guard let w1a = shaped(.hadaW1A, [2]), let w2a = shaped(.hadaW2A, [2]) else {
            _ = require(.hadaW1B); _ = require(.hadaW2B); return (nil, nil, nil)
        }
        if tucker {
            guard let w1b = shaped(.hadaW1B, [2]), let w2b = shaped(.hadaW2B, [2]),
                let t1 = shaped(.hadaT1, [4]), let t2 = shaped(.hadaT2, [4])
            else { return (nil, nil, nil) }
            expectEqual(w1a.dim(1), w2a.dim(1), "hada_w1_a and hada_w2_a disagree on out")
            expectEqual(w1b.dim(1), w2b.dim(1), "hada_w1_b and hada_w2_b disagree on in")
            expectEqual(t1.dim(0), w1a.dim(0), "hada_t1 and hada_w1_a disagree on rank")
            expectEqual(t1.dim(1), w1b.dim(0), "hada_t1 and hada_w1_b disagree on rank")
            expectEqual(t2.dim(0), w2a.dim(0), "hada_t2 and hada_w2_a disagree on rank")
            expectEqual(t2.dim(1), w2b.dim(0), "hada_t2 and hada_w2_b disagree on rank")
            expectEqual(t1.dim(2), t2.dim(2), "hada_t1 and hada_t2 disagree on the kernel height")
            expectEqual(t1.dim(3), t2.dim(3), "hada_t1 and hada_t2 disagree on the kernel width")
            let kernel = [t1.dims[2], t1.dims[3]]
            guard let area = product(kernel[0], kernel[1], "kernel area"), let inF = w1b.dim(1),
                let flat = product(inF, area, "input features times kernel area"), let rank = w1b.dim(0)
            else { return (nil, nil, nil) }
            let f = HadamardFactors(w1a: w1a, w1b: w1b, w2a: w2a, w2b: w2b, t1: t1, t2: t2, rank: rank)
            return (
                rank, DeltaShape(outFeatures: w1a.dim(1), flatInFeatures: flat, kernel: kernel, exact: nil),
                .hadamard(f)
            )
        }
        guard let w1b = shaped(.hadaW1B, [2, 4]), let w2b = shaped(.hadaW2B, [2, 4]) else { return (nil, nil, nil) }
        expectEqual(w1a.dim(1), w1b.dim(0), "hada_w1_a columns and hada_w1_b rows differ")
        expectEqual(w2a.dim(1), w2b.dim(0), "hada_w2_a columns and hada_w2_b rows differ")
        expectEqual(w1a.dim(0), w2a.dim(0), "hada_w1_a and hada_w2_a disagree on out")
        expectEqual(w1b.product(from: 1), w2b.product(from: 1), "hada_w1_b and hada_w2_b disagree on in")
        let kernel: [Int]? = w1b.shape.count == 4 ? [w1b.dims[2], w1b.dims[3]] : []
        guard let flat = tail(w1b, from: 1), let rank = w1b.dim(0) else { return (nil, nil, nil) }
        let f = HadamardFactors(w1a: w1a, w1b: w1b, w2a: w2a, w2b: w2b, t1: nil, t2: nil, rank: rank)
        return (
            rank, DeltaShape(outFeatures: w1a.dim(0), flatInFeatures: flat, kernel: kernel, exact: nil), .hadamard(f)
        )
    }

    mutating func lokr() -> Result {
        // W1 = w1 (a, c) or w1_a (a, r) @ w1_b (r, c).
        // A side is stored one way; parts of another way next to it would be ignored.
        if parts[.lokrW1] != nil, let extra = [parts[.lokrW1A], parts[.lokrW1B]].compactMap({ $0 }).first {
            fail(.unusedPart, "\(extra.name): lokr_w1 is stored whole, so its factors would be ignored")
        }
        if parts[.lokrW2] != nil,
            let extra = [parts[.lokrW2A], parts[.lokrW2B], parts[.lokrT2]].compactMap({ $0 }).first
        {
            fail(.unusedPart, "\(extra.name): lokr_w2 is stored whole, so its factors would be ignored")
        }
        let side1: KroneckerSide
        var a: Int, c: Int, w1Rank: Int? = nil
        if parts[.lokrW1] != nil {
            guard let w1 = shaped(.lokrW1, [2]) else { return (nil, nil, nil) }
            a = w1.dims[0]; c = w1.dims[1]
            side1 = .whole(w1)
        } else {
            guard let w1a = shaped(.lokrW1A, [2]), let w1b = shaped(.lokrW1B, [2]) else { return (nil, nil, nil) }
            expectEqual(w1a.dim(1), w1b.dim(0), "lokr_w1_a columns and lokr_w1_b rows differ")
            a = w1a.dims[0]; c = w1b.dims[1]; w1Rank = w1b.dims[0]
            side1 = .product(a: w1a, b: w1b)
        }
        // W2 = w2 (b, d[, kh, kw]) or w2_a (b, r) @ w2_b (r, d[, kh, kw]), or Tucker via lokr_t2.
        let side2: KroneckerSide
        var b: Int, dFlat: Int, kernel: [Int]?, w2Rank: Int? = nil
        if parts[.lokrW2] != nil {
            guard let w2 = shaped(.lokrW2, [2, 4]), let flat = tail(w2, from: 1) else { return (nil, nil, nil) }
            b = w2.dims[0]; dFlat = flat
            kernel = w2.shape.count == 4 ? [w2.dims[2], w2.dims[3]] : []
            side2 = .whole(w2)
        } else if parts[.lokrT2] != nil {
            guard let t2 = shaped(.lokrT2, [4]), let w2a = shaped(.lokrW2A, [2]), let w2b = shaped(.lokrW2B, [2]) else {
                return (nil, nil, nil)
            }
            expectEqual(t2.dim(0), w2a.dim(0), "lokr_t2 and lokr_w2_a disagree on rank")
            expectEqual(t2.dim(1), w2b.dim(0), "lokr_t2 and lokr_w2_b disagree on rank")
            kernel = [t2.dims[2], t2.dims[3]]
            guard let area = product(t2.dims[2], t2.dims[3], "kernel area"),
                let flat = product(w2b.dims[1], area, "input features times kernel area")
            else { return (nil, nil, nil) }
            b = w2a.dims[1]; dFlat = flat
            w2Rank = w2b.dims[0]
            side2 = .tucker(t: t2, a: w2a, b: w2b)
        } else {
            guard let w2a = shaped(.lokrW2A, [2]), let w2b = shaped(.lokrW2B, [2, 4]), let flat = tail(w2b, from: 1)
            else {
                return (nil, nil, nil)
            }
            expectEqual(w2a.dim(1), w2b.dim(0), "lokr_w2_a columns and lokr_w2_b rows differ")
            b = w2a.dims[0]; dFlat = flat; w2Rank = w2b.dims[0]
            kernel = w2b.shape.count == 4 ? [w2b.dims[2], w2b.dims[3]] : []
            side2 = .product(a: w2a, b: w2b)
        }
        let rank = w2Rank ?? w1Rank
        guard let out = product(a, b, "lokr_w1 rows times lokr_w2 rows"),
            let flat = product(c, dFlat, "lokr_w1 columns times lokr_w2 columns")
        else { return (rank, nil, nil) }
        let f = KroneckerFactors(w1: side1, w2: side2, rank: rank)
        return (rank, DeltaShape(outFeatures: out, flatInFeatures: flat, kernel: kernel, exact: nil), .kronecker(f))
    }

    mutating func glora() -> Result {
        guard let a1 = shaped(.gloraA1, [2, 4]), let a2 = shaped(.gloraA2, [2, 4]),
            let b1 = shaped(.gloraB1, [2, 4]), let b2 = shaped(.gloraB2, [2, 4])
        else { return (nil, nil, nil) }
        // ComfyUI's layout test on the first two dimensions.
        let legacy = b2.dims[1] == b1.dims[0] && b1.dims[0] == a1.dims[0] && a1.dims[0] == a2.dims[1]
        let current = b2.dims[0] == b1.dims[1] && b1.dims[1] == a1.dims[1] && a1.dims[1] == a2.dims[0]
        let layout: GLoRAFactors.Layout
        switch (current, legacy) {
        case (true, true): layout = .ambiguous
        case (false, true): layout = .legacy
        case (true, false): layout = .current
        case (false, false):
            fail(
                .rankMismatch,
                "\(module): GLoRA factors a1 \(shapeText(a1.dims)), a2 \(shapeText(a2.dims)), b1 \(shapeText(b1.dims)), b2 \(shapeText(b2.dims)) fit neither layout"
            )
            return (nil, nil, nil)
        }
        // Legacy: r = a1 rows; current: r = a2 rows. Both tests hold only for square
        // layers, where the rank is the smaller of the two; the layer decides the layout
        // (and so the delta's shape) when the module is mapped.
        let rank: Int
        switch layout {
        case .legacy: rank = a1.dims[0]
        case .current: rank = a2.dims[0]
        case .ambiguous: rank = min(a1.dims[0], a2.dims[0])
        }
        let f = GLoRAFactors(a1: a1, a2: a2, b1: b1, b2: b2, layout: layout, rank: rank)
        if layout == .ambiguous { return (rank, nil, .glora(f)) }
        let (up, down) = layout == .legacy ? (b2, b1) : (b1, b2)
        let kernel: [Int]? = down.shape.count == 4 ? [down.dims[2], down.dims[3]] : []
        guard let flat = tail(down, from: 1) else { return (nil, nil, nil) }
        return (rank, DeltaShape(outFeatures: up.dim(0), flatInFeatures: flat, kernel: kernel, exact: nil), .glora(f))
    }

    mutating func orthogonal() -> ModuleFactors? {
        let legacy = parts[.oftBlocks] == nil
        if let d = parts[.oftDiag], parts[.oftBlocks] != nil {
            fail(.unusedPart, "\(d.name): the module also has oft_blocks, so this legacy rotation would be ignored")
        }
        guard let b = parts[.oftBlocks] ?? parts[.oftDiag] else { return nil }
        let n = b.shape.count
        guard n == 3 || n == 4, !b.shape.contains(0), let nb = b.dim(n - 3), let bs = b.dim(n - 1), b.dim(n - 2) == bs
        else {
            fail(
                .badShape,
                "\(b.name) has shape \(shapeText(b.dims)); expected (blocks, size, size) or (levels, blocks, size, size)"
            )
            return nil
        }
        return .orthogonal(
            OrthogonalFactors(
                blocks: b, butterfly: n == 4, legacyDiagonal: legacy,
                rescale: parts[.rescale], blockCount: nb, blockSize: bs))
    }
}
