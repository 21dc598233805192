// The sd-scripts dataset config (`--dataset_config`, TOML), checked as library/config_util.py checks it
// and resolved as it resolves values (dataset-tools.md §A1–A3, §B2 groups 1–2). Unlike voluptuous, every
// problem is reported, not only the first. Only what the TOML itself tells is checked here: no file system.
import TOMLKit

/// One problem or note about a dataset config.
public struct Finding: Equatable, Sendable, CustomStringConvertible {
    /// How bad it is (§B2): `error` sd-scripts aborts, `silent` it trains but not as meant, `warn`, `info`.
    public enum Severity: String, Comparable, Sendable {
        case info, warn, silent, error

        private var rank: Int {
            switch self {
            case .info: 0
            case .warn: 1
            case .silent: 2
            case .error: 3
            }
        }

        public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs.rank < rhs.rank }
    }

    /// What was found; stable for tests and JSON.
    public enum Kind: String, Sendable, CaseIterable {
        /// The file is not valid TOML.
        case tomlSyntax
        /// The file is not valid JSON (a `.json` config).
        case jsonSyntax
        /// A key sd-scripts does not know at all (`extra keys not allowed`).
        case unknownKey
        /// A known key at a level, or in a dataset kind, where it is not allowed (`extra keys not allowed`).
        case keyNotAllowedHere
        /// `prior_loss_weight`, `debug_dataset`, `max_token_length`: command-line only.
        case argparseOnlyKey
        /// A value of the wrong type (`expected int for dictionary value`).
        case wrongType
        /// `true`/`false` where an int is expected: Python accepts it (bool is an int).
        case boolAsInt
        /// `image_dir` (DreamBooth, masks) or `metadata_file` (fine-tuning) is missing.
        case missingRequiredKey
        /// DreamBooth and fine-tuning subsets in one dataset.
        case mixedDreamBoothFineTuning
        /// `conditioning_data_dir` while training without `--masked_loss`.
        case conditioningWithoutMaskedLoss
        /// Only some subsets of a dataset have `conditioning_data_dir`.
        case partialConditioning
        /// `random_crop` reaches a mask subset (assert).
        case randomCropWithMasks
        /// Two datasets use one mask folder (the `extra conditioning data` assert).
        case sharedMaskFolder
        /// Two subsets of one dataset use one mask folder (same stems share a mask).
        case maskFolderSharedInDataset
        /// `conditioning_data_dir` equals `image_dir`: each image is its own mask.
        case maskFolderIsImageDir
        /// No `resolution` anywhere (assert "resolution is required").
        case missingResolution
        /// Bucket settings sd-scripts asserts against (see `BucketError`).
        case invalidBucketSettings
        /// min/max bucket resolution not a multiple of the steps, adjusted by sd-scripts.
        case bucketResoAdjusted
        /// `resize_interpolation` not one sd-scripts knows.
        case unknownInterpolation
        /// `--cache_latents` with `color_aug` or `random_crop`.
        case cacheLatentsWithAugmentation
        /// `validation_split` outside 0…1.
        case validationSplitOutOfRange
        /// `num_repeats < 1`: the subset is skipped.
        case numRepeatsBelowOne
        /// The same `image_dir` twice in one dataset: the later subset is skipped.
        case duplicateImageDir
        /// No `caption_extension` anywhere: sd-scripts looks for `.caption` files.
        case defaultCaptionExtension
        /// `caption_extension` without a leading dot: sd-scripts adds it.
        case captionExtensionWithoutDot
        /// No `[[datasets]]` at all: sd-scripts logs "No data found" and exits 0 without training.
        case noDatasets
        /// A `[[datasets]]` block without subsets: it has no images.
        case emptyDataset
        /// Every subset is a regularisation subset: the dataset contributes nothing.
        case regOnlyDataset
        /// A training config (`--config_file`) sets `epoch`, which sd-scripts never reads (§A7).
        case epochIgnored
        // Folder checks (`scanFiles`).
        /// `image_dir` is missing or not a directory: the subset is skipped.
        case imageDirMissing
        /// No image sd-scripts would take in `image_dir`: the subset is skipped.
        case noImages
        /// Images whose extension case sd-scripts does not match on Linux (`x.Png`): ignored.
        case ignoredExtensionCase
        /// Sub-folders with images: sd-scripts does not descend into them.
        case imagesInSubfolder
        /// Two images with one stem (`a.png`, `a.jpg`): they share a caption, mask and cache file.
        case duplicateStem
        /// Images without a caption file and no `class_tokens`: empty captions.
        case missingCaption
        /// Images without a caption file fall back to `class_tokens`.
        case classTokensAsCaption
        /// Caption files exist under another extension than `caption_extension`.
        case captionExtensionMismatch
        /// Caption files without an image.
        case orphanCaption
        /// `conditioning_data_dir` is missing or not a directory.
        case maskDirMissing
        /// Images without a mask (assert `missing conditioning data`).
        case missingMask
        /// Masks without an image in the same dataset (assert `extra conditioning data`).
        case extraMask
        // Image checks (`dataset check`).
        /// An image whose header cannot be read: empty, not an image, or unreadable (sd-scripts fails on it).
        case unreadableImage
        /// An image sd-scripts cannot bucket (a zero side; with no_upscale a side shorter than the steps).
        case unbucketableImage
    }

    public var severity: Severity
    public var kind: Kind
    /// Where, in the voluptuous style with dots: `datasets[0].subsets[1].num_repeats`; "" for the file.
    public var path: String
    /// One line, lowercase.
    public var message: String

    public init(_ severity: Severity, _ kind: Kind, _ path: String, _ message: String) {
        self.severity = severity
        self.kind = kind
        self.path = path
        self.message = message
    }

    public var description: String { path.isEmpty ? "\(severity): \(message)" : "\(severity): \(path): \(message)" }
}

