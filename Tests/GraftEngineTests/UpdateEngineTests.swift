import Adapters
import FileIO
import Foundation
import GraftEngine
import SafeTensors
import Testing

// The weight-update engine: row alignment, reduction passes, modifiers every module
// consumes, typed errors, and the hardening cases of the review (ratios, overflow,
// merges of nothing).

/// A two-layer UNet fragment with real kohya names: a linear with a bias, one without.
struct TinyUNet {
    static let proj = "model.diffusion_model.input_blocks.4.1.proj_in"
    static let toQ = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    static let rows = 6, columns = 4

    let weight: [Float] = (0..<rows * columns).map { Float($0 % 7) * 0.25 - 0.5 }
    let bias: [Float] = (0..<rows).map { Float($0) * 0.125 }

    func write(_ dir: ScratchDirectory, dtype: DType = .F32) throws -> String {
        let path = dir.path("ckpt.safetensors")
        try writeTensors(
            [
                TensorSpec(Self.proj + ".weight", dtype, [Self.rows, Self.columns], weight),
                TensorSpec(Self.proj + ".bias", dtype, [Self.rows], bias),
                TensorSpec(Self.toQ + ".weight", dtype, [Self.rows, Self.columns], weight),
            ], to: path)
        return path
    }
}

/// kohya LoRA module tensors for a `TinyUNet` layer.
func loraModule(
    _ module: String, rank: Int = 2, alpha: Float? = 1, scale: Float? = nil, upBias: [Float]? = nil,
    up: Float = 0.5, down: Float = 0.25
) -> [TensorSpec] {
    let r = TinyUNet.rows, c = TinyUNet.columns
    var t = [
        TensorSpec(module + ".lora_up.weight", .F32, [r, rank], (0..<r * rank).map { Float($0 % 3) * up }),
        TensorSpec(module + ".lora_down.weight", .F32, [rank, c], (0..<rank * c).map { Float($0 % 5) * down - 0.5 }),
    ]
    if let alpha { t.append(TensorSpec(module + ".alpha", .F32, [], [alpha])) }
    if let scale { t.append(TensorSpec(module + ".scale", .F32, [], [scale])) }
    if let upBias { t.append(TensorSpec(module + ".lora_B.bias", .F32, [r], upBias)) }
    return t
}

/// `W + ratio·scale·(up @ down)` in Double, for the oracle.
func expectedLoRA(_ w: [Float], up: [Float], down: [Float], rank: Int, ratio: Double, scale: Double) -> [Float] {
    let r = TinyUNet.rows, c = TinyUNet.columns
    return (0..<r * c).map { k in
        let i = k / c, j = k % c
        var s = 0.0
        for q in 0..<rank { s += Double(up[i * rank + q]) * Double(down[q * c + j]) }
        return Float(Double(w[k]) + ratio * s * scale)
    }
}

@Suite("weight updates: modifiers, typed errors, hardening")
struct UpdateEngineTests {
    let unet = TinyUNet()
    let projModule = "lora_unet_input_blocks_4_1_proj_in"
    let qModule = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"

    func merge(
        _ dir: ScratchDirectory, _ adapter: [TensorSpec], ratio: Double = 1,
        allowUnmatched: Bool = false
    ) throws -> (MergePlan, SafeTensorsFile) {
        let ckpt = try unet.write(dir)
        let lora = dir.path("lora.safetensors")
        try writeTensors(adapter, to: lora)
        var m = LibraryMerge(savePrecision: .F32)
        m.allowUnmatched = allowUnmatched
        let out = dir.path("out.safetensors")
        let (plan, _) = try m.run(checkpoint: ckpt, adapters: [(lora, ratio)], output: out)
        return (plan, try SafeTensorsFile(path: out))
    }

