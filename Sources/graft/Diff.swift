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

        @Option(help: ArgumentHelp("Compare only tensors matching this glob (repeatable).", valueName: "glob"))
        var filter: [String] = []

        @Option(help: "Ignore value differences whose max |A-B| is at most this (default 0: any difference counts).")
        var threshold: Double = 0

        @Option(help: "Number of most-changed tensors to list.")
        var top: Int = 20

        @Option(help: ArgumentHelp("Explain B - A as a merge of this adapter into A (repeatable, in merge order).",
                                   valueName: "lora[:ratio]"))
        var lora: [String] = []

        @Option(help: "Residual up to which a LoRA-touched tensor counts as explained.")
        var loraTolerance: Double = 0.05

        @Option(help: "Worker threads (default: all cores).")
        var threads: Int?

        @OptionGroup var options: OutputOptions

        func validate() throws {
            if !(threshold >= 0) || !threshold.isFinite { throw ValidationError("--threshold must be a finite number >= 0.") }
            if top < 0 { throw ValidationError("--top must be at least 0.") }
            if !(loraTolerance >= 0) { throw ValidationError("--lora-tolerance must be >= 0.") }
            if let threads, threads < 1 { throw ValidationError("--threads must be at least 1.") }
            for l in lora where AdapterArgument(l).path.isEmpty { throw ValidationError("'\(l)' names no adapter file.") }
            try InputValidation.standardInputAtMostOnce([("A", a), ("B", b)] + lora.map { ("--lora", AdapterArgument($0).path) })
        }

        func run() throws {
            let report: DiffReport = try reportingErrors(json: options.json ? "diff" : nil) {
                let fa = try SafeTensorsFile(path: a)
                let fb = try SafeTensorsFile(path: b)
                var adapters: [MergeInput] = []
                for l in lora {
                    let arg = AdapterArgument(l)
                    adapters.append(MergeInput(file: try SafeTensorsFile(path: arg.path), ratio: arg.ratio))
                }
                var runner = DiffRunner()
                if let threads { runner.threads = threads }
                let bar = ProgressBar(label: "diff", enabled: options.showsProgress && !options.json)
                defer { bar.finish() }
                let request = DiffRequest(a: fa, b: fb, filters: filter, threshold: threshold,
                                          adapters: adapters, loraTolerance: loraTolerance)
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
        case schema, command, a, b, identical, threshold, summary, metadata, groups, top, tensors, lora, seconds, threads
        case onlyInA = "only_in_a", onlyInB = "only_in_b", dtypeChanges = "dtype_changes", shapeChanges = "shape_changes"
        case bytesRead = "bytes_read"
    }

    init(_ r: DiffReport, top n: Int) {
        a = File(path: r.pathA, tensors: r.tensorCountA)
        b = File(path: r.pathB, tensors: r.tensorCountB)
        identical = r.isIdentical
        threshold = r.threshold
        let changed = r.tensors.filter(\.changed).count
        summary = Summary(inBoth: r.tensorsInBoth,
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

/// The human-readable rendering (not promised to stay stable).
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
        line("A: \(r.pathA) (\(r.tensorCountA) tensors)")
        line("B: \(r.pathB) (\(r.tensorCountB) tensors)")
        line("tensors: \(r.tensors.count) compared, \(r.onlyInA.count) only in A, \(r.onlyInB.count) only in B, \(r.dtypeChanges.count) dtype changes, \(r.shapeChanges.count) shape changes")
        let thr = r.threshold > 0 ? " (max |A-B| > \(r.threshold))" : ""
        line("values: \(changed.count) changed\(thr), \(r.tensors.count - changed.count) unchanged (\(sameBytes) byte-identical)")
        let limit = verbose ? Int.max : 20
        func list(_ title: String, _ items: [String]) {
            guard !items.isEmpty else { return }
            line()
            line("\(title) (\(items.count)):")
            for s in items.prefix(limit) { line("  \(s)") }
            if items.count > limit { line("  ... and \(items.count - limit) more (-v lists all)") }
        }
        func shape(_ s: [UInt64]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }
        list("only in A", r.onlyInA.map { "\($0.name) \($0.dtype.rawValue) \(shape($0.shape))" })
        list("only in B", r.onlyInB.map { "\($0.name) \($0.dtype.rawValue) \(shape($0.shape))" })
        list("dtype changes", r.dtypeChanges.map { "\($0.name): \($0.dtypeA.rawValue) -> \($0.dtypeB.rawValue)" })
        list("shape changes", r.shapeChanges.map { "\($0.name): \(shape($0.shapeA)) -> \(shape($0.shapeB))" })
        let md = r.metadata
        list("metadata differences", md.onlyInA.map { "only in A: \($0)" } + md.onlyInB.map { "only in B: \($0)" } + md.changed.map { "changed: \($0)" })

        if !r.groups.isEmpty && !changed.isEmpty {
            line()
            line(row(["group", "tensors", "changed", "rel change", "max |A-B|", "mean |A-B|", "cosine"], [28, 8, 8, 11, 11, 11, 10]))
            for g in r.groups {
                line(row([g.group, "\(g.tensors)", "\(g.changed)", num(g.relativeChange), num(g.maxAbsDiff), num(g.meanAbsDiff), cos(g.cosine)],
                         [28, 8, 8, 11, 11, 11, 10]))
            }
        }
        let topList = r.topChanged(top)
        if !topList.isEmpty {
            line()
            line("top \(topList.count) changed tensors (of \(changed.count)):")
            line(row(["rel change", "max |A-B|", "mean |A-B|", "cosine", "differing", "nan/inf A/B", "  tensor"], [10, 11, 11, 10, 12, 12, 0]))
            for t in topList {
                let nf = t.nanA + t.nanB + t.infA + t.infB > 0 ? "\(t.nanA + t.infA)/\(t.nanB + t.infB)" : "-"
                line(row([num(t.relativeChange), num(t.maxAbsDiff), num(t.meanAbsDiff), cos(t.cosine),
                          "\(t.differing)", nf, "  " + t.name], [10, 11, 11, 10, 12, 12, 0]))
            }
        }
        if let l = r.lora {
            line()
            for a in l.adapters {
                line("lora \(a.path) x\(a.ratio): \(a.mapped) of \(a.modules) modules mapped onto A")
                for s in a.notMapped.prefix(limit) { line("  not mapped: \(s)") }
                if a.notMapped.count > limit { line("  ... and \(a.notMapped.count - limit) more") }
            }
            line("explained (residual <= \(l.tolerance)): \(l.explained.count) tensors")
            let byName = Dictionary(r.tensors.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
            let residuals = l.explained.compactMap { byName[$0]?.lora?.residual }
            if let worst = residuals.max() { line("  worst residual \(num(worst))") }
            list("partially explained (residual > \(l.tolerance))", l.partiallyExplained.map { n in
                "\(n): residual \(num(byName[n]?.lora?.residual))"
            })
            list("changed but not explained by any module", l.unexplained)
            list("targeted by a module but unchanged", l.unchanged)
            list("targeted by a module but not compared", l.notCompared)
        }
        line()
        line(r.isIdentical ? "identical" : "different")
        return out
    }

    func row(_ cells: [String], _ widths: [Int]) -> String {
        var s = ""
        for (i, c) in cells.enumerated() {
            let w = widths[i]
            if w == 0 { s += c }  // last, free-width column
            else if i == 0 && cells.count == 7 && widths[0] == 28 { s += c.count >= w ? c + " " : c.padding(w) }
            else { s += String(repeating: " ", count: max(1, w - c.count)) + c }
        }
        return s
    }

    func num(_ v: Double?) -> String {
        guard let v else { return "inf" }
        if v == 0 { return "0" }
        return sci(v)
    }

    func cos(_ v: Double?) -> String {
        guard let v else { return "-" }
        // Cosines close to 1 matter in their last digits: show 1 - cos when it is tiny.
        if v == 1 { return "1" }
        if v > 0.9999 { return "1-" + sci(1 - v) }
        return String(format4: v)
    }

    /// Three significant digits in scientific notation, without Foundation.
    func sci(_ v: Double) -> String {
        guard v.isFinite else { return "\(v)" }
        if v == 0 { return "0" }
        var e = Int((v.magnitude).log10Floor)
        var m = v / pow10(e)
        if m.magnitude >= 9.995 { e += 1; m = v / pow10(e) }
        if e >= -2 && e <= 3 { return String(format4: v) }
        let r = (m * 100).rounded() / 100
        let whole = Int(r)
        let frac = Int(((r.magnitude - Double(whole.magnitude)) * 100).rounded())
        return "\(whole).\(frac < 10 ? "0" : "")\(frac)e\(e)"
    }

    func pow10(_ e: Int) -> Double {
        var p = 1.0
        if e >= 0 { for _ in 0..<e { p *= 10 } } else { for _ in 0..<(-e) { p /= 10 } }
        return p
    }
}

extension Double {
    /// floor(log10(self)) for a positive finite value, by repeated scaling.
    var log10Floor: Int {
        var v = self, e = 0
        while v >= 10 { v /= 10; e += 1 }
        while v < 1 { v *= 10; e -= 1 }
        return e
    }
}

extension String {
    /// A number with four significant decimals, without Foundation.
    init(format4 v: Double) {
        guard v.isFinite else { self = "\(v)"; return }
        let r = (v * 10000).rounded()
        let whole = Int(r / 10000)
        var frac = String(Int((r - Double(whole) * 10000).magnitude))
        while frac.count < 4 { frac = "0" + frac }
        self = "\(r < 0 && whole == 0 ? "-" : "")\(whole).\(frac)"
    }
}
