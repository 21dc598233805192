import SafeTensors

/// The machine-readable description of one file for `graft list --json`.
///
/// Keys are snake_case and stable within a ``schema`` version; optional fields are
/// omitted when unknown. Encode with sorted keys for deterministic output.
public struct ListReport: Codable, Sendable, Equatable {
    /// The version of this layout.
    public static let schemaVersion = 1

    /// Always ``schemaVersion``.
    public let schema: Int
    /// `checkpoint` or `adapter`.
    public let kind: String
    /// Number of tensors.
    public let tensorCount: Int
    /// Total elements of all tensors.
    public let parameterCount: Int
    /// Tensor count per dtype name.
    public let dtypes: [String: Int]
    /// Set for checkpoints.
    public let checkpoint: CheckpointReport?
    /// Set for adapters.
    public let adapter: AdapterReport?
    /// Metadata values that are short and not JSON objects/arrays, unchanged.
    public let metadata: [String: String]
    /// Long or JSON-valued metadata, summarised (`ss_datasets`, `ss_tag_frequency`…).
    public let metadataSummaries: [String: MetadataValueSummary]

    enum CodingKeys: String, CodingKey {
        case schema, kind, checkpoint, adapter, metadata, dtypes
        case tensorCount = "tensor_count", parameterCount = "parameter_count"
        case metadataSummaries = "metadata_summaries"
    }

    /// Describes a file, deciding between checkpoint and adapter with
    /// ``AdapterAnalysis/looksLikeAdapter(_:)``.
    /// - Parameters:
    ///   - tensors: every tensor of the file.
    ///   - metadata: its metadata.
    ///   - alphaValue: reads an adapter's `alpha` values (see ``AdapterAnalysis``).
    ///   - includeModules: list every adapter module with its parts.
    public init(
        tensors: [TensorInfo], metadata: [String: String]?,
        alphaValue: ((TensorInfo) throws -> Double?)? = nil, includeModules: Bool = false
    ) {
        if AdapterAnalysis.looksLikeAdapter(tensors) {
            self.init(
                adapter: AdapterAnalysis(tensors: tensors, metadata: metadata, alphaValue: alphaValue),
                tensors: tensors, alphasRead: alphaValue != nil, includeModules: includeModules)
        } else {
            self.init(checkpoint: CheckpointAnalysis(tensors: tensors, metadata: metadata), tensors: tensors)
        }
    }

    /// Describes a checkpoint.
    public init(checkpoint: CheckpointAnalysis, tensors: [TensorInfo]) {
        self.init(
            kind: "checkpoint", tensors: tensors, metadata: TrainingMetadata(checkpoint.metadata),
            checkpoint: CheckpointReport(checkpoint), adapter: nil)
    }

    /// Describes an adapter.
    /// - Parameters:
    ///   - alphasRead: whether the analysis was given an alpha reader (an empty
    ///     alpha distribution then means "no alpha tensors", not "not read").
    public init(adapter: AdapterAnalysis, tensors: [TensorInfo], alphasRead: Bool, includeModules: Bool = false) {
        self.init(
            kind: "adapter", tensors: tensors, metadata: adapter.training, checkpoint: nil,
            adapter: AdapterReport(adapter, alphasRead: alphasRead, includeModules: includeModules))
    }

    private init(
        kind: String, tensors: [TensorInfo], metadata: TrainingMetadata,
        checkpoint: CheckpointReport?, adapter: AdapterReport?
    ) {
        schema = Self.schemaVersion
        self.kind = kind
        tensorCount = tensors.count
        parameterCount = tensors.reduce(0) { $0 &+ $1.saturatedElementCount }
        dtypes = tensors.reduce(into: [:]) { $0[$1.dtype.rawValue, default: 0] += 1 }
        self.checkpoint = checkpoint
        self.adapter = adapter
        self.metadata = metadata.shortValues
        metadataSummaries = metadata.summaries
    }
}

/// The checkpoint part of a ``ListReport``.
public struct CheckpointReport: Codable, Sendable, Equatable {
    /// One component.
    public struct ComponentReport: Codable, Sendable, Equatable {
        public let component: Component
        public let prefix: String
        public let tensorCount: Int
        public let parameterCount: Int
        public let byteCount: Int

