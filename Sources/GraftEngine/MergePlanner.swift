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
    /// Whose arithmetic to reproduce where LyCORIS and ComfyUI disagree (DoRA, OFT, BOFT).
    public var compat: MergeCompat = .lycoris
    /// Merge what matches and report the rest, instead of failing.
    public var allowUnmatched: Bool
    /// Where the result goes (for `modelspec.title`).
    public var outputPath: String
    public var graftVersion: String

    public init(
        checkpoint: SafeTensorsFile, adapters: [MergeInput], savePrecision: DType?, precision: MergePrecision,
        allowUnmatched: Bool, outputPath: String, graftVersion: String
    ) {
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
        /// The modules applied, in module order.
        public let merged: [MergedModule]
        /// Modules that could not be placed or applied (only with `allowUnmatched`).
        public let skipped: [SkippedModule]
        /// Modules graft merges but sd-scripts' merge script would skip or treat differently.
        public let sdScriptsDiffers: [(module: String, treatment: SDScriptsTreatment)]
    }

    public let execution: ExecutionPlan
    public let checkpointPath: String
    public let checkpoint: CheckpointAnalysis
    public let adapters: [AdapterPart]
    /// Size of the output file in bytes (uncompressed), header included.
    public let outputBytes: Int
    /// Whose arithmetic DoRA, OFT and BOFT modules follow.
    public let compat: MergeCompat
    /// Tensors changed by more than one adapter where at least one result depends on the
    /// weight it is applied to (DoRA, OFT, BOFT, GLoRA, (IA)³): the command-line order
    /// matters for them.
    public let orderDependent: [String]
    /// Merged modules computed in fp32 although `--precision` asked for fp16/bf16
    /// emulation (which exists for sd-scripts' LoRA path only).
    public let fp32Modules: Int

    /// Every skipped module with its file.
    public var unmatched: [(file: String, module: SkippedModule)] {
        adapters.flatMap { a in a.skipped.map { (a.path, $0) } }
    }
}

