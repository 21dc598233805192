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
        _ m: AdapterModule, target: MappedTarget, file: SafeTensorsFile, ratio: Float,
        precision: MergePrecision
    ) -> Result<Made, SkippedModule> {
        func skip(_ r: SkippedModule.Reason, _ message: String) -> Result<Made, SkippedModule> {
            .failure(SkippedModule(module: m.name, reason: r, message: message))
        }
        guard let factors = m.factors else {
            return skip(.unsupportedModule, m.issues.map(\.message).joined(separator: "; "))
        }
        if target.transposed {
            return skip(.unsupportedTarget, "transposed targets (\(target.tensorName)) are not merged by graft yet")
        }
        if m.modifiers.dora != nil {
            return skip(.unsupportedKind, "DoRA (dora_scale) modules are not merged by graft yet")
        }
        let rows = target.rows ?? 0..<(target.tensorShape.first ?? 1)
        switch factors {
        case .lowRank(let f):
            if f.mid != nil {
                return skip(.unsupportedKind, "LoCon Tucker (lora_mid) modules are not merged by graft yet")
            }
            let dtypes = [f.up.dtype, f.down.dtype] + (m.modifiers.upBias.map { [$0.dtype] } ?? [])
            if let bad = dtypes.first(where: { !$0.isConvertibleFloat }) {
                return skip(
                    .unsupportedDType, "factors are \(bad.rawValue); graft merges F16, BF16, F32 and F64 factors only")
            }
            let (scale, source) = Self.scale(m, rank: f.rank, precision)
            var updates: [(String, any WeightUpdate)] = [
                (
                    target.tensorName,
                    LowRankUpdate(
                        source: file, up: f.up, down: f.down, rows: rows, rank: f.rank,
                        ratio: ratio, scale: scale, label: m.name)
                )
            ]
            var targets = [UpdateTarget(tensor: target.tensorName, rows: target.rows)]
            if let b = m.modifiers.upBias {
                guard let bias = target.bias else {
                    return skip(
                        .noBias, "\(b.name) is a bias delta, but \(target.tensorName) has no bias in the checkpoint")
                }
                let biasRows = bias.rows ?? 0..<bias.length
                updates.append(
                    (
                        bias.tensorName,
                        AddUpdate(
                            source: file, delta: b, rows: biasRows, ratio: ratio, scale: scale,
                            label: m.name)
                    ))
                targets.append(UpdateTarget(tensor: bias.tensorName, rows: bias.rows))
            }
            return .success(
                Made(
                    updates: updates.map { (tensor: $0.0, update: $0.1) },
                    merged: MergedModule(
                        module: m.name, kind: m.kind, targets: targets, scale: Double(scale),
                        scaleSource: source)))
        default:
            return skip(.unsupportedKind, "\(m.kind.rawValue) modules are not merged by graft yet")
        }
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