        enum CodingKeys: String, CodingKey {
            case component, prefix
            case tensorCount = "tensor_count", parameterCount = "parameter_count", byteCount = "byte_count"
        }
    }

    /// ``CheckpointArchitecture`` raw value (`sdxl_base`, `sd1`, …).
    public let architecture: CheckpointArchitecture
    /// Its display name ("SDXL base").
    public let architectureName: String
    /// The family adapters must be made for.
    public let family: ModelFamily
    public let evidence: [String]
    public let components: [ComponentReport]
    public let contextWidth: Int?
    public let unetInputChannels: Int?

    enum CodingKeys: String, CodingKey {
        case architecture, family, evidence, components
        case architectureName = "architecture_name", contextWidth = "context_width"
        case unetInputChannels = "unet_input_channels"
    }

    /// Builds the report from an analysis.
    public init(_ a: CheckpointAnalysis) {
        architecture = a.architecture
        architectureName = a.architecture.displayName
        family = a.family
        evidence = a.evidence
        components = a.components.map {
            ComponentReport(
                component: $0.component, prefix: $0.prefix, tensorCount: $0.tensorCount,
                parameterCount: $0.parameterCount, byteCount: $0.byteCount)
        }
        contextWidth = a.contextWidth
        unetInputChannels = a.unetInputChannels
    }
}

/// The adapter part of a ``ListReport``.
public struct AdapterReport: Codable, Sendable, Equatable {
    /// The detected base model.
    public struct BaseModelReport: Codable, Sendable, Equatable {
        public let family: ModelFamily
        public let name: String
        public let evidence: [String]
        public let conflicts: [String]
    }

    /// One structural issue.
    public struct IssueReport: Codable, Sendable, Equatable {
        public let module: String
        public let kind: ModuleIssue.Kind
        public let message: String
    }

    /// One tensor of a module.
    public struct PartReport: Codable, Sendable, Equatable {
        public let name: String
        public let dtype: String
        public let shape: [UInt64]
    }

    /// One module (only with `includeModules`).
    public struct ModuleReport: Codable, Sendable, Equatable {
        public let name: String
        public let component: Component
        public let kind: ModuleKind
        public let scheme: NamingScheme
        public let layer: String
        public let rank: Int?
        public let alpha: Double?
        public let tucker: Bool
        public let doraAxis: String?
        public let parts: [String: PartReport]
        public let issues: [ModuleIssue]

        enum CodingKeys: String, CodingKey {
            case name, component, kind, scheme, layer, rank, alpha, tucker, parts, issues
            case doraAxis = "dora_axis"
        }
    }

    /// The kohya training summary.
    public struct TrainingReport: Codable, Sendable, Equatable {
        public let networkModule: String?
        public let networkDim: Int?
        public let networkAlpha: Double?
        public let networkArgs: [String: String]?
        public let baseModelVersion: String?
        public let v2: Bool?
        public let resolution: String?
        public let steps: Int?
        public let maxTrainSteps: Int?
        public let epoch: Int?
        public let numEpochs: Int?
        public let numTrainImages: Int?
        public let numRegImages: Int?
        public let outputName: String?
        public let trainingComment: String?
        public let learningRate: String?
        public let unetLearningRate: String?
        public let textEncoderLearningRate: String?
        public let optimizer: String?
        public let sdModelName: String?
        public let modelspec: [String: String]

        enum CodingKeys: String, CodingKey {
            case networkModule = "network_module", networkDim = "network_dim", networkAlpha = "network_alpha"
            case networkArgs = "network_args", baseModelVersion = "base_model_version", v2, resolution, steps
            case maxTrainSteps = "max_train_steps", epoch, numEpochs = "num_epochs"
            case numTrainImages = "num_train_images", numRegImages = "num_reg_images", outputName = "output_name"
            case trainingComment = "training_comment", learningRate = "learning_rate"
            case unetLearningRate = "unet_learning_rate", textEncoderLearningRate = "text_encoder_learning_rate"
            case optimizer, sdModelName = "sd_model_name", modelspec
        }

