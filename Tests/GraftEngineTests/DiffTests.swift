import FileIO
import Adapters
import Fixtures
import Foundation
import Testing
@testable import GraftEngine
import SafeTensors

// Engine-level tests of `graft diff`: DiffRunner statistics against a plain Swift
// reference, key-set differences, the threshold, determinism, block grouping, and
// --lora explaining a merge the engine made itself.

private final class DiffScratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("graft-diff-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// Writes fp32/fp16 tensors given as Float arrays (other dtypes as raw bytes).
private enum DiffFile {
    enum Values { case f32([Float]), f16([Float]), raw(DType, [UInt8]) }

    static func write(_ tensors: [(String, [UInt64], Values)], metadata: [String: String]? = nil, to path: String)
        throws
    {
        func bytes(_ v: Values) -> (DType, [UInt8]) {
            switch v {
            case .f32(let xs):
                return (.F32, xs.flatMap { x in withUnsafeBytes(of: x.bitPattern.littleEndian) { Array($0) } })
            case .f16(let xs):
                return (.F16, xs.flatMap { x in withUnsafeBytes(of: Float16(x).bitPattern.littleEndian) { Array($0) } })
            case .raw(let d, let b): return (d, b)
            }
        }
        let encoded = tensors.map { ($0.0, $0.1, bytes($0.2)) }
        let layout = try FileLayout(
            tensors: encoded.map { OutputTensor(name: $0.0, dtype: $0.2.0, shape: $0.1) }, metadata: metadata,
            file: path)
        let out = try AtomicOutput(path: path, overwrite: true)
        try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
        for (i, info) in layout.tensors.enumerated() {
            let b = encoded.first { $0.0 == info.name }!.2.1
            try b.withUnsafeBytes { try out.write($0, at: layout.fileOffset(ofTensorAt: i)) }
        }
        try out.commit()
    }
}

private func series(_ n: Int, seed: UInt64) -> [Float] {
    var g = seed
    return (0..<n).map { _ in
        g = g &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int32(truncatingIfNeeded: g >> 32)) / Float(Int32.max) * 0.05
    }
}

@Suite("DiffTests: DiffRunner")
struct DiffTests {
    func diff(
        _ a: String, _ b: String, threads: Int = 2, chunk: Int = 1 << 20, threshold: Double = 0,
        filters: [String] = [], adapters: [MergeInput] = []
    ) throws -> DiffReport {
        var r = DiffRunner()
        r.threads = threads
        r.chunkElements = chunk
        return try r.run(
            DiffRequest(
                a: try SafeTensorsFile(path: a), b: try SafeTensorsFile(path: b), filters: filters,
                threshold: threshold, adapters: adapters))
    }

    @Test("identical files: no difference, every tensor byte-identical, cosine 1")
    func identical() throws {
        let dir = try DiffScratch()
        let w = series(3000, seed: 1)
        try DiffFile.write(
            [
                ("w", [30, 100], .f32(w)), ("b", [3], .f16([1, 2, 3])),
                ("n", [2], .raw(.I64, Array(repeating: 7, count: 16))),
            ],
            to: dir.path("a.safetensors"))
        let r = try diff(dir.path("a.safetensors"), dir.path("a.safetensors"), chunk: 512)
        #expect(r.isIdentical)
        #expect(r.tensors.count == 3)
        #expect(r.tensors.allSatisfy { $0.identicalBytes && !$0.changed && $0.differing == 0 })
        #expect(r.tensors.first { $0.name == "w" }?.cosine == 1)
        #expect(r.tensors.first { $0.name == "w" }?.relativeChange == 0)
        #expect(r.topChanged(10).isEmpty)
    }

    @Test(
        "one changed tensor: max, mean, relative change, cosine and count match a plain reference",
        arguments: [1, 2])
    func oneChanged(threads: Int) throws {
        let dir = try DiffScratch()
        let a = series(5000, seed: 2)
        var b = a
        for i in stride(from: 0, to: 5000, by: 7) { b[i] += Float(i % 13) * 0.001 - 0.004 }
        try DiffFile.write(
            [("w", [50, 100], .f32(a)), ("same", [4], .f32([1, 2, 3, 4]))], to: dir.path("a.safetensors"))
        try DiffFile.write(
            [("w", [50, 100], .f32(b)), ("same", [4], .f32([1, 2, 3, 4]))], to: dir.path("b.safetensors"))
        let r = try diff(dir.path("a.safetensors"), dir.path("b.safetensors"), threads: threads, chunk: 1000)
        #expect(!r.isIdentical)
        let t = try #require(r.tensors.first { $0.name == "w" })
        // Reference in double, straight from the definitions.
        var maxAbs = 0.0, sumAbs = 0.0, sqd = 0.0, sqa = 0.0, sqb = 0.0, ab = 0.0, differ = 0
        for i in 0..<a.count {
            let x = Double(a[i]), y = Double(b[i]), d = x - y
            maxAbs = max(maxAbs, abs(d)); sumAbs += abs(d); sqd += d * d; sqa += x * x; sqb += y * y; ab += x * y
            if a[i] != b[i] { differ += 1 }
        }
        #expect(t.changed && !t.identicalBytes)
        #expect(t.differing == differ)
        #expect(t.maxAbsDiff == maxAbs)
        // Compared in fp32, summed in fp32 blocks then in double: ~1e-7 relative.
        #expect(abs(t.meanAbsDiff - sumAbs / 5000) <= 1e-6 * sumAbs / 5000)
        #expect(abs(try #require(t.relativeChange) - sqd.squareRoot() / sqa.squareRoot()) <= 1e-9)
        #expect(abs(try #require(t.cosine) - ab / (sqa.squareRoot() * sqb.squareRoot())) <= 1e-6)
        #expect(r.topChanged(5).map(\.name) == ["w"])
        #expect(r.tensors.first { $0.name == "same" }?.changed == false)
    }