/// The training script's own flags, which sd-scripts uses behind `[general]` (§A1 "Resolving values",
/// §B2 "Fallback sources"). Defaults are sd-scripts' argparse defaults (note `maxBucketReso` 1024, not the
/// GUI's 2048).
public struct Fallbacks: Equatable, Sendable {
    /// `--masked_loss`: enables the mask (ControlNet) dataset path.
    public var maskedLoss = false
    public var alphaMask = false
    public var resolution: Resolution? = nil
    public var enableBucket = false
    public var minBucketReso = 256
    public var maxBucketReso = 1024
    public var bucketResoSteps = 64
    public var bucketNoUpscale = false
    /// `--caption_extension`; nil means not given, and sd-scripts' `.caption` applies with a warning.
    public var captionExtension: String? = nil
    public var trainBatchSize = 1
    public var datasetRepeats = 1
    public var flipAug = false
    public var randomCrop = false
    public var colorAug = false
    public var shuffleCaption = false
    public var keepTokens = 0
    public var cacheLatents = false
    public var cacheLatentsToDisk = false
    /// SDXL scripts: `bucket_reso_steps` must be a multiple of 32.
    public var sdxl = true

    public init() {}
}

/// How sd-scripts reads a `[[datasets]]` block (§A1).
public enum DatasetKind: String, Sendable {
    /// DreamBooth: folders of images with caption files (`image_dir`).
    case dreamBooth
    /// Fine-tuning: a `metadata_file` with captions.
    case fineTuning
    /// ControlNet path, used for image loss masks: every subset has `conditioning_data_dir`, with `--masked_loss`.
    case masks
}

/// A subset with every value resolved: subset → dataset → `[general]` → fallbacks → default.
public struct ResolvedSubset: Equatable, Sendable {
    public var path: String
    /// The dataset's kind; in a mixed dataset (an error) what this subset claims to be.
    public var kind: DatasetKind
    public var imageDir: String?
    public var conditioningDataDir: String?
    public var metadataFile: String?
    public var isReg: Bool
    public var alphaMask: Bool
    public var classTokens: String?
    /// With the leading dot; nil for fine-tuning subsets, which have no caption files.
    public var captionExtension: String?
    public var numRepeats: Int
    public var shuffleCaption: Bool
    public var flipAug: Bool
    public var colorAug: Bool
    public var randomCrop: Bool
    public var enableWildcard: Bool
    public var cacheInfo: Bool
    public var keepTokens: Int
    public var resizeInterpolation: String?
}

