import Adapters
import SafeTensors

/// Where one update lands: a checkpoint tensor and, for the q/k/v thirds of a fused
/// projection, the rows of it.
public struct UpdateTarget: Sendable, Equatable {
    public let tensor: String
    public let rows: Range<Int>?
}

/// Where a module's scale came from.
public enum ScaleSource: String, Sendable, Codable {
    /// `alpha / rank`.
    case alpha
    /// An explicit `scale` key (A1111 and stable-diffusion.cpp honour it over alpha / rank).
    case scaleKey = "scale_key"
    /// Neither: scale 1.
    case none
}

/// One module a merge applies: its kind, the tensors it changes and its scale.
public struct MergedModule: Sendable, Equatable {
    public let module: String
    public let kind: ModuleKind
    public let targets: [UpdateTarget]
    public let scale: Double
    public let scaleSource: ScaleSource
    /// The DoRA axis, for modules with a `dora_scale`.
    public var doraAxis: DoRAAxis? = nil
    /// Whether the merge's `--precision` emulation applies (sd-scripts' LoRA path); the
    /// other kinds have no sd-scripts merge to emulate and are computed in fp32.
    public var followsPrecision = false
    /// The module has a `scale` key that its kind ignores (LyCORIS and ComfyUI do).
    public var ignoredScaleKey = false

    /// Whether the module's result depends on the weight it is applied to (DoRA, OFT,
    /// BOFT, GLoRA, (IA)³): merged after or before another adapter, it gives a different weight.
    public var dependsOnWeight: Bool {
        doraAxis != nil || [.oft, .boft, .glora, .ia3].contains(kind)
    }
}

/// Turns a resolved adapter module into the updates of the tensors it changes. Every
/// factor and modifier of the module is used, or the module is refused with the reason:
/// nothing is dropped silently.
enum UpdateFactory {
    struct Made {
        var updates: [(tensor: String, update: any WeightUpdate)]
        var merged: MergedModule
    }

