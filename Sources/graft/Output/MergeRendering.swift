import Adapters
import GraftEngine
import SafeTensors

/// Text and JSON renderings of a merge plan and its result.
extension MergePlan {
    func describe(verbose: Bool) -> String {
        var out =
            "plan: merge \(adapters.count) adapter(s) into \(displayable(checkpointPath)) (\(checkpoint.architecture.displayName), \(execution.tensors.count) tensors)\n"
        for a in adapters {
            let counts = a.analysis.moduleCounts.sorted { $0.key < $1.key }.map { "\($0.key.rawValue) \($0.value)" }
                .joined(separator: ", ")
            out +=
                "  \(displayable(a.path)) x\(Format.shortest(a.ratio)): \(a.analysis.kind.displayName), \(a.analysis.scheme.displayName) names, \(a.analysis.modules.count) modules (\(counts))\n"
            let kinds = Dictionary(grouping: a.merged, by: \.kind).sorted { $0.key < $1.key }
                .map { "\($0.value.count) \($0.key.rawValue)" }.joined(separator: ", ")
            out += "    merged: \(a.merged.count) modules (\(kinds))\n"
            for m in a.merged {
                let dora = m.doraAxis.map { " +DoRA(\($0.rawValue) axis)" } ?? ""
                out +=
                    "      \(displayable(m.module)) [\(m.kind.rawValue)\(dora)] -> \(m.targets.map(Self.text).joined(separator: ", "))\n"
            }
            let explicit = a.merged.filter { $0.scaleSource == .scaleKey }.count
            if explicit > 0 {
                out += "    \(explicit) module(s) use their own scale key instead of alpha/rank (as A1111 does)\n"
            }
            if !a.skipped.isEmpty {
                out += "    not merged: \(a.skipped.count)\n"
                for s in a.skipped.prefix(verbose ? Int.max : 20) {
                    out += "      \(displayable(s.module)): \(displayable(s.message))\n"
                }
            }
            if let first = a.sdScriptsDiffers.first {
                out +=
                    "    sd-scripts would not merge \(a.sdScriptsDiffers.count) of these the same way (e.g. \(displayable(first.module)): \(first.treatment.rawValue))\n"
            }
        }
        out += notes.map { "note: \($0)\n" }.joined()
        let c = counts
        out +=
            "output: \(execution.tensors.count) tensors: \(c.merged) updated, \(c.converted) converted, \(c.copied) copied; \(Format.bytes(outputBytes))\n"
        return out
    }

    /// What the user should know about how the merge computes: the compat choice when it
    /// matters, the order of non-commuting adapters, kinds outside `--precision`.
    var notes: [String] {
        var n: [String] = []
        let sensitive = adapters.flatMap(\.merged).filter { $0.doraAxis != nil || $0.kind == .oft || $0.kind == .boft }
        if !sensitive.isEmpty {
            n.append(
                "\(sensitive.count) DoRA/OFT/BOFT module(s) follow --compat \(compat.rawValue) (\(compat == .lycoris ? "the LyCORIS library's definitions" : "ComfyUI's arithmetic"))"
            )
        }
        if let first = orderDependent.first {
            n.append(
                "\(orderDependent.count) tensor(s) are changed by several adapters whose results depend on the weight (e.g. \(displayable(first))): they are applied in command-line order, and another order gives another result"
            )
        }
        if fp32Modules > 0 {
            n.append(
                "\(fp32Modules) module(s) of kinds sd-scripts cannot merge have their change computed in fp32 on the weight as --precision holds it; the per-step rounding of --precision emulates sd-scripts' LoRA merge only"
            )
        }
        let ignored = adapters.flatMap(\.merged).filter(\.ignoredScaleKey)
        if let first = ignored.first {
            n.append(
                "\(ignored.count) module(s) carry a scale key that their kind ignores in LyCORIS and ComfyUI (e.g. \(displayable(first.module))): alpha / rank is used"
            )
        }
        let zero = adapters.flatMap(\.merged).filter { $0.scaleSource == .alpha && $0.scale == 0 }
        if let first = zero.first {
            n.append(
                "\(zero.count) module(s) store alpha 0, so they change nothing (e.g. \(displayable(first.module))); trainers write alpha = rank instead"
            )
        }
        return n
    }

    static func text(_ t: UpdateTarget) -> String {
        displayable(t.tensor) + (t.rows.map { " rows \($0.lowerBound)..<\($0.upperBound)" } ?? "")
    }

    var counts: (merged: Int, converted: Int, copied: Int) {
        var m = 0, v = 0, c = 0
        for t in execution.tensors {
            switch t.operation {
            case .update: m += 1
            case .convert: v += 1
            case .copy: c += 1
            }
        }
        return (m, v, c)
    }

