import FileIO
import Foundation
import Testing
@testable import GraftEngine
import SafeTensors

// Engine-level tests of `graft convert`: ConvertPlanner + Executor on tiny files built
// here with FileLayout + AtomicOutput. Expected fp16/bf16 bit patterns are written out
// by hand (numpy/PyTorch semantics, see CKernels.h).

/// A per-test directory, removed when released.
private final class ConvertScratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("graft-convert-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// Writes a safetensors file from (name, dtype, shape, raw little-endian bytes).
private func writeRaw(
    _ tensors: [(String, DType, [UInt64], [UInt8])], metadata: [String: String]? = nil, to path: String
) throws {
    let layout = try FileLayout(
        tensors: tensors.map { OutputTensor(name: $0.0, dtype: $0.1, shape: $0.2) }, metadata: metadata, file: path)
    let out = try AtomicOutput(path: path, overwrite: true)
    try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
    for (i, info) in layout.tensors.enumerated() {
        let bytes = tensors.first { $0.0 == info.name }!.3
        try bytes.withUnsafeBytes { try out.write($0, at: layout.fileOffset(ofTensorAt: i)) }
    }
    try out.commit()
}

private func le<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}

private func u16s(_ raw: UnsafeRawBufferPointer) -> [UInt16] {
    (0..<raw.count / 2).map { raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) }
}

/// fp32 inputs and the fp16 bits numpy's astype(float16) gives for them.
private let convertF32ToF16Cases: [(UInt32, UInt16, String)] = [
    (0x0000_0000, 0x0000, "+0"),
    (0x8000_0000, 0x8000, "-0"),
    (Float(1).bitPattern, 0x3C00, "1"),
    (Float(-2.5).bitPattern, 0xC100, "-2.5"),
    (Float(65504).bitPattern, 0x7BFF, "max fp16"),
    (Float(65519.996).bitPattern, 0x7BFF, "just below the overflow tie"),
    (Float(65520).bitPattern, 0x7C00, "overflow tie -> +inf"),
    (Float(-1e10).bitPattern, 0xFC00, "overflow -> -inf"),
    (Float.infinity.bitPattern, 0x7C00, "+inf stays (not an overflow)"),
    (Float(1 + 1.0 / 2048).bitPattern, 0x3C00, "tie between 1 and 1+2^-10 -> even (1)"),
    (Float(1 + 3.0 / 2048).bitPattern, 0x3C02, "tie -> even (1+2^-9)"),
    (Float(0x1p-24).bitPattern, 0x0001, "smallest subnormal"),
    (Float(0x1p-25).bitPattern, 0x0000, "half the smallest subnormal -> even (0)"),
    (Float(0x3p-25).bitPattern, 0x0002, "1.5 x smallest subnormal -> even (2)"),
    (Float(0x3p-26).bitPattern, 0x0001, "0.75 x smallest subnormal -> 1"),
    (Float(-0x1p-14).bitPattern, 0x8400, "-smallest normal"),
    (0x7FC0_0000, 0x7E00, "quiet NaN"),
    (0xFFC0_0001, 0xFE00, "negative NaN, low payload bits dropped"),
    (0x7F80_0001, 0x7C01, "signalling NaN whose payload vanishes -> 0x7C01"),
    (0x7FA0_0000, 0x7D00, "signalling NaN, payload kept"),
]

@Suite("ConvertTests: planner and executor")
struct ConvertTests {
    func run(
        _ plan: ConvertPlan, to path: String, threads: Int = 2, chunk: Int? = nil,
        encoding: OutputEncoding = .raw
    ) throws -> ExecutionReport {
        let out = try AtomicOutput(path: path, overwrite: true)
        var e = Executor()
        e.threads = threads
        e.encoding = encoding
        if let chunk { e.chunkElements = chunk; e.copyChunkBytes = chunk }
        let r = try e.run(plan.execution, into: out)
        try out.commit()
        return r
    }