    static func make(
        _ m: AdapterModule, target: MappedTarget, file: SafeTensorsFile, ratio exactRatio: Double,
        precision: MergePrecision, compat: MergeCompat = .lycoris
    ) -> Result<Made, SkippedModule> {
        // The ratio as sd-scripts' arithmetic sees it (an fp32 opmath scalar); LyCORIS-family
        // coefficients are formed from the exact value in Double and rounded once.
        let ratio = Float(exactRatio)
        func skip(_ r: SkippedModule.Reason, _ message: String) -> Result<Made, SkippedModule> {
            .failure(SkippedModule(module: m.name, reason: r, message: message))
        }
        guard let factors = m.factors else {
            return skip(.unsupportedModule, m.issues.map(\.message).joined(separator: "; "))
        }
        if target.transposed {
            return skip(.unsupportedTarget, "transposed targets (\(target.tensorName)) are not merged by graft yet")
        }
        // Every tensor the arithmetic reads must convert to fp32 (on_input is a flag).
        if let bad = m.parts.sorted(by: { $0.key < $1.key }).first(where: {
            $0.key != .onInput && $0.key != .alpha && $0.key != .scale && !$0.value.dtype.isConvertibleFloat
        }) {
            return skip(
                .unsupportedDType,
                "\(bad.value.name) is \(bad.value.dtype.rawValue); graft merges F16, BF16, F32 and F64 factors only")
        }
        let rows = target.rows ?? 0..<(target.tensorShape.first ?? 1)
        let inFeatures = target.shape.count >= 2 ? target.shape[1] : 1
        var updates: [(tensor: String, update: any WeightUpdate)] = []
        var targets: [UpdateTarget] = []
        func add(_ u: any WeightUpdate, _ tensor: String, _ r: Range<Int>?) {
            updates.append((tensor, u))
            targets.append(UpdateTarget(tensor: tensor, rows: r))
        }
        /// A bias delta onto the layer's bias, or the reason the module cannot be merged.
        func addBias(_ b: TensorInfo, scale: Float, emulatesPrecision: Bool = true) -> SkippedModule? {
            guard let bias = target.bias else {
                return SkippedModule(
                    module: m.name, reason: .noBias,
                    message: "\(b.name) is a bias delta, but \(target.tensorName) has no bias in the checkpoint")
            }
            add(
                AddUpdate(
                    source: file, delta: b, rows: bias.rows ?? 0..<bias.length, ratio: ratio, scale: scale,
                    label: m.name,
                    emulatesPrecision: emulatesPrecision),
                bias.tensorName, bias.rows)
            return nil
        }
        func merged(_ scale: Double, _ source: ScaleSource, axis: DoRAAxis? = nil) -> Result<Made, SkippedModule> {
            var module = MergedModule(
                module: m.name, kind: m.kind, targets: targets, scale: scale, scaleSource: source, doraAxis: axis)
            // LyCORIS and ComfyUI ignore a scale key on these kinds (A1111 alone reads it).
            module.ignoredScaleKey = m.scaleValue != nil && source != .scaleKey
            return .success(Made(updates: updates, merged: module))
        }
        /// LoRA-family delta (with DoRA when the module has a magnitude).
        func delta(_ d: any DeltaSource, rank: Int?, scaleKey: Bool = false) -> Result<Made, SkippedModule> {
            // PEFT keeps a LoHa/LoKr alpha in adapter_config.json, not per module: without
            // it the scale is unknown (ComfyUI cannot load these either).
            if [.diffusersPEFT, .peftDump].contains(m.scheme), m.kind != .lora, rank != nil, m.alpha == nil,
                m.scaleValue == nil
            {
                return skip(
                    .missingAlpha,
                    "PEFT keeps the alpha of \(m.kind.rawValue) modules in adapter_config.json, not in the file; the scale alpha / rank is unknown (add an alpha tensor per module)"
                )
            }
            let (scale, source) = Self.lycorisScale(m, rank: rank, scaleKey: scaleKey)
            if let dora = m.modifiers.dora {
                add(
                    DoRAUpdate(
                        delta: d, magnitude: dora.scale, axis: dora.axis, rows: rows, inFeatures: inFeatures,
                        ratio: ratio, scale: scale, compat: compat, file: file, label: m.name),
                    target.tensorName, target.rows)
                return merged(scale, source, axis: dora.axis)
            }
            add(
                AdditiveUpdate(
                    delta: d, rows: rows, inFeatures: inFeatures, ratio: exactRatio, scale: scale, file: file.path,
                    label: m.name),
                target.tensorName, target.rows)
            return merged(scale, source)
        }

        switch factors {
        case .lowRank(let f):
            if f.mid != nil || m.modifiers.dora != nil {
                if m.modifiers.upBias != nil {
                    return skip(
                        .unsupportedPart,
                        "a bias delta (lora_B.bias) together with lora_mid or dora_scale is not merged by graft")
                }
                return delta(
                    LowRankDelta(file: file, up: f.up, down: f.down, mid: f.mid, rank: f.rank, label: m.name),
                    rank: f.rank, scaleKey: true)
            }
            let (scale, source) = Self.scale(m, rank: f.rank, precision)
            add(
                LowRankUpdate(
                    source: file, up: f.up, down: f.down, rows: rows, rank: f.rank, ratio: ratio, scale: scale,
                    label: m.name),
                target.tensorName, target.rows)
            if let b = m.modifiers.upBias, let s = addBias(b, scale: scale) { return .failure(s) }
            var made = merged(Double(scale), source)
            if case .success(var x) = made {
                x.merged.followsPrecision = true
                made = .success(x)
            }
            return made
        case .hadamard(let f):
            return delta(
                HadamardDelta(
                    file: file, w1a: f.w1a, w1b: f.w1b, w2a: f.w2a, w2b: f.w2b, t1: f.t1, t2: f.t2, rank: f.rank,
                    label: m.name),
                rank: f.rank)
        case .kronecker(let f):
            func side(_ s: KroneckerSide) -> KroneckerSideTensors {
                switch s {
                case .whole(let w): return .whole(w)
                case .product(let a, let b): return .product(a: a, b: b)
                case .tucker(let t, let a, let b): return .tucker(t: t, a: a, b: b)
                }
            }
            return delta(KroneckerDelta(file: file, w1: side(f.w1), w2: side(f.w2), label: m.name), rank: f.rank)
        case .glora(let f):
            if let bm = m.parts[.gloraBM] {
                return skip(
                    .unsupportedPart,
                    "\(bm.name): a GLoRA Tucker core (bm) is never written by LyCORIS and is not merged by graft")
            }
            if m.modifiers.dora != nil {
                return skip(.unsupportedKind, "DoRA on a GLoRA module is not merged by graft (LyCORIS never writes it)")
            }
            var legacy = f.layout == .legacy
            if f.layout == .ambiguous {
                // ComfyUI: legacy only when a2's first dimension is the layer's in and out features.
                let out = target.shape.first ?? -1
                legacy = f.a2.dims[0] == out && out == inFeatures
            }
            let d =
                legacy
                ? GLoRADelta(file: file, inA: f.a2, inB: f.a1, outA: f.b2, outB: f.b1, label: m.name)
                : GLoRADelta(file: file, inA: f.a1, inB: f.a2, outA: f.b1, outB: f.b2, label: m.name)
            return delta(d, rank: legacy ? f.a1.dims[0] : f.a2.dims[0])
        case .full(let weight, let bias), .norm(let weight, let bias):
            // Stored differences (`diff`/`diff_b`, `w_norm`/`b_norm`): W + m·Δ, no scale.
            if let weight {
                add(
                    AddUpdate(
                        source: file, delta: weight, rows: rows, ratio: ratio, scale: 1, label: m.name,
                        emulatesPrecision: false), target.tensorName, target.rows)
            }
            if let bias, let s = addBias(bias, scale: 1, emulatesPrecision: false) { return .failure(s) }
            return merged(1, .none)
        case .ia3(let weight, let flag):
            guard let on = try? file.scalarValue(of: flag), on.isFinite else {
                return skip(.unsupportedModule, "\(flag.name) is not a readable number (on_input flag)")
            }
            add(
                IA3Update(
                    weight: weight, onInput: on != 0, rows: rows, inFeatures: inFeatures, ratio: ratio, file: file,
                    label: m.name),
                target.tensorName, target.rows)
            return merged(1, .none)
        case .orthogonal(let f):
            if m.modifiers.dora != nil {
                return skip(
                    .unsupportedKind, "DoRA on an OFT/BOFT module is not merged by graft (LyCORIS never writes it)")
            }
            add(
                OrthogonalUpdate(
                    source: file, blocks: f.blocks, butterfly: f.butterfly, legacyDiagonal: f.legacyDiagonal,
                    rescale: f.rescale, constraint: m.alpha ?? 0, rows: rows, ratio: ratio, compat: compat,
                    label: m.name),
                target.tensorName, target.rows)
            return merged(1, .none)
        }
    }

