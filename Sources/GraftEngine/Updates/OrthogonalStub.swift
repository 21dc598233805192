import SafeTensors

// Temporary: replaced by the OFT/BOFT implementation.
public struct OrthogonalUpdate: WeightUpdate {
    public let label: String
    public let sourcePath: String
    public let rows: Range<Int>
    public var requirements: UpdateRequirements { .rowLocal }
    public init(
        source: SafeTensorsFile, blocks: TensorInfo, butterfly: Bool, legacyDiagonal: Bool,
        rescale: TensorInfo?, constraint: Double, rows: Range<Int>, ratio: Float, compat: MergeCompat, label: String
    ) {
        self.label = label
        self.sourcePath = source.path
        self.rows = rows
    }
    public func flops(columns: Int) -> Double { 0 }
    public func validate(targetRows: Int, columns: Int) throws(EngineError) {
        throw EngineError(.shapeMismatch, file: sourcePath, module: label, "OFT not yet")
    }
    public func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier { fatalError() }
}