    @Test("fp32 -> fp16 gives numpy's bits, counts overflow per tensor, keeps NaN")
    func f32ToF16Bits() throws {
        let dir = try ConvertScratch()
        let inputs = convertF32ToF16Cases.map(\.0)
        try writeRaw(
            [
                ("w", .F32, [UInt64(inputs.count)], le(inputs)),
                ("clean", .F32, [2], le([Float(0.5).bitPattern, Float(-0.25).bitPattern])),
            ], to: dir.path("in.safetensors"))
        let f = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let plan = try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .F16))
        #expect(plan.converted == ["clean", "w"] || Set(plan.converted) == ["clean", "w"])
        let r = try run(plan, to: dir.path("out.safetensors"))
        #expect(r.overflows == [TensorOverflow(name: "w", count: 2)])
        let o = try SafeTensorsFile(path: dir.path("out.safetensors"))
        let w = try #require(o.tensor(named: "w"))
        #expect(w.dtype == .F16)
        let got = u16s(o.data(of: w))
        for (i, c) in convertF32ToF16Cases.enumerated() {
            #expect(
                got[i] == c.1,
                "\(c.2): 0x\(String(c.0, radix: 16)) -> 0x\(String(got[i], radix: 16)), expected 0x\(String(c.1, radix: 16))"
            )
            // Finite inputs agree with Swift's own RNE conversion as an independent check.
            let x = Float(bitPattern: c.0)
            if x.isFinite { #expect(got[i] == Float16(x).bitPattern, "\(c.2)") }
        }
    }

    @Test("fp32 -> bf16 is PyTorch's rounding; every NaN becomes 0x7FC0")
    func f32ToBF16Bits() throws {
        let dir = try ConvertScratch()
        let values: [UInt32] = [
            0x3F80_0000, 0x3F80_8000, 0x3F81_8000, 0x3F80_8001, 0x8000_0000, 0x0000_0001,
            0x7F7F_FFFF, 0x7F80_0000, 0xFFC0_1234, 0x7F80_0001,
        ]
        func reference(_ u: UInt32) -> UInt16 {
            if Float(bitPattern: u).isNaN { return 0x7FC0 }
            return UInt16((u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
        }
        try writeRaw([("w", .F32, [UInt64(values.count)], le(values))], to: dir.path("in.safetensors"))
        let f = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let r = try run(
            try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .BF16)), to: dir.path("out.safetensors"))
        let o = try SafeTensorsFile(path: dir.path("out.safetensors"))
        let got = u16s(o.data(of: try #require(o.tensor(named: "w"))))
        #expect(got == values.map(reference))
        // FLT_MAX rounds up to +inf in bf16: one overflow.
        #expect(r.overflows == [TensorOverflow(name: "w", count: 1)])
    }

    @Test("integer and bool tensors are copied byte for byte; F16 -> F32 is exact")
    func integersUntouched() throws {
        let dir = try ConvertScratch()
        let ints: [Int64] = [0, -1, .max, .min, 42]
        let half: [UInt16] = [0x3C00, 0x7E01, 0x0001, 0xFC00]
        try writeRaw(
            [("steps", .I64, [5], le(ints)), ("mask", .BOOL, [3], [1, 0, 1]), ("h", .F16, [4], le(half))],
            to: dir.path("in.safetensors"))
        let f = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let plan = try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .F32))
        #expect(Set(plan.copied) == ["steps", "mask"])
        #expect(plan.converted == ["h"])
        let r = try run(plan, to: dir.path("out.safetensors"))
        #expect(r.overflows.isEmpty)
        let o = try SafeTensorsFile(path: dir.path("out.safetensors"))
        #expect(Array(o.data(of: try #require(o.tensor(named: "steps")))) == le(ints))
        #expect(Array(o.data(of: try #require(o.tensor(named: "mask")))) == [1, 0, 1])
        let h = try #require(o.tensor(named: "h"))
        #expect(h.dtype == .F32)
        let raw = o.data(of: h)
        let bits = (0..<4).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self) }
        // 1.0, a NaN with its payload kept (signalling bit too), 2^-24, -inf.
        #expect(bits == [0x3F80_0000, 0x7FC0_2000, 0x3380_0000, 0xFF80_0000])
    }

    @Test("--keep, --drop and --only select and keep tensors; unused patterns are reported")
    func selection() throws {
        let dir = try ConvertScratch()
        let one = le([Float(1).bitPattern])
        try writeRaw(
            [
                ("model.diffusion_model.a", .F32, [1], one), ("first_stage_model.b", .F32, [1], one),
                ("model_ema.c", .F32, [1], one), ("cond_stage_model.d", .F32, [1], one),
            ], to: dir.path("in.safetensors"))
        let f = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let p = try ConvertPlanner.plan(
            ConvertRequest(
                input: f, dtype: .F16, keep: ["first_stage_model.*"], drop: ["model_ema.*"],
                only: [], setMetadata: []))
        #expect(p.kept == ["first_stage_model.b"])
        #expect(p.dropped == ["model_ema.c"])
        #expect(Set(p.converted) == ["model.diffusion_model.a", "cond_stage_model.d"])
        let q = try ConvertPlanner.plan(
            ConvertRequest(
                input: f, dtype: .F16, keep: ["nothing.*"],
                only: ["model.diffusion_model.*", "cond_stage_model.*"]))
        #expect(Set(q.execution.tensors.map(\.output.name)) == ["model.diffusion_model.a", "cond_stage_model.d"])
        #expect(q.unusedPatterns == [UnusedPattern(list: .keep, pattern: "nothing.*")])
        #expect(throws: EngineError.self) {
            try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .F16, only: ["zzz*"]))
        }
    }

    @Test("metadata is kept exactly unless dropped; --metadata sets entries")
    func metadata() throws {
        let dir = try ConvertScratch()
        try writeRaw(
            [("w", .F32, [1], le([Float(1).bitPattern]))], metadata: ["format": "pt", "title": "x"],
            to: dir.path("in.safetensors"))
        let f = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let kept = try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .F16))
        #expect(kept.execution.metadata == ["format": "pt", "title": "x"])
        let set = try ConvertPlanner.plan(
            ConvertRequest(input: f, dtype: .F16, setMetadata: [("title", "y"), ("new", "")]))
        #expect(set.execution.metadata == ["format": "pt", "title": "y", "new": ""])
        let dropped = try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .F16, dropMetadata: true))
        #expect(dropped.execution.metadata == nil)
        let replaced = try ConvertPlanner.plan(
            ConvertRequest(input: f, dtype: .F16, setMetadata: [("a", "b")], dropMetadata: true))
        #expect(replaced.execution.metadata == ["a": "b"])
    }

    @Test("output bytes do not depend on thread count or chunk size")
    func deterministic() throws {
        let dir = try ConvertScratch()
        var g: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt32 {
            g = g &* 6364136223846793005 &+ 1442695040888963407; return UInt32(truncatingIfNeeded: g >> 32)
        }
        let big = (0..<50_000).map { _ in Float(Int32(bitPattern: next())) / Float(Int32.max) * 70000 }.map(
            \.bitPattern)
        try writeRaw(
            [
                ("big", .F32, [250, 200], le(big)), ("small", .F32, [3], le([1, 2, 3].map { Float($0).bitPattern })),
                ("i", .I32, [2], le([Int32(7), -7])),
            ], metadata: ["k": "v"], to: dir.path("in.safetensors"))
        let f = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let plan = try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .F16))
        let r1 = try run(plan, to: dir.path("a.safetensors"), threads: 1)
        let r2 = try run(plan, to: dir.path("b.safetensors"), threads: 2, chunk: 777)
        let r3 = try run(plan, to: dir.path("c.safetensors"), threads: 3, chunk: 4096)
        let a = try Data(contentsOf: URL(fileURLWithPath: dir.path("a.safetensors")))
        #expect(a == (try Data(contentsOf: URL(fileURLWithPath: dir.path("b.safetensors")))))
        #expect(a == (try Data(contentsOf: URL(fileURLWithPath: dir.path("c.safetensors")))))
        // Values beyond ±65504 overflow; the count does not depend on the chunking either.
        #expect(r1.overflows == r2.overflows && r2.overflows == r3.overflows)
        let expected = big.filter { Float(bitPattern: $0).magnitude >= 65520 }.count
        #expect(r1.overflows == [TensorOverflow(name: "big", count: expected)])
        #expect(expected > 0)
    }
}

