import SafeTensors

/// LoRA / LoCon: `W[rows] += (ratio · (up @ down)) · scale`, with `up` `[rows, rank]` and
/// `down` `[rank, columns]` after flattening (conv kernels flatten to `[rank, in·kh·kw]`).
///
/// At fp32 precision every element is one fixed FMA chain (`gk_lora_gemm_f32`), so the
/// result does not depend on how rows are split. At fp16/bf16 precision it rounds after
/// every operation as PyTorch does (sd-scripts' `--precision fp16`): the factors, the
/// GEMM result, `ratio · M`, `(ratio · M) · scale`, and `W + that`.
public struct LowRankUpdate: WeightUpdate {
    public let source: SafeTensorsFile
    public let up: TensorInfo
    public let down: TensorInfo
    public let rows: Range<Int>
    public let rank: Int
    public let ratio: Float
    /// alpha / rank, or the module's explicit `scale`; 1 without either.
    public let scale: Float
    public let label: String
    public var sourcePath: String { source.path }
    public var requirements: UpdateRequirements { .rowLocal }

    public init(
        source: SafeTensorsFile, up: TensorInfo, down: TensorInfo, rows: Range<Int>, rank: Int,
        ratio: Float, scale: Float, label: String
    ) {
        self.source = source
        self.up = up
        self.down = down
        self.rows = rows
        self.rank = rank
        self.ratio = ratio
        self.scale = scale
        self.label = label
    }

    public func flops(columns: Int) -> Double { 2 * Double(rows.count) * Double(columns) * Double(rank) }

    public func validate(targetRows: Int, columns: Int) throws(EngineError) {
        try checkRows(targetRows)
        guard up.dtype.isConvertibleFloat, down.dtype.isConvertibleFloat else {
            throw EngineError(
                .shapeMismatch, file: sourcePath, module: label,
                "factors are \(up.dtype.rawValue)/\(down.dtype.rawValue); only F16, BF16, F32 and F64 factors can be merged"
            )
        }
        let (upCount, o1) = rows.count.multipliedReportingOverflow(by: rank)
        let (downCount, o2) = rank.multipliedReportingOverflow(by: columns)
        guard rank > 0, !o1, !o2, up.elementCount == upCount, down.elementCount == downCount else {
            throw EngineError(
                .shapeMismatch, file: sourcePath, module: label,
                "up \(up.shape) / down \(down.shape) (rank \(rank)) do not fit \(rows.count) rows x \(columns) columns")
        }
    }

    public func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier {
        LowRankApplier(self, columns: columns, precision: precision)
    }
}

/// `down` converted to fp32 once per worker and target; `up` rows per block.
final class LowRankApplier: RowApplier {
    private let u: LowRankUpdate
    private let columns: Int
    private let precision: MergePrecision
    private let down: UnsafeMutablePointer<Float>
    private var upRows = FloatBuffer()
    private var scratch = FloatBuffer()

    init(_ u: LowRankUpdate, columns: Int, precision: MergePrecision) {
        self.u = u
        self.columns = columns
        self.precision = precision
        let n = u.rank * columns
        down = .allocate(capacity: max(n, 1))
        u.source.withData(of: u.down) { Conversion.toFloat32($0.baseAddress!, from: u.down.dtype, down, count: n) }
        if precision != .fp32 { roundInPlace(down, n, precision) }
    }

    deinit {
        down.deallocate()
        upRows.free()
        scratch.free()
    }

    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
        let r = u.rank
        let m = block.rows.count
        upRows.ensure(m * r)
        let upSize = u.up.dtype.bitCount / 8
        let first = block.rows.lowerBound - u.rows.lowerBound
        u.source.withData(of: u.up) {
            Conversion.toFloat32($0.baseAddress! + first * r * upSize, from: u.up.dtype, upRows.p, count: m * r)
        }
        if precision == .fp32 {
            LoRAKernel.accumulate(
                block.values, lda: columns, up: upRows.p, ldu: r, down: down, ldd: columns,
                rows: m, columns: columns, rank: r, ratio: u.ratio, scale: u.scale)
            return
        }
        roundInPlace(upRows.p, m * r, precision)
        let count = m * columns
        scratch.ensure(count)
        scratch.p.update(repeating: 0, count: count)
        LoRAKernel.accumulate(
            scratch.p, lda: columns, up: upRows.p, ldu: r, down: down, ldd: columns,
            rows: m, columns: columns, rank: r, ratio: 1, scale: 1)
        let round = precision == .fp16 ? roundToHalf : roundToBFloat
        // The ratio is a Python float: fp32 opmath, not rounded (sdscripts-merge.md §2.2).
        let ratio = u.ratio, scale = round(u.scale)
        let target = block.values, s = scratch.p
        for i in 0..<count {
            let mv = round(s[i])
            let a = round(ratio * mv)
            let b = round(a * scale)
            target[i] = round(target[i] + b)
        }
    }
}