/// A dataset with its kind, dataset-level values and subsets resolved.
public struct ResolvedDataset: Equatable, Sendable {
    public var path: String
    public var kind: DatasetKind
    public var subsets: [ResolvedSubset]
    public var resolution: Resolution?
    public var batchSize: Int
    public var enableBucket: Bool
    /// As written (before sd-scripts rounds min/max to the steps), with no_upscale.
    public var bucketSettings: BucketSettings?
    /// The settings sd-scripts uses after its checks; nil without buckets or when they are invalid.
    public var validatedBuckets: BucketSettings.Validated?
    public var networkMultiplier: Double
    public var validationSplit: Double
    public var validationSeed: Int?
}

/// A parsed and checked dataset config.
public struct DatasetConfig: Sendable {
    /// The datasets as sd-scripts would build them (also when there are errors, as far as they resolve).
    public var datasets: [ResolvedDataset]
    /// Every finding, in file order, then the cross-dataset ones.
    public var findings: [Finding]

    /// The worst severity found, or nil when there are no findings.
    public var worstSeverity: Finding.Severity? { findings.map(\.severity).max() }

    /// Parses and checks a TOML dataset config. Never throws: a syntax error is a `tomlSyntax` finding.
    public init(toml: String, fallbacks: Fallbacks = Fallbacks()) {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: toml)
        } catch let error as TOMLParseError {
            let at = error.source.begin
            let message = "line \(at.line), column \(at.column): \(error.description)"
            self.init(datasets: [], findings: [Finding(.error, .tomlSyntax, "", message)])
            return
        } catch {
            self.init(datasets: [], findings: [Finding(.error, .tomlSyntax, "", "\(error)")])
            return
        }
        self.init(root: ConfigValue(root), fallbacks: fallbacks)
    }

    /// Parses and checks a JSON dataset config (sd-scripts reads `.json` with `json.load`). Never throws:
    /// a syntax error is a `jsonSyntax` finding.
    public init(json: String, fallbacks: Fallbacks = Fallbacks()) {
        let root: ConfigValue
        do {
            root = try ConfigJSONParser.parse(json)
        } catch {
            let message = "at byte \(error.offset): \(error.message)"
            self.init(datasets: [], findings: [Finding(.error, .jsonSyntax, "", message)])
            return
        }
        self.init(root: root, fallbacks: fallbacks)
    }

    init(datasets: [ResolvedDataset], findings: [Finding]) {
        self.datasets = datasets
        self.findings = findings
    }

    init(root: ConfigValue, fallbacks: Fallbacks) {
        var checker = ConfigChecker(fallbacks: fallbacks)
        checker.check(root: root)
        self.init(datasets: checker.datasets, findings: checker.findings)
    }
}

// MARK: - Values and key table

// A TOML value with the distinctions voluptuous makes (Python types).
enum ConfigValue {
    case string(String)
    case int(Int)
    case float(Double)
    case bool(Bool)
    case array([ConfigValue])
    case table([(key: String, value: ConfigValue)])
    case other(String)

    init(_ value: any TOMLValueConvertible) {
        switch value.type {
        case .string: self = .string(value.string ?? "")
        case .int: self = .int(value.int ?? 0)
        case .double: self = .float(value.double ?? 0)
        case .bool: self = .bool(value.bool ?? false)
        case .array: self = .array((value.array.map { Array($0) } ?? []).map { ConfigValue($0) })
        case .table:
            let table = value.table
            // toml++ keeps keys in a sorted map, so file order is lost; sorted order is stable.
            let keys = (table?.keys ?? []).sorted()
            self = .table(keys.compactMap { k in table?[k].map { (key: k, value: ConfigValue($0)) } })
        default: self = .other(value.type.rawValue)
        }
    }

    var pythonType: String {
        switch self {
        case .string: "str"
        case .int: "int"
        case .float: "float"
        case .bool: "bool"
        case .array: "list"
        case .table: "dict"
        case .other(let t): t
        }
    }
}

// The voluptuous validators used by config_util.py.
enum ValueType {
    case string, int, float, bool, floatOrInt, intOrIntPair, floatPair, table

    var name: String {
        switch self {
        case .string: "str"
        case .int: "int"
        case .float: "float"
        case .bool: "bool"
        case .floatOrInt: "float or int"
        case .intOrIntPair: "int or [int, int]"
        case .floatPair: "[float, float]"
        case .table: "dict"
        }
    }
}

struct KeySpec {
    var type: ValueType
    var general: Bool
    var dataset: Set<DatasetKind>
    var subset: Set<DatasetKind>
}

