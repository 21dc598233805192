/// A small, fast, seedable pseudo-random generator (Steele, Lea and Flood's SplitMix64).
///
/// Every synthetic value graft's fixtures produce comes from one of these, so a seed
/// fully determines a generated file. Not for cryptography.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The internal counter; advanced by a fixed odd constant per call.
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator whose stream depends on `seed` and on a label (for example a tensor
    /// name), so that each tensor gets its own values whatever order tensors are
    /// generated in.
    public init(seed: UInt64, label: String) {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a over the label's UTF-8 bytes
        for b in label.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        var mixer = SplitMix64(seed: seed ^ h)
        state = mixer.next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in [0, 1) with 24 random bits.
    @inline(__always)
    public mutating func nextUniform() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// An approximately standard-normal value: the sum of four 16-bit uniforms,
    /// centred and scaled to unit variance (Irwin–Hall, n = 4). One call to `next()`
    /// per value; the tails are cut at ±2√3 ≈ ±3.46, which suits weight-like data.
    @inline(__always)
    public mutating func nextNormal() -> Float {
        let r = next()
        let s =
            UInt32(truncatingIfNeeded: r & 0xFFFF) + UInt32(truncatingIfNeeded: (r >> 16) & 0xFFFF)
            + UInt32(truncatingIfNeeded: (r >> 32) & 0xFFFF) + UInt32(truncatingIfNeeded: r >> 48)
        // Each term is uniform on [0, 65535]: mean 2·65535, variance 4·(65536²−1)/12.
        return (Float(s) - 131_070.0) * (1.7320508 / 65_536.0)
    }
}
