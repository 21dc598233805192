import ArgumentParser
import GraftEngine
import SafeTensors

extension Graft {
    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare two models tensor by tensor; optionally explain the difference as a LoRA merge.",
            discussion: """
                Reports tensors only in A or only in B, dtype and shape changes, and for every tensor in \
                both (compared in fp32 whatever the dtypes): identical bytes or not, max and mean |A-B|, \
                relative change ||A-B||/||A||, cosine similarity, the number of differing elements and \
                NaN/Inf counts on either side. A summary per component and block (text encoders, each \
                UNet input/middle/output block, VAE) is sorted by relative change; then the --top N \
                tensors. Metadata differences are listed but do not count as a difference.

                --lora L[:RATIO] predicts each tensor's change from the adapters (mapped onto A exactly \
                as `graft merge` maps them) and reports the residual ||(B-A) - delta|| / ||B-A||, the \
                changed tensors no module explains, and the targeted tensors that did not change.

                --filter GLOB (repeatable) compares only the tensors whose name matches one of the \
                globs. Every glob must match at least one tensor in A or B: a glob that matches \
                nothing is an error (exit 2), so a typo cannot turn a verification into "identical".

                Exit status: 0 identical (after --threshold), 1 different, 2 error, as cmp(1).

                Examples:
                  graft diff base.safetensors merged.safetensors --top 10
                  graft diff base.safetensors merged.safetensors --lora style.safetensors:0.8
                """
        )

        @Argument(help: "The first file (A).")
        var a: String

        @Argument(help: "The second file (B).")
        var b: String

        @Option(
            help: ArgumentHelp(
                "Compare only tensors matching this glob (repeatable; each must match a tensor).",
                valueName: "glob"))
        var filter: [String] = []

        @Option(help: "Ignore value differences whose max |A-B| is at most this (default 0: any difference counts).")
        var threshold: Double = 0

        @Option(help: "Number of most-changed tensors to list.")
        var top: Int = 20

        @Option(
            help: ArgumentHelp(
                "Explain B - A as a merge of this adapter into A (repeatable, in merge order).",
                valueName: "lora[:ratio]"))
        var lora: [String] = []

        @Option(help: "Residual up to which a LoRA-touched tensor counts as explained.")
        var loraTolerance: Double = 0.05

        @Option(help: "Arithmetic of the --lora prediction where references disagree: lycoris or comfyui (as merge).")
        var compat: MergeCompat = .lycoris

        @Option(help: "Worker threads (default: all cores).")
        var threads: Int?

        @OptionGroup var options: OutputOptions

        func validate() throws {
            if !(threshold >= 0) || !threshold.isFinite {
                throw ValidationError("--threshold must be a finite number >= 0.")
            }
            if top < 0 { throw ValidationError("--top must be at least 0.") }
            if !(loraTolerance >= 0) { throw ValidationError("--lora-tolerance must be >= 0.") }
            if let threads, threads < 1 { throw ValidationError("--threads must be at least 1.") }
            for l in lora where AdapterArgument(l).path.isEmpty {
                throw ValidationError("'\(l)' names no adapter file.")
            }
            try InputValidation.standardInputAtMostOnce(
                [("A", a), ("B", b)] + lora.map { ("--lora", AdapterArgument($0).path) })
        }

        func run() throws {
            let report: DiffReport = try reportingErrors(json: options.json ? "diff" : nil) {
                let fa = try SafeTensorsFile(path: a)
                let fb = try SafeTensorsFile(path: b)
                let unmatched = Self.unmatchedFilters(filter, fa, fb)
                if !unmatched.isEmpty {
                    let quoted = unmatched.map { "'\($0)'" }.joined(separator: ", ")
                    throw GraftFailure(
                        "--filter \(quoted) \(unmatched.count == 1 ? "matches" : "match") no tensor in either file")
                }
                var adapters: [MergeInput] = []
                for l in lora {
                    let arg = AdapterArgument(l)
                    adapters.append(MergeInput(file: try SafeTensorsFile(path: arg.path), ratio: arg.ratio))
                }
                var runner = DiffRunner()
                if let threads { runner.threads = threads }
                let bar = ProgressBar(label: "diff", enabled: options.showsProgress && !options.json)
                defer { bar.finish() }
                var request = DiffRequest(
                    a: fa, b: fb, filters: filter, threshold: threshold,
                    adapters: adapters, loraTolerance: loraTolerance)
                request.compat = compat
                return try runner.run(request, progress: bar.callback)
            }
            try reportingErrors {
                if options.json {
                    try printEncoded(DiffReportJSON(report, top: top))
                } else if !options.quiet {
                    printResult(DiffText(report: report, top: top, verbose: options.verbose).render(), terminator: "")
                }
            }
            if !report.isIdentical { throw ExitCode(1) }
        }

        /// The globs that match no tensor name in either file: a diff restricted to them
        /// would compare nothing and report "identical".
        static func unmatchedFilters(_ globs: [String], _ a: SafeTensorsFile, _ b: SafeTensorsFile) -> [String] {
            globs.filter { g in
                !a.tensors.contains { globMatches(g, $0.name) } && !b.tensors.contains { globMatches(g, $0.name) }
            }
        }
    }
}