private let allKinds: Set<DatasetKind> = [.dreamBooth, .fineTuning, .masks]

// §A2: the level and dataset kind where each key is allowed.
let configKeys: [String: KeySpec] = {
    var keys: [String: KeySpec] = [:]
    func everywhere(_ type: ValueType, _ names: String...) {
        for n in names { keys[n] = KeySpec(type: type, general: true, dataset: allKinds, subset: allKinds) }
    }
    func datasetLevel(_ type: ValueType, _ names: String...) {
        for n in names { keys[n] = KeySpec(type: type, general: true, dataset: allKinds, subset: []) }
    }
    keys["image_dir"] = KeySpec(type: .string, general: false, dataset: [], subset: allKinds)
    keys["conditioning_data_dir"] = KeySpec(type: .string, general: false, dataset: [], subset: [.masks])
    keys["metadata_file"] = KeySpec(type: .string, general: false, dataset: [], subset: [.fineTuning])
    keys["is_reg"] = KeySpec(type: .bool, general: false, dataset: [], subset: [.dreamBooth])
    keys["alpha_mask"] = KeySpec(type: .bool, general: false, dataset: [], subset: [.dreamBooth, .fineTuning])
    keys["class_tokens"] = KeySpec(type: .string, general: true, dataset: [.dreamBooth], subset: [.dreamBooth])
    keys["caption_extension"] = KeySpec(
        type: .string, general: true, dataset: [.dreamBooth, .masks], subset: [.dreamBooth, .masks])
    keys["cache_info"] = KeySpec(
        type: .bool, general: true, dataset: [.dreamBooth, .masks], subset: [.dreamBooth, .masks])
    everywhere(.int, "num_repeats", "keep_tokens", "token_warmup_min", "caption_dropout_every_n_epochs")
    everywhere(.bool, "shuffle_caption", "flip_aug", "color_aug", "random_crop", "enable_wildcard")
    everywhere(.floatOrInt, "token_warmup_step", "caption_dropout_rate", "caption_tag_dropout_rate")
    everywhere(
        .string, "caption_separator", "keep_tokens_separator", "secondary_separator", "caption_prefix",
        "caption_suffix", "resize_interpolation")
    everywhere(.floatPair, "face_crop_aug_range")
    everywhere(.table, "custom_attributes")
    datasetLevel(.intOrIntPair, "resolution")
    datasetLevel(.int, "batch_size", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "validation_seed")
    datasetLevel(.bool, "enable_bucket", "bucket_no_upscale")
    datasetLevel(.float, "network_multiplier", "validation_split")
    return keys
}()

let argparseOnlyKeys: Set<String> = ["prior_loss_weight", "debug_dataset", "max_token_length"]

/// The `resize_interpolation` names sd-scripts accepts.
public let resizeInterpolations: Set<String> = [
    "lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area", "box",
]

private func kindName(_ kind: DatasetKind) -> String {
    switch kind {
    case .dreamBooth: "DreamBooth"
    case .fineTuning: "fine-tuning"
    case .masks: "mask (conditioning_data_dir)"
    }
}

// MARK: - Checking

private struct ConfigChecker {
    let fallbacks: Fallbacks
    var findings: [Finding] = []
    var datasets: [ResolvedDataset] = []
    // The valid `[general]` values.
    var general: [String: ConfigValue] = [:]

    init(fallbacks: Fallbacks) { self.fallbacks = fallbacks }

    mutating func add(_ s: Finding.Severity, _ k: Finding.Kind, _ path: String, _ message: String) {
        findings.append(Finding(s, k, path, message))
    }

