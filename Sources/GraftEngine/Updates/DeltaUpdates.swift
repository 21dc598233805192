import Adapters
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

    init(delta: any DeltaSource, rows: Range<Int>, inFeatures: Int, ratio: Float, scale: Double, file: String, label: String) {
        self.delta = delta
        self.rows = rows
        self.inFeatures = inFeatures
        self.coefficient = Float(Double(ratio) * scale)
        self.sourcePath = file
        self.label = label
    }

    public func flops(columns: Int) -> Double { delta.flops(rows: rows.count, columns: columns) + 2 * Double(rows.count * columns) }

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
    private var d = FloatBuffer()

    init(_ u: AdditiveUpdate, filler: any DeltaFiller, columns: Int) {
        self.u = u
        self.filler = filler
        self.columns = columns
    }

    deinit { d.free() }

    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
        let n = block.rows.count * columns
        d.ensure(n)
        let first = block.rows.lowerBound - u.rows.lowerBound
        filler.fill(first..<first + block.rows.count, weight: block.values, into: d.p)
        let w = block.values, dp = d.p, c = u.coefficient
        for i in 0..<n { w[i] += c * dp[i] }
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

    /// `V = W + scale · D` for the block, into `v`.
    private func updated(_ block: RowBlock) -> UnsafeMutablePointer<Float> {
        let n = block.rows.count * columns
        v.ensure(n)
        let first = block.rows.lowerBound - u.rows.lowerBound
        filler.fill(first..<first + block.rows.count, weight: block.values, into: v.p)
        let w = block.values, vp = v.p, s = u.scale
        for i in 0..<n { vp[i] = w[i] + s * vp[i] }
        return vp
    }

    func reduce(_ block: RowBlock, into partial: UnsafeMutableBufferPointer<Double>) throws {
        let vp = updated(block)
        for k in 0..<block.rows.count {
            let row = vp + k * columns
            for j in 0..<columns { partial[j] += Double(row[j]) * Double(row[j]) }
        }
    }

    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
        let vp = updated(block)
        let w = block.values, m = u.ratio, eps = Float.ulpOfOne
        let comfy = u.compat == .comfyui
        // The factor each element of V is multiplied by, per row or per input channel.
        func factor(_ d: Float, _ norm: Float) -> Float {
            comfy ? d / (norm + eps) : m * (d / (norm + eps) - 1) + 1
        }
        func finish(_ i: Int, _ f: Float) {
            let x = vp[i] * f
            w[i] = (!comfy || m == 1) ? x : w[i] + m * (x - w[i])
        }
        switch u.axis {
        case .output:
            for k in 0..<block.rows.count {
                let o = k * columns
                // ComfyUI takes the norm of the weight before the update on this axis.
                let src = comfy ? UnsafePointer(w + o) : UnsafePointer(vp + o)
                var sum: Double = 0
                for j in 0..<columns { sum += Double(src[j]) * Double(src[j]) }
                let f = factor(magnitude[block.rows.lowerBound - u.rows.lowerBound + k], Float(sum.squareRoot()))
                for j in 0..<columns { finish(o + j, f) }
            }
        case .input:
            guard let reduced else {
                throw EngineError(.internalInconsistency, module: u.label, "input-axis DoRA without its column norms")
            }
            var f = [Float](repeating: 0, count: u.inFeatures)
            for i in 0..<u.inFeatures {
                var sum: Double = 0
                for hw in 0..<area { sum += reduced[i * area + hw] }
                f[i] = factor(magnitude[i], Float(sum.squareRoot()))
            }
            for k in 0..<block.rows.count {
                let o = k * columns
                for j in 0..<columns { finish(o + j, f[j / area]) }
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
