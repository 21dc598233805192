import ArgumentParser
import DatasetTools
import FileIO

extension Graft {
    struct Masks: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write sd-scripts loss masks (8-bit grey PNGs) from the images' transparency.",
            discussion: """
                For each image IN/dir/stem.ext (extensions as sd-scripts matches them: .png .jpg .jpeg \
                .webp .bmp, each all-lower or all-upper case) writes OUT/dir/stem.png, the same size, \
                for conditioning_data_dir with --masked_loss. The mask is 255 where the image is \
                opaque (alpha > --threshold), 0 elsewhere; an image without alpha gets an all-white \
                mask. Sub-folders are mirrored. EXIF orientation is never applied (as sd-scripts).

                Steps: alpha mapping (--alpha, --threshold), --invert, --dilate, --erode, --feather \
                (Gaussian, sigma = R/2), --min-weight, rounding. Images whose stem is shared in one \
                folder get no mask (an error for each). Undecodable images are reported and skipped; \
                the others are written. Existing masks are refused (exit 2, nothing written) without \
                --force.

                Exit status: 0 all masks written, 1 some images failed, 2 nothing done.

                Example:
                  graft masks train/10_subject -o masks/10_subject --dilate 8
                """
        )

        @Argument(help: "The image folder.")
        var input: String

        @Option(name: [.customShort("o"), .customLong("output")], help: "The mask folder (created if missing).")
        var output: String

        @Option(help: ArgumentHelp("How alpha becomes a weight: binary or linear.", valueName: "mode"))
        var alpha: String = "binary"

        @Option(help: "Binary mode: alpha above this (0-254) is masked in.")
        var threshold = 0

        @Flag(help: "Swap masked and unmasked areas.")
        var invert = false

        @Option(help: ArgumentHelp("Grey dilation over a disk of this radius in pixels.", valueName: "R"))
        var dilate = 0

        @Option(help: ArgumentHelp("Grey erosion over a disk of this radius (after --dilate).", valueName: "R"))
        var erode = 0

        @Option(help: ArgumentHelp("Gaussian feathering radius (sigma = R/2).", valueName: "R"))
        var feather: Double = 0

        @Flag(help: "Dilate by R before --feather, so the feathered edge lies outside the original region.")
        var featherOutward = false

        @Option(
            help: ArgumentHelp(
                "An image without alpha gets an all-white mask, or none (skip, with a warning).", valueName: "mask|skip"
            ))
        var noAlpha = "mask"

        @Option(
            help: ArgumentHelp(
                "Images sharing a stem in one folder: error for each, or first (sorted path) makes the mask.",
                valueName: "error|first"))
        var onDuplicate = "error"

        @Option(help: ArgumentHelp("Lowest weight anywhere, 0-1: m' = 255*W + m*(1-W).", valueName: "W"))
        var minWeight: Double = 0

        @Option(help: ArgumentHelp("Warn when an image's mean mask weight is below this.", valueName: "W"))
        var warnMean: Double = 0.05

        @Flag(name: .shortAndLong, help: "Overwrite existing masks.")
        var force = false

        @Option(
            name: [.customShort("j", allowingJoined: true), .customLong("jobs")],
            help: "Images processed at once (default: all cores).")
        var jobs: Int?

        @Flag(help: "Decode and compute everything but write nothing.")
        var dryRun = false

        @OptionGroup var options: OutputOptions

        var maskOptions: MaskOptions {
            var o = MaskOptions()
            o.alpha = AlphaMode(rawValue: alpha) ?? .binary
            o.threshold = threshold
            o.invert = invert
            o.dilate = dilate
            o.erode = erode
            o.feather = feather
            o.minWeight = minWeight
            o.warnMean = warnMean
            o.featherOutward = featherOutward
            o.skipWithoutAlpha = noAlpha == "skip"
            return o
        }

        func validate() throws {
            guard AlphaMode(rawValue: alpha) != nil else {
                throw ValidationError("--alpha must be binary or linear (got '\(alpha)').")
            }
            do {
                try maskOptions.validate()
            } catch {
                throw ValidationError("\(error.path) \(error.message).")
            }
            guard noAlpha == "mask" || noAlpha == "skip" else {
                throw ValidationError("--no-alpha must be mask or skip (got '\(noAlpha)').")
            }
            guard onDuplicate == "error" || onDuplicate == "first" else {
                throw ValidationError("--on-duplicate must be error or first (got '\(onDuplicate)').")
            }
            if featherOutward && feather == 0 { throw ValidationError("--feather-outward needs --feather.") }
            if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
        }

        func run() throws {
            let report = try reportingErrors(json: options.json ? "masks" : nil) { () throws -> MaskReport in
                let plan: MaskPlan
                do {
                    plan = try MaskRunner.plan(
                        input: input, output: output, options: maskOptions, overwrite: force,
                        firstOfDuplicates: onDuplicate == "first")
                } catch let e as DatasetError where e.kind == .outputExists {
                    for path in [e.path] + e.others {
                        Terminal.warn(
                            "graft: error: \(displayable(path)): the output already exists; use --force to overwrite it"
                        )
                    }
                    emitErrorDocument(
                        options.json ? "masks" : nil,
                        ErrorJSON(
                            kind: "output_exists", file: e.path, tensor: nil, module: nil,
                            message: "\(1 + e.others.count) output(s) exist", modules: []))
                    throw ExitCode(2)
                }
                let report = MaskRunner.run(plan, threads: jobs ?? SystemInfo.onlineProcessorCount, dryRun: dryRun)
                for e in report.errors { Terminal.warn("graft: error: " + displayable(e.description)) }
                if !options.quiet {
                    for w in report.warnings { Terminal.warn("graft: warning: " + displayable(w.description)) }
                }
                if options.json {
                    try printEncoded(MasksReportJSON(report, dryRun: dryRun))
                } else if !options.quiet {
                    printResult(summary(report))
                }
                return report
            }
            if !report.errors.isEmpty { throw ExitCode.failure }
        }

        func summary(_ r: MaskReport) -> String {
            let rate = Double(r.results.count) / max(r.seconds, 1e-9)
            let verb = dryRun ? "would write \(r.results.filter { $0.statistics != nil }.count)" : "wrote \(r.written)"
            return
                "masks: \(r.plan.imageCount) images, \(verb) masks, \(r.warnings.count) warnings, \(r.errors.count) errors in \(Format.fixed(r.seconds, decimals: 2)) s (\(Format.fixed(rate, decimals: 1)) images/s, \(r.threads) threads)"
        }
    }
}

