import Adapters
import Foundation
import SafeTensors

/// One adapter to merge and its ratio (sd-scripts' `--models` / `--ratios`).
public struct MergeInput: Sendable {
    public let file: SafeTensorsFile
    public let ratio: Double
    public init(file: SafeTensorsFile, ratio: Double) {
        self.file = file
        self.ratio = ratio
    }
}

/// Everything `graft merge` was asked to do.
public struct MergeRequest: Sendable {
    public var checkpoint: SafeTensorsFile
    public var adapters: [MergeInput]
    /// dtype of floating tensors written; nil keeps each tensor's input dtype.
    public var savePrecision: DType?
    public var precision: MergePrecision
    /// Merge what matches and report the rest, instead of failing.
    public var allowUnmatched: Bool
    /// Where the result goes (for `modelspec.title`).
    public var outputPath: String
    public var graftVersion: String

    public init(checkpoint: SafeTensorsFile, adapters: [MergeInput], savePrecision: DType?, precision: MergePrecision,
                allowUnmatched: Bool, outputPath: String, graftVersion: String) {
        self.checkpoint = checkpoint
        self.adapters = adapters
        self.savePrecision = savePrecision
        self.precision = precision
        self.allowUnmatched = allowUnmatched
        self.outputPath = outputPath
        self.graftVersion = graftVersion
    }
}

/// A checked merge: the execution plan plus what was matched, per adapter.
public struct MergePlan: Sendable {
    /// One adapter's part of the plan.
    public struct AdapterPart: Sendable {
        public let path: String
        public let ratio: Double
        public let analysis: AdapterAnalysis
        /// module name -> target description, in module order.
        public let merged: [(module: String, target: String)]
        /// "module: reason" for modules that could not be placed or merged.
        public let skipped: [String]
        /// Modules graft merges but sd-scripts' merge script would skip or treat differently.
        public let sdScriptsDiffers: [(module: String, treatment: String)]
    }

    public let execution: ExecutionPlan
    public let checkpointPath: String
    public let checkpoint: CheckpointAnalysis
    public let adapters: [AdapterPart]

    /// Every skipped module, prefixed with its file.
    public var unmatched: [String] { adapters.flatMap { a in a.skipped.map { "\(a.path): \($0)" } } }
}

/// Builds a ``MergePlan``: maps every adapter module onto the checkpoint (through a
/// table built from the checkpoint's own keys), checks shapes and base models, and
/// decides for every checkpoint tensor whether it is merged, converted or copied.
public enum MergePlanner {
    /// - Throws: `EngineError` naming the file and modules for: a file with no adapter
    ///   modules, an adapter for another base model, malformed modules, modules that
    ///   match no tensor or cannot be merged (unless `allowUnmatched`), two modules of
    ///   one file on the same weight.
    public static func plan(_ request: MergeRequest) throws -> MergePlan {
        let ckpt = request.checkpoint
        let checkpointAnalysis = CheckpointAnalysis(tensors: ckpt.tensors, metadata: ckpt.metadata)
        let mapper = KeyMapper(tensors: ckpt.tensors, metadata: ckpt.metadata)
        var deltas: [String: [WeightDelta]] = [:]
        var parts: [MergePlan.AdapterPart] = []

        for input in request.adapters {
            let file = input.file
            let analysis = AdapterAnalysis(tensors: file.tensors, metadata: file.metadata,
                                           alphaValue: { try file.scalarValue(of: $0) })
            guard !analysis.modules.isEmpty, analysis.kind != .unknown else {
                throw EngineError("\(file.path): not an adapter: no LoRA/LyCORIS module keys found (\(file.tensors.count) tensors)")
            }
            do {
                try mapper.checkCompatible(analysis)
            } catch {
                throw EngineError("\(file.path): \(error.description); refusing to merge it into \(ckpt.path)")
            }
            let invalid = analysis.invalidModules
            if !invalid.isEmpty {
                let lines = invalid.prefix(10).map { m in "  \(m.name): \(m.issues.map(\.message).joined(separator: "; "))" }
                throw EngineError("\(file.path): \(invalid.count) malformed module(s):\n" + lines.joined(separator: "\n"))
            }
            let mapping = mapper.plan(analysis)
            if let overlap = mapping.overlaps.first {
                throw EngineError("\(file.path): modules \(overlap.joined(separator: " and ")) target the same weight; refusing to apply both")
            }
            var merged: [(String, String)] = []
            var skipped: [String] = []
            var differs: [(String, String)] = []
            let ratio = Float(input.ratio)
            for m in mapping.mappings {
                guard let module = analysis.module(named: m.module) else { continue }
                guard let target = m.target else {
                    skipped.append("\(m.module): \(m.error?.message ?? "no target")")
                    continue
                }
                if let why = unsupportedReason(module, target) {
                    skipped.append("\(m.module): \(why)")
                    continue
                }
                guard let up = module.parts[.up], let down = module.parts[.down], let rank = module.rank, rank > 0 else {
                    skipped.append("\(m.module): incomplete LoRA module")
                    continue
                }
                guard up.dtype.isConvertibleFloat, down.dtype.isConvertibleFloat else {
                    skipped.append("\(m.module): factors are \(up.dtype.rawValue)/\(down.dtype.rawValue); graft merges F16, BF16, F32 and F64 factors only")
                    continue
                }
                // sd-scripts: alpha is cast to the merge dtype and divided by the rank (the
                // executor rounds the quotient again at fp16/bf16 precision).
                let scale: Float = module.alpha.map { Self.castAlpha(Float($0), request.precision) / Float(rank) } ?? 1
                let rows = target.rows ?? 0 ..< (target.tensorShape.first ?? 1)
                deltas[target.tensorName, default: []].append(
                    WeightDelta(source: file, up: up, down: down, rows: rows, rank: rank,
                                ratio: ratio, scale: scale, label: module.name))
                let where_ = target.tensorName + (target.rows.map { " rows \($0.lowerBound)..<\($0.upperBound)" } ?? "")
                merged.append((m.module, where_))
                if let t = m.sdScripts, t != .merges { differs.append((m.module, t.rawValue)) }
            }
            if !skipped.isEmpty && !request.allowUnmatched {
                let shown = skipped.prefix(20).map { "  \($0)" }.joined(separator: "\n")
                let more = skipped.count > 20 ? "\n  ... and \(skipped.count - 20) more" : ""
                throw EngineError("\(file.path): \(skipped.count) of \(analysis.modules.count) module(s) cannot be merged into \(ckpt.path) (use --allow-unmatched to merge the rest):\n\(shown)\(more)")
            }
            parts.append(MergePlan.AdapterPart(path: file.path, ratio: input.ratio, analysis: analysis,
                                               merged: merged, skipped: skipped, sdScriptsDiffers: differs))
        }

        var planned: [PlannedTensor] = []
        planned.reserveCapacity(ckpt.tensors.count)
        for t in ckpt.tensors {
            let outType = (request.savePrecision != nil && t.dtype.isConvertibleFloat) ? request.savePrecision! : t.dtype
            let out = OutputTensor(name: t.name, dtype: outType, shape: t.shape)
            let op: TensorOperation
            if let d = deltas[t.name], !d.isEmpty {
                guard t.dtype.isConvertibleFloat else {
                    throw EngineError("\(ckpt.path): tensor '\(t.name)' is \(t.dtype.rawValue); adapters can only be merged into F16, BF16, F32 or F64 weights")
                }
                op = .merge(d)
            } else if outType != t.dtype {
                op = .convert
            } else {
                op = .copy
            }
            planned.append(PlannedTensor(source: ckpt, input: t, output: out, operation: op))
        }
        let metadata = provenance(request)
        return MergePlan(execution: ExecutionPlan(tensors: planned, metadata: metadata, precision: request.precision),
                         checkpointPath: ckpt.path, checkpoint: checkpointAnalysis, adapters: parts)
    }

