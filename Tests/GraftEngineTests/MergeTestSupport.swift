import FileIO
import Foundation
import GraftEngine
import SafeTensors
import Testing

// Helpers shared by ConformanceTests and MergePropertyTests: temporary directories,
// tiny hand-written safetensors files, decoding tensors to Float (independently of the
// engine's conversion kernels), running a merge through the library, and fp16 ulps.

/// A temporary directory removed when the value is released.
final class ScratchDirectory {
    let url: URL
    init(_ label: String = "merge") throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("graft-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    /// Names of every entry (hidden ones included).
    func entries() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? [] }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// A tensor given by its values, written in `dtype` (rounded to nearest even).
struct TensorSpec {
    var name: String
    var dtype: DType
    var shape: [Int]
    var values: [Float]

    init(_ name: String, _ dtype: DType, _ shape: [Int], _ values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for shape \(shape)")
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.values = values
    }
}

enum Encode {
    /// Round-to-nearest-even fp32 -> bf16 bits (NaN kept quiet).
    static func bfloat16Bits(_ x: Float) -> UInt16 {
        if x.isNaN { return UInt16(truncatingIfNeeded: x.bitPattern >> 16) | 0x40 }
        let u = x.bitPattern
        let rounded = u &+ 0x7FFF &+ ((u >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    static func bytes(of values: [Float], as dtype: DType) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(values.count * dtype.bitCount / 8)
        func append<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        for v in values {
            switch dtype {
            case .F16: append(Float16(v).bitPattern)
            case .BF16: append(bfloat16Bits(v))
            case .F32: append(v.bitPattern)
            case .F64: append(Double(v).bitPattern)
            default: preconditionFailure("unsupported dtype \(dtype) in test data")
            }
        }
        return out
    }

    /// The value after a round trip through `dtype`.
    static func rounded(_ x: Float, to dtype: DType) -> Float {
        switch dtype {
        case .F16: return Float(Float16(x))
        case .BF16: return Float(bitPattern: UInt32(bfloat16Bits(x)) << 16)
        default: return x
        }
    }
}

/// Writes a safetensors file with FileLayout + AtomicOutput.
func writeTensors(_ tensors: [TensorSpec], metadata: [String: String]? = nil, to path: String) throws {
    let layout = try FileLayout(
        tensors: tensors.map { OutputTensor(name: $0.name, dtype: $0.dtype, shape: $0.shape.map(UInt64.init)) },
        metadata: metadata, file: path)
    let out = try AtomicOutput(path: path, overwrite: true)
    try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
    let byName = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0) })
    for (i, info) in layout.tensors.enumerated() {
        let t = byName[info.name]!
        let bytes = Encode.bytes(of: t.values, as: t.dtype)
        try bytes.withUnsafeBytes { try out.write($0, at: layout.fileOffset(ofTensorAt: i)) }
    }
    try out.commit()
}

/// Decodes a floating tensor to Float (exact for F16/BF16/F32).
func floats(_ file: SafeTensorsFile, _ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws
    -> [Float]
{
    let t = try #require(
        file.tensor(named: name), "\(file.path) has no tensor '\(name)'", sourceLocation: sourceLocation)
    return decode(file.data(of: t), t.dtype, t.elementCount)
}

func decode(_ raw: UnsafeRawBufferPointer, _ dtype: DType, _ count: Int) -> [Float] {
    (0..<count).map { i -> Float in
        switch dtype {
        case .F16: return Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        case .BF16: return Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
        case .F32: return Float(bitPattern: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
        case .F64: return Float(Double(bitPattern: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))
        default: return .nan
        }
    }
}

func tensorBytes(_ file: SafeTensorsFile, _ name: String) -> [UInt8]? {
    file.tensor(named: name).map { Array(file.data(of: $0)) }
}

/// The spacing of fp16 at |x| (numpy.spacing for float16), as Double.
func ulpFP16(_ x: Float) -> Double {
    let a = Float16(abs(x))
    if a.isInfinite || a.isNaN { return .infinity }
    return Double(a.ulp)
}

/// The spacing of bf16 at |x| (what check.py uses for BF16).
func ulpBF16(_ x: Float) -> Double {
    let a = Double(abs(x))
    if a == 0 { return pow(2, -133) }
    return max(pow(2, floor(log2(a)) - 7), pow(2, -133))
}

func ulp(_ x: Float, _ dtype: DType) -> Double {
    switch dtype {
    case .F16: return ulpFP16(x)
    case .BF16: return ulpBF16(x)
    case .F32: return Double(abs(x).ulp)
    default: return Double(abs(Double(x)).ulp)
    }
}

/// Result of comparing one tensor element-wise against expected values.
struct Agreement {
    var maxAbs = 0.0
    var maxUlps = 0.0
    var beyond = 0
    var nanMismatch = 0
    var firstBad: String? = nil
}

/// check.py's rule: |out - exp| <= max(ulp(exp), floor), NaN matches NaN; `ulpsAllowed`
/// widens the ulp term (1 for the conformance rule).
func agreement(_ got: [Float], _ expected: [Float], dtype: DType, ulpsAllowed: Double = 1, floor: Double = 1e-6)
    -> Agreement
{
    var a = Agreement()
    for i in 0..<min(got.count, expected.count) {
        let g = got[i], e = expected[i]
        if g.isNaN || e.isNaN {
            if g.isNaN != e.isNaN {
                a.nanMismatch += 1
                if a.firstBad == nil { a.firstBad = "element \(i): \(g) vs expected \(e)" }
            }
            continue
        }
        if g == e { continue }
        let d = abs(Double(g) - Double(e))
        let u = ulp(e, dtype)
        a.maxAbs = max(a.maxAbs, d)
        a.maxUlps = max(a.maxUlps, d / u)
        if d > max(ulpsAllowed * u, floor) {
            a.beyond += 1
            if a.firstBad == nil { a.firstBad = "element \(i): \(g) vs expected \(e) (\(d / u) ulps)" }
        }
    }
    return a
}

/// Library merge: plan + execute into `out`.
struct LibraryMerge {
    var savePrecision: DType? = .F16
    var precision: MergePrecision = .fp32
    var allowUnmatched = false
    var threads: Int? = nil
    var chunkElements: Int? = nil
    var compat: MergeCompat = .lycoris

    @discardableResult
    func run(checkpoint: String, adapters: [(String, Double)], output: String) throws -> (MergePlan, ExecutionReport) {
        let ckpt = try SafeTensorsFile(path: checkpoint)
        let inputs = try adapters.map { MergeInput(file: try SafeTensorsFile(path: $0.0), ratio: $0.1) }
        var request = MergeRequest(
            checkpoint: ckpt, adapters: inputs, savePrecision: savePrecision, precision: precision,
            allowUnmatched: allowUnmatched, outputPath: output, graftVersion: "test")
        request.compat = compat
        let plan = try MergePlanner.plan(request)
        var executor = Executor()
        if let threads { executor.threads = threads }
        if let chunkElements { executor.chunkElements = chunkElements }
        let out = try AtomicOutput(path: output, overwrite: true, inputs: [checkpoint] + adapters.map(\.0))
        do {
            let report = try executor.run(plan.execution, into: out)
            try out.commit()
            return (plan, report)
        } catch {
            out.abort()
            throw error
        }
    }
}

func fileBytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }
