import SafeTensors

/// Consecutive rows of one target tensor in fp32, row-major: the weight as the updates
/// before this one left it. An update reads and writes `values` in place.
public struct RowBlock {
    /// `rows.count × columns` values.
    public let values: UnsafeMutablePointer<Float>
    /// The absolute rows of the target tensor (its first dimension) these values are.
    public let rows: Range<Int>
    /// Elements per row (the product of the other dimensions).
    public let columns: Int

    public init(values: UnsafeMutablePointer<Float>, rows: Range<Int>, columns: Int) {
        self.values = values
        self.rows = rows
        self.columns = columns
    }

    /// The values of absolute row `row`.
    public func row(_ row: Int) -> UnsafeMutablePointer<Float> { values + (row - rows.lowerBound) * columns }
}

/// A statistic of the updated weight over all of an update's rows, computed in a pass
/// before any row is written (input-axis DoRA needs column norms of the whole weight).
public enum UpdateReduction: Sendable, Equatable {
    /// Per column `j`: the sum over the update's rows of `V[i][j]²`, where `V` is what
    /// ``RowApplier/reduce(_:into:)`` computes for the block.
    case columnSumOfSquares
}

/// What an update needs from the executor's chunking.
public struct UpdateRequirements: Sendable, Equatable {
    /// Blocks handed to the update start at its first row plus a multiple of this and hold
    /// whole multiples of it (OFT: the block size); nil: all of the update's rows in one
    /// block (BOFT's butterfly mixes every block).
    public var rowAlignment: Int?
    /// A reduction over all of the update's rows that ``RowApplier/apply(_:reduced:)`` reads.
    public var reduction: UpdateReduction?

    public init(rowAlignment: Int? = 1, reduction: UpdateReduction? = nil) {
        self.rowAlignment = rowAlignment
        self.reduction = reduction
    }

    /// Row-local, no reduction: LoRA, LoHa, LoKr, full, IA³, GLoRA, output-axis DoRA.
    public static let rowLocal = UpdateRequirements()
}

/// One algorithm's change to one target tensor (or to a row range of it: the q/k/v
/// thirds of a fused projection). The planner builds updates from adapter modules; the
/// executor runs them per row block on every worker, in command-line order, on an fp32
/// copy of the weight that is rounded to the output dtype once.
///
/// An update is immutable and shared between threads; everything a worker needs to
/// keep (factors converted to fp32 once) lives in the ``RowApplier`` it makes.
public protocol WeightUpdate: Sendable {
    /// The adapter module (for reports and errors).
    var label: String { get }
    /// The adapter file the update comes from.
    var sourcePath: String { get }
    /// The rows of the target the update changes.
    var rows: Range<Int> { get }
    /// Chunking and reduction needs.
    var requirements: UpdateRequirements { get }
    /// Floating-point operations for the whole target (for the throughput report).
    func flops(columns: Int) -> Double
    /// Checks the update against its target's geometry.
    /// - Throws: ``EngineError`` of kind `.shapeMismatch`.
    func validate(targetRows: Int, columns: Int) throws(EngineError)
    /// Per-worker state for one target; converted factors live here.
    func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier
}

/// The per-worker half of a ``WeightUpdate``.
public protocol RowApplier: AnyObject {
    /// Changes `block` in place. `reduced` holds the update's reduction over all its rows
    /// (one value per column) when its requirements ask for one.
    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws
    /// Adds this block's share of the update's reduction to `partial` (one value per
    /// column); called only when the requirements declare a reduction.
    func reduce(_ block: RowBlock, into partial: UnsafeMutableBufferPointer<Double>) throws
}

extension RowApplier {
    public func reduce(_ block: RowBlock, into partial: UnsafeMutableBufferPointer<Double>) throws {
        throw EngineError(.internalInconsistency, "an update without a reduction was asked to reduce")
    }
}

extension WeightUpdate {
    /// The standard check that `rows` lie inside the target.
    func checkRows(_ targetRows: Int) throws(EngineError) {
        guard rows.lowerBound >= 0, rows.upperBound <= targetRows, !rows.isEmpty else {
            throw EngineError(
                .shapeMismatch, file: sourcePath, module: label,
                "rows \(rows.lowerBound)..<\(rows.upperBound) are outside the target's \(targetRows) rows")
        }
    }
}
