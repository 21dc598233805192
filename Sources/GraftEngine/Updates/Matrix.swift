import SafeTensors

/// A small dense fp32 matrix, row-major: an adapter factor (or a product of factors)
/// converted once per worker. Factors are at most `rows × rank` or `rank × columns`
/// of one layer, so they live in ordinary arrays.
struct Matrix {
    var rows: Int
    var columns: Int
    var values: [Float]

    init(rows: Int, columns: Int, values: [Float]) {
        precondition(values.count == rows * columns)
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    init(zeros rows: Int, _ columns: Int) {
        self.init(rows: rows, columns: columns, values: [Float](repeating: 0, count: rows * columns))
    }

    /// A tensor of `file` as a `rows × (elements / rows)` matrix (conv kernels flatten
    /// into the columns). The caller has checked the shape and the dtype.
    init(_ t: TensorInfo, of file: SafeTensorsFile, rows: Int? = nil) {
        let n = t.elementCount
        let r = rows ?? (t.shape.isEmpty ? 1 : Int(t.shape[0]))
        var v = [Float](repeating: 0, count: n)
        v.withUnsafeMutableBufferPointer { out in
            file.withData(of: t) { Conversion.toFloat32($0.baseAddress!, from: t.dtype, out.baseAddress!, count: n) }
        }
        self.init(rows: r, columns: r > 0 ? n / r : 0, values: v)
    }

    subscript(i: Int, j: Int) -> Float {
        get { values[i * columns + j] }
        set { values[i * columns + j] = newValue }
    }

    func transposed() -> Matrix {
        var t = Matrix(zeros: columns, rows)
        for i in 0..<rows {
            for j in 0..<columns { t.values[j * rows + i] = values[i * columns + j] }
        }
        return t
    }

    /// `self @ other`, in the fixed FMA order of ``LoRAKernel``.
    func multiplied(by other: Matrix) -> Matrix {
        precondition(columns == other.rows)
        var out = Matrix(zeros: rows, other.columns)
        values.withUnsafeBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                out.values.withUnsafeMutableBufferPointer { c in
                    if rows == 0 || other.columns == 0 { return }
                    LoRAKernel.accumulate(
                        c.baseAddress!, lda: other.columns, up: a.baseAddress!, ldu: columns,
                        down: b.baseAddress!, ldd: other.columns, rows: rows, columns: other.columns,
                        rank: columns, ratio: 1, scale: 1)
                }
            }
        }
        return out
    }

    /// The Tucker contraction of a core `t` `(p, q, kh, kw)` with `b` `(q, n)`:
    /// `K[p, (c, h, w)] = Σ_q t[p, q, h, w] · b[q, c]`, a `p × (n·kh·kw)` matrix. LoCon
    /// (`lora_mid` with `lora_down`), LoHa (`hada_t` with `hada_w_b`) and LoKr (`lokr_t2`
    /// with `lokr_w2_b`) all reduce to `A @ K` with it.
    static func tucker(core t: TensorInfo, of file: SafeTensorsFile, _ b: Matrix) -> Matrix {
        let p = Int(t.shape[0]), q = Int(t.shape[1])
        let area = Int(t.shape[2]) * Int(t.shape[3])
        let core = Matrix(t, of: file)  // p × (q · area)
        precondition(q == b.rows)
        let n = b.columns
        var k = Matrix(zeros: p, n * area)
        for pi in 0..<p {
            for qi in 0..<q {
                for c in 0..<n {
                    let bv = b[qi, c]
                    for hw in 0..<area {
                        k.values[pi * n * area + c * area + hw] += core.values[pi * q * area + qi * area + hw] * bv
                    }
                }
            }
        }
        return k
    }
}
