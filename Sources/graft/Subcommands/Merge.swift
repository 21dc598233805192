import ArgumentParser
import GraftEngine
import SafeTensors

extension Graft {
    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge LoRA and LyCORIS adapters into a checkpoint.",
            discussion: """
                Each adapter is applied in command-line order: W <- W + ratio * (up @ down) * (alpha / rank), \
                computed in fp32 from the input dtype and rounded to the output dtype once \
                (sd-scripts' sdxl_merge_lora.py / merge_lora.py with --precision float). Every input \
                tensor is kept; untouched tensors are copied byte for byte when their dtype is kept.

                LyCORIS kinds (LoCon with Tucker, LoHa, LoKr, DoRA, full, norm, (IA)3, GLoRA, OFT, \
                BOFT) are merged as the LyCORIS library defines them, or as ComfyUI computes them \
                with --compat comfyui; --dry-run shows each module's kind and target.

                A module that maps to no tensor of the checkpoint is an error (sd-scripts skips it \
                silently); --allow-unmatched merges the rest and still lists them.

                Example (difference training, sd-scripts' reference command):
                  graft merge model.safetensors base_lora.safetensors:1 \\
                    -o merged.safetensors --save-precision fp16
                """
        )

        @Argument(help: "The checkpoint (.safetensors or .safetensors.zst).")
        var checkpoint: String

        @Argument(
            help: ArgumentHelp(
                "Adapters, each optionally with a ratio: LORA[:RATIO] (default 1; negative allowed).",
                valueName: "lora[:ratio]"))
        var adapters: [String]

        @OptionGroup var write: WriteOptions

        @Option(help: "Arithmetic precision: fp32, fp16 or bf16 (fp16/bf16 round every step, as PyTorch does).")
        var precision: MergePrecision = .fp32

        @Option(help: "dtype of the floating tensors written: keep (each tensor's input dtype), fp16, bf16 or fp32.")
        var savePrecision: SavePrecision = .keep

        @Option(
            help: ArgumentHelp(
                "Whose arithmetic where the references disagree: lycoris (the adapter's training definition) or comfyui (the weights ComfyUI renders with).",
                discussion:
                    "They differ for DoRA (output-axis norm, strength other than 1), OFT (constraint, rescale, strength) and BOFT (strength); every other kind is the same under both."
            ))
        var compat: MergeCompat = .lycoris

        @Flag(help: "Merge the modules that match and report the others instead of failing.")
        var allowUnmatched = false

        @Flag(help: "Fail (writing nothing) if a merged value overflows to ±inf in the output dtype.")
        var strict = false

        @Flag(help: "Print the plan (which module goes to which tensor); write nothing (-o is optional).")
        var dryRun = false

        @Option(help: "Worker threads (default: all cores).")
        var threads: Int?

        @OptionGroup var options: OutputOptions

        func validate() throws {
            if !dryRun { try write.requireOutput() }
            if adapters.isEmpty { throw ValidationError("Give at least one adapter to merge.") }
            if let threads, threads < 1 { throw ValidationError("--threads must be at least 1.") }
            for a in adapters {
                let arg = AdapterArgument(a)
                if arg.path.isEmpty { throw ValidationError("'\(a)' names no adapter file.") }
                if !Float(arg.ratio).isFinite {
                    throw ValidationError(
                        "The ratio of '\(a)' is out of range: it must be a finite number below 3.4e38 in magnitude.")
                }
            }
            try InputValidation.standardInputAtMostOnce(
                [("the checkpoint", checkpoint)] + adapters.map { ("an adapter", AdapterArgument($0).path) })
            if write.isStandardOutput && !dryRun && options.json {
                throw ValidationError("--json cannot be used with -o - (standard output carries the merged file).")
            }
        }

        func run() throws {
            try reportingErrors(json: options.json ? "merge" : nil) {
                let save = savePrecision.dtype
                let ckpt = try SafeTensorsFile(path: checkpoint)
                var inputs: [MergeInput] = []
                for a in adapters {
                    let arg = AdapterArgument(a)
                    inputs.append(MergeInput(file: try SafeTensorsFile(path: arg.path), ratio: arg.ratio))
                }
                var request = MergeRequest(
                    checkpoint: ckpt, adapters: inputs, savePrecision: save,
                    precision: precision, allowUnmatched: allowUnmatched,
                    outputPath: write.isStandardOutput ? "merged" : write.output,
                    graftVersion: Graft.version)
                request.compat = compat
                let merge = try MergePlanner.plan(request)
                if dryRun {
                    if options.json {
                        try printEncoded(merge.reportJSON(execution: nil, output: nil))
                    } else {
                        printResult(merge.describe(verbose: options.verbose))
                    }
                    return
                }
                if !merge.unmatched.isEmpty && !options.quiet {
                    Terminal.warn("graft: warning: \(merge.unmatched.count) adapter module(s) were not merged:")
                    for (file, m) in merge.unmatched.prefix(options.verbose ? Int.max : 20) {
                        Terminal.warn("  " + displayable("\(file): \(m.module): \(m.message)"))
                    }
                }
                if !options.quiet && !options.json {
                    for n in merge.notes { Terminal.warn("graft: note: " + n) }
                }
                var executor = Executor()
                executor.failOnOverflow = strict
                if let threads { executor.threads = threads }
                executor.encoding = write.encoding(threads: threads)
                let bar = ProgressBar(label: "merge", enabled: options.showsProgress && !options.json)
                let report = try write.withOutput(inputs: [checkpoint] + inputs.map(\.file.path), quiet: options.quiet)
                { out in
                    defer { bar.finish() }
                    return try executor.run(merge.execution, into: out, progress: bar.callback)
                }
                if !report.overflows.isEmpty && !options.quiet {
                    let values = report.overflows.reduce(0) { $0 + $1.count }
                    Terminal.warn(
                        "graft: warning: \(values) merged value(s) in \(report.overflows.count) tensor(s) overflowed to ±inf in the output dtype (--strict refuses this):"
                    )
                    for o in report.overflows.prefix(options.verbose ? Int.max : 5) {
                        Terminal.warn("  " + displayable("\(o.name): \(o.count)"))
                    }
                }
                if options.json {
                    try printEncoded(merge.reportJSON(execution: report, output: write.output))
                } else if write.isStandardOutput {
                    if !options.quiet { Terminal.warn(merge.summary(execution: report, output: "<stdout>")) }
                } else if !options.quiet {
                    printResult(merge.summary(execution: report, output: write.output))
                }
            }
        }
    }
}