/// The `--json` document of `graft diff` (schema 1).
struct DiffReportJSON: Encodable {
    struct File: Encodable { let path: String; let tensors: Int }
    struct Summary: Encodable {
        let inBoth: Int, onlyInA: Int, onlyInB: Int, dtypeChanges: Int, shapeChanges: Int
        let changed: Int, unchanged: Int, identicalBytes: Int
        enum CodingKeys: String, CodingKey {
            case changed, unchanged
            case inBoth = "in_both", onlyInA = "only_in_a", onlyInB = "only_in_b", dtypeChanges = "dtype_changes"
            case shapeChanges = "shape_changes", identicalBytes = "identical_bytes"
        }
    }
    let schema = 1
    let command = "diff"
    let a: File
    let b: File
    let identical: Bool
    let threshold: Double
    let summary: Summary
    let onlyInA: [TensorEntry]
    let onlyInB: [TensorEntry]
    let dtypeChanges: [TensorChange]
    let shapeChanges: [TensorChange]
    let metadata: MetadataDifference
    let groups: [GroupSummary]
    let top: [String]
    let tensors: [TensorComparison]
    let lora: LoRADiffSummary?
    let bytesRead: Int
    let seconds: Double
    let threads: Int

    enum CodingKeys: String, CodingKey {
        case schema, command, a, b, identical, threshold, summary, metadata, groups, top, tensors, lora, seconds,
            threads
        case onlyInA = "only_in_a", onlyInB = "only_in_b", dtypeChanges = "dtype_changes", shapeChanges =
            "shape_changes"
        case bytesRead = "bytes_read"
    }

    init(_ r: DiffReport, top n: Int) {
        a = File(path: r.pathA, tensors: r.tensorCountA)
        b = File(path: r.pathB, tensors: r.tensorCountB)
        identical = r.isIdentical
        threshold = r.threshold
        let changed = r.tensors.filter(\.changed).count
        summary = Summary(
            inBoth: r.tensorsInBoth,
            onlyInA: r.onlyInA.count, onlyInB: r.onlyInB.count, dtypeChanges: r.dtypeChanges.count,
            shapeChanges: r.shapeChanges.count, changed: changed, unchanged: r.tensors.count - changed,
            identicalBytes: r.tensors.filter(\.identicalBytes).count)
        onlyInA = r.onlyInA
        onlyInB = r.onlyInB
        dtypeChanges = r.dtypeChanges
        shapeChanges = r.shapeChanges
        metadata = r.metadata
        groups = r.groups
        top = r.topChanged(n).map(\.name)
        tensors = r.tensors
        lora = r.lora
        bytesRead = r.bytesRead
        seconds = r.seconds
        threads = r.threads
    }
}

/// The human-readable rendering (not promised to stay stable). Every name and string
/// that comes from a file (tensor names, metadata keys, module names, paths) goes
/// through ``displayable(_:)``: a hostile name cannot send escape sequences to the
/// terminal or forge a line.
struct DiffText {
    let report: DiffReport
    let top: Int
    let verbose: Bool