    /// The LyCORIS-family scale in Double: alpha / rank, else 1; 1 when the module has no
    /// rank (LoKr with both sides whole ignores alpha). An explicit `scale` key replaces it
    /// only on LoRA hosts (`scaleKey`), as for plain LoRA; LyCORIS and ComfyUI ignore it.
    static func lycorisScale(_ m: AdapterModule, rank: Int?, scaleKey: Bool) -> (Double, ScaleSource) {
        if scaleKey, let s = m.scaleValue { return (s, .scaleKey) }
        guard let rank, rank > 0 else { return (1, .none) }
        if let a = m.alpha { return (a / Double(rank), .alpha) }
        return (1, .none)
    }

    /// The module's scale: an explicit `scale` key, else alpha / rank with alpha cast to
    /// the merge dtype first (sd-scripts holds alpha as a tensor of that dtype), else 1.
    static func scale(_ m: AdapterModule, rank: Int, _ precision: MergePrecision) -> (Float, ScaleSource) {
        if let s = m.scaleValue { return (castToPrecision(Float(s), precision), .scaleKey) }
        if let a = m.alpha { return (castToPrecision(Float(a), precision) / Float(rank), .alpha) }
        return (1, .none)
    }

    static func castToPrecision(_ x: Float, _ precision: MergePrecision) -> Float {
        switch precision {
        case .fp32: return x
        case .fp16: return roundToHalf(x)
        case .bf16: return roundToBFloat(x)
        }
    }
}