    mutating func check(root: ConfigValue) {
        guard case .table(let top) = root else {
            add(.error, .wrongType, "", "expected an object at the top level, found \(root.pythonType)")
            return
        }
        var datasetsValue: ConfigValue?
        for (key, value) in top {
            switch key {
            case "general":
                if case .table(let entries) = value {
                    general = checkLevel(entries, path: "general", allowed: { $0.general }, levelName: "[general]")
                } else {
                    add(.error, .wrongType, "general", "expected a table, found \(value.pythonType)")
                }
            case "datasets": datasetsValue = value
            default: add(.error, .unknownKey, key, "extra keys not allowed: only [general] and [[datasets]]")
            }
        }
        guard let datasetsValue else {
            add(.silent, .noDatasets, "", "no [[datasets]]: sd-scripts finds no data and exits 0 without training")
            return
        }
        guard case .array(let blocks) = datasetsValue else {
            add(
                .error, .wrongType, "datasets",
                "expected a list of tables ([[datasets]]), found \(datasetsValue.pythonType)")
            return
        }
        if blocks.isEmpty {
            add(.silent, .noDatasets, "datasets", "no datasets: sd-scripts finds no data and exits 0 without training")
        }
        for (i, block) in blocks.enumerated() {
            let path = "datasets[\(i)]"
            guard case .table(let entries) = block else {
                add(.error, .wrongType, path, "expected a table, found \(block.pythonType)")
                continue
            }
            checkDataset(entries, path: path)
        }
        checkSharedMaskFolders()
    }

    // Validates the keys of one level against `allowed`, reports each problem, and returns the valid values.
    mutating func checkLevel(
        _ entries: [(key: String, value: ConfigValue)], path: String, allowed: (KeySpec) -> Bool, levelName: String,
        skip: Set<String> = []
    ) -> [String: ConfigValue] {
        var valid: [String: ConfigValue] = [:]
        for (key, value) in entries where !skip.contains(key) {
            let keyPath = "\(path).\(key)"
            if argparseOnlyKeys.contains(key) {
                add(.error, .argparseOnlyKey, keyPath, "extra keys not allowed: \(key) is a command-line option only")
                continue
            }
            guard let spec = configKeys[key] else {
                add(.error, .unknownKey, keyPath, "extra keys not allowed: sd-scripts has no key '\(key)'")
                continue
            }
            guard allowed(spec) else {
                add(
                    .error, .keyNotAllowedHere, keyPath,
                    "extra keys not allowed: '\(key)' is not allowed in \(levelName)")
                continue
            }
            guard let typed = checkType(value, spec.type, path: keyPath) else { continue }
            if key == "resize_interpolation", case .string(let name) = typed, !resizeInterpolations.contains(name) {
                // An assert at dataset level; at subset level it fails later inside cv2.
                add(
                    .error, .unknownInterpolation, keyPath,
                    "'\(name)' is not one of " + resizeInterpolations.sorted().joined(separator: ", "))
                continue
            }
            valid[key] = typed
        }
        return valid
    }

    // Returns the value if it passes the voluptuous check (bool passes as int, with a warning).
    mutating func checkType(_ value: ConfigValue, _ type: ValueType, path: String) -> ConfigValue? {
        func isInt(_ v: ConfigValue) -> Bool {
            switch v {
            case .int, .bool: true
            default: false
            }
        }
        var ok: Bool
        switch (type, value) {
        case (.string, .string), (.float, .float), (.bool, .bool), (.table, .table): ok = true
        case (.int, _): ok = isInt(value)
        case (.floatOrInt, .float): ok = true
        case (.floatOrInt, _): ok = isInt(value)
        case (.intOrIntPair, .array(let items)): ok = items.count == 2 && items.allSatisfy(isInt)
        case (.intOrIntPair, _): ok = isInt(value)
        case (.floatPair, .array(let items)):
            ok =
                items.count == 2
                && items.allSatisfy {
                    if case .float = $0 { return true }
                    return false
                }
        default: ok = false
        }
        guard ok else {
            add(.error, .wrongType, path, "expected \(type.name) for dictionary value, found \(value.pythonType)")
            return nil
        }
        var hasBool = false
        if case .bool = value, type != .bool { hasBool = true }
        if case .array(let items) = value, items.contains(where: { if case .bool = $0 { true } else { false } }) {
            hasBool = true
        }
        if hasBool {
            add(.warn, .boolAsInt, path, "a bool where \(type.name) is expected: Python accepts it as 0 or 1")
        }
        return value
    }

