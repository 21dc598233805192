import CVips
import Foundation

/// How the alpha becomes a mask value (doc §B1 step 2).
public enum AlphaMode: String, Sendable, Codable, CaseIterable {
    /// `m = A > threshold ? 255 : 0`.
    case binary
    /// `m = A` (sd-scripts' alpha_mask weight as a grey level).
    case linear
}

/// The settings of `graft masks` (doc §B1 steps 2–7).
public struct MaskOptions: Sendable, Equatable {
    public var alpha: AlphaMode = .binary
    /// Binary threshold, 0–254.
    public var threshold: Int = 0
    public var invert = false
    /// Radius in pixels of the grey dilation (max over a Euclidean disk), 0 = none.
    public var dilate = 0
    /// Radius in pixels of the grey erosion (min over a Euclidean disk), after dilation.
    public var erode = 0
    /// Gaussian feathering radius R (σ = R/2, kernel radius ⌈3σ⌉), 0 = none.
    public var feather: Double = 0
    /// Dilate by ⌈R⌉ before feathering, so the feathered edge lies outside the original region.
    public var featherOutward = false
    /// Write no mask (a warning instead) for an image without alpha, rather than an all-white one.
    public var skipWithoutAlpha = false
    /// Minimum weight W in 0…1: `m' = 255·W + m·(1−W)`.
    public var minWeight: Double = 0
    /// Mean weight below which an image is reported.
    public var warnMean: Double = 0.05

    public init() {}

    /// Checks the ranges.
    /// - Throws: ``DatasetError`` `.invalidOption` naming the option.
    public func validate() throws(DatasetError) {
        if !(0...254).contains(threshold) {
            throw DatasetError(.invalidOption, path: "--threshold", "must be between 0 and 254 (got \(threshold))")
        }
        if dilate < 0 { throw DatasetError(.invalidOption, path: "--dilate", "must be at least 0") }
        if erode < 0 { throw DatasetError(.invalidOption, path: "--erode", "must be at least 0") }
        if !(feather >= 0 && feather <= 1000) {
            throw DatasetError(.invalidOption, path: "--feather", "must be between 0 and 1000")
        }
        if !(minWeight >= 0 && minWeight <= 1) {
            throw DatasetError(.invalidOption, path: "--min-weight", "must be between 0 and 1")
        }
        if !(warnMean >= 0 && warnMean <= 1) {
            throw DatasetError(.invalidOption, path: "--warn-mean", "must be between 0 and 1")
        }
    }
}

/// Per-image numbers of a mask (doc §B1 step 7).
public struct MaskStatistics: Sendable, Equatable, Codable {
    /// `Σm / (255·N)`: the image's effective loss scale in sd-scripts.
    public var meanWeight: Double
    /// Fraction of pixels that are 0.
    public var zeroFraction: Double

    public init(_ mask: [UInt8]) {
        var sum = 0, zeros = 0
        for v in mask {
            sum += Int(v)
            if v == 0 { zeros += 1 }
        }
        let n = Double(max(mask.count, 1))
        meanWeight = Double(sum) / (255 * n)
        zeroFraction = Double(zeros) / n
    }
}

/// The mask computation of `graft masks` on one image's alpha (doc §B1 steps 1–6).
public enum MaskPipeline {
    /// The mask for an image: alpha mapping, invert, dilate, erode, feather, minimum weight,
    /// round half up and clamp.
    /// - Parameter alpha: row-major 8-bit alpha, or nil for an image without alpha (A = 255).
    /// - Throws: ``DatasetError`` `.io` when libvips cannot blur (out of memory).
    public static func mask(alpha: [UInt8]?, width: Int, height: Int, options o: MaskOptions) throws(DatasetError)
        -> [UInt8]
    {
        let n = width * height
        var m = [UInt8](repeating: 0, count: n)
        if let alpha {
            precondition(alpha.count == n, "alpha must hold width * height samples")
            switch o.alpha {
            case .binary:
                let t = UInt8(clamping: o.threshold)
                for i in 0..<n { m[i] = alpha[i] > t ? 255 : 0 }
            case .linear: m = alpha
            }
        } else {
            // A = 255 everywhere: binary gives 255 for every threshold 0...254, linear gives 255.
            m = [UInt8](repeating: 255, count: n)
        }
        if o.invert { for i in 0..<n { m[i] = 255 - m[i] } }
        if o.dilate > 0 { m = diskFilter(m, width: width, height: height, radius: o.dilate, maximum: true) }
        if o.erode > 0 { m = diskFilter(m, width: width, height: height, radius: o.erode, maximum: false) }
        if o.feather > 0 && o.featherOutward {
            m = diskFilter(m, width: width, height: height, radius: Int(o.feather.rounded(.up)), maximum: true)
        }
        if o.feather <= 0 && o.minWeight == 0 { return m }
        var f = m.map(Double.init)
        if o.feather > 0 {
            guard let blurred = gaussianBlur(f, width: width, height: height, sigma: o.feather / 2) else {
                throw DatasetError(.io, path: "", "libvips could not blur the mask: \(Vips.takeError("unknown error"))")
            }
            f = blurred
        }
        let w = o.minWeight
        var out = [UInt8](repeating: 0, count: n)
        for i in 0..<n {
            let v = 255 * w + f[i] * (1 - w)
            out[i] = UInt8(min(255, max(0, (v + 0.5).rounded(.down))))
        }
        return out
    }

