import Adapters
import CKernels
import SafeTensors

/// `W[rows] += coefficient · D`, with `D` a module's dense delta and `coefficient` =
/// ratio · scale formed in Double and rounded to fp32 once (ComfyUI's arithmetic; the
/// LyCORIS library agrees within rounding): LoCon with Tucker, LoHa, LoKr, GLoRA.
public struct AdditiveUpdate: WeightUpdate {
    public let label: String
    public let sourcePath: String
    public let rows: Range<Int>
    let delta: any DeltaSource
    let coefficient: Float
    let inFeatures: Int
    public var requirements: UpdateRequirements { .rowLocal }

    init(
        delta: any DeltaSource, rows: Range<Int>, inFeatures: Int, ratio: Double, scale: Double, file: String,
        label: String
    ) {
        self.delta = delta
        self.rows = rows
        self.inFeatures = inFeatures
        self.coefficient = Float(ratio * scale)
        self.sourcePath = file
        self.label = label
    }

    public func flops(columns: Int) -> Double {
        delta.flops(rows: rows.count, columns: columns) + 2 * Double(rows.count * columns)
    }

    public func validate(targetRows: Int, columns: Int) throws(EngineError) {
        try checkRows(targetRows)
        try delta.validate(rows: rows.count, columns: columns, inFeatures: inFeatures)
    }

    public func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier {
        AdditiveApplier(self, filler: delta.makeFiller(columns: columns, inFeatures: inFeatures), columns: columns)
    }
}

final class AdditiveApplier: RowApplier {
    private let u: AdditiveUpdate
    private let filler: any DeltaFiller
    private let columns: Int

    init(_ u: AdditiveUpdate, filler: any DeltaFiller, columns: Int) {
        self.u = u
        self.filler = filler
        self.columns = columns
    }

    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
        let first = block.rows.lowerBound - u.rows.lowerBound
        filler.accumulate(
            first..<first + block.rows.count, into: block.values, columns: columns, coefficient: u.coefficient)
    }
}

/// DoRA (`dora_scale`) on a LoRA, LoHa or LoKr host: `V = W + scale · D`, then each
/// output row (or input channel) rescaled to the stored magnitude `d`:
/// - LyCORIS: `W' = V ⊙ (ratio · (d / (‖V‖ + ε) − 1) + 1)`: the ratio interpolates the
///   magnitude only, `scale · D` stays at full strength;
/// - ComfyUI: `Wd = V ⊙ d / (N + ε)`, with `N` = `‖W‖` on the output axis (the weight
///   before the update, not `V`) and `‖V‖` on the input axis; `W' = Wd` at ratio 1, else
///   `W + ratio · (Wd − W)`.
/// `ε` is fp32's epsilon. The output axis is row-local; the input axis needs the column
/// norms of `V` over all the update's rows: a reduction pass before any row is written.
public struct DoRAUpdate: WeightUpdate {
    public let label: String
    public let sourcePath: String
    public let rows: Range<Int>
    let file: SafeTensorsFile
    let delta: any DeltaSource
    let magnitude: TensorInfo
    let axis: DoRAAxis
    let scale: Float
    let ratio: Float
    let compat: MergeCompat
    let inFeatures: Int

    init(
        delta: any DeltaSource, magnitude: TensorInfo, axis: DoRAAxis, rows: Range<Int>, inFeatures: Int,
        ratio: Float, scale: Double, compat: MergeCompat, file: SafeTensorsFile, label: String
    ) {
        self.delta = delta
        self.magnitude = magnitude
        self.axis = axis
        self.rows = rows
        self.inFeatures = inFeatures
        self.ratio = ratio
        self.scale = Float(scale)
        self.compat = compat
        self.file = file
        self.sourcePath = file.path
        self.label = label
    }

    public var requirements: UpdateRequirements {
        axis == .input ? UpdateRequirements(rowAlignment: 1, reduction: .columnSumOfSquares) : .rowLocal
    }

    public func flops(columns: Int) -> Double {
        delta.flops(rows: rows.count, columns: columns) + Double(6 * rows.count * columns)
    }

    public func validate(targetRows: Int, columns: Int) throws(EngineError) {
        try checkRows(targetRows)
        try delta.validate(rows: rows.count, columns: columns, inFeatures: inFeatures)
        let want = axis == .output ? rows.count : inFeatures
        guard magnitude.dtype.isConvertibleFloat, magnitude.elementCount == want, columns % max(inFeatures, 1) == 0
        else {
            throw .factors(
                sourcePath, label,
                "dora_scale \(magnitude.dtype.rawValue) \(shapeText(magnitude.dims)) does not fit the \(axis.rawValue) axis of \(rows.count) rows x \(inFeatures) input channels"
            )
        }
    }

    public func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier {
        DoRAApplier(self, filler: delta.makeFiller(columns: columns, inFeatures: inFeatures), columns: columns)
    }
}

final class DoRAApplier: RowApplier {
    private let u: DoRAUpdate
    private let filler: any DeltaFiller
    private let columns: Int
    private let area: Int
    private let magnitude: [Float]
    private var v = FloatBuffer()

    init(_ u: DoRAUpdate, filler: any DeltaFiller, columns: Int) {
        self.u = u
        self.filler = filler
        self.columns = columns
        self.area = columns / max(u.inFeatures, 1)
        self.magnitude = Matrix(u.magnitude, of: u.file, rows: 1).values
    }

    deinit { v.free() }