    func summary(execution r: ExecutionReport, output: String) -> String {
        let modules = adapters.reduce(0) { $0 + $1.merged.count }
        let gbs = Double(r.bytesWritten) / max(r.seconds, 1e-9) / 1e9
        let gflops = r.flops / max(r.seconds, 1e-9) / 1e9
        return
            "merged \(modules) modules from \(adapters.count) adapter(s) into \(displayable(output)): \(r.tensorsMerged) tensors updated, \(r.tensorsCopied) copied, \(r.tensorsConverted) converted; \(Format.bytes(r.bytesWritten)) in \(Format.fixed(r.seconds, decimals: 1)) s (\(Format.fixed(gbs, decimals: 1)) GB/s, \(Format.fixed(gflops, decimals: 1)) GFLOP/s, \(r.threads) threads)"
    }

    func reportJSON(execution r: ExecutionReport?, output: String?) -> MergeReportJSON {
        let c = counts
        return MergeReportJSON(
            schema: 2, command: "merge", dryRun: r == nil, compat: compat.rawValue, orderDependent: orderDependent,
            notes: notes,
            checkpoint: .init(path: checkpointPath, architecture: checkpoint.architecture.rawValue),
            adapters: adapters.map { a in
                .init(
                    path: a.path, ratio: a.ratio, kind: a.analysis.kind.rawValue, scheme: a.analysis.scheme.rawValue,
                    baseModel: a.analysis.baseModel.family.rawValue, modules: a.analysis.modules.count,
                    mergedModules: a.merged.count,
                    merged: a.merged.map { m in
                        .init(
                            module: m.module, kind: m.kind.rawValue,
                            targets: m.targets.map {
                                .init(tensor: $0.tensor, rows: $0.rows.map { [$0.lowerBound, $0.upperBound] })
                            },
                            scale: m.scale, scaleSource: m.scaleSource.rawValue, doraAxis: m.doraAxis?.rawValue)
                    },
                    notMerged: a.skipped.map {
                        .init(module: $0.module, reason: $0.reason.rawValue, message: $0.message)
                    },
                    sdScriptsDiffers: a.sdScriptsDiffers.map {
                        .init(module: $0.module, treatment: $0.treatment.rawValue)
                    })
            },
            output: .init(
                path: output, tensors: execution.tensors.count, merged: c.merged, converted: c.converted,
                copied: c.copied, bytes: outputBytes),
            overflows: r?.overflows.map { .init(tensor: $0.name, count: $0.count) },
            seconds: r?.seconds, flops: r?.flops, threads: r?.threads)
    }
}

struct MergeReportJSON: Encodable {
    struct Checkpoint: Encodable { let path: String; let architecture: String }
    struct Target: Encodable { let tensor: String; let rows: [Int]? }
    struct Merged: Encodable {
        let module: String
        let kind: String
        let targets: [Target]
        let scale: Double
        let scaleSource: String
        let doraAxis: String?
        enum CodingKeys: String, CodingKey {
            case module, kind, targets, scale
            case scaleSource = "scale_source", doraAxis = "dora_axis"
        }
    }
    struct NotMerged: Encodable { let module: String; let reason: String; let message: String }
    struct Difference: Encodable { let module: String; let treatment: String }
    struct Overflow: Encodable { let tensor: String; let count: Int }
    struct Adapter: Encodable {
        let path: String
        let ratio: Double
        let kind: String
        let scheme: String
        let baseModel: String
        let modules: Int
        let mergedModules: Int
        let merged: [Merged]
        let notMerged: [NotMerged]
        let sdScriptsDiffers: [Difference]
        enum CodingKeys: String, CodingKey {
            case path, ratio, kind, scheme, modules, merged
            case baseModel = "base_model", mergedModules = "merged_modules", notMerged = "not_merged"
            case sdScriptsDiffers = "sd_scripts_differs"
        }
    }
    struct Output: Encodable {
        let path: String?
        let tensors: Int
        let merged: Int
        let converted: Int
        let copied: Int
        let bytes: Int
    }
    let schema: Int
    let command: String
    let dryRun: Bool
    let compat: String
    let orderDependent: [String]
    let notes: [String]
    let checkpoint: Checkpoint
    let adapters: [Adapter]
    let output: Output
    let overflows: [Overflow]?
    let seconds: Double?
    let flops: Double?
    let threads: Int?
    enum CodingKeys: String, CodingKey {
        case schema, command, checkpoint, adapters, output, overflows, seconds, flops, threads, compat, notes
        case dryRun = "dry_run", orderDependent = "order_dependent"
    }
}
