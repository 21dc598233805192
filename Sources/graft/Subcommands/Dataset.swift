import ArgumentParser
import DatasetTools
import FileIO
import Foundation

extension Graft {
    /// `graft dataset …`: checks of sd-scripts dataset configs.
    struct Dataset: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check sd-scripts dataset configs (--dataset_config) before training.",
            subcommands: [Check.self]
        )
    }
}

extension Graft.Dataset {
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a dataset config, its folders and images, and show the buckets and steps.",
            discussion: """
                Reads CONFIG (TOML, or JSON for a .json name) as sd-scripts does, with the training \
                script's flags as fallbacks (flags override --train-config), scans each subset's \
                folder (relative paths against --base-dir, default the current directory, as \
                sd-scripts resolves them against its working directory), reads every image's size \
                from its header and computes each dataset's bucket table and the step schedule.

                Every finding is one line on stderr, 'graft: SEVERITY: PATH: MESSAGE', worst first: \
                error (sd-scripts aborts), silent (it trains, but not as meant), warn, info.

                Exit status: 0 no error or silent finding, 1 some, 2 the config cannot be read, \
                64 usage error.

                Example:
                  graft dataset check dataset.toml --train-config config.toml
                """
        )

        @Argument(help: "The dataset config (.toml, or .json).")
        var config: String

        @Flag(help: "sd-scripts --masked_loss (mask datasets through conditioning_data_dir).")
        var maskedLoss = false

        @Flag(help: "sd-scripts --alpha_mask.")
        var alphaMask = false

        @Option(help: ArgumentHelp("sd-scripts --resolution.", valueName: "W[,H]"))
        var resolution: String?

        @Flag(help: "sd-scripts --enable_bucket.")
        var enableBucket = false

        @Option(help: ArgumentHelp("sd-scripts --min_bucket_reso (default 256).", valueName: "N"))
        var minBucketReso: Int?

        @Option(help: ArgumentHelp("sd-scripts --max_bucket_reso (default 1024).", valueName: "N"))
        var maxBucketReso: Int?

        @Option(help: ArgumentHelp("sd-scripts --bucket_reso_steps (default 64).", valueName: "N"))
        var bucketResoSteps: Int?

        @Flag(help: "sd-scripts --bucket_no_upscale.")
        var bucketNoUpscale = false

        @Option(help: ArgumentHelp("sd-scripts --caption_extension (default .caption).", valueName: "EXT"))
        var captionExtension: String?

        @Option(help: ArgumentHelp("sd-scripts --train_batch_size (default 1).", valueName: "N"))
        var trainBatchSize: Int?

        @Flag(help: "sd-scripts --flip_aug.")
        var flipAug = false

        @Flag(help: "sd-scripts --random_crop.")
        var randomCrop = false

        @Flag(help: "sd-scripts --color_aug.")
        var colorAug = false

        @Flag(help: "sd-scripts --cache_latents.")
        var cacheLatents = false

        @Flag(help: "sd-scripts --cache_latents_to_disk.")
        var cacheLatentsToDisk = false

        @Option(
            help: ArgumentHelp(
                "An sd-scripts --config_file TOML (what the GUI writes); the flags above override it.",
                valueName: "FILE"))
        var trainConfig: String?

        @Option(help: ArgumentHelp("sdxl (bucket steps a multiple of 32) or sd.", valueName: "sdxl|sd"))
        var model = "sdxl"

        @Option(help: ArgumentHelp("sd-scripts --gradient_accumulation_steps (default 1).", valueName: "N"))
        var gradAccum: Int?

        @Option(help: ArgumentHelp("Training processes (GPUs) (default 1).", valueName: "N"))
        var numProcesses: Int?

        @Option(help: ArgumentHelp("sd-scripts --max_train_epochs.", valueName: "N"))
        var maxTrainEpochs: Int?

        @Option(help: ArgumentHelp("sd-scripts --max_train_steps (default 1600).", valueName: "N"))
        var maxTrainSteps: Int?

        @Option(help: ArgumentHelp("What relative paths in CONFIG are resolved against.", valueName: "DIR"))
        var baseDir: String?

        @Flag(help: "Print one JSON document to stdout instead of text.")
        var json = false

        func validate() throws {
            guard model == "sdxl" || model == "sd" else {
                throw ValidationError("--model must be sdxl or sd (got '\(model)').")
            }
            if let resolution, Self.parseResolution(resolution) == nil {
                throw ValidationError("--resolution must be W or W,H with positive integers (got '\(resolution)').")
            }
            for (name, value) in [
                ("--train-batch-size", trainBatchSize), ("--grad-accum", gradAccum),
                ("--num-processes", numProcesses), ("--bucket-reso-steps", bucketResoSteps),
                ("--min-bucket-reso", minBucketReso), ("--max-bucket-reso", maxBucketReso),
            ] {
                if let value, value < 1 { throw ValidationError("\(name) must be at least 1 (got \(value)).") }
            }
            if let maxTrainEpochs, maxTrainEpochs < 1 {
                throw ValidationError("--max-train-epochs must be at least 1 (got \(maxTrainEpochs)).")
            }
            if let maxTrainSteps, maxTrainSteps < 1 {
                throw ValidationError("--max-train-steps must be at least 1 (got \(maxTrainSteps)).")
            }
        }

        static func parseResolution(_ text: String) -> Resolution? {
            let parts = text.split(separator: ",", omittingEmptySubsequences: false).map {
                Int($0.trimmingCharacters(in: .whitespaces))
            }
            guard parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
            if parts.count == 1, let r = parts[0] { return Resolution(r, r) }
            if parts.count == 2, let w = parts[0], let h = parts[1] { return Resolution(w, h) }
            return nil
        }

        func run() throws {
            let failed = try reportingErrors(json: json ? "dataset check" : nil) { () throws -> Bool in
                let result = try check()
                for f in result.findings { Terminal.warn("graft: " + displayable(line(f))) }
                if json {
                    try printEncoded(DatasetCheckJSON(result))
                } else {
                    printResult(DatasetCheckReport.text(result), terminator: "")
                }
                return result.findings.contains { $0.severity >= .silent }
            }
            if failed { throw ExitCode.failure }
        }

        private func line(_ f: Finding) -> String {
            "\(f.severity.rawValue): \(f.path.isEmpty ? config : f.path): \(f.message)"
        }

        private static func readText(_ path: String, role: String) throws -> String {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw GraftFailure("\(path): cannot read the \(role)")
            }
            guard let text = String(data: data, encoding: .utf8) else {
                throw GraftFailure("\(path): the \(role) is not UTF-8 text")
            }
            return text
        }

        func check() throws -> DatasetCheckResult {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: config, isDirectory: &isDirectory), isDirectory.boolValue {
                throw GraftFailure("\(config): is a directory, not a dataset config")
            }
            let configText = try Self.readText(config, role: "dataset config")
            var fallbacks = Fallbacks()
            var findings: [Finding] = []
            var epochs: Int? = nil
            var steps: Int? = nil
            var accumulation = 1
            if let trainConfig {
                let train = TrainConfig(toml: try Self.readText(trainConfig, role: "training config"))
                fallbacks = train.fallbacks
                epochs = train.maxTrainEpochs
                steps = train.maxTrainSteps
                accumulation = train.gradientAccumulationSteps
                findings += train.findings.map {
                    Finding($0.severity, $0.kind, trainConfig + ($0.path.isEmpty ? "" : ": " + $0.path), $0.message)
                }
            }
            if maskedLoss { fallbacks.maskedLoss = true }
            if alphaMask { fallbacks.alphaMask = true }
            if let resolution { fallbacks.resolution = Self.parseResolution(resolution) }
            if enableBucket { fallbacks.enableBucket = true }
            if let minBucketReso { fallbacks.minBucketReso = minBucketReso }
            if let maxBucketReso { fallbacks.maxBucketReso = maxBucketReso }
            if let bucketResoSteps { fallbacks.bucketResoSteps = bucketResoSteps }
            if bucketNoUpscale { fallbacks.bucketNoUpscale = true }
            if let captionExtension { fallbacks.captionExtension = captionExtension }
            if let trainBatchSize { fallbacks.trainBatchSize = trainBatchSize }
            if flipAug { fallbacks.flipAug = true }
            if randomCrop { fallbacks.randomCrop = true }
            if colorAug { fallbacks.colorAug = true }
            if cacheLatents { fallbacks.cacheLatents = true }
            if cacheLatentsToDisk { fallbacks.cacheLatentsToDisk = true }
            fallbacks.sdxl = model == "sdxl"
            if let maxTrainEpochs { epochs = maxTrainEpochs }
            if let maxTrainSteps { steps = maxTrainSteps }
            if let gradAccum { accumulation = gradAccum }
            if accumulation < 1 { accumulation = 1 }

            let parsed =
                config.lowercased().hasSuffix(".json")
                ? DatasetConfig(json: configText, fallbacks: fallbacks)
                : DatasetConfig(toml: configText, fallbacks: fallbacks)
            findings += parsed.findings
            let cwd = FileManager.default.currentDirectoryPath
            let base = baseDir.map { $0.hasPrefix("/") ? $0 : cwd + "/" + $0 } ?? cwd
            let scan = parsed.scanFiles(FileSystemLister(), baseDirectory: base)
            findings += scan.findings

            var datasets: [DatasetCheckResult.DatasetReport] = []
            var images: [DatasetCheckResult.Image] = []
            for (d, dataset) in parsed.datasets.enumerated() {
                var report = DatasetCheckResult.DatasetReport(dataset: dataset)
                let manager: BucketManager? =
                    dataset.enableBucket
                    ? dataset.validatedBuckets.map { BucketManager($0.settings) }
                    : dataset.resolution.map { BucketManager(fixed: $0) }
                var subsets: [SubsetImages] = []
                for (s, subset) in dataset.subsets.enumerated() {
                    let paths = d < scan.images.count && s < scan.images[d].count ? scan.images[d][s] : []
                    var sizes: [Resolution] = []
                    for path in paths {
                        let size: Resolution
                        do {
                            size = try ImageHeader.size(path: path)
                        } catch {
                            findings.append(
                                Finding(
                                    .error, .unreadableImage, subset.path + ".image_dir",
                                    "\(displayName(path)): \(error.message)"))
                            continue
                        }
                        var bucket: Resolution? = nil
                        if let manager {
                            do {
                                bucket = try manager.select(width: size.width, height: size.height).bucket
                            } catch {
                                findings.append(
                                    Finding(
                                        .error, .unbucketableImage, subset.path + ".image_dir",
                                        "\(displayName(path)) (\(size)): \(error.detail)"))
                                continue
                            }
                        }
                        sizes.append(size)
                        images.append(.init(path: path, dataset: d, size: size, bucket: bucket))
                        report.images += 1
                        if let ext = subset.captionExtension {
                            if Self.hasCaption(path, ext) {
                                report.captionsFound += 1
                            } else {
                                report.captionsMissing += 1
                            }
                        }
                        if dataset.kind == .masks, let maskDir = subset.conditioningDataDir {
                            let dir = maskDir.hasPrefix("/") ? maskDir : base + "/" + maskDir
                            if Self.hasMask(path, in: dir) { report.masksPaired += 1 } else { report.masksMissing += 1 }
                        }
                    }
                    subsets.append(SubsetImages(numRepeats: subset.numRepeats, isReg: subset.isReg, sizes: sizes))
                }
                if let manager, dataset.batchSize >= 1 {
                    report.tally = try? BucketTally(subsets: subsets, manager: manager, batchSize: dataset.batchSize)
                }
                datasets.append(report)
            }
            let batches = datasets.reduce(0) { $0 + ($1.tally?.batches ?? 0) }
            let schedule = EpochLength.schedule(
                batchesPerEpoch: batches, gradientAccumulation: accumulation, numProcesses: numProcesses ?? 1,
                maxTrainEpochs: epochs, maxTrainSteps: steps)
            // Worst first, then by path; equal keys keep their order (the checks' order).
            let sorted = findings.enumerated().sorted { a, b in
                if a.element.severity != b.element.severity { return a.element.severity > b.element.severity }
                if a.element.path != b.element.path { return a.element.path < b.element.path }
                return a.offset < b.offset
            }.map(\.element)
            return DatasetCheckResult(
                config: config, findings: sorted, datasets: datasets, images: images, schedule: schedule,
                gradientAccumulation: accumulation, numProcesses: numProcesses ?? 1)
        }

        private func displayName(_ path: String) -> String {
            path.split(separator: "/").last.map(String.init) ?? path
        }

        // `<stem><ext>`, or the face-crop name without the last 4 `_` tokens (as `DatasetFiles`).
        static func hasCaption(_ imagePath: String, _ ext: String) -> Bool {
            let stem = stemPath(imagePath)
            if FileManager.default.fileExists(atPath: stem + ext) { return true }
            let dir = (stem as NSString).deletingLastPathComponent
            let tokens = (stem as NSString).lastPathComponent.split(separator: "_", omittingEmptySubsequences: false)
            guard tokens.count >= 5 else { return false }
            return FileManager.default.fileExists(atPath: dir + "/" + tokens.dropLast(4).joined(separator: "_") + ext)
        }

        // Any extension sd-scripts accepts pairs an image with `<mask dir>/<stem>.<ext>`.
        static func hasMask(_ imagePath: String, in maskDir: String) -> Bool {
            let name = (stemPath(imagePath) as NSString).lastPathComponent
            return imageExtensions.contains { FileManager.default.fileExists(atPath: maskDir + "/" + name + $0) }
        }

        private static func stemPath(_ path: String) -> String {
            let name = (path as NSString).lastPathComponent
            guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return path }
            return (path as NSString).deletingLastPathComponent + "/" + String(name[..<dot])
        }
    }
}

/// Everything `dataset check` found, for the text report and the JSON document.
struct DatasetCheckResult {
    struct DatasetReport {
        let dataset: ResolvedDataset
        var tally: BucketTally? = nil
        var images = 0
        var captionsFound = 0
        var captionsMissing = 0
        var masksPaired = 0
        var masksMissing = 0
    }
    struct Image {
        let path: String
        let dataset: Int
        let size: Resolution
        let bucket: Resolution?
    }
    let config: String
    let findings: [Finding]
    let datasets: [DatasetReport]
    let images: [Image]
    let schedule: EpochLength.Schedule
    let gradientAccumulation: Int
    let numProcesses: Int
}

enum DatasetCheckReport {
    static func kindName(_ kind: DatasetKind) -> String {
        switch kind {
        case .dreamBooth: "DreamBooth"
        case .fineTuning: "fine-tuning"
        case .masks: "masks (conditioning_data_dir)"
        }
    }

    static func text(_ r: DatasetCheckResult) -> String {
        var out = ""
        func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
        for (i, d) in r.datasets.enumerated() {
            let ds = d.dataset
            out += "dataset \(i) (\(ds.path)): \(kindName(ds.kind)), batch size \(ds.batchSize), \(d.images) images"
            if let res = ds.resolution { out += ", resolution \(res)" }
            out += ds.enableBucket ? ", buckets on\n" : ", buckets off\n"
            if ds.kind == .fineTuning { out += "  (fine-tuning subsets are not scanned)\n" }
            if let t = d.tally {
                out +=
                    "  " + pad("bucket", 11) + pad("images", 8) + pad("images×repeats", 16) + pad("batches", 9) + "\n"
                for row in t.rows {
                    out +=
                        "  " + pad(row.bucket.description, 11) + pad("\(row.images)", 8) + pad("\(row.samples)", 16)
                        + pad("\(row.batches)", 9) + "\n"
                }
                let images = t.rows.reduce(0) { $0 + $1.images }
                let samples = t.rows.reduce(0) { $0 + $1.samples }
                out +=
                    "  " + pad("total", 11) + pad("\(images)", 8) + pad("\(samples)", 16) + pad("\(t.batches)", 9)
                    + "\n"
                out += "  upscaled \(t.upscaledImages)"
                if t.upscaledImages > 0 { out += " (up to \(Format.fixed(t.maxUpscale, decimals: 2))x)" }
                out +=
                    ", cropped \(t.croppedImages), mean aspect error \(Format.fixed(t.meanAspectError, decimals: 4))\n"
                if t.skippedSubsets > 0 { out += "  subsets skipped (num_repeats < 1): \(t.skippedSubsets)\n" }
                if t.usedRegImages + t.unusedRegImages > 0 {
                    out += "  regularisation images: \(t.usedRegImages) used, \(t.unusedRegImages) unused\n"
                }
            } else if ds.kind != .fineTuning {
                out += "  no bucket table (invalid resolution, bucket settings or batch size)\n"
            }
            if d.captionsFound + d.captionsMissing > 0 {
                out += "  captions: \(d.captionsFound) found, \(d.captionsMissing) missing\n"
            }
            if ds.kind == .masks {
                out += "  masks: \(d.masksPaired) paired, \(d.masksMissing) missing\n"
            }
        }
        let s = r.schedule
        out +=
            "steps: \(s.batchesPerEpoch) batches per epoch, \(s.stepsPerEpoch) steps per epoch"
            + " (gradient accumulation \(r.gradientAccumulation), processes \(r.numProcesses))\n"
        if s.usesDefaultSteps {
            out +=
                "  no max_train_epochs or max_train_steps: sd-scripts default \(s.totalSteps) steps"
                + " ≈ \(s.epochs) epochs\n"
        } else {
            out += "  total \(s.totalSteps) steps, \(s.epochs) epochs\n"
        }
        out +=
            "findings: "
            + Finding.Severity.allOrdered.map { sev in
                "\(r.findings.filter { $0.severity == sev }.count) \(sev.rawValue)"
            }.joined(separator: ", ") + "\n"
        return out
    }
}

