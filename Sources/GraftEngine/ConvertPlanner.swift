#if canImport(Glibc)
import Glibc
#endif
import SafeTensors

/// Everything `graft convert` was asked to do.
public struct ConvertRequest: Sendable {
    public var input: SafeTensorsFile
    /// The dtype floating tensors (F16/BF16/F32/F64) are converted to.
    public var dtype: DType
    /// Tensors matching any of these globs keep their dtype.
    public var keep: [String]
    /// Tensors matching any of these globs are left out.
    public var drop: [String]
    /// When not empty, only tensors matching one of these globs are written.
    public var only: [String]
    /// Metadata entries to set (applied after `dropMetadata`).
    public var setMetadata: [(key: String, value: String)]
    /// Start from empty metadata instead of the input's.
    public var dropMetadata: Bool

    public init(
        input: SafeTensorsFile, dtype: DType, keep: [String] = [], drop: [String] = [], only: [String] = [],
        setMetadata: [(key: String, value: String)] = [], dropMetadata: Bool = false
    ) {
        self.input = input
        self.dtype = dtype
        self.keep = keep
        self.drop = drop
        self.only = only
        self.setMetadata = setMetadata
        self.dropMetadata = dropMetadata
    }
}

/// A selection pattern that matched nothing.
public struct UnusedPattern: Sendable, Equatable, Hashable {
    /// Which list of ``ConvertRequest`` the pattern was in.
    public enum List: String, Sendable { case keep, drop, only }
    public let list: List
    public let pattern: String
}

/// A checked conversion: the execution plan plus what was selected.
public struct ConvertPlan: Sendable {
    public let execution: ExecutionPlan
    public let inputPath: String
    public let dtype: DType
    /// Tensors whose dtype changes.
    public let converted: [String]
    /// Floating tensors left in their dtype by `--keep`.
    public let kept: [String]
    /// Tensors copied unchanged because their dtype is not a convertible float
    /// (integers, bool, 8-bit floats) or already the target.
    public let copied: [String]
    /// Tensors left out by `--drop` / `--only`.
    public let dropped: [String]
    /// Patterns that matched no tensor of the input, with the list they were given in.
    public let unusedPatterns: [UnusedPattern]
    /// Size of the output file in bytes (uncompressed).
    public let outputBytes: Int
}

/// Plans `graft convert`: selects tensors, picks each one's output dtype and the
/// metadata. Tensors are converted (floating types other than the target), or copied
/// byte for byte (everything else); the executor writes them in safetensors order.
public enum ConvertPlanner {
    /// - Throws: `EngineError` when the selection is empty or a glob is malformed;
    ///   `SafeTensorsError` when the output header cannot be laid out.
    public static func plan(_ r: ConvertRequest) throws -> ConvertPlan {
        guard r.dtype.isConvertibleFloat else {
            throw EngineError(
                .invalidRequest, "cannot convert to \(r.dtype.rawValue): the target must be F16, BF16, F32 or F64")
        }
        var used = Set<UnusedPattern>()
        func anyMatch(_ patterns: [String], _ list: UnusedPattern.List, _ name: String) -> Bool {
            var hit = false
            for p in patterns where globMatches(p, name) {
                used.insert(UnusedPattern(list: list, pattern: p))
                hit = true
            }
            return hit
        }
        var planned: [PlannedTensor] = []
        var converted: [String] = [], kept: [String] = [], copied: [String] = [], dropped: [String] = []
        for t in r.input.tensors {
            let selected = r.only.isEmpty || anyMatch(r.only, .only, t.name)
            let removed = anyMatch(r.drop, .drop, t.name)
            if !selected || removed {
                dropped.append(t.name)
                continue
            }
            let keep = anyMatch(r.keep, .keep, t.name)
            let op: TensorOperation
            var outType = t.dtype
            if !t.dtype.isConvertibleFloat || t.dtype == r.dtype {
                op = .copy
                copied.append(t.name)
            } else if keep {
                op = .copy
                kept.append(t.name)
            } else {
                op = .convert
                outType = r.dtype
                converted.append(t.name)
            }
            planned.append(
                PlannedTensor(
                    source: r.input, input: t,
                    output: OutputTensor(name: t.name, dtype: outType, shape: t.shape), operation: op))
        }
        if planned.isEmpty && !r.input.tensors.isEmpty {
            throw EngineError(
                .emptySelection, file: r.input.path,
                "the selection leaves no tensor to write (of \(r.input.tensors.count))")
        }
        var metadata: [String: String]? = r.dropMetadata ? nil : r.input.metadata
        for (k, v) in r.setMetadata {
            if metadata == nil { metadata = [:] }
            metadata![k] = v
        }
        let all =
            r.only.map { UnusedPattern(list: .only, pattern: $0) }
            + r.drop.map { UnusedPattern(list: .drop, pattern: $0) }
            + r.keep.map { UnusedPattern(list: .keep, pattern: $0) }
        var seen = Set<UnusedPattern>()
        let unused = all.filter { !used.contains($0) && seen.insert($0).inserted }
        let layout = try FileLayout(tensors: planned.map(\.output), metadata: metadata, file: "<output>")
        return ConvertPlan(
            execution: ExecutionPlan(tensors: planned, metadata: metadata),
            inputPath: r.input.path, dtype: r.dtype, converted: converted, kept: kept,
            copied: copied, dropped: dropped, unusedPatterns: unused,
            outputBytes: layout.totalByteCount)
    }
}

/// Shell-style glob match (`fnmatch(3)` without flags: `*` also crosses dots).
public func globMatches(_ pattern: String, _ name: String) -> Bool {
    fnmatch(pattern, name, 0) == 0
}
