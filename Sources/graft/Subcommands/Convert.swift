import ArgumentParser
import GraftEngine
import SafeTensors

extension Graft {
    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change the precision of floating-point tensors (fp32 <-> fp16/bf16), select or drop tensors.",
            discussion: """
                Floating tensors (F64/F32/F16/BF16) are converted to --dtype with round-to-nearest-even, \
                bit for bit as numpy's astype(float16) and PyTorch's bfloat16 rounding; NaN stays NaN. \
                Integer, bool and 8-bit float tensors are copied unchanged. Finite values beyond the \
                target's range become +-inf: they are counted per tensor and reported as a warning \
                (--strict makes that an error and writes nothing).

                The input is streamed from its memory mapping on all cores; the output is deterministic \
                and appears only when complete. Metadata is kept exactly (graft adds no keys) unless \
                --drop-metadata / --metadata say otherwise. An output name ending in .zst is written \
                zstd-compressed.

                Examples:
                  graft convert model-fp32.safetensors -o model-fp16.safetensors --dtype fp16 --keep 'first_stage_model.*'
                  graft convert model.safetensors -o unet.safetensors --dtype fp16 --only 'model.diffusion_model.*'
                  graft convert model.safetensors -o clean.safetensors --dtype bf16 --drop 'model_ema.*'
                """
        )

        @Argument(help: "The input (.safetensors or .safetensors.zst), or '-' for standard input.")
        var input: String

        @OptionGroup var write: WriteOptions

        @Option(help: ArgumentHelp("Target dtype of floating tensors: fp16, bf16, fp32 or fp64.", valueName: "dtype"))
        var dtype: String

        @Option(
            help: ArgumentHelp(
                "Leave tensors matching this glob in their dtype (repeatable), e.g. 'first_stage_model.*'.",
                valueName: "glob"))
        var keep: [String] = []

        @Option(
            help: ArgumentHelp(
                "Leave out tensors matching this glob (repeatable), e.g. 'model_ema.*'.", valueName: "glob"))
        var drop: [String] = []

        @Option(
            help: ArgumentHelp("Write only tensors matching this glob (repeatable; any may match).", valueName: "glob"))
        var only: [String] = []

        @Option(help: ArgumentHelp("Set a metadata entry (repeatable).", valueName: "key=value"))
        var metadata: [String] = []

        @Flag(help: "Do not copy the input's metadata (entries from --metadata are still written).")
        var dropMetadata = false

        @Flag(help: "Fail (exit 2, no output) if any finite value overflows to +-inf.")
        var strict = false

        @Option(help: "Worker threads (default: all cores).")
        var threads: Int?

        @OptionGroup var options: OutputOptions

        func validate() throws {
            try write.requireOutput()
            guard let d = DType(userSpelling: dtype), d.isConvertibleFloat else {
                throw ValidationError("--dtype must be fp16, bf16, fp32 or fp64 (got '\(dtype)').")
            }
            for m in metadata where parseMetadata(m) == nil {
                throw ValidationError("--metadata takes KEY=VALUE with a non-empty key (got '\(m)').")
            }
            if let threads, threads < 1 { throw ValidationError("--threads must be at least 1.") }
            if write.isStandardOutput && options.json {
                throw ValidationError("--json cannot be used with -o - (standard output carries the converted file).")
            }
        }

        func run() throws {
            try reportingErrors(json: options.json ? "convert" : nil) {
                let target = DType(userSpelling: dtype)!
                let file = try SafeTensorsFile(path: input)
                let request = ConvertRequest(
                    input: file, dtype: target, keep: keep, drop: drop, only: only,
                    setMetadata: metadata.compactMap(parseMetadata), dropMetadata: dropMetadata)
                let plan = try ConvertPlanner.plan(request)
                if !options.quiet {
                    for p in plan.unusedPatterns {
                        Terminal.warn(
                            "graft: warning: --\(p.list.rawValue) \(displayable(p.pattern)) matches no tensor")
                    }
                }
                var executor = Executor()
                // Checked per chunk: the first overflow stops the run before anything is committed
                // (and before more bytes reach a stream).
                executor.failOnOverflow = strict
                if let threads { executor.threads = threads }
                executor.encoding = write.encoding(threads: threads)
                let bar = ProgressBar(label: "convert", enabled: options.showsProgress && !options.json)
                let report = try write.withOutput(inputs: [input], quiet: options.quiet) { out in
                    defer { bar.finish() }
                    return try executor.run(plan.execution, into: out, progress: bar.callback)
                }
                if !report.overflows.isEmpty && !options.quiet && !options.json {
                    let total = report.overflows.reduce(0) { $0 + $1.count }
                    Terminal.warn(
                        "graft: warning: \(total) finite value(s) became +-inf in \(target.rawValue), in \(report.overflows.count) tensor(s):"
                    )
                    for o in report.overflows.prefix(options.verbose ? Int.max : 20) {
                        Terminal.warn("  \(displayable(o.name)): \(o.count)")
                    }
                    if !options.verbose && report.overflows.count > 20 {
                        Terminal.warn("  ... and \(report.overflows.count - 20) more (-v lists all)")
                    }
                }
                if options.json {
                    try printEncoded(ConvertReportJSON(plan: plan, report: report, output: write.output))
                } else if !options.quiet {
                    // With -o - the file is on stdout: the summary goes to stderr.
                    let emit: (String) -> Void = write.isStandardOutput ? { Terminal.warn($0) } : { printResult($0) }
                    emit(summary(plan, report))
                    if options.verbose {
                        for n in plan.kept { emit("  kept " + displayable(n)) }
                        for n in plan.dropped { emit("  dropped " + displayable(n)) }
                    }
                }
            }
        }

        func summary(_ plan: ConvertPlan, _ r: ExecutionReport) -> String {
            let gbs = Double(r.bytesWritten) / max(r.seconds, 1e-9) / 1e9
            let name = write.isStandardOutput ? "<stdout>" : displayable(write.output)
            var s =
                "converted \(plan.converted.count) tensors to \(plan.dtype.rawValue), kept \(plan.kept.count), copied \(plan.copied.count), dropped \(plan.dropped.count) -> \(name): \(Format.bytes(r.bytesWritten))"
            if let c = r.compressedBytes {
                s +=
                    " (zstd \(Format.bytes(c)), ratio \(Format.fixed(Double(r.bytesWritten) / Double(max(c, 1)), decimals: 2)))"
            }
            s +=
                " in \(Format.fixed(r.seconds, decimals: 1)) s (\(Format.fixed(gbs, decimals: 1)) GB/s, \(r.threads) threads)"
            return s
        }
    }
}