    mutating func checkDataset(_ entries: [(key: String, value: ConfigValue)], path: String) {
        var subsetTables: [[(key: String, value: ConfigValue)]] = []
        var subsetsPresent = false
        for (key, value) in entries where key == "subsets" {
            subsetsPresent = true
            guard case .array(let items) = value else {
                add(.error, .wrongType, "\(path).subsets", "expected a list of tables ([[datasets.subsets]])")
                continue
            }
            for (j, item) in items.enumerated() {
                if case .table(let t) = item {
                    subsetTables.append(t)
                } else {
                    add(.error, .wrongType, "\(path).subsets[\(j)]", "expected a table, found \(item.pythonType)")
                    subsetTables.append([])
                }
            }
        }
        if !subsetsPresent || subsetTables.isEmpty {
            add(.warn, .emptyDataset, path, "no [[datasets.subsets]]: this dataset has no images")
        }

        // Classification (validate_flex_dataset): masks only with --masked_loss and all subsets.
        func has(_ t: [(key: String, value: ConfigValue)], _ key: String) -> Bool { t.contains { $0.key == key } }
        let withConditioning = subsetTables.filter { has($0, "conditioning_data_dir") }.count
        let withMetadata = subsetTables.filter { has($0, "metadata_file") }.count
        var kind: DatasetKind
        // Python's all([]) is True: a dataset without subsets validates as masks (with --masked_loss) or as
        // fine-tuning, as in sd-scripts.
        if fallbacks.maskedLoss && withConditioning == subsetTables.count {
            kind = .masks
        } else if withMetadata == subsetTables.count {
            kind = .fineTuning
        } else if withMetadata == 0 {
            kind = .dreamBooth
        } else {
            add(
                .error, .mixedDreamBoothFineTuning, path,
                "DreamBooth subset and fine tuning subset cannot be mixed in the same dataset")
            kind = .dreamBooth
        }
        if withConditioning > 0 {
            if !fallbacks.maskedLoss {
                for (j, t) in subsetTables.enumerated() where has(t, "conditioning_data_dir") {
                    add(
                        .error, .conditioningWithoutMaskedLoss, "\(path).subsets[\(j)].conditioning_data_dir",
                        "conditioning_data_dir is only allowed when training with --masked_loss")
                }
            } else if kind != .masks {
                add(
                    .error, .partialConditioning, path,
                    "only \(withConditioning) of \(subsetTables.count) subsets have conditioning_data_dir: "
                        + "all or none must have it")
            }
        }

        let datasetValues = checkLevel(
            entries, path: path, allowed: { $0.dataset.contains(kind) }, levelName: "a \(kindName(kind)) dataset",
            skip: ["subsets"])

        var subsets: [ResolvedSubset] = []
        for (j, t) in subsetTables.enumerated() {
            let subsetPath = "\(path).subsets[\(j)]"
            // With the conditioning error already reported, don't repeat it as an extra key.
            let skip: Set<String> = kind != .masks && withConditioning > 0 ? ["conditioning_data_dir"] : []
            // In a mixed dataset (already an error) each subset is checked as what it claims to be.
            var subsetKind = kind
            if kind == .dreamBooth && withMetadata > 0 && has(t, "metadata_file") { subsetKind = .fineTuning }
            let values = checkLevel(
                t, path: subsetPath, allowed: { $0.subset.contains(subsetKind) },
                levelName: "a \(kindName(subsetKind)) subset", skip: skip)
            subsets.append(resolveSubset(values, dataset: datasetValues, kind: subsetKind, path: subsetPath))
        }
        let dataset = resolveDataset(datasetValues, kind: kind, subsets: subsets, path: path)
        checkValues(dataset)
        datasets.append(dataset)
    }

    // MARK: Resolution of values

    func lookup(_ key: String, _ levels: [[String: ConfigValue]]) -> ConfigValue? {
        for level in levels { if let v = level[key] { return v } }
        return nil
    }

    func int(_ v: ConfigValue?) -> Int? {
        switch v {
        case .int(let i): i
        case .bool(let b): b ? 1 : 0
        default: nil
        }
    }

    func bool(_ v: ConfigValue?) -> Bool? {
        if case .bool(let b) = v { return b }
        return nil
    }

    func string(_ v: ConfigValue?) -> String? {
        if case .string(let s) = v { return s }
        return nil
    }

    func double(_ v: ConfigValue?) -> Double? {
        switch v {
        case .float(let d): d
        case .int(let i): Double(i)
        default: nil
        }
    }