/// Builds a ``MergePlan``: maps every adapter module onto the checkpoint (through a
/// table built from the checkpoint's own keys), turns each into weight updates, and
/// decides for every checkpoint tensor whether it is updated, converted or copied.
public enum MergePlanner {
    /// - Throws: ``EngineError`` with kind `.invalidRatio`, `.notAnAdapter`,
    ///   `.wrongBaseModel`, `.malformedModules`, `.overlappingModules`,
    ///   `.unmergeableModules` (unless `allowUnmatched`), `.nothingMerged` (an adapter of
    ///   which no module can be applied), `.invalidTarget` or `.shapeMismatch`.
    /// - Parameter mapper: the checkpoint's key index, when the caller already built it for
    ///   `request.checkpoint` (planning many adapters against one checkpoint).
    public static func plan(_ request: MergeRequest, mapper prebuilt: KeyMapper? = nil) throws -> MergePlan {
        let ckpt = request.checkpoint
        let mapper = prebuilt ?? KeyMapper(tensors: ckpt.tensors, metadata: ckpt.metadata)
        var index: [[UInt8]: Int] = [:]
        for (i, t) in ckpt.tensors.enumerated() { index[Array(t.name.utf8)] = i }
        var updates: [Int: [any WeightUpdate]] = [:]
        var parts: [MergePlan.AdapterPart] = []

        for input in request.adapters {
            let file = input.file
            let ratio = Float(input.ratio)
            guard ratio.isFinite else {
                throw EngineError(.invalidRatio, file: file.path, "ratio \(input.ratio) is not a finite fp32 number")
            }
            let analysis = AdapterAnalysis(
                tensors: file.tensors, metadata: file.metadata,
                alphaValue: { try file.scalarValue(of: $0) })
            // Only formats graft recognises but cannot apply (T-LoRA, OFTv2, sparse bias…):
            // name them rather than calling the file "not an adapter".
            if !analysis.modules.isEmpty, analysis.modules.allSatisfy(\.isOnlyUnsupported) {
                throw EngineError(
                    request.allowUnmatched ? .nothingMerged : .unmergeableModules, file: file.path,
                    "none of its \(analysis.modules.count) module(s) can be merged: they hold only formats graft cannot apply",
                    modules: analysis.modules.map {
                        .init(
                            module: $0.name, reason: SkippedModule.Reason.unsupportedPart.rawValue,
                            message: $0.issues.map(\.message).joined(separator: "; "))
                    })
            }
            guard !analysis.modules.isEmpty, analysis.kind != .unknown else {
                throw EngineError(
                    .notAnAdapter, file: file.path,
                    "not an adapter: no LoRA/LyCORIS module keys found (\(file.tensors.count) tensors)")
            }
            do {
                try mapper.checkCompatible(analysis)
            } catch {
                throw EngineError(
                    .wrongBaseModel, file: file.path, "\(error.message); it cannot be merged into \(ckpt.path)")
            }
            let malformed = analysis.modules.filter { !$0.isValid && !$0.isOnlyUnsupported }
            if !malformed.isEmpty {
                throw EngineError(
                    .malformedModules, file: file.path, "\(malformed.count) malformed module(s)",
                    modules: malformed.map { m in
                        .init(
                            module: m.name, reason: m.issues[0].kind.rawValue,
                            message: m.issues.map(\.message).joined(separator: "; "))
                    })
            }
            let mapping = mapper.plan(analysis)
            if let overlap = mapping.overlaps.first {
                throw EngineError(
                    .overlappingModules, file: file.path,
                    "modules \(overlap.joined(separator: " and ")) target the same weight; refusing to apply both")
            }
            var merged: [MergedModule] = []
            var skipped: [SkippedModule] = []
            var differs: [(String, SDScriptsTreatment)] = []
            for m in mapping.mappings {
                guard let module = analysis.module(named: m.module) else { continue }
                if module.isOnlyUnsupported {
                    skipped.append(
                        SkippedModule(
                            module: m.module, reason: .unsupportedPart,
                            message: module.issues.map(\.message).joined(separator: "; ")))
                    continue
                }
                let target: MappedTarget
                switch m.result {
                case .success(let t): target = t
                case .failure(let e):
                    skipped.append(SkippedModule(module: m.module, reason: .init(e.kind), message: e.message))
                    continue
                }
                switch UpdateFactory.make(
                    module, target: target, file: file, ratio: input.ratio, precision: request.precision,
                    compat: request.compat)
                {
                case .failure(let s):
                    skipped.append(s)
                case .success(let made):
                    // Each update against its tensor's geometry, so that a misfit is this
                    // module's problem (skippable), not the whole plan's.
                    if let misfit = Self.misfit(made, module: module.name, index: index, checkpoint: ckpt) {
                        skipped.append(misfit)
                        continue
                    }
                    for (name, u) in made.updates {
                        guard let i = index[Array(name.utf8)] else {
                            throw EngineError(
                                .internalInconsistency, file: ckpt.path, tensor: name,
                                "mapped to a tensor the checkpoint lacks")
                        }
                        updates[i, default: []].append(u)
                    }
                    merged.append(made.merged)
                    if let t = m.sdScripts, t != .merges { differs.append((m.module, t)) }
                }
            }
            if !skipped.isEmpty && !request.allowUnmatched {
                throw EngineError(
                    .unmergeableModules, file: file.path,
                    "\(skipped.count) of \(analysis.modules.count) module(s) cannot be merged into \(ckpt.path)",
                    modules: skipped.map(\.problem))
            }
            if merged.isEmpty {
                throw EngineError(
                    .nothingMerged, file: file.path,
                    "none of its \(analysis.modules.count) module(s) can be merged into \(ckpt.path)",
                    modules: skipped.map(\.problem))
            }
            parts.append(
                MergePlan.AdapterPart(
                    path: file.path, ratio: input.ratio, analysis: analysis,
                    merged: merged, skipped: skipped, sdScriptsDiffers: differs))
        }

        var planned: [PlannedTensor] = []
        planned.reserveCapacity(ckpt.tensors.count)
        for (i, t) in ckpt.tensors.enumerated() {
            let outType =
                (request.savePrecision != nil && t.dtype.isConvertibleFloat) ? request.savePrecision! : t.dtype
            let out = OutputTensor(name: t.name, dtype: outType, shape: t.shape)
            let op: TensorOperation
            if let u = updates[i], !u.isEmpty {
                guard t.dtype.isConvertibleFloat else {
                    throw EngineError(
                        .invalidTarget, file: ckpt.path, tensor: t.name,
                        "is \(t.dtype.rawValue); adapters can only be merged into F16, BF16, F32 or F64 weights")
                }
                op = .update(try TensorUpdates(updates: u, target: t))
            } else if outType != t.dtype {
                op = .convert
            } else {
                op = .copy
            }
            planned.append(PlannedTensor(source: ckpt, input: t, output: out, operation: op))
        }
        // Where the command-line order changes the result.
        // (adapter, rows, depends on the weight) per tensor; rows nil = the whole tensor.
        var touching: [String: [(adapter: Int, rows: Range<Int>?, dependent: Bool)]] = [:]
        for (k, part) in parts.enumerated() {
            for m in part.merged {
                for t in m.targets { touching[t.tensor, default: []].append((k, t.rows, m.dependsOnWeight)) }
            }
        }
        let orderDependent = touching.filter { _, uses in
            // Two adapters on overlapping rows, one of them weight-dependent.
            uses.indices.contains { i in
                uses.indices.contains { j in
                    let a = uses[i], b = uses[j]
                    guard a.adapter < b.adapter, a.dependent || b.dependent else { return false }
                    guard let ra = a.rows, let rb = b.rows else { return true }
                    return ra.overlaps(rb)
                }
            }
        }.keys.sorted()
        let fp32Modules =
            request.precision == .fp32
            ? 0 : parts.reduce(0) { $0 + $1.merged.filter { !$0.followsPrecision }.count }
        let metadata = provenance(request)
        let layout = try FileLayout(tensors: planned.map(\.output), metadata: metadata, file: request.outputPath)
        return MergePlan(
            execution: ExecutionPlan(tensors: planned, metadata: metadata, precision: request.precision),
            checkpointPath: ckpt.path, checkpoint: mapper.checkpoint, adapters: parts,
            outputBytes: layout.totalByteCount, compat: request.compat, orderDependent: orderDependent,
            fp32Modules: fp32Modules)
    }

    /// The first update of `made` that does not fit its tensor, as a skipped module.
    static func misfit(_ made: UpdateFactory.Made, module: String, index: [[UInt8]: Int], checkpoint: SafeTensorsFile)
        -> SkippedModule?
    {
        for (name, u) in made.updates {
            guard let i = index[Array(name.utf8)] else { continue }
            do {
                _ = try TensorUpdates(updates: [u], target: checkpoint.tensors[i])
            } catch {
                return SkippedModule(module: module, reason: .shapeMismatch, message: "\(name): \(error.detail)")
            }
        }
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
            let compat: String
        }
        let p = Provenance(
            checkpoint: basename(r.checkpoint.path),
            adapters: r.adapters.map {
                Entry(file: basename($0.file.path), title: title(of: $0.file), ratio: $0.ratio)
            },
            precision: r.precision.rawValue,
            save_precision: r.savePrecision?.rawValue ?? "keep", compat: r.compat.rawValue)
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