@Suite("executor: sequential encoding")
struct SequentialEncodingTests {
    @Test(
        "the sequential encoding (used for a stream such as stdout) writes the same bytes as raw, for any threads and chunks"
    )
    func sequentialEqualsRaw() throws {
        let dir = try ConvertScratch()
        var state: UInt64 = 7
        func floats(_ n: Int) -> [UInt8] {
            le(
                (0..<n).map { _ -> UInt32 in
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    return Float(Int64(bitPattern: state) >> 40).bitPattern
                })
        }
        try writeRaw(
            [
                ("a", .F32, [301, 77], floats(301 * 77)), ("b", .I64, [5], le([Int64](1...5))),
                ("c", .F32, [1000], floats(1000)),
            ], metadata: ["k": "v"], to: dir.path("in.safetensors"))
        let input = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let plan = try ConvertPlanner.plan(ConvertRequest(input: input, dtype: .BF16))
        func run(_ encoding: OutputEncoding, threads: Int, chunk: Int, name: String) throws -> Data {
            var e = Executor()
            e.encoding = encoding
            e.threads = threads
            e.chunkElements = chunk
            e.copyChunkBytes = chunk
            try AtomicOutput.write(to: .file(dir.path(name)), overwrite: true) { out in
                _ = try e.run(plan.execution, into: out)
            }
            return try Data(contentsOf: URL(fileURLWithPath: dir.path(name)))
        }
        let reference = try run(.raw, threads: 1, chunk: 1 << 20, name: "raw.safetensors")
        for (threads, chunk) in [(1, 1 << 20), (2, 333), (3, 64), (4, 1)] {
            #expect(
                try run(.sequential, threads: threads, chunk: chunk, name: "seq.safetensors") == reference,
                "\(threads) threads, chunk \(chunk)")
        }
    }
}