    @Test("an explicit .scale key replaces alpha/rank (as A1111 does) and is reported")
    func explicitScale() throws {
        let dir = try ScratchDirectory("update")
        let specs = loraModule(projModule, alpha: 1, scale: 0.75)
        let (plan, out) = try merge(dir, specs)
        #expect(plan.adapters[0].merged.first?.scaleSource == .scaleKey)
        #expect(plan.adapters[0].merged.first?.scale == 0.75)
        let want = expectedLoRA(unet.weight, up: specs[0].values, down: specs[1].values, rank: 2, ratio: 1, scale: 0.75)
        let got = try floats(out, TinyUNet.proj + ".weight")
        #expect(agreement(got, want, dtype: .F32, ulpsAllowed: 4).beyond == 0)
    }

    @Test("a PEFT lora_B.bias is added to the layer's bias, scaled like the weight")
    func upBiasApplied() throws {
        let dir = try ScratchDirectory("update")
        let b: [Float] = [1, -2, 0.5, 0, 4, -0.25]
        let (plan, out) = try merge(dir, loraModule(projModule, rank: 2, alpha: 1, upBias: b), ratio: 0.5)
        #expect(
            plan.adapters[0].merged.first?.targets.map(\.tensor) == [
                TinyUNet.proj + ".weight", TinyUNet.proj + ".bias",
            ])
        let got = try floats(out, TinyUNet.proj + ".bias")
        // ratio 0.5, scale alpha/rank = 0.5
        #expect(got == zip(unet.bias, b).map { $0 + (0.5 * $1) * 0.5 })
    }

    @Test("a lora_B.bias on a layer without bias is refused, never dropped")
    func upBiasWithoutBias() throws {
        let dir = try ScratchDirectory("update")
        let e = #expect(throws: EngineError.self) {
            try merge(dir, loraModule(qModule, upBias: [Float](repeating: 1, count: TinyUNet.rows)))
        }
        #expect(e?.kind == .unmergeableModules)
        #expect(e?.modules.map(\.reason) == [SkippedModule.Reason.noBias.rawValue])
    }

    @Test("a part the module's kind does not use makes it malformed (named), not silently dropped")
    func unusedPart() throws {
        let dir = try ScratchDirectory("update")
        var specs = loraModule(projModule)
        specs.append(
            TensorSpec(projModule + ".rescale", .F32, [TinyUNet.rows, 1], [Float](repeating: 1, count: TinyUNet.rows)))
        let e = #expect(throws: EngineError.self) { try merge(dir, specs) }
        #expect(e?.kind == .malformedModules)
        #expect(e?.modules.map(\.reason) == [ModuleIssue.Kind.unusedPart.rawValue])
    }

    @Test("a sparse-bias part is unsupported: refused, or skipped by name when skipping is allowed")
    func unsupportedPart() throws {
        let dir = try ScratchDirectory("update")
        var specs = loraModule(projModule) + loraModule(qModule)
        specs.append(TensorSpec(qModule + ".bias_values", .F32, [2], [1, 2]))
        let e = #expect(throws: EngineError.self) { try merge(dir, specs) }
        #expect(e?.kind == .unmergeableModules)
        #expect(e?.modules.first?.reason == SkippedModule.Reason.unsupportedPart.rawValue)
        let (plan, _) = try merge(try ScratchDirectory("update"), specs, allowUnmatched: true)
        #expect(plan.adapters[0].skipped.map(\.module) == [qModule])
        #expect(plan.adapters[0].merged.map(\.module) == [projModule])
    }

    @Test("a ratio that is finite as a Double but infinite as fp32 is refused")
    func ratioOutOfFloatRange() throws {
        let dir = try ScratchDirectory("update")
        let e = #expect(throws: EngineError.self) { try merge(dir, loraModule(projModule), ratio: 1e39) }
        #expect(e?.kind == .invalidRatio)
        #expect(!FileManager.default.fileExists(atPath: dir.path("out.safetensors")))
    }

    @Test("merging nothing is an error even when skipping is allowed")
    func nothingMerged() throws {
        let dir = try ScratchDirectory("update")
        let specs = loraModule("lora_unet_no_such_layer")
        let e = #expect(throws: EngineError.self) { try merge(dir, specs, allowUnmatched: true) }
        #expect(e?.kind == .nothingMerged)
        #expect(e?.modules.map(\.reason) == [SkippedModule.Reason.noSuchTensor.rawValue])
    }

    @Test("overflow to ±inf in fp16 is counted per tensor, and fails the run before commit when asked")
    func overflow() throws {
        let dir = try ScratchDirectory("update")
        let ckpt = try unet.write(dir, dtype: .F16)
        let lora = dir.path("lora.safetensors")
        try writeTensors(loraModule(projModule), to: lora)
        let out = dir.path("out.safetensors")
        let (_, report) = try LibraryMerge(savePrecision: nil).run(
            checkpoint: ckpt, adapters: [(lora, 1e7)], output: out)
        #expect(report.overflows.map(\.name) == [TinyUNet.proj + ".weight"])
        #expect((report.overflows.first?.count ?? 0) > 0)

        let file = try SafeTensorsFile(path: ckpt)
        let plan = try MergePlanner.plan(
            MergeRequest(
                checkpoint: file, adapters: [MergeInput(file: SafeTensorsFile(path: lora), ratio: 1e7)],
                savePrecision: nil, precision: .fp32, allowUnmatched: false,
                outputPath: dir.path("strict.safetensors"), graftVersion: "test"))
        var executor = Executor()
        executor.failOnOverflow = true
        let output = try AtomicOutput(path: dir.path("strict.safetensors"), overwrite: false)
        let e = #expect(throws: EngineError.self) { try executor.run(plan.execution, into: output) }
        output.abort()
        #expect(e?.kind == .overflow)
        #expect(e?.tensor == TinyUNet.proj + ".weight")
        #expect(!dir.entries().contains { $0.contains("strict") })
    }
}