/// `W[rows] += (ratio · D) · scale` for a stored delta `D` of the rows' shape: a LoRA
/// up-factor bias (`lora_B.bias`, PEFT `lora_bias`) into the layer's bias, and the
/// full/diff and norm formats.
public struct AddUpdate: WeightUpdate {
    public let source: SafeTensorsFile
    public let delta: TensorInfo
    public let rows: Range<Int>
    public let ratio: Float
    public let scale: Float
    public let label: String
    /// Whether `--precision fp16/bf16` rounds every step (sd-scripts' LoRA bias path);
    /// false for the LyCORIS full and norm kinds, which have no sd-scripts merge.
    public let emulatesPrecision: Bool
    public var sourcePath: String { source.path }
    public var requirements: UpdateRequirements { .rowLocal }

    public init(
        source: SafeTensorsFile, delta: TensorInfo, rows: Range<Int>, ratio: Float, scale: Float, label: String,
        emulatesPrecision: Bool = true
    ) {
        self.source = source
        self.delta = delta
        self.rows = rows
        self.ratio = ratio
        self.scale = scale
        self.label = label
        self.emulatesPrecision = emulatesPrecision
    }

    public func flops(columns: Int) -> Double { 2 * Double(rows.count) * Double(columns) }

    public func validate(targetRows: Int, columns: Int) throws(EngineError) {
        try checkRows(targetRows)
        let (n, o) = rows.count.multipliedReportingOverflow(by: columns)
        guard delta.dtype.isConvertibleFloat, !o, delta.elementCount == n else {
            throw EngineError(
                .shapeMismatch, file: sourcePath, module: label,
                "\(delta.name) \(delta.dtype.rawValue) \(delta.shape) does not fit \(rows.count) rows x \(columns) columns"
            )
        }
    }

    public func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier {
        AddApplier(self, columns: columns, precision: emulatesPrecision ? precision : .fp32)
    }
}

final class AddApplier: RowApplier {
    private let u: AddUpdate
    private let columns: Int
    private let precision: MergePrecision
    private var buffer = FloatBuffer()

    init(_ u: AddUpdate, columns: Int, precision: MergePrecision) {
        self.u = u
        self.columns = columns
        self.precision = precision
    }

    deinit { buffer.free() }

    func apply(_ block: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
        let n = block.rows.count * columns
        buffer.ensure(n)
        let size = u.delta.dtype.bitCount / 8
        let first = (block.rows.lowerBound - u.rows.lowerBound) * columns
        u.source.withData(of: u.delta) {
            Conversion.toFloat32($0.baseAddress! + first * size, from: u.delta.dtype, buffer.p, count: n)
        }
        let d = buffer.p, w = block.values, ratio = u.ratio, scale = u.scale
        if precision == .fp32 {
            for i in 0..<n { w[i] += (ratio * d[i]) * scale }
        } else {
            let round = precision == .fp16 ? roundToHalf : roundToBFloat
            let s = round(scale)
            for i in 0..<n { w[i] = round(w[i] + round(round(ratio * round(d[i])) * s)) }
        }
    }
}

func roundInPlace(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ precision: MergePrecision) {
    switch precision {
    case .fp32: return
    case .fp16: for i in 0..<n { p[i] = roundToHalf(p[i]) }
    case .bf16: for i in 0..<n { p[i] = roundToBFloat(p[i]) }
    }
}

@inline(__always) func roundToHalf(_ x: Float) -> Float { Float(Float16(x)) }
@inline(__always) func roundToBFloat(_ x: Float) -> Float {
    if x.isNaN { return x }
    let u = x.bitPattern
    let r = (u &+ 0x7FFF &+ ((u >> 16) & 1)) & 0xFFFF_0000
    return Float(bitPattern: r)
}

/// A growable fp32 buffer owned by one worker; `free()` releases it.
struct FloatBuffer {
    private(set) var p: UnsafeMutablePointer<Float> = .allocate(capacity: 1)
    private var capacity = 1
    mutating func ensure(_ n: Int) {
        if n <= capacity { return }
        p.deallocate()
        p = .allocate(capacity: n)
        capacity = n
    }
    func free() { p.deallocate() }
}
