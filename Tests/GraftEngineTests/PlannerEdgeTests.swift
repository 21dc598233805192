import FileIO
import Fixtures
import Foundation
import Adapters
import GraftEngine
import SafeTensors
import Testing

// Adapter modules the merge cannot use must be reported consistently by the planner
// (so --dry-run and --allow-unmatched agree with the real run).
@Suite("merge planner: unusable modules")
struct PlannerEdgeTests {
    static let architecture = SDXLArchitecture(widthDivisor: 64)
    static let module = "lora_te1_text_model_encoder_layers_0_mlp_fc1"

    func checkpoint(_ dir: ScratchDirectory) throws -> String {
        let path = dir.path("ckpt.safetensors")
        try writeSynthetic(tensors: Self.architecture.checkpointTensors(dtype: .F16), metadata: nil, to: path, seed: 1)
        return path
    }

    /// One kohya TE1 module; its down factor in `downType` (F8 bytes are arbitrary).
    func adapter(_ dir: ScratchDirectory, downType: DType, extraPEFTSpelling: Bool = false) throws -> String {
        let t = try #require(
            KohyaLoRA.sdxlTargets(checkpoint: Self.architecture.checkpointTensors(), includeConv: false)
                .first { $0.moduleName == Self.module })
        let rank = 2
        var tensors: [(OutputTensor, [UInt8])] = [
            (
                OutputTensor(
                    name: t.moduleName + ".lora_up.weight", dtype: .F16, shape: [UInt64(t.outFeatures), UInt64(rank)]),
                Encode.bytes(of: Array(repeating: 0.01, count: t.outFeatures * rank), as: .F16)
            ),
            (OutputTensor(name: t.moduleName + ".alpha", dtype: .F16, shape: []), Encode.bytes(of: [1], as: .F16)),
        ]
        let downShape: [UInt64] = [UInt64(rank), UInt64(t.inFeatures)]
        let downValues = [Float](repeating: 0.02, count: rank * t.inFeatures)
        let downBytes =
            downType == .F8_E4M3
            ? [UInt8](repeating: 56, count: downValues.count) : Encode.bytes(of: downValues, as: downType)
        tensors.append(
            (OutputTensor(name: t.moduleName + ".lora_down.weight", dtype: downType, shape: downShape), downBytes))
        if extraPEFTSpelling {
            tensors.append(
                (
                    OutputTensor(name: t.moduleName + ".lora_A.weight", dtype: .F16, shape: downShape),
                    Encode.bytes(of: downValues, as: .F16)
                ))
        }
        let path = dir.path("lora.safetensors")
        let layout = try FileLayout(tensors: tensors.map(\.0), metadata: ["ss_base_model_version": "sdxl_base_v1-0"])
        let out = try AtomicOutput(path: path, overwrite: true)
        try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
        for (i, info) in layout.tensors.enumerated() {
            let bytes = try #require(tensors.first { $0.0.name == info.name }?.1)
            try bytes.withUnsafeBytes { try out.write($0, at: layout.fileOffset(ofTensorAt: i)) }
        }
        try out.commit()
        return path
    }

    @Test("8-bit float factors: an error naming the dtypes, or skipped and listed with --allow-unmatched")
    func nonConvertibleFactors() throws {
        let dir = try ScratchDirectory("planner")
        let ckpt = try checkpoint(dir)
        let lora = try adapter(dir, downType: .F8_E4M3)
        var merge = LibraryMerge()
        let strict = #expect(throws: EngineError.self) {
            try merge.run(checkpoint: ckpt, adapters: [(lora, 1)], output: dir.path("out.safetensors"))
        }
        #expect(strict?.kind == .unmergeableModules)
        #expect(strict?.modules.map(\.reason) == [SkippedModule.Reason.unsupportedDType.rawValue])
        // Skipping allowed: the only module is skipped, so nothing would be merged.
        merge.allowUnmatched = true
        let lenient = #expect(throws: EngineError.self) {
            try merge.run(checkpoint: ckpt, adapters: [(lora, 1)], output: dir.path("out.safetensors"))
        }
        #expect(lenient?.kind == .nothingMerged)
        #expect(lenient?.modules.first?.module == Self.module)
        #expect(!FileManager.default.fileExists(atPath: dir.path("out.safetensors")))
    }

    @Test("one factor spelled twice (kohya and PEFT) is a malformed module naming both keys")
    func duplicateSpelling() throws {
        let dir = try ScratchDirectory("planner")
        let ckpt = try checkpoint(dir)
        let lora = try adapter(dir, downType: .F16, extraPEFTSpelling: true)
        do {
            try LibraryMerge().run(checkpoint: ckpt, adapters: [(lora, 1)], output: dir.path("out.safetensors"))
            Issue.record("expected an error")
        } catch let error as EngineError {
            #expect(error.kind == .malformedModules)
            #expect(error.modules.map(\.reason) == [ModuleIssue.Kind.duplicatePart.rawValue])
            #expect(error.modules.first?.message.contains("lora_A.weight") == true, "the message names both keys")
        }
    }
}