/// A test update that divides every column of its rows by the column's norm over all of
/// its rows (an input-axis normalisation), and checks that every block it is handed
/// starts and ends on its alignment.
struct ColumnNormalize: WeightUpdate {
    let rows: Range<Int>
    let alignment: Int?
    var label: String { "normalize" }
    var sourcePath: String { "<test>" }
    var requirements: UpdateRequirements { UpdateRequirements(rowAlignment: alignment, reduction: .columnSumOfSquares) }
    func flops(columns: Int) -> Double { 0 }
    func validate(targetRows: Int, columns: Int) throws(EngineError) {}
    func makeApplier(columns: Int, precision: MergePrecision) throws -> any RowApplier {
        Applier(u: self, columns: columns)
    }

    final class Applier: RowApplier {
        let u: ColumnNormalize
        let columns: Int
        init(u: ColumnNormalize, columns: Int) { self.u = u; self.columns = columns }

        func checkAligned(_ b: RowBlock) throws {
            let a = u.alignment ?? u.rows.count
            guard (b.rows.lowerBound - u.rows.lowerBound) % a == 0,
                b.rows.upperBound == u.rows.upperBound || (b.rows.upperBound - u.rows.lowerBound) % a == 0
            else {
                throw EngineError(
                    .internalInconsistency, "block \(b.rows) not aligned to \(a) from \(u.rows.lowerBound)")
            }
        }

        func apply(_ b: RowBlock, reduced: UnsafeBufferPointer<Double>?) throws {
            try checkAligned(b)
            guard let reduced else { throw EngineError(.internalInconsistency, "no reduction") }
            for i in 0..<b.rows.count * columns {
                b.values[i] = Float(Double(b.values[i]) / reduced[i % columns].squareRoot())
            }
        }

        func reduce(_ b: RowBlock, into partial: UnsafeMutableBufferPointer<Double>) throws {
            try checkAligned(b)
            for i in 0..<b.rows.count * columns { partial[i % columns] += Double(b.values[i]) * Double(b.values[i]) }
        }
    }
}

@Suite("executor: row alignment and reductions")
struct ExecutorRequirementTests {
    static let rows = 24, columns = 5

