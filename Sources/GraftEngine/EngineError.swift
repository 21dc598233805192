import Adapters

/// The one error type of the engine: a closed ``Kind`` (stable for tests and `--json`),
/// the file, tensor and module concerned when known, a one-line detail, and for errors
/// about several modules the list of them. Library messages never name CLI flags.
public struct EngineError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The closed set of engine failures.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// A file given as an adapter has no adapter module keys.
        case notAnAdapter = "not_an_adapter"
        /// The adapter was made for another model family than the checkpoint.
        case wrongBaseModel = "wrong_base_model"
        /// Modules with structural problems (missing factors, bad shapes, unused parts).
        case malformedModules = "malformed_modules"
        /// Modules that match no tensor or cannot be applied (unless skipping was allowed).
        case unmergeableModules = "unmergeable_modules"
        /// Two modules of one adapter target the same weight rows.
        case overlappingModules = "overlapping_modules"
        /// Nothing of an adapter (or of all of them) would be applied.
        case nothingMerged = "nothing_merged"
        /// A ratio that is not a finite fp32 number.
        case invalidRatio = "invalid_ratio"
        /// A tensor that cannot take an update (not a floating-point weight).
        case invalidTarget = "invalid_target"
        /// An update's factors do not fit the rows and columns of its target.
        case shapeMismatch = "shape_mismatch"
        /// Finite values became ±inf in the output dtype and that was not allowed.
        case overflow
        /// A selection (globs) left nothing to do.
        case emptySelection = "empty_selection"
        /// A request the engine cannot carry out as asked (unknown target dtype…).
        case invalidRequest = "invalid_request"
        /// The zstd encoder failed.
        case compression
        /// An internal invariant broke (a bug in graft).
        case internalInconsistency = "internal"
    }

    /// One module named by an error about several.
    public struct ModuleProblem: Sendable, Equatable, Codable {
        public let module: String
        /// A stable reason code (a ``SkippedModule/Reason`` or ``ModuleIssue/Kind`` raw value).
        public let reason: String
        public let message: String

        public init(module: String, reason: String, message: String) {
            self.module = module
            self.reason = reason
            self.message = message
        }
    }

    public var kind: Kind
    /// The file concerned (an input, or the output).
    public var file: String?
    /// The tensor concerned.
    public var tensor: String?
    /// The adapter module concerned.
    public var module: String?
    /// What is wrong, in lowercase words, one line.
    public var detail: String
    /// The modules an error about several modules is about (in module order).
    public var modules: [ModuleProblem]

    public init(
        _ kind: Kind, file: String? = nil, tensor: String? = nil, module: String? = nil, _ detail: String,
        modules: [ModuleProblem] = []
    ) {
        self.kind = kind
        self.file = file
        self.tensor = tensor
        self.module = module
        self.detail = detail
        self.modules = modules
    }

    /// `file: tensor 'x': module 'm': detail`, one line.
    public var description: String {
        var parts: [String] = []
        if let file { parts.append(file) }
        if let tensor { parts.append("tensor '\(tensor)'") }
        if let module { parts.append("module '\(module)'") }
        parts.append(detail)
        return parts.joined(separator: ": ")
    }
}

/// An adapter module that a merge did not apply, and why.
public struct SkippedModule: Error, Sendable, Equatable, Codable {
    /// The closed set of reasons (the first five are ``MappingError/Kind``'s).
    public enum Reason: String, Sendable, Codable, CaseIterable {
        case wrongBaseModel = "wrong_base_model"
        case missingComponent = "missing_component"
        case noSuchTensor = "no_such_tensor"
        case shapeMismatch = "shape_mismatch"
        case unsupportedModule = "unsupported_module"
        /// A kind graft recognises but does not merge yet.
        case unsupportedKind = "unsupported_kind"
        /// A part of a format graft cannot apply (sparse bias, replacement tensors).
        case unsupportedPart = "unsupported_part"
        /// Factors stored in a dtype graft does not compute with (8-bit floats, complex).
        case unsupportedDType = "unsupported_dtype"
        /// The target cannot take this update (a transposed text projection…).
        case unsupportedTarget = "unsupported_target"
        /// The module carries a bias delta but the target layer has no bias.
        case noBias = "no_bias"
        /// The scale depends on an alpha the file does not hold (PEFT LoHa/LoKr dumps keep it
        /// in `adapter_config.json`).
        case missingAlpha = "missing_alpha"

        init(_ kind: MappingError.Kind) {
            switch kind {
            case .wrongBaseModel: self = .wrongBaseModel
            case .missingComponent: self = .missingComponent
            case .noSuchTensor: self = .noSuchTensor
            case .shapeMismatch: self = .shapeMismatch
            case .unsupportedModule: self = .unsupportedModule
            }
        }
    }

    public let module: String
    public let reason: Reason
    public let message: String

    public init(module: String, reason: Reason, message: String) {
        self.module = module
        self.reason = reason
        self.message = message
    }

    var problem: EngineError.ModuleProblem { .init(module: module, reason: reason.rawValue, message: message) }
}
