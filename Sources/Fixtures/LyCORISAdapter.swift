import SafeTensors

/// Options of a synthetic LyCORIS LoHa (`algo=loha`, no Tucker core).
public struct LoHaOptions: Sendable, Equatable {
    /// `network_dim`: the rank of each of the two Hadamard factors.
    public var dim: Int
    /// `network_alpha` (scale `alpha / dim`).
    public var alpha: Float
    public var dtype: DType
    /// Spread of `hada_w1_a` / `hada_w2_a` values.
    public var aStd: Float
    /// Spread of `hada_w1_b` / `hada_w2_b` values.
    public var bStd: Float

    /// The defaults keep the delta of the order of a trained LoRA's (about 1e-3 per
    /// element at dim 16), so merges stay finite in fp16.
    public init(dim: Int = 16, alpha: Float = 8, dtype: DType = .F16, aStd: Float = 0.1, bStd: Float = 0.1) {
        self.dim = dim
        self.alpha = alpha
        self.dtype = dtype
        self.aStd = aStd
        self.bStd = bStd
    }
}

/// Options of a synthetic LyCORIS LoKr with both Kronecker factors whole (`lokr_w1`,
/// `lokr_w2`; no `_a`/`_b` decomposition, so the scale is 1 whatever alpha says).
public struct LoKrOptions: Sendable, Equatable {
    /// LyCORIS's `factor`: the preferred size of the small side of each dimension.
    public var factor: Int
    /// The stored `alpha` (LyCORIS ignores it when both sides are whole).
    public var alpha: Float
    public var dtype: DType
    /// Spread of the small factor `lokr_w1` values.
    public var w1Std: Float
    /// Spread of the large factor `lokr_w2` values.
    public var w2Std: Float

    public init(factor: Int = 8, alpha: Float = 1, dtype: DType = .F16, w1Std: Float = 0.1, w2Std: Float = 0.02) {
        self.factor = factor
        self.alpha = alpha
        self.dtype = dtype
        self.w1Std = w1Std
        self.w2Std = w2Std
    }
}

/// Options of the DoRA magnitudes (`dora_scale`) added to a kohya LoRA.
public struct DoRAOptions: Sendable, Equatable {
    /// Which axis the magnitude is taken along (LyCORIS's `wd_on_output`).
    public enum Axis: Sendable, Equatable {
        /// One magnitude per output row: `[out, 1]` (conv `[out, 1, 1, 1]`).
        case output
        /// One magnitude per input channel: `[1, in]` (conv `[1, in, 1, 1]`).
        case input
    }

    public var axis: Axis
    /// The spread of the checkpoint weights the magnitudes belong to (the Fixtures
    /// architectures use 0.02); each magnitude is drawn around that spread times the
    /// square root of the length of the row (or column) it scales.
    public var weightStd: Float
    /// Relative spread of the magnitudes around that norm.
    public var relativeSpread: Float
    public var dtype: DType

    public init(axis: Axis = .output, weightStd: Float = 0.02, relativeSpread: Float = 0.05, dtype: DType = .F16) {
        self.axis = axis
        self.weightStd = weightStd
        self.relativeSpread = relativeSpread
        self.dtype = dtype
    }
}

/// Synthetic LyCORIS adapters in the kohya naming LyCORIS uses (`lora_unet_…`,
/// `lora_te1_…`), for the module targets of ``KohyaLoRA``: LoHa, LoKr and DoRA.
public enum LyCORISAdapter {
    /// The UNet attention and feed-forward modules of an SDXL checkpoint: the
    /// transformer blocks' `attn1`/`attn2` `to_q`/`to_k`/`to_v`/`to_out.0`,
    /// `ff.net.0.proj`, `ff.net.2`, and each Transformer2D's `proj_in`/`proj_out`
    /// (722 modules at full size).
    public static func sdxlUNetTargets(checkpoint: [SyntheticTensor]) -> [LoRATarget] {
        KohyaLoRA.sdxlTargets(checkpoint: checkpoint, includeConv: false, includeTextEncoders: false)
    }

    // MARK: LoHa

    /// `.alpha` [], `.hada_w1_a` / `.hada_w2_a` [out, dim] and `.hada_w1_b` / `.hada_w2_b`
    /// [dim, in·kh·kw] (LyCORIS flattens a conv's input side) per target, sorted by name.
    public static func loha(targets: [LoRATarget], options o: LoHaOptions) -> [SyntheticTensor] {
        var out: [SyntheticTensor] = []
        out.reserveCapacity(targets.count * 5)
        for m in targets {
            let flatIn = m.inFeatures * m.kernel.reduce(1, *)
            out.append(
                SyntheticTensor(name: m.moduleName + ".alpha", dtype: o.dtype, shape: [], fill: .constant(o.alpha)))
            for w in ["w1", "w2"] {
                out.append(
                    SyntheticTensor(
                        name: m.moduleName + ".hada_\(w)_a", dtype: o.dtype, shape: [m.outFeatures, o.dim],
                        fill: .normal(std: o.aStd)))
                out.append(
                    SyntheticTensor(
                        name: m.moduleName + ".hada_\(w)_b", dtype: o.dtype, shape: [o.dim, flatIn],
                        fill: .normal(std: o.bStd)))
            }
        }
        return out.sortedByName()
    }

    // MARK: LoKr

