// sd-scripts' `--config_file` (what the bmaltais GUI writes): `read_config_from_file` flattens every
// section into one namespace, and explicit command-line flags override it (dataset-tools.md §A7, §B2
// "--train-config"). Only the keys that matter for the dataset checks and the step count are read.
import TOMLKit

/// The training options read from an sd-scripts `--config_file` TOML.
public struct TrainConfig: Sendable {
    /// The dataset fallbacks, starting from the given ones, with every key the file sets.
    public var fallbacks: Fallbacks
    public var maxTrainEpochs: Int?
    public var maxTrainSteps: Int?
    public var gradientAccumulationSteps: Int
    /// `dataset_config` when the file names one.
    public var datasetConfig: String?
    public var findings: [Finding]

    /// Reads `toml`, flattening its sections as sd-scripts does (a later section wins for a repeated key).
    /// - Parameter base: the fallbacks to start from (explicit flags are applied by the caller afterwards).
    public init(toml: String, base: Fallbacks = Fallbacks()) {
        fallbacks = base
        maxTrainEpochs = nil
        maxTrainSteps = nil
        gradientAccumulationSteps = 1
        datasetConfig = nil
        findings = []
        let root: TOMLTable
        do {
            root = try TOMLTable(string: toml)
        } catch let error as TOMLParseError {
            let at = error.source.begin
            findings.append(
                Finding(.error, .tomlSyntax, "", "line \(at.line), column \(at.column): \(error.description)"))
            return
        } catch {
            findings.append(Finding(.error, .tomlSyntax, "", "\(error)"))
            return
        }
        // Python iterates the sections in file order; toml++ has lost it, so sections go in sorted order and
        // top-level values first.
        var flat: [String: FlatEntry] = [:]
        guard case .table(let top) = ConfigValue(root) else { return }
        for (key, value) in top {
            if case .table = value { continue }
            flat[key] = FlatEntry(path: key, value: value)
        }
        for (section, value) in top {
            guard case .table(let entries) = value else { continue }
            for (key, v) in entries { flat[key] = FlatEntry(path: "\(section).\(key)", value: v) }
        }
        apply(flat)
    }

    private mutating func apply(_ flat: [String: FlatEntry]) {
        func wrong(_ key: String, _ expected: String) {
            guard let entry = flat[key] else { return }
            findings.append(
                Finding(.error, .wrongType, entry.path, "expected \(expected), found \(entry.value.pythonType)"))
        }
        func int(_ key: String) -> Int? {
            switch flat[key]?.value {
            case .int(let n): return n
            case .bool(let b): return b ? 1 : 0
            case nil: return nil
            default:
                wrong(key, "int")
                return nil
            }
        }
        func bool(_ key: String) -> Bool? {
            switch flat[key]?.value {
            case .bool(let b): return b
            case nil: return nil
            default:
                wrong(key, "bool")
                return nil
            }
        }
        func string(_ key: String) -> String? {
            switch flat[key]?.value {
            case .string(let s): return s
            case nil: return nil
            default:
                wrong(key, "str")
                return nil
            }
        }
        if let v = bool("masked_loss") { fallbacks.maskedLoss = v }
        if let v = bool("alpha_mask") { fallbacks.alphaMask = v }
        if let v = bool("enable_bucket") { fallbacks.enableBucket = v }
        if let v = bool("bucket_no_upscale") { fallbacks.bucketNoUpscale = v }
        if let v = bool("flip_aug") { fallbacks.flipAug = v }
        if let v = bool("random_crop") { fallbacks.randomCrop = v }
        if let v = bool("color_aug") { fallbacks.colorAug = v }
        if let v = bool("shuffle_caption") { fallbacks.shuffleCaption = v }
        if let v = bool("cache_latents") { fallbacks.cacheLatents = v }
        if let v = bool("cache_latents_to_disk") { fallbacks.cacheLatentsToDisk = v }
        if let v = int("min_bucket_reso") { fallbacks.minBucketReso = v }
        if let v = int("max_bucket_reso") { fallbacks.maxBucketReso = v }
        if let v = int("bucket_reso_steps") { fallbacks.bucketResoSteps = v }
        if let v = int("train_batch_size") { fallbacks.trainBatchSize = v }
        if let v = int("dataset_repeats") { fallbacks.datasetRepeats = v }
        if let v = int("keep_tokens") { fallbacks.keepTokens = v }
        if let v = string("caption_extension") { fallbacks.captionExtension = v }
        maxTrainEpochs = int("max_train_epochs")
        maxTrainSteps = int("max_train_steps")
        if let v = int("gradient_accumulation_steps") { gradientAccumulationSteps = v }
        datasetConfig = string("dataset_config")
        // The argparse `--resolution` is a string "W,H" or "W", split on ',' by sd-scripts.
        if let entry = flat["resolution"] {
            switch entry.value {
            case .string(let text):
                let parts = text.split(separator: ",", omittingEmptySubsequences: false).map {
                    Int($0.filter { $0 != " " && $0 != "\t" })
                }
                if parts.count == 1, let r = parts[0] {
                    fallbacks.resolution = Resolution(r, r)
                } else if parts.count == 2, let w = parts[0], let h = parts[1] {
                    fallbacks.resolution = Resolution(w, h)
                } else {
                    findings.append(
                        Finding(.error, .wrongType, entry.path, "resolution '\(text)' is not \"W,H\" or \"W\""))
                }
            case .int(let r): fallbacks.resolution = Resolution(r, r)
            default: wrong("resolution", "a \"W,H\" string")
            }
        }
        if let entry = flat["epoch"], maxTrainEpochs == nil {
            findings.append(
                Finding(
                    .warn, .epochIgnored, entry.path,
                    "sd-scripts has no 'epoch' option (the GUI's Epoch field): pass max_train_epochs instead"))
        }
    }
}

private struct FlatEntry {
    var path: String
    var value: ConfigValue
}
