import ArgumentParser
import GraftEngine
import SafeTensors

extension Graft {
    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge LoRA / LoCon adapters into a checkpoint.",
            discussion: """
                Each adapter is applied in command-line order: W <- W + ratio * (up @ down) * (alpha / rank), \
                computed in fp32 from the input dtype and rounded to the output dtype once \
                (sd-scripts' sdxl_merge_lora.py / merge_lora.py with --precision float). Every input \
                tensor is kept; untouched tensors are copied byte for byte when their dtype is kept.

                A module that maps to no tensor of the checkpoint is an error (sd-scripts skips it \
                silently); --allow-unmatched merges the rest and still lists them.

                Example (difference training, sd-scripts' reference command):
                  graft merge model.safetensors base_lora.safetensors:1 \\
                    -o merged.safetensors --save-precision fp16
                """
        )

        @Argument(help: "The checkpoint (.safetensors or .safetensors.zst).")
        var checkpoint: String

        @Argument(help: ArgumentHelp("Adapters, each optionally with a ratio: LORA[:RATIO] (default 1; negative allowed).",
                                     valueName: "lora[:ratio]"))
        var adapters: [String]

        @OptionGroup var write: WriteOptions

        @Option(help: "Arithmetic precision: fp32, fp16 or bf16 (fp16/bf16 round every step, as PyTorch does).")
        var precision: String = "fp32"

        @Option(help: "dtype of the floating tensors written: keep (each tensor's input dtype), fp16, bf16 or fp32.")
        var savePrecision: String = "keep"

        @Flag(help: "Merge the modules that match and report the others instead of failing.")
        var allowUnmatched = false

        @Flag(help: "Print the plan (which module goes to which tensor); write nothing (-o is optional).")
        var dryRun = false

        @Option(help: "Worker threads (default: all cores).")
        var threads: Int?

        @OptionGroup var options: OutputOptions

        func validate() throws {
            if !dryRun { try write.requireOutput() }
            if adapters.isEmpty { throw ValidationError("Give at least one adapter to merge.") }
            if MergePrecision(rawValue: precision.lowercased()) == nil && precisionAlias(precision) == nil {
                throw ValidationError("--precision must be fp32, fp16 or bf16 (got '\(precision)').")
            }
            if savePrecision.lowercased() != "keep" {
                guard let d = DType(userSpelling: savePrecision), d.isConvertibleFloat, d != .F64 else {
                    throw ValidationError("--save-precision must be keep, fp16, bf16 or fp32 (got '\(savePrecision)').")
                }
            }
            if let threads, threads < 1 { throw ValidationError("--threads must be at least 1.") }
            for a in adapters where AdapterArgument(a).path.isEmpty {
                throw ValidationError("'\(a)' names no adapter file.")
            }
        }

        func run() throws {
            try reportingErrors {
                let precision = MergePrecision(rawValue: self.precision.lowercased()) ?? precisionAlias(self.precision)!
                let save: DType? = savePrecision.lowercased() == "keep" ? nil : DType(userSpelling: savePrecision)
                let ckpt = try SafeTensorsFile(path: checkpoint)
                var inputs: [MergeInput] = []
                for a in adapters {
                    let arg = AdapterArgument(a)
                    inputs.append(MergeInput(file: try SafeTensorsFile(path: arg.path), ratio: arg.ratio))
                }
                let request = MergeRequest(checkpoint: ckpt, adapters: inputs, savePrecision: save,
                                           precision: precision, allowUnmatched: allowUnmatched,
                                           outputPath: write.output, graftVersion: Graft.version)
                let merge = try MergePlanner.plan(request)
                if dryRun {
                    if options.json { try printEncoded(merge.reportJSON(execution: nil, output: nil)) }
                    else { print(merge.describe(verbose: options.verbose)) }
                    return
                }
                if !merge.unmatched.isEmpty && !options.quiet {
                    Terminal.warn("graft: warning: \(merge.unmatched.count) adapter module(s) match no tensor and were not merged:")
                    for u in merge.unmatched.prefix(options.verbose ? Int.max : 20) { Terminal.warn("  " + displayable(u)) }
                }
                let out = try AtomicOutput(path: write.output, overwrite: write.force,
                                           inputs: [checkpoint] + inputs.map(\.file.path))
                var executor = Executor()
                if let threads { executor.threads = threads }
                executor.encoding = write.encoding(threads: threads)
                let bar = ProgressBar(label: "merge", enabled: options.showsProgress && !options.json)
                let report: ExecutionReport
                do {
                    report = try executor.run(merge.execution, into: out, progress: bar.callback)
                    bar.finish()
                    try out.commit()
                } catch {
                    bar.finish()
                    out.abort()
                    throw error
                }
                if options.json {
                    try printEncoded(merge.reportJSON(execution: report, output: write.output))
                } else if !options.quiet {
                    print(merge.summary(execution: report, output: write.output))
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

func precisionAlias(_ s: String) -> MergePrecision? {
    switch s.lowercased() {
    case "float", "f32", "float32": return .fp32
    case "f16", "half", "float16": return .fp16
    case "bfloat16": return .bf16
    default: return nil
    }
}