    func render() -> String {
        let r = report
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        let changed = r.tensors.filter(\.changed)
        let sameBytes = r.tensors.filter(\.identicalBytes).count
        line("A: \(displayable(r.pathA)) (\(r.tensorCountA) tensors)")
        line("B: \(displayable(r.pathB)) (\(r.tensorCountB) tensors)")
        line(
            "tensors: \(r.tensors.count) compared, \(r.onlyInA.count) only in A, \(r.onlyInB.count) only in B, "
                + "\(r.dtypeChanges.count) dtype changes, \(r.shapeChanges.count) shape changes")
        let thr = r.threshold > 0 ? " (max |A-B| > \(Format.shortest(r.threshold)))" : ""
        line(
            "values: \(changed.count) changed\(thr), \(r.tensors.count - changed.count) unchanged (\(sameBytes) byte-identical)"
        )
        let limit = verbose ? Int.max : 20
        /// `items` are made displayable here; titles are ours.
        func list(_ title: String, _ items: [String]) {
            guard !items.isEmpty else { return }
            line()
            line("\(title) (\(items.count)):")
            for s in items.prefix(limit) { line("  \(s)") }
            if items.count > limit { line("  ... and \(items.count - limit) more (-v lists all)") }
        }
        func name(_ s: String) -> String { displayable(s) }
        func shape(_ s: [UInt64]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }
        list("only in A", r.onlyInA.map { "\(name($0.name)) \($0.dtype.rawValue) \(shape($0.shape))" })
        list("only in B", r.onlyInB.map { "\(name($0.name)) \($0.dtype.rawValue) \(shape($0.shape))" })
        list("dtype changes", r.dtypeChanges.map { "\(name($0.name)): \($0.dtypeA.rawValue) -> \($0.dtypeB.rawValue)" })
        list("shape changes", r.shapeChanges.map { "\(name($0.name)): \(shape($0.shapeA)) -> \(shape($0.shapeB))" })
        let md = r.metadata
        list(
            "metadata differences",
            md.onlyInA.map { "only in A: \(name($0))" } + md.onlyInB.map { "only in B: \(name($0))" }
                + md.changed.map { "changed: \(name($0))" })

        if !r.groups.isEmpty && !changed.isEmpty {
            line()
            let widths = [28, 8, 8, 11, 11, 11, 10]
            line(
                row(
                    ["group", "tensors", "changed", "rel change", "max |A-B|", "mean |A-B|", "cosine"], widths,
                    firstLeft: true))
            for g in r.groups {
                line(
                    row(
                        [
                            name(g.group), "\(g.tensors)", "\(g.changed)", relative(g.relativeChange),
                            Format.statistic(g.maxAbsDiff),
                            Format.statistic(g.meanAbsDiff), Format.cosine(g.cosine),
                        ], widths, firstLeft: true))
            }
        }
        let topList = r.topChanged(top)
        if !topList.isEmpty {
            line()
            line("top \(topList.count) changed tensors (of \(changed.count)):")
            let widths = [10, 11, 11, 10, 12, 12, 0]
            line(
                row(
                    ["rel change", "max |A-B|", "mean |A-B|", "cosine", "differing", "nan/inf A/B", "  tensor"], widths)
            )
            for t in topList {
                let nf = t.nanA + t.nanB + t.infA + t.infB > 0 ? "\(t.nanA + t.infA)/\(t.nanB + t.infB)" : "-"
                line(
                    row(
                        [
                            relative(t.relativeChange), Format.statistic(t.maxAbsDiff), Format.statistic(t.meanAbsDiff),
                            Format.cosine(t.cosine), "\(t.differing)", nf, "  " + name(t.name),
                        ], widths))
            }
        }
        if let l = r.lora {
            line()
            for a in l.adapters {
                line(
                    "lora \(name(a.path)) x\(Format.shortest(a.ratio)): \(a.mapped) of \(a.modules) modules mapped onto A"
                )
                for s in a.notMapped.prefix(limit) { line("  not mapped: \(name(s))") }
                if a.notMapped.count > limit { line("  ... and \(a.notMapped.count - limit) more") }
            }
            let tolerance = Format.shortest(l.tolerance)
            line("explained (residual <= \(tolerance)): \(l.explained.count) tensors")
            let byName = Dictionary(r.tensors.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
            let residuals = l.explained.compactMap { byName[$0]?.lora?.residual }
            if let worst = residuals.max() { line("  worst residual \(Format.statistic(worst))") }
            list(
                "partially explained (residual > \(tolerance))",
                l.partiallyExplained.map { n in
                    "\(name(n)): residual \(relative(byName[n]?.lora?.residual))"
                })
            list("changed but not explained by any module", l.unexplained.map(name))
            list("targeted by a module but unchanged", l.unchanged.map(name))
            list("targeted by a module but not compared", l.notCompared.map(name))
        }
        line()
        line(r.isIdentical ? "identical" : "different")
        return out
    }

    /// Right-aligned cells of the given widths; a width of 0 is a free-width last column.
    /// With `firstLeft`, the first column is left-aligned (and may overflow by its length).
    func row(_ cells: [String], _ widths: [Int], firstLeft: Bool = false) -> String {
        var s = ""
        for (i, c) in cells.enumerated() {
            let w = widths[i]
            if w == 0 {
                s += c
            } else if i == 0 && firstLeft {
                s += c.count >= w ? c + " " : c.padding(w)
            } else {
                s += String(repeating: " ", count: max(1, w - c.count)) + c
            }
        }
        return s
    }

    /// A relative change ||B-A|| / ||A||; nil (A all zero, B not) is an infinite change.
    func relative(_ v: Double?) -> String { Format.statistic(v ?? .infinity) }
}