    /// The alpha tensor as sd-scripts holds it: cast to the merge dtype.
    static func castAlpha(_ alpha: Float, _ precision: MergePrecision) -> Float {
        switch precision {
        case .fp32: return alpha
        case .fp16: return roundToHalf(alpha)
        case .bf16: return roundToBFloat(alpha)
        }
    }

    /// Why graft cannot merge this (resolved) module yet, or nil.
    static func unsupportedReason(_ m: AdapterModule, _ target: MappedTarget) -> String? {
        if m.kind != .lora { return "\(m.kind.rawValue) modules are not supported by graft merge yet" }
        if m.isTucker { return "LoCon Tucker (lora_mid) modules are not supported by graft merge yet" }
        if m.hasDoRA { return "DoRA (dora_scale) modules are not supported by graft merge yet" }
        if target.transposed { return "transposed targets (text_projection) are not supported by graft merge yet" }
        return nil
    }

    /// The output's metadata: the checkpoint's own, plus what sd-scripts writes for a
    /// merge (`modelspec.title` = the output's stem, `modelspec.merged_from` = the
    /// inputs' titles joined by ", ") and graft's provenance keys (inputs with ratios).
    /// No date is added, so the same inputs give byte-identical outputs.
    static func provenance(_ r: MergeRequest) -> [String: String] {
        var md = r.checkpoint.metadata ?? [:]
        let titles = [title(of: r.checkpoint)] + r.adapters.map { title(of: $0.file) }
        md["modelspec.title"] = stem(r.outputPath)
        md["modelspec.merged_from"] = titles.joined(separator: ", ")
        md["graft.version"] = r.graftVersion
        struct Entry: Encodable { let file: String; let title: String; let ratio: Double }
        struct Provenance: Encodable {
            let checkpoint: String
            let adapters: [Entry]
            let precision: String
            let save_precision: String
        }
        let p = Provenance(checkpoint: basename(r.checkpoint.path),
                           adapters: r.adapters.map { Entry(file: basename($0.file.path), title: title(of: $0.file), ratio: $0.ratio) },
                           precision: r.precision.rawValue,
                           save_precision: r.savePrecision?.rawValue ?? "keep")
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if let data = try? enc.encode(p) { md["graft.merge"] = String(decoding: data, as: UTF8.self) }
        return md
    }

    /// sd-scripts' title of an input: its `modelspec.title`, else the file name's stem.
    static func title(of f: SafeTensorsFile) -> String {
        if let t = f.metadata?["modelspec.title"], !t.isEmpty { return t }
        return stem(f.path)
    }

    static func basename(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
    }

    static func stem(_ path: String) -> String {
        var b = basename(path)
        if b.hasSuffix(".zst") { b.removeLast(4) }
        if let dot = b.lastIndex(of: "."), dot != b.startIndex { b = String(b[..<dot]) }
        return b
    }
}