    /// `V = W + scale · D` for the block, into the scratch buffer (W is kept).
    private func updatedCopy(_ block: RowBlock) -> UnsafeMutablePointer<Float> {
        let n = block.rows.count * columns
        v.ensure(n)
        v.p.update(from: block.values, count: n)
        let first = block.rows.lowerBound - u.rows.lowerBound
        filler.accumulate(first..<first + block.rows.count, into: v.p, columns: columns, coefficient: u.scale)
        return v.p
    }

    func reduce(_ block: RowBlock, into partial: UnsafeMutableBufferPointer<Double>) throws {
        let vp = updatedCopy(block)
        for k in 0..<block.rows.count {
            let row = vp + k * columns
            for j in 0..<columns { partial[j] += Double(row[j]) * Double(row[j]) }
        }
    }

    private static func norm(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        Float(gk_sumsq_f32(p, n).squareRoot())
    }

    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
        let w = block.values, m = u.ratio, eps = Float.ulpOfOne
        let rows = block.rows.count, first = block.rows.lowerBound - u.rows.lowerBound
        let comfy = u.compat == .comfyui
        // ComfyUI interpolates the final weight, so it needs W next to V; otherwise V
        // replaces W in place.
        let lerp = comfy && m != 1
        // ComfyUI's output axis divides by the norm of W, taken before W changes.
        let weightNorms: [Float] =
            comfy && u.axis == .output ? (0..<rows).map { Self.norm(w + $0 * columns, columns) } : []
        let vp: UnsafeMutablePointer<Float>
        if lerp {
            vp = updatedCopy(block)
        } else {
            filler.accumulate(first..<first + rows, into: w, columns: columns, coefficient: u.scale)
            vp = w
        }
        // The factor each element of V is multiplied by: d / (N + ε) (ComfyUI), or the
        // magnitude interpolated by the ratio (LyCORIS).
        func factor(_ d: Float, _ norm: Float) -> Float { comfy ? d / (norm + eps) : m * (d / (norm + eps) - 1) + 1 }
        switch u.axis {
        case .output:
            for k in 0..<rows {
                let o = k * columns
                let f = factor(magnitude[first + k], comfy ? weightNorms[k] : Self.norm(vp + o, columns))
                if lerp {
                    for j in o..<o + columns { w[j] += m * (vp[j] * f - w[j]) }
                } else {
                    for j in o..<o + columns { w[j] = vp[j] * f }
                }
            }
        case .input:
            guard let reduced else {
                throw EngineError(.internalInconsistency, module: u.label, "input-axis DoRA without its column norms")
            }
            var f = [Float](repeating: 0, count: columns)
            for i in 0..<u.inFeatures {
                var sum: Double = 0
                for hw in 0..<area { sum += reduced[i * area + hw] }
                let fi = factor(magnitude[i], Float(sum.squareRoot()))
                for hw in 0..<area { f[i * area + hw] = fi }
            }
            f.withUnsafeBufferPointer { fp in
                guard let fb = fp.baseAddress else { return }
                for k in 0..<rows {
                    let o = k * columns
                    if lerp {
                        for j in 0..<columns { w[o + j] += m * (vp[o + j] * fb[j] - w[o + j]) }
                    } else {
                        for j in 0..<columns { w[o + j] = vp[o + j] * fb[j] }
                    }
                }
            }
        }
    }
}

/// (IA)³: `W ⊙ (ratio · w + 1)`, with `w` one value per output row, or (`on_input`) per
/// input channel at every kernel tap, in LyCORIS's order of operations.
public struct IA3Update: WeightUpdate {
    public let label: String
    public let sourcePath: String
    public let rows: Range<Int>
    let file: SafeTensorsFile
    let weight: TensorInfo
    let onInput: Bool
    let inFeatures: Int
    let ratio: Float
    public var requirements: UpdateRequirements { .rowLocal }

    init(
        weight: TensorInfo, onInput: Bool, rows: Range<Int>, inFeatures: Int, ratio: Float, file: SafeTensorsFile,
        label: String
    ) {
        self.weight = weight
        self.onInput = onInput
        self.rows = rows
        self.inFeatures = inFeatures
        self.ratio = ratio
        self.file = file
        self.sourcePath = file.path
        self.label = label
    }

    public func flops(columns: Int) -> Double { 2 * Double(rows.count * columns) }

    public func validate(targetRows: Int, columns: Int) throws(EngineError) {
        try checkRows(targetRows)
        let want = onInput ? inFeatures : rows.count
        guard weight.dtype.isConvertibleFloat, weight.elementCount == want, inFeatures > 0, columns % inFeatures == 0
        else {
            throw .factors(
                sourcePath, label,
                "(IA)³ weight \(weight.dtype.rawValue) \(shapeText(weight.dims)) does not fit \(onInput ? "\(inFeatures) input channels" : "\(rows.count) output rows")"
            )
        }
    }

    public func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier {
        IA3Applier(self, columns: columns)
    }
}

final class IA3Applier: RowApplier {
    private let u: IA3Update
    private let columns: Int
    private let factors: [Float]

    init(_ u: IA3Update, columns: Int) {
        self.u = u
        self.columns = columns
        factors = Matrix(u.weight, of: u.file, rows: 1).values.map { $0 * u.ratio + 1 }
    }

    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
        let w = block.values
        if u.onInput {
            let area = columns / u.inFeatures
            for k in 0..<block.rows.count {
                let o = k * columns
                for j in 0..<columns { w[o + j] *= factors[j / area] }
            }
        } else {
            for k in 0..<block.rows.count {
                let f = factors[block.rows.lowerBound - u.rows.lowerBound + k]
                let o = k * columns
                for j in 0..<columns { w[o + j] *= f }
            }
        }
    }
}
