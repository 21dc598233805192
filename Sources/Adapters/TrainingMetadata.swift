import Foundation

/// A long or JSON-valued metadata entry, summarised instead of dumped.
public struct MetadataValueSummary: Sendable, Equatable, Codable {
    /// UTF-8 length of the value.
    public let byteCount: Int
    /// `object` or `array` when the value parses as JSON of that kind.
    public let jsonKind: String?
    /// Top-level entries of the JSON value.
    public let entryCount: Int?
    /// For an object of objects/arrays (e.g. `ss_tag_frequency`: folder → tag → count),
    /// the number of entries one level down, summed.
    public let nestedEntryCount: Int?

    enum CodingKeys: String, CodingKey {
        case byteCount = "byte_count", jsonKind = "json_kind", entryCount = "entry_count", nestedEntryCount =
            "nested_entry_count"
    }

    /// Summarises a metadata value.
    public init(_ value: String) {
        byteCount = value.utf8.count
        let parsed = try? JSONSerialization.jsonObject(with: Data(value.utf8), options: [.fragmentsAllowed])
        switch parsed {
        case let o as [String: Any]:
            jsonKind = "object"
            entryCount = o.count
            let nested = o.values.compactMap { ($0 as? [String: Any])?.count ?? ($0 as? [Any])?.count }
            nestedEntryCount = nested.isEmpty ? nil : nested.reduce(0, +)
        case let a as [Any]:
            jsonKind = "array"
            entryCount = a.count
            let nested = a.compactMap { ($0 as? [String: Any])?.count ?? ($0 as? [Any])?.count }
            nestedEntryCount = nested.isEmpty ? nil : nested.reduce(0, +)
        default:
            jsonKind = nil
            entryCount = nil
            nestedEntryCount = nil
        }
    }
}

/// The training metadata that matters, read from kohya `ss_*` and `modelspec.*` keys.
///
/// kohya writes every value with Python's `str()`, so `"None"` means absent.
public struct TrainingMetadata: Sendable, Equatable {
    /// `ss_network_module` (`networks.lora`, `lycoris.kohya`, …).
    public let networkModule: String?
    /// `ss_network_dim` (nil when `"None"`).
    public let networkDim: Int?
    /// `ss_network_alpha`.
    public let networkAlpha: Double?
    /// `ss_network_args` parsed from its JSON (values as strings), e.g. `conv_dim`, `algo`.
    public let networkArgs: [String: String]?
    /// `ss_base_model_version` (`sdxl_base_v1-0`, `sd_v1`, …).
    public let baseModelVersion: String?
    /// `ss_v2`.
    public let v2: Bool?
    /// `ss_resolution`, else `modelspec.resolution`.
    public let resolution: String?
    /// `ss_steps` (steps done), else `ss_max_train_steps`.
    public let steps: Int?
    /// `ss_max_train_steps`.
    public let maxTrainSteps: Int?
    /// `ss_epoch` (epochs done).
    public let epoch: Int?
    /// `ss_num_epochs` (epochs planned).
    public let numEpochs: Int?
    /// `ss_num_train_images`: the dataset size (images × repeats, as kohya counts them).
    public let numTrainImages: Int?
    /// `ss_num_reg_images`.
    public let numRegImages: Int?
    /// `ss_num_batches_per_epoch`.
    public let numBatchesPerEpoch: Int?
    /// `ss_output_name`.
    public let outputName: String?
    /// `ss_training_comment` (nil when `"None"`).
    public let trainingComment: String?
    /// `ss_learning_rate`, `ss_unet_lr`, `ss_text_encoder_lr` as written.
    public let learningRate: String?
    public let unetLearningRate: String?
    public let textEncoderLearningRate: String?
    /// `ss_optimizer`.
    public let optimizer: String?
    /// `ss_mixed_precision`.
    public let mixedPrecision: String?
    /// `ss_sd_model_name`: the base checkpoint's file name.
    public let sdModelName: String?
    /// `ss_clip_skip`.
    public let clipSkip: String?
    /// `ss_seed`.
    public let seed: String?
    /// `ss_training_started_at` / `ss_training_finished_at` (Unix time as written).
    public let trainingStartedAt: String?
    public let trainingFinishedAt: String?
    /// Every `modelspec.*` key whose value is short (see ``summaries`` for the rest).
    public let modelspec: [String: String]
    /// Every metadata value that is short and not a JSON object/array, unchanged.
    public let shortValues: [String: String]
    /// Summaries of long or JSON-valued entries (`ss_datasets`, `ss_tag_frequency`,
    /// `ss_bucket_info`, `modelspec.thumbnail`…).
    public let summaries: [String: MetadataValueSummary]