extension Finding.Severity {
    /// Worst first.
    static let allOrdered: [Finding.Severity] = [.error, .silent, .warn, .info]
}

/// The `--json` document of `dataset check`.
struct DatasetCheckJSON: Encodable {
    struct Problem: Encodable {
        let severity: String
        let kind: String
        let path: String
        let message: String
    }
    struct Row: Encodable {
        let bucket: [Int]
        let images: Int
        let samples: Int
        let batches: Int
    }
    struct Dataset: Encodable {
        let path: String
        let kind: String
        let batchSize: Int
        let images: Int
        let buckets: [Row]?
        let batches: Int?
        let upscaled: Int?
        let cropped: Int?
        let meanAspectError: Double?
        let captionsFound: Int
        let captionsMissing: Int
        let masksPaired: Int?
        let masksMissing: Int?
        enum CodingKeys: String, CodingKey {
            case path, kind, images, buckets, batches, upscaled, cropped
            case batchSize = "batch_size", meanAspectError = "mean_aspect_error"
            case captionsFound = "captions_found", captionsMissing = "captions_missing"
            case masksPaired = "masks_paired", masksMissing = "masks_missing"
        }
    }
    struct Image: Encodable {
        let path: String
        let dataset: Int
        let size: [Int]
        let bucket: [Int]?
    }
    struct Steps: Encodable {
        let batchesPerEpoch: Int
        let stepsPerEpoch: Int
        let totalSteps: Int
        let epochs: Int
        let defaultSteps: Bool
        let gradientAccumulation: Int
        let numProcesses: Int
        enum CodingKeys: String, CodingKey {
            case epochs
            case batchesPerEpoch = "batches_per_epoch", stepsPerEpoch = "steps_per_epoch"
            case totalSteps = "total_steps", defaultSteps = "default_steps"
            case gradientAccumulation = "gradient_accumulation", numProcesses = "num_processes"
        }
    }
    let schema = 1
    let command = "dataset check"
    let config: String
    let findings: [Problem]
    let datasets: [Dataset]
    let images: [Image]
    let steps: Steps