/// `path[:ratio]`: split at the last ':' only when a number follows, so paths that
/// contain colons still work.
struct AdapterArgument {
    let path: String
    let ratio: Double

    init(_ s: String) {
        if let colon = s.lastIndex(of: ":"), let r = Double(s[s.index(after: colon)...]), r.isFinite {
            path = String(s[..<colon])
            ratio = r
        } else {
            path = s
            ratio = 1
        }
    }
}

extension MergeCompat: ExpressibleByArgument {}

extension MergePrecision: ExpressibleByArgument {
    /// fp32 / fp16 / bf16, and sd-scripts' and PyTorch's spellings (float, half, bfloat16…).
    public init?(argument: String) {
        switch DType(userSpelling: argument) {
        case .F32?: self = .fp32
        case .F16?: self = .fp16
        case .BF16?: self = .bf16
        default: return nil
        }
    }

    public static var allValueStrings: [String] { allCases.map(\.rawValue) }
}

/// `--save-precision`: keep each tensor's dtype, or convert the floating ones.
enum SavePrecision: ExpressibleByArgument, CaseIterable {
    case keep, fp16, bf16, fp32

    init?(argument: String) {
        if argument.lowercased() == "keep" { self = .keep; return }
        switch DType(userSpelling: argument) {
        case .F16?: self = .fp16
        case .BF16?: self = .bf16
        case .F32?: self = .fp32
        default: return nil
        }
    }

    static var allValueStrings: [String] { ["keep", "fp16", "bf16", "fp32"] }

    var dtype: DType? {
        switch self {
        case .keep: return nil
        case .fp16: return .F16
        case .bf16: return .BF16
        case .fp32: return .F32
        }
    }
}