struct MasksReportJSON: Encodable {
    struct Image: Encodable {
        let image: String
        let mask: String
        let width: Int
        let height: Int
        let meanWeight: Double?
        let zeroFraction: Double?
        let written: Bool
        enum CodingKeys: String, CodingKey {
            case image, mask, width, height, written
            case meanWeight = "mean_weight", zeroFraction = "zero_fraction"
        }
    }
    struct Problem: Encodable {
        let severity: String
        let kind: String
        let path: String
        let message: String
    }
    let schema = 1
    let command = "masks"
    let input: String
    let output: String
    let dryRun: Bool
    let images: [Image]
    let problems: [Problem]
    let written: Int
    let seconds: Double
    let threads: Int

    enum CodingKeys: String, CodingKey {
        case schema, command, input, output, images, problems, written, seconds, threads
        case dryRun = "dry_run"
    }

    init(_ r: MaskReport, dryRun: Bool) {
        input = r.plan.input
        output = r.plan.output
        self.dryRun = dryRun
        images = r.results.filter { $0.statistics != nil }.map {
            Image(
                image: $0.imageRelativePath, mask: $0.outputRelativePath, width: $0.width, height: $0.height,
                meanWeight: $0.statistics?.meanWeight, zeroFraction: $0.statistics?.zeroFraction, written: $0.written)
        }
        problems =
            r.errors.map {
                Problem(severity: "error", kind: snakeCase($0.kind.rawValue), path: $0.path, message: $0.message)
            }
            + r.warnings.map {
                Problem(severity: "warning", kind: snakeCase($0.kind.rawValue), path: $0.path, message: $0.message)
            }
        written = r.written
        seconds = r.seconds
        threads = r.threads
    }
}
