import FileIO
import SafeTensors

/// Streams synthetic tensors into a safetensors file with bounded memory.
///
/// Layout and header come from `FileLayout`, bytes go through `AtomicOutput` (temporary
/// file, positional writes, fsync, rename). Values are produced in data order:
///
/// - Tensors of at most ``directElementLimit`` elements, constants and non-float dtypes
///   are generated element by element from a generator seeded with the file seed and the
///   tensor's name, so each gets its own values, independent of the other tensors.
/// - Larger random tensors are cut from a **pool**: ``poolByteCount`` bytes of values of
///   one dtype and distribution, generated once per file, written at a start position
///   derived from the tensor's name and wrapping around. **Values therefore repeat**,
///   inside a tensor (every pool length) and across tensors; that is what makes a 6.9 GB
///   checkpoint cost little more than the disk writes. Do not use these files to judge
///   compression or statistics beyond mean and spread.
///
/// Memory: one pool per (dtype, distribution) actually used (a full SDXL checkpoint uses
/// one), plus a staging buffer of ``stagingByteCount`` bytes.
public enum SyntheticWriter {
    /// Size of each value pool (16 MiB: 8 Mi fp16 values, so a value pattern repeats
    /// every 8,388,608 fp16 elements).
    public static let poolByteCount = 16 << 20
    /// Tensors with more elements than this (and a random fill) come from a pool.
    public static let directElementLimit = 1 << 16
    /// Small tensors are generated into one buffer and written together.
    public static let stagingByteCount = 4 << 20

    /// The exact size of the file ``writeSynthetic(tensors:metadata:to:seed:dtype:overwrite:)``
    /// would write.
    public static func fileByteCount(
        tensors: [SyntheticTensor], metadata: [String: String]?,
        dtype: DType? = nil
    ) throws -> Int {
        let list = dtype.map { tensors.converted(to: $0) } ?? tensors
        return try FileLayout(tensors: list.map(\.outputTensor), metadata: metadata).totalByteCount
    }
}

/// Writes a synthetic safetensors file; see ``SyntheticWriter`` for how values are made.
/// - Parameters:
///   - tensors: names, dtypes, shapes and fills (any order; the file uses safetensors order).
///   - metadata: the `__metadata__` map, or nil for none.
///   - path: destination; it appears only when complete.
///   - seed: determines every value; the same inputs and seed give the same bytes.
///   - dtype: when set, replaces every tensor's dtype (e.g. `.F32` for a full-precision copy).
///   - overwrite: replace an existing file at `path`.
/// - Returns: the file size in bytes.
@discardableResult
public func writeSynthetic(
    tensors: [SyntheticTensor], metadata: [String: String]?, to path: String,
    seed: UInt64, dtype: DType? = nil, overwrite: Bool = true
) throws -> Int {
    let list = dtype.map { tensors.converted(to: $0) } ?? tensors
    let layout = try FileLayout(tensors: list.map(\.outputTensor), metadata: metadata, file: path)
    var byName: [String: SyntheticTensor] = [:]
    byName.reserveCapacity(list.count)
    for t in list { byName[t.name] = t }

    let output = try AtomicOutput(path: path, overwrite: overwrite)
    try output.reserve(byteCount: layout.totalByteCount)
    var stream = SyntheticStream(output: output, seed: seed)
    defer { stream.release() }

    // Pools are sized to what the file needs, up to the cap.
    var pooledBytes: [PoolKey: Int] = [:]
    for t in list {
        if let key = PoolKey(t) { pooledBytes[key, default: 0] += t.byteCount }
    }
    stream.poolBudget = pooledBytes

    try layout.headerBytes.withUnsafeBytes { try stream.stage($0, at: 0) }
    for (i, info) in layout.tensors.enumerated() {
        guard let t = byName[info.name] else { continue }
        let offset = layout.fileOffset(ofTensorAt: i)
        if let key = PoolKey(t) {
            try stream.writeFromPool(t, key: key, at: offset)
        } else {
            try stream.generate(t, at: offset)
        }
    }
    try stream.flush()
    try output.commit()
    return layout.totalByteCount
}

/// Identifies a pool: tensors sharing dtype and distribution share one.
struct PoolKey: Hashable {
    let dtype: DType
    let mean: Float
    let std: Float

    /// The pool a tensor is cut from, or nil when it is generated directly.
    init?(_ t: SyntheticTensor) {
        guard t.elementCount > SyntheticWriter.directElementLimit, ValueEncoder(t.dtype) != nil else { return nil }
        switch t.fill {
        case .normal(let s): (mean, std) = (0, s)
        case .normalAround(let m, let s): (mean, std) = (m, s)
        case .constant: return nil
        }
        dtype = t.dtype
    }
}

/// Encodes Float values as the bytes of one floating-point dtype (little-endian).
struct ValueEncoder {
    let dtype: DType
    let width: Int

    init?(_ dtype: DType) {
        switch dtype {
        case .F16, .BF16: width = 2
        case .F32: width = 4
        case .F64: width = 8
        default: return nil
        }
        self.dtype = dtype
    }