    /// LyCORIS's `factorization(dimension, factor)`: `(m, n)` with `m · n == dimension`
    /// and `m <= n`. When `factor` divides the dimension that is `factor` and the
    /// quotient, smaller first; otherwise the most balanced split whose small side does
    /// not exceed `factor` (any size when `factor` is negative).
    public static func factorization(_ dimension: Int, factor: Int) -> (Int, Int) {
        if factor > 0, dimension % factor == 0 {
            let m = factor, n = dimension / factor
            return m > n ? (n, m) : (m, n)
        }
        let limit = factor < 0 ? dimension : factor
        var (m, n) = (1, dimension)
        let length = m + n
        while m < n {
            var newM = m + 1
            while dimension % newM != 0 { newM += 1 }
            let newN = dimension / newM
            if newM + newN > length || newM > limit { break }
            (m, n) = (newM, newN)
        }
        return m > n ? (n, m) : (m, n)
    }

    /// `.alpha` [], `.lokr_w1` [a, c] and `.lokr_w2` [b, d] (conv: [b, d, kh, kw]) per
    /// target, where `(a, b) = factorization(out)` and `(c, d) = factorization(in)`, so
    /// `kron(w1, w2)` is the [out, in] delta. Sorted by name.
    public static func lokr(targets: [LoRATarget], options o: LoKrOptions) -> [SyntheticTensor] {
        var out: [SyntheticTensor] = []
        out.reserveCapacity(targets.count * 3)
        for m in targets {
            let (a, b) = factorization(m.outFeatures, factor: o.factor)
            let (c, d) = factorization(m.inFeatures, factor: o.factor)
            out.append(
                SyntheticTensor(name: m.moduleName + ".alpha", dtype: o.dtype, shape: [], fill: .constant(o.alpha)))
            out.append(
                SyntheticTensor(
                    name: m.moduleName + ".lokr_w1", dtype: o.dtype, shape: [a, c], fill: .normal(std: o.w1Std))
            )
            out.append(
                SyntheticTensor(
                    name: m.moduleName + ".lokr_w2", dtype: o.dtype, shape: [b, d] + m.kernel,
                    fill: .normal(std: o.w2Std)))
        }
        return out.sortedByName()
    }

    // MARK: DoRA

    /// The `.dora_scale` magnitude of each target: `[out, 1]` (conv `[out, 1, 1, 1]`) on
    /// the output axis, `[1, in]` (conv `[1, in, 1, 1]`) on the input axis (LyCORIS's
    /// shapes), with positive values around the norms of the rows (input channels) of a weight of spread
    /// `options.weightStd`. Sorted by name.
    public static func doraScales(targets: [LoRATarget], options o: DoRAOptions) -> [SyntheticTensor] {
        targets.map { m in
            let isConv = !m.kernel.isEmpty
            let shape: [Int]
            let length: Int  // elements of the weight each magnitude normalises
            switch o.axis {
            case .output:
                shape = [m.outFeatures, 1] + (isConv ? [1, 1] : [])
                length = m.inFeatures * m.kernel.reduce(1, *)
            case .input:
                shape = [1, m.inFeatures] + (isConv ? [1, 1] : [])
                length = m.outFeatures * m.kernel.reduce(1, *)
            }
            let norm = o.weightStd * Float(length).squareRoot()
            return SyntheticTensor(
                name: m.moduleName + ".dora_scale", dtype: o.dtype, shape: shape,
                fill: .normalAround(mean: norm, std: norm * o.relativeSpread))
        }.sortedByName()
    }

    /// A kohya LoRA for the targets with a DoRA magnitude on every module (LyCORIS
    /// `algo=lora`, `dora_wd=True`). Sorted by name.
    public static func dora(
        targets: [LoRATarget], lora: KohyaLoRAOptions, dora: DoRAOptions = DoRAOptions()
    ) -> [SyntheticTensor] {
        (KohyaLoRA.tensors(for: targets, options: lora) + doraScales(targets: targets, options: dora)).sortedByName()
    }

    // MARK: Metadata

    /// The algorithm a file was trained with, for ``metadata(_:algo:dim:alpha:title:comment:)``.
    public enum Algo: Sendable, Equatable {
        case loha
        case lokr(factor: Int)
        case dora(axis: DoRAOptions.Axis)
    }

    /// Training metadata as sd-scripts writes it for a LyCORIS network
    /// (`ss_network_module` `lycoris.kohya`, the algorithm in `ss_network_args`).
    public static func metadata(
        _ base: KohyaLoRA.Base, algo: Algo, dim: Int, alpha: Float, title: String,
        comment: String = "None", includeTextEncoders: Bool = false
    ) -> [String: String] {
        let options = KohyaLoRAOptions(rank: dim, alpha: alpha, includeTextEncoders: includeTextEncoders)
        var m = KohyaLoRA.metadata(base, options: options, title: title, comment: comment)
        m["ss_network_module"] = "lycoris.kohya"
        switch algo {
        case .loha:
            m["ss_network_args"] = #"{"algo": "loha", "preset": "attn-mlp"}"#
            m["modelspec.architecture"] = m["modelspec.architecture"].map { $0.replacing("/lora", with: "/loha") }
        case .lokr(let factor):
            m["ss_network_args"] =
                #"{"algo": "lokr", "preset": "attn-mlp", "factor": "\#(factor)", "full_matrix": "True"}"#
            m["modelspec.architecture"] = m["modelspec.architecture"].map { $0.replacing("/lora", with: "/lokr") }
        case .dora(let axis):
            let onOutput = axis == .output ? "True" : "False"
            m["ss_network_args"] = #"{"algo": "lora", "dora_wd": "True", "wd_on_output": "\#(onOutput)"}"#
        }
        return m
    }
}