    func run(_ updates: [any WeightUpdate], chunkElements: Int, threads: Int) throws -> [UInt8] {
        let dir = try ScratchDirectory("exec")
        let values = (0..<Self.rows * Self.columns).map { Float(($0 * 37) % 11) - 4.5 }
        let path = dir.path("w.safetensors")
        try writeTensors([TensorSpec("w", .F32, [Self.rows, Self.columns], values)], to: path)
        let file = try SafeTensorsFile(path: path)
        let t = try #require(file.tensor(named: "w"))
        let plan = ExecutionPlan(
            tensors: [
                PlannedTensor(
                    source: file, input: t, output: OutputTensor(name: "w", dtype: .F32, shape: t.shape),
                    operation: .update(try TensorUpdates(updates: updates, target: t)))
            ], metadata: nil)
        var executor = Executor()
        executor.chunkElements = chunkElements
        executor.threads = threads
        let out = try AtomicOutput(path: dir.path("out.safetensors"), overwrite: false)
        _ = try executor.run(plan, into: out)
        try out.commit()
        let f = try SafeTensorsFile(path: dir.path("out.safetensors"))
        return try #require(tensorBytes(f, "w"))
    }

    @Test(
        "an update's blocks respect its alignment, and its reduction covers all its rows, for any chunking",
        arguments: [(Int?(3), 1), (Int?(4), 7), (nil, 2)])
    func alignmentAndReduction(alignment: Int?, chunkRows: Int) throws {
        let u = ColumnNormalize(rows: 4..<16, alignment: alignment)
        let reference = try run([u], chunkElements: 1 << 20, threads: 1)
        for threads in [1, 2] {
            #expect(try run([u], chunkElements: chunkRows * Self.columns, threads: threads) == reference)
        }
        // The oracle: every column of rows 4..<16 has norm 1 afterwards.
        let f = reference.withUnsafeBytes { decode($0, .F32, Self.rows * Self.columns) }
        for j in 0..<Self.columns {
            let norm = (4..<16).reduce(0.0) { $0 + Double(f[$1 * Self.columns + j] * f[$1 * Self.columns + j]) }
            #expect(abs(norm - 1) < 1e-5)
        }
    }

    @Test("a second reducing update sees the weight after the first (reductions run level by level)")
    func reductionsInOrder() throws {
        let first = ColumnNormalize(rows: 0..<24, alignment: 1)
        let second = ColumnNormalize(rows: 8..<20, alignment: 2)
        let a = try run([first, second], chunkElements: 3 * Self.columns, threads: 2)
        let b = try run([first, second], chunkElements: 1 << 20, threads: 1)
        #expect(a == b)
        let f = a.withUnsafeBytes { decode($0, .F32, Self.rows * Self.columns) }
        let norm = (8..<20).reduce(0.0) { $0 + Double(f[$1 * Self.columns] * f[$1 * Self.columns]) }
        #expect(abs(norm - 1) < 1e-5)
    }

    @Test("row chunks: cut at alignments from each update's first row; never inside a whole-block update")
    func rowChunks() throws {
        let dir = try ScratchDirectory("exec")
        let path = dir.path("w.safetensors")
        try writeTensors([TensorSpec("w", .F32, [30, 2], [Float](repeating: 0, count: 60))], to: path)
        let t = try #require(try SafeTensorsFile(path: path).tensor(named: "w"))
        let u = try TensorUpdates(
            updates: [
                ColumnNormalize(rows: 5..<20, alignment: 4),
                ColumnNormalize(rows: 22..<29, alignment: nil),
            ], target: t)
        let chunks = u.rowChunksForTesting(maxElements: 2 * 3)
        #expect(chunks.first?.lowerBound == 0 && chunks.last?.upperBound == 30)
        #expect(zip(chunks, chunks.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        for c in chunks {
            if c.upperBound > 5 && c.upperBound < 20 { #expect((c.upperBound - 5) % 4 == 0, "\(c)") }
            #expect(!(c.upperBound > 22 && c.upperBound < 29), "\(c) cuts the whole-block update")
        }
    }
}