    /// Writes `count` values from `next` at `p`.
    @inline(__always)
    func encode(count: Int, into p: UnsafeMutableRawPointer, _ next: () -> Float) {
        switch dtype {
        case .F16:
            let q = p.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { q[i] = Float16(next()).bitPattern.littleEndian }
        case .BF16:
            let q = p.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count {
                let bits = next().bitPattern  // finite values only: round to nearest even
                q[i] = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16).littleEndian
            }
        case .F32:
            let q = p.assumingMemoryBound(to: UInt32.self)
            for i in 0..<count { q[i] = next().bitPattern.littleEndian }
        default:
            let q = p.assumingMemoryBound(to: UInt64.self)
            for i in 0..<count { q[i] = Double(next()).bitPattern.littleEndian }
        }
    }
}

/// The writing state: a staging buffer for a contiguous run of small tensors, and the pools.
struct SyntheticStream {
    let output: AtomicOutput
    let seed: UInt64
    var poolBudget: [PoolKey: Int] = [:]
    private var pools: [PoolKey: UnsafeMutableRawBufferPointer] = [:]
    private let staging: UnsafeMutableRawBufferPointer
    private var stagedStart = 0
    private var stagedCount = 0

    init(output: AtomicOutput, seed: UInt64) {
        self.output = output
        self.seed = seed
        staging = .allocate(byteCount: SyntheticWriter.stagingByteCount, alignment: 64)
    }

    mutating func release() {
        staging.deallocate()
        for p in pools.values { p.deallocate() }
        pools = [:]
    }

    /// Writes out what is staged.
    mutating func flush() throws {
        if stagedCount > 0 {
            try output.write(UnsafeRawBufferPointer(rebasing: staging[0..<stagedCount]), at: stagedStart)
        }
        stagedCount = 0
    }

    /// Room in the staging buffer for bytes that continue the staged run at `offset`.
    private mutating func room(at offset: Int) throws -> Int {
        if stagedCount > 0 && stagedStart + stagedCount != offset { try flush() }
        if stagedCount == staging.count { try flush() }
        if stagedCount == 0 { stagedStart = offset }
        return staging.count - stagedCount
    }

    /// Copies bytes into the staging buffer (used for the header).
    mutating func stage(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = min(try room(at: offset + done), bytes.count - done)
            staging.baseAddress!.advanced(by: stagedCount)
                .copyMemory(from: bytes.baseAddress!.advanced(by: done), byteCount: n)
            stagedCount += n
            done += n
        }
    }

    /// Generates a tensor's values element by element into the staging buffer.
    mutating func generate(_ t: SyntheticTensor, at offset: Int) throws {
        var rng = SplitMix64(seed: seed, label: t.name)
        let total = t.byteCount
        guard let encoder = ValueEncoder(t.dtype) else {
            // Integer, boolean and 8/6/4-bit types: random bytes (booleans 0 or 1).
            var done = 0
            while done < total {
                let n = min(try room(at: offset + done), total - done)
                let q = staging.baseAddress!.advanced(by: stagedCount).assumingMemoryBound(to: UInt8.self)
                for i in 0..<n {
                    let b = UInt8(truncatingIfNeeded: rng.next())
                    q[i] = t.dtype == .BOOL ? b & 1 : b
                }
                stagedCount += n
                done += n
            }
            return
        }
        var done = 0
        while done < total {
            let count = min(try room(at: offset + done) / encoder.width, (total - done) / encoder.width)
            if count == 0 { try flush(); continue }
            let p = staging.baseAddress!.advanced(by: stagedCount)
            switch t.fill {
            case .constant(let v): encoder.encode(count: count, into: p) { v }
            case .normal(let s): encoder.encode(count: count, into: p) { rng.nextNormal() * s }
            case .normalAround(let m, let s): encoder.encode(count: count, into: p) { m + rng.nextNormal() * s }
            }
            stagedCount += count * encoder.width
            done += count * encoder.width
        }
    }

    /// Writes a large tensor straight from its pool, starting at a name-derived position.
    mutating func writeFromPool(_ t: SyntheticTensor, key: PoolKey, at offset: Int) throws {
        try flush()
        let pool = self.pool(for: key)
        let width = key.dtype.bitCount / 8
        let poolCount = pool.count / width
        var rng = SplitMix64(seed: seed, label: t.name)
        var start = Int(rng.next() % UInt64(poolCount))
        var remaining = t.elementCount
        var position = offset
        while remaining > 0 {
            let n = min(remaining, poolCount - start)
            try output.write(UnsafeRawBufferPointer(rebasing: pool[start * width..<(start + n) * width]), at: position)
            position += n * width
            remaining -= n
            start = 0
        }
    }

    private mutating func pool(for key: PoolKey) -> UnsafeMutableRawBufferPointer {
        if let p = pools[key] { return p }
        let encoder = ValueEncoder(key.dtype)!
        let bytes = min(SyntheticWriter.poolByteCount, poolBudget[key] ?? SyntheticWriter.poolByteCount)
        let count = max(1, bytes / encoder.width)
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: count * encoder.width, alignment: 64)
        var rng = SplitMix64(seed: seed, label: "pool/\(key.dtype.rawValue)/\(key.mean)/\(key.std)")
        let (m, s) = (key.mean, key.std)
        encoder.encode(count: count, into: p.baseAddress!) { m + rng.nextNormal() * s }
        pools[key] = p
        return p
    }
}