    /// Half-widths of a Euclidean disk of radius r per row offset dy = -r...r: the largest w
    /// with w² + dy² ≤ r².
    static func diskHalfWidths(_ r: Int) -> [Int] {
        (-r...r).map { dy in
            var w = 0
            while (w + 1) * (w + 1) + dy * dy <= r * r { w += 1 }
            return w
        }
    }

    /// Grey max (dilation) or min (erosion) over the disk `dx² + dy² ≤ r²` with edge pixels
    /// clamped. Clamping only moves an offset towards the centre, so it equals the extreme
    /// over the disk's part inside the image. Work O(N·r), memory 3 images: the row extremes
    /// over [x-w, x+w] are widened one step at a time (w = 0...r), and each is applied to the
    /// disk rows dy whose half-width is w.
    static func diskFilter(_ src: [UInt8], width: Int, height: Int, radius r: Int, maximum: Bool) -> [UInt8] {
        guard width > 0, height > 0, r > 0 else { return src }
        let halves = diskHalfWidths(r)
        var current = src
        var next = src
        var out = src
        for w in 0...r {
            if w > 0 {
                widen(current, into: &next, width: width, height: height, maximum: maximum)
                swap(&current, &next)
            }
            for (k, hw) in halves.enumerated() where hw == w {
                let dy = k - r
                let first = max(0, -dy), end = min(height, height - dy)
                guard first < end else { continue }  // |dy| ≥ height: no row of the image
                let rows = first..<end
                current.withUnsafeBufferPointer { c in
                    out.withUnsafeMutableBufferPointer { o in
                        for y in rows {
                            let dst = y * width, srcRow = (y + dy) * width
                            if maximum {
                                for x in 0..<width { o[dst + x] = max(o[dst + x], c[srcRow + x]) }
                            } else {
                                for x in 0..<width { o[dst + x] = min(o[dst + x], c[srcRow + x]) }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Row extremes over [x-w, x+w] from those over [x-w+1, x+w-1]:
    /// [x-w, x+w] = [x-w, x+w-2] ∪ {x} ∪ [x-w+2, x+w], clipped to the row.
    private static func widen(_ prev: [UInt8], into next: inout [UInt8], width: Int, height: Int, maximum: Bool) {
        prev.withUnsafeBufferPointer { p in
            next.withUnsafeMutableBufferPointer { n in
                for y in 0..<height {
                    let base = y * width
                    for x in 0..<width {
                        var v = p[base + x]
                        if x > 0 { v = maximum ? max(v, p[base + x - 1]) : min(v, p[base + x - 1]) }
                        if x + 1 < width { v = maximum ? max(v, p[base + x + 1]) : min(v, p[base + x + 1]) }
                        n[base + x] = v
                    }
                }
            }
        }
    }

    /// Gaussian blur with σ, kernel radius ⌈3σ⌉, edge pixels clamped: libvips'
    /// `vips_gaussblur` in float precision, its mask cut between the taps at ⌈3σ⌉ and
    /// ⌈3σ⌉ + 1. libvips accepts a cut-off of 0.001 at least, which for σ < ~0.62 drops the
    /// outermost taps (relative weight below 3e-4: under 0.2 of 255). Nil when libvips fails.
    static func gaussianBlur(_ src: [Double], width: Int, height: Int, sigma: Double) -> [Double]? {
        guard sigma > 0, width > 0, height > 0 else { return src }
        let r = (3 * sigma).rounded(.up)
        let cut = exp(-(r * r + (r + 1) * (r + 1)) / (4 * sigma * sigma))
        var out = [Double](repeating: 0, count: src.count)
        let status = src.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { o in
                graft_vips_gaussblur(
                    i.baseAddress!, Int32(width), Int32(height), sigma, max(cut, 0.001), o.baseAddress!)
            }
        }
        return status == 0 ? out : nil
    }
}