/// `KEY=VALUE` split at the first '='; nil without '=' or with an empty key.
func parseMetadata(_ s: String) -> (key: String, value: String)? {
    guard let eq = s.firstIndex(of: "="), eq != s.startIndex else { return nil }
    return (String(s[..<eq]), String(s[s.index(after: eq)...]))
}

struct ConvertReportJSON: Encodable {
    struct Output: Encodable {
        let path: String
        let bytes: Int
        let compressedBytes: Int?
        let tensors: Int
        enum CodingKeys: String, CodingKey {
            case path, bytes, tensors
            case compressedBytes = "compressed_bytes"
        }
    }
    let schema = 1
    let command = "convert"
    let input: String
    let dtype: String
    let output: Output
    let converted: [String]
    let kept: [String]
    let copied: [String]
    let dropped: [String]
    let overflows: [TensorOverflow]
    let overflowCount: Int
    let unusedPatterns: [String]
    let seconds: Double
    let threads: Int

    enum CodingKeys: String, CodingKey {
        case schema, command, input, dtype, output, converted, kept, copied, dropped, overflows, seconds, threads
        case overflowCount = "overflow_count", unusedPatterns = "unused_patterns"
    }

    init(plan: ConvertPlan, report r: ExecutionReport, output: String) {
        input = plan.inputPath
        dtype = plan.dtype.rawValue
        self.output = Output(
            path: output, bytes: r.bytesWritten, compressedBytes: r.compressedBytes, tensors: r.tensorsWritten)
        converted = plan.converted
        kept = plan.kept
        copied = plan.copied
        dropped = plan.dropped
        overflows = r.overflows
        overflowCount = r.overflows.reduce(0) { $0 + $1.count }
        unusedPatterns = plan.unusedPatterns.map { "--\($0.list.rawValue) \($0.pattern)" }
        seconds = r.seconds
        threads = r.threads
    }
}