    @Test("statistics are bit-identical for any thread count and chunk size")
    func deterministic() throws {
        let dir = try DiffScratch()
        let a = series(20000, seed: 3), b = series(20000, seed: 4)
        try DiffFile.write([("w", [200, 100], .f32(a))], to: dir.path("a.safetensors"))
        try DiffFile.write([("w", [200, 100], .f16(b))], to: dir.path("b.safetensors"))
        let r1 = try diff(dir.path("a.safetensors"), dir.path("b.safetensors"), threads: 1, chunk: 3000)
        let r2 = try diff(dir.path("a.safetensors"), dir.path("b.safetensors"), threads: 2, chunk: 3000)
        let x = r1.tensors[0], y = r2.tensors[0]
        #expect(
            x.maxAbsDiff == y.maxAbsDiff && x.normDiff == y.normDiff && x.cosine == y.cosine
                && x.meanAbsDiff == y.meanAbsDiff)
        #expect(r1.dtypeChanges.map(\.name) == ["w"])
    }

    @Test("key sets: only in A, only in B, dtype and shape changes; NaN/Inf counted per side")
    func keySets() throws {
        let dir = try DiffScratch()
        try DiffFile.write(
            [
                ("gone", [1], .f32([1])), ("shape", [2, 2], .f32([1, 2, 3, 4])), ("dt", [2], .f32([1, 0.5])),
                ("nan", [3], .f32([.nan, 1, .infinity])),
            ], to: dir.path("a.safetensors"))
        try DiffFile.write(
            [
                ("new", [1], .f32([1])), ("shape", [4], .f32([1, 2, 3, 4])), ("dt", [2], .f16([1, 0.5])),
                ("nan", [3], .f32([.nan, .nan, 2])),
            ], to: dir.path("b.safetensors"))
        let r = try diff(dir.path("a.safetensors"), dir.path("b.safetensors"))
        #expect(r.onlyInA.map(\.name) == ["gone"])
        #expect(r.onlyInB.map(\.name) == ["new"])
        #expect(r.shapeChanges.map(\.name) == ["shape"])
        #expect(r.dtypeChanges.map(\.name) == ["dt"])
        #expect(r.tensorsInBoth == 3)
        let dt = try #require(r.tensors.first { $0.name == "dt" })
        #expect(!dt.changed && !dt.identicalBytes && dt.differing == 0)  // same values, other dtype
        let n = try #require(r.tensors.first { $0.name == "nan" })
        #expect(n.changed && n.nanA == 1 && n.nanB == 2 && n.infA == 1 && n.infB == 0 && n.differing == 2)
        #expect(!r.isIdentical)
    }

    @Test("--threshold ignores differences at or below it; NaN mismatches still count")
    func threshold() throws {
        let dir = try DiffScratch()
        try DiffFile.write([("small", [2], .f32([1, 2])), ("big", [2], .f32([1, 2]))], to: dir.path("a.safetensors"))
        try DiffFile.write(
            [("small", [2], .f32([1.0001, 2])), ("big", [2], .f32([1.5, 2]))], to: dir.path("b.safetensors"))
        let r = try diff(dir.path("a.safetensors"), dir.path("b.safetensors"), threshold: 0.01)
        #expect(r.tensors.filter(\.changed).map(\.name) == ["big"])
        let r2 = try diff(dir.path("a.safetensors"), dir.path("b.safetensors"), threshold: 1)
        #expect(r2.isIdentical)
        let r3 = try diff(dir.path("a.safetensors"), dir.path("b.safetensors"), filters: ["sm*"])
        #expect(r3.tensors.map(\.name) == ["small"] && !r3.isIdentical)
    }

    @Test("block grouping: SDXL and SD1 blocks, VAE, text encoders, unknown layouts")
    func grouping() {
        let names = [
            "model.diffusion_model.input_blocks.4.1.proj_in.weight", "model.diffusion_model.middle_block.1.norm.weight",
            "model.diffusion_model.output_blocks.10.0.skip_connection.weight", "model.diffusion_model.out.2.weight",
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
            "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
            "first_stage_model.decoder.conv_in.weight", "model_ema.decay",
        ]
        let g = BlockGrouping(tensors: names.map { TensorInfo(name: $0, dtype: .F16, shape: [1], dataOffsets: 0..<2) })
        #expect(
            names.map(g.group(of:)) == [
                "unet.input_blocks.4", "unet.middle_block", "unet.output_blocks.10", "unet.out",
                "te1", "te2", "vae", "model_ema",
            ])
        let sd1 = BlockGrouping(tensors: [
            TensorInfo(name: "cond_stage_model.transformer.x.weight", dtype: .F16, shape: [1], dataOffsets: 0..<2)
        ])
        #expect(sd1.group(of: "cond_stage_model.transformer.x.weight") == "te")
        let unknown = BlockGrouping(tensors: [
            TensorInfo(name: "encoder.layers.3.w", dtype: .F16, shape: [1], dataOffsets: 0..<2)
        ])
        #expect(unknown.group(of: "encoder.layers.3.w") == "encoder.layers")
        #expect(unknown.group(of: "scale") == "scale")
    }

    @Test(
        "--lora explains an fp32 merge made by the engine (residual ~ 0); a changed tensor without a module is unexplained"
    )
    func loraExplainsMerge() throws {
        let dir = try DiffScratch()
        let arch = SDXLArchitecture(widthDivisor: 64)
        let ckptTensors = arch.checkpointTensors(dtype: .F32)
        try writeSynthetic(tensors: ckptTensors, metadata: nil, to: dir.path("base.safetensors"), seed: 11)
        let options = KohyaLoRAOptions(rank: 4, alpha: 2, dtype: .F16)
        try writeSynthetic(
            tensors: KohyaLoRA.sdxl(checkpoint: ckptTensors, options: options),
            metadata: KohyaLoRA.metadata(.sdxl, options: options, title: "t"), to: dir.path("lora.safetensors"),
            seed: 12)
        let base = try SafeTensorsFile(path: dir.path("base.safetensors"))
        let lora = try SafeTensorsFile(path: dir.path("lora.safetensors"))
        let merge = try MergePlanner.plan(
            MergeRequest(
                checkpoint: base, adapters: [MergeInput(file: lora, ratio: 0.75)], savePrecision: nil,
                precision: .fp32, allowUnmatched: false, outputPath: "m", graftVersion: "test"))
        let out = try AtomicOutput(path: dir.path("merged.safetensors"), overwrite: true)
        _ = try Executor().run(merge.execution, into: out)
        try out.commit()

        let r = try diff(
            dir.path("base.safetensors"), dir.path("merged.safetensors"), chunk: 4096,
            adapters: [MergeInput(file: lora, ratio: 0.75)])
        let l = try #require(r.lora)
        #expect(l.unexplained.isEmpty)
        #expect(l.partiallyExplained.isEmpty)
        #expect(l.unchanged.isEmpty)
        #expect(l.explained.count == r.tensors.filter(\.changed).count)
        #expect(l.explained.count > 100)
        let worst = r.tensors.compactMap { $0.lora?.residual }.max() ?? 1
        #expect(worst < 1e-5)

        // Wrong ratio: every tensor only partially explained, residual |0.75 - 1| / 0.75.
        let wrong = try diff(
            dir.path("base.safetensors"), dir.path("merged.safetensors"), adapters: [MergeInput(file: lora, ratio: 1)])
        let res = try #require(wrong.tensors.first { $0.lora != nil }?.lora?.residual)
        #expect(abs(res - 1.0 / 3.0) < 1e-4)
        #expect(wrong.lora?.explained.isEmpty == true)

        // An adapter with the UNet modules only: the text-encoder changes are unexplained.
        let unetOnly = KohyaLoRAOptions(rank: 4, alpha: 2, includeTextEncoders: false, dtype: .F16)
        try writeSynthetic(
            tensors: KohyaLoRA.sdxl(checkpoint: ckptTensors, options: unetOnly),
            metadata: KohyaLoRA.metadata(.sdxl, options: unetOnly, title: "u"), to: dir.path("unet.safetensors"),
            seed: 12)
        let partial = try diff(
            dir.path("base.safetensors"), dir.path("merged.safetensors"),
            adapters: [MergeInput(file: try SafeTensorsFile(path: dir.path("unet.safetensors")), ratio: 0.75)])
        let changedTE = r.tensors.filter { $0.changed && !$0.name.hasPrefix("model.diffusion_model.") }.map(\.name)
        #expect(!changedTE.isEmpty)
        #expect(partial.lora?.unexplained == changedTE)

        // Diffing the base against itself with the LoRA: every target is "unchanged" (a missed module).
        let missed = try diff(
            dir.path("base.safetensors"), dir.path("base.safetensors"), adapters: [MergeInput(file: lora, ratio: 1)])
        #expect(missed.lora?.unchanged.count == l.explained.count)
        #expect(missed.isIdentical)
    }
}