    enum CodingKeys: String, CodingKey {
        case schema, command, config, findings, datasets, images, steps
    }

    init(_ r: DatasetCheckResult) {
        config = r.config
        findings = r.findings.map {
            Problem(
                severity: $0.severity.rawValue, kind: snakeCase($0.kind.rawValue), path: $0.path, message: $0.message)
        }
        datasets = r.datasets.map { d in
            Dataset(
                path: d.dataset.path, kind: snakeCase(d.dataset.kind.rawValue), batchSize: d.dataset.batchSize,
                images: d.images,
                buckets: d.tally?.rows.map {
                    Row(
                        bucket: [$0.bucket.width, $0.bucket.height], images: $0.images, samples: $0.samples,
                        batches: $0.batches)
                }, batches: d.tally?.batches, upscaled: d.tally?.upscaledImages, cropped: d.tally?.croppedImages,
                meanAspectError: d.tally?.meanAspectError, captionsFound: d.captionsFound,
                captionsMissing: d.captionsMissing, masksPaired: d.dataset.kind == .masks ? d.masksPaired : nil,
                masksMissing: d.dataset.kind == .masks ? d.masksMissing : nil)
        }
        images = r.images.map {
            Image(
                path: $0.path, dataset: $0.dataset, size: [$0.size.width, $0.size.height],
                bucket: $0.bucket.map { [$0.width, $0.height] })
        }
        let s = r.schedule
        steps = Steps(
            batchesPerEpoch: s.batchesPerEpoch, stepsPerEpoch: s.stepsPerEpoch, totalSteps: s.totalSteps,
            epochs: s.epochs, defaultSteps: s.usesDefaultSteps, gradientAccumulation: r.gradientAccumulation,
            numProcesses: r.numProcesses)
    }
}