    mutating func resolveSubset(
        _ subset: [String: ConfigValue], dataset: [String: ConfigValue], kind: DatasetKind, path: String
    ) -> ResolvedSubset {
        let levels = [subset, dataset, general]
        let imageDir = string(subset["image_dir"])
        if imageDir == nil && kind != .fineTuning {
            add(.error, .missingRequiredKey, "\(path).image_dir", "required key not provided")
        }
        if kind == .fineTuning && subset["metadata_file"] == nil {
            add(.error, .missingRequiredKey, "\(path).metadata_file", "required key not provided")
        }
        var captionExtension: String?
        if kind != .fineTuning {
            if let ext = string(lookup("caption_extension", levels)) ?? fallbacks.captionExtension {
                if !ext.isEmpty && !ext.hasPrefix(".") {
                    add(
                        .info, .captionExtensionWithoutDot, path,
                        "caption_extension '\(ext)' has no leading dot: sd-scripts uses '.\(ext)'")
                    captionExtension = "." + ext
                } else {
                    captionExtension = ext
                }
            } else {
                add(
                    .warn, .defaultCaptionExtension, path,
                    "caption_extension is not set: sd-scripts looks for '.caption' files (the GUI default is '.txt')")
                captionExtension = ".caption"
            }
        }
        return ResolvedSubset(
            path: path,
            kind: kind,
            imageDir: imageDir,
            conditioningDataDir: kind == .masks ? string(subset["conditioning_data_dir"]) : nil,
            metadataFile: kind == .fineTuning ? string(subset["metadata_file"]) : nil,
            isReg: kind == .dreamBooth ? bool(subset["is_reg"]) ?? false : false,
            alphaMask: kind == .masks ? false : bool(subset["alpha_mask"]) ?? fallbacks.alphaMask,
            classTokens: kind == .dreamBooth ? string(lookup("class_tokens", levels)) : nil,
            captionExtension: captionExtension,
            numRepeats: int(lookup("num_repeats", levels)) ?? fallbacks.datasetRepeats,
            shuffleCaption: bool(lookup("shuffle_caption", levels)) ?? fallbacks.shuffleCaption,
            flipAug: bool(lookup("flip_aug", levels)) ?? fallbacks.flipAug,
            colorAug: bool(lookup("color_aug", levels)) ?? fallbacks.colorAug,
            randomCrop: bool(lookup("random_crop", levels)) ?? fallbacks.randomCrop,
            enableWildcard: bool(lookup("enable_wildcard", levels)) ?? false,
            cacheInfo: kind == .fineTuning ? false : bool(lookup("cache_info", levels)) ?? false,
            keepTokens: int(lookup("keep_tokens", levels)) ?? fallbacks.keepTokens,
            resizeInterpolation: string(lookup("resize_interpolation", levels)))
    }

    func resolveDataset(
        _ dataset: [String: ConfigValue], kind: DatasetKind, subsets: [ResolvedSubset], path: String
    ) -> ResolvedDataset {
        let levels = [dataset, general]
        var resolution = fallbacks.resolution
        switch lookup("resolution", levels) {
        case .array(let items):
            if let w = int(items.first), let h = int(items.last) { resolution = Resolution(w, h) }
        case let v?:
            if let r = int(v) { resolution = Resolution(r, r) }
        case nil: break
        }
        let enableBucket = bool(lookup("enable_bucket", levels)) ?? fallbacks.enableBucket
        var bucketSettings: BucketSettings?
        if enableBucket, let resolution {
            bucketSettings = BucketSettings(
                resolution: resolution,
                minReso: int(lookup("min_bucket_reso", levels)) ?? fallbacks.minBucketReso,
                maxReso: int(lookup("max_bucket_reso", levels)) ?? fallbacks.maxBucketReso,
                steps: int(lookup("bucket_reso_steps", levels)) ?? fallbacks.bucketResoSteps,
                noUpscale: bool(lookup("bucket_no_upscale", levels)) ?? fallbacks.bucketNoUpscale)
        }
        return ResolvedDataset(
            path: path, kind: kind, subsets: subsets, resolution: resolution,
            batchSize: int(lookup("batch_size", levels)) ?? fallbacks.trainBatchSize,
            enableBucket: enableBucket, bucketSettings: bucketSettings,
            validatedBuckets: try? bucketSettings?.validated(sdxl: fallbacks.sdxl),
            networkMultiplier: double(lookup("network_multiplier", levels)) ?? 1.0,
            validationSplit: double(lookup("validation_split", levels)) ?? 0.0,
            validationSeed: int(lookup("validation_seed", levels)))
    }