    /// Values longer than this many bytes are summarised.
    public static let shortValueLimit = 256

    /// Reads the metadata map.
    public init(_ metadata: [String: String]) {
        func str(_ k: String) -> String? {
            guard let v = metadata[k], v != "None", !v.isEmpty else { return nil }
            return v
        }
        func int(_ k: String) -> Int? { str(k).flatMap { Int($0) ?? Double($0).flatMap { Int(exactly: $0) } } }
        networkModule = str("ss_network_module")
        networkDim = int("ss_network_dim")
        networkAlpha = str("ss_network_alpha").flatMap(Double.init)
        if let raw = str("ss_network_args"),
            let o = (try? JSONSerialization.jsonObject(with: Data(raw.utf8))) as? [String: Any]
        {
            networkArgs = o.mapValues { v in
                if let s = v as? String { return s }
                if let d = try? JSONSerialization.data(withJSONObject: v, options: [.fragmentsAllowed, .sortedKeys]),
                    let s = String(data: d, encoding: .utf8)
                {
                    return s
                }
                return String(describing: v)
            }
        } else {
            networkArgs = nil
        }
        baseModelVersion = str("ss_base_model_version")
        v2 = str("ss_v2").map { $0.lowercased() == "true" }
        resolution = str("ss_resolution") ?? str("modelspec.resolution")
        maxTrainSteps = int("ss_max_train_steps")
        steps = int("ss_steps") ?? maxTrainSteps
        epoch = int("ss_epoch")
        numEpochs = int("ss_num_epochs")
        numTrainImages = int("ss_num_train_images")
        numRegImages = int("ss_num_reg_images")
        numBatchesPerEpoch = int("ss_num_batches_per_epoch")
        outputName = str("ss_output_name")
        trainingComment = str("ss_training_comment")
        learningRate = str("ss_learning_rate")
        unetLearningRate = str("ss_unet_lr")
        textEncoderLearningRate = str("ss_text_encoder_lr")
        optimizer = str("ss_optimizer")
        mixedPrecision = str("ss_mixed_precision")
        sdModelName = str("ss_sd_model_name")
        clipSkip = str("ss_clip_skip")
        seed = str("ss_seed")
        trainingStartedAt = str("ss_training_started_at")
        trainingFinishedAt = str("ss_training_finished_at")

        var short: [String: String] = [:]
        var summaries: [String: MetadataValueSummary] = [:]
        for (k, v) in metadata {
            let first = v.first { !$0.isWhitespace }
            let looksJSON = (first == "{" || first == "[") && MetadataValueSummary(v).jsonKind != nil
            if v.utf8.count > Self.shortValueLimit || looksJSON {
                summaries[k] = MetadataValueSummary(v)
            } else {
                short[k] = v
            }
        }
        shortValues = short
        self.summaries = summaries
        modelspec = short.filter { $0.key.hasPrefix("modelspec.") }
    }

    /// Whether the file carries any kohya `ss_*` training key.
    public var hasKohyaMetadata: Bool {
        shortValues.keys.contains { $0.hasPrefix("ss_") } || summaries.keys.contains { $0.hasPrefix("ss_") }
    }
}