        init(_ t: TrainingMetadata) {
            networkModule = t.networkModule
            networkDim = t.networkDim
            networkAlpha = t.networkAlpha
            networkArgs = t.networkArgs
            baseModelVersion = t.baseModelVersion
            v2 = t.v2
            resolution = t.resolution
            steps = t.steps
            maxTrainSteps = t.maxTrainSteps
            epoch = t.epoch
            numEpochs = t.numEpochs
            numTrainImages = t.numTrainImages
            numRegImages = t.numRegImages
            outputName = t.outputName
            trainingComment = t.trainingComment
            learningRate = t.learningRate
            unetLearningRate = t.unetLearningRate
            textEncoderLearningRate = t.textEncoderLearningRate
            optimizer = t.optimizer
            sdModelName = t.sdModelName
            modelspec = t.modelspec
        }
    }

    public let kind: AdapterFileKind
    public let kindName: String
    public let hasDora: Bool
    public let hasTucker: Bool
    public let scheme: NamingScheme
    public let schemeName: String
    public let baseModel: BaseModelReport
    public let contextWidth: Int?
    public let moduleCount: Int
    /// Modules per component (`unet`, `te1`, `te2`, `te`…).
    public let moduleCounts: [String: Int]
    /// Modules per kind (`lora`, `lokr`…).
    public let moduleKinds: [String: Int]
    /// Modules per layer type (`linear`, `conv1x1`, `conv3x3`…).
    public let layerTypes: [String: Int]
    /// Rank distribution of non-k×k modules.
    public let ranks: [ValueCount<Int>]
    /// Rank distribution of k×k conv modules.
    public let convRanks: [ValueCount<Int>]
    /// Whether alpha values were read; the alpha distributions are empty otherwise.
    public let alphasRead: Bool
    public let alphas: [ValueCount<Double>]
    public let convAlphas: [ValueCount<Double>]
    public let issues: [IssueReport]
    public let training: TrainingReport
    public let modules: [ModuleReport]?

    enum CodingKeys: String, CodingKey {
        case kind, scheme, ranks, alphas, issues, training, modules
        case kindName = "kind_name", hasDora = "has_dora", hasTucker = "has_tucker", schemeName = "scheme_name"
        case baseModel = "base_model", contextWidth = "context_width", moduleCount = "module_count"
        case moduleCounts = "module_counts", moduleKinds = "module_kinds", layerTypes = "layer_types"
        case convRanks = "conv_ranks", alphasRead = "alphas_read", convAlphas = "conv_alphas"
    }

    /// Builds the report from an analysis.
    public init(_ a: AdapterAnalysis, alphasRead: Bool, includeModules: Bool = false) {
        kind = a.kind
        kindName = a.kind.displayName
        hasDora = a.hasDoRA
        hasTucker = a.hasTucker
        scheme = a.scheme
        schemeName = a.scheme.displayName
        baseModel = BaseModelReport(
            family: a.baseModel.family, name: a.baseModel.family.displayName,
            evidence: a.baseModel.evidence, conflicts: a.baseModel.conflicts)
        contextWidth = a.contextWidth
        moduleCount = a.modules.count
        moduleCounts = Dictionary(uniqueKeysWithValues: a.moduleCounts.map { ($0.key.rawValue, $0.value) })
        moduleKinds = Dictionary(uniqueKeysWithValues: a.kindCounts.map { ($0.key.rawValue, $0.value) })
        layerTypes = a.layerCounts.reduce(into: [:]) { $0[$1.key.name, default: 0] += $1.value }
        ranks = a.ranks
        convRanks = a.convRanks
        self.alphasRead = alphasRead
        alphas = a.alphas
        convAlphas = a.convAlphas
        issues = a.modules.flatMap { m in
            m.issues.map { IssueReport(module: m.name, kind: $0.kind, message: $0.message) }
        }
        training = TrainingReport(a.training)
        modules =
            includeModules
            ? a.modules.map { m in
                ModuleReport(
                    name: m.name, component: m.component, kind: m.kind, scheme: m.scheme, layer: m.layer.name,
                    rank: m.rank, alpha: m.alpha, tucker: m.isTucker, doraAxis: m.doraAxis?.rawValue,
                    parts: Dictionary(
                        uniqueKeysWithValues: m.parts.map {
                            (
                                $0.key.rawValue,
                                PartReport(name: $0.value.name, dtype: $0.value.dtype.rawValue, shape: $0.value.shape)
                            )
                        }),
                    issues: m.issues)
            } : nil
    }
}