    // MARK: Value checks (§A3, §B2 group 2)

    mutating func checkValues(_ dataset: ResolvedDataset) {
        let path = dataset.path
        if dataset.resolution == nil {
            add(.error, .missingResolution, path, "resolution is required (no resolution in the config or flags)")
        }
        if let settings = dataset.bucketSettings {
            do {
                let validated = try settings.validated(sdxl: fallbacks.sdxl)
                for a in validated.adjustments {
                    add(
                        .warn, .bucketResoAdjusted, path,
                        "\(a.key.rawValue) \(a.from) is not a multiple of bucket_reso_steps \(settings.steps): "
                            + "sd-scripts uses \(a.to)")
                }
            } catch {
                add(.error, .invalidBucketSettings, path, error.detail)
            }
        }
        if dataset.validationSplit < 0 || dataset.validationSplit > 1 {
            add(
                .error, .validationSplitOutOfRange, path,
                "validation_split \(dataset.validationSplit) is outside 0…1")
        }
        var seenImageDirs: Set<String> = []
        var maskDirs: [String: Int] = [:]
        for (j, s) in dataset.subsets.enumerated() {
            if s.numRepeats < 1 {
                add(
                    .silent, .numRepeatsBelowOne, s.path,
                    "num_repeats \(s.numRepeats) < 1: sd-scripts skips this subset")
            }
            if let dir = s.imageDir {
                if !seenImageDirs.insert(dir).inserted {
                    add(
                        .silent, .duplicateImageDir, s.path,
                        "image_dir '\(dir)' is already used in this dataset: sd-scripts skips this subset")
                }
            }
            if (fallbacks.cacheLatents || fallbacks.cacheLatentsToDisk) && (s.colorAug || s.randomCrop) {
                add(
                    .error, .cacheLatentsWithAugmentation, s.path,
                    "latents are cached, so color_aug and random_crop cannot be used")
            }
            if dataset.kind == .masks {
                if s.randomCrop {
                    add(.error, .randomCropWithMasks, s.path, "random_crop is not allowed with conditioning_data_dir")
                }
                if let mask = s.conditioningDataDir {
                    let key = normalizedPath(mask)
                    if let other = maskDirs[key] {
                        add(
                            .warn, .maskFolderSharedInDataset, s.path,
                            "conditioning_data_dir is also used by subsets[\(other)]: images with the same stem "
                                + "share one mask")
                    } else {
                        maskDirs[key] = j
                    }
                    if let image = s.imageDir, normalizedPath(image) == key {
                        add(
                            .error, .maskFolderIsImageDir, s.path,
                            "conditioning_data_dir is image_dir: each image would be its own mask")
                    }
                }
            }
        }
        if !dataset.subsets.isEmpty && dataset.kind == .dreamBooth && dataset.subsets.allSatisfy(\.isReg) {
            add(
                .silent, .regOnlyDataset, path,
                "every subset is_reg: reg images are balanced against train images of the same dataset, so none is used"
            )
        }
    }

    // Two [[datasets]] blocks with one mask folder always trip sd-scripts' `extra conditioning data` assert.
    mutating func checkSharedMaskFolders() {
        var owner: [String: Int] = [:]
        for (i, dataset) in datasets.enumerated() where dataset.kind == .masks {
            var seenHere: Set<String> = []
            for s in dataset.subsets {
                guard let mask = s.conditioningDataDir else { continue }
                let key = normalizedPath(mask)
                guard seenHere.insert(key).inserted else { continue }
                if let first = owner[key] {
                    add(
                        .error, .sharedMaskFolder, "\(s.path).conditioning_data_dir",
                        "mask folder '\(mask)' is also used by datasets[\(first)]: masks of one dataset are "
                            + "'extra conditioning data' for the other")
                } else {
                    owner[key] = i
                }
            }
        }
    }
}

// A lexical normal form for comparing folder names: no trailing '/', no '.' components, no empty ones.
// Symbolic links and '..' are left to the file-system checks.
func normalizedPath(_ path: String) -> String {
    let absolute = path.hasPrefix("/")
    let parts = path.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
    let joined = parts.joined(separator: "/")
    if absolute { return "/" + joined }
    return joined.isEmpty ? "." : joined
}
