import Adapters
import Fixtures
import Foundation
import GraftEngine
import SafeTensors

/// The fixed checkpoint every adapter is planned against: a reduced-width SDXL base from
/// `Fixtures` (real key names and shapes), thinned to a few layers of each kind so that
/// each input stays fast (the planner reuses ``mapper``, the checkpoint's key index, built
/// once). Only its header matters; the data is a
/// sparse zero tail of a memfd.
public enum FixedCheckpoint {
    public static let architecture = SDXLArchitecture(widthDivisor: 16)
    public static let tensors: [SyntheticTensor] = architecture.checkpointTensors().filter(keep)

    /// Keeps TE1 layers 0 and 11, TE2 layers 0 and 31, UNet input blocks 0, 1, 3, 4, 7,
    /// output blocks 0, 2, 5, 8, transformer blocks 0 and 9, the middle block and every
    /// tensor outside numbered blocks; of the VAE only conv_in/conv_out.
    static func keep(_ t: SyntheticTensor) -> Bool {
        let parts = t.name.split(separator: ".")
        func index(after word: String) -> Int? {
            guard let i = parts.firstIndex(where: { $0 == word }), i + 1 < parts.count else { return nil }
            return Int(parts[i + 1])
        }
        if t.name.hasPrefix(SDXLArchitecture.vaePrefix) {
            return t.name.contains("encoder.conv_in.") || t.name.contains("decoder.conv_out.")
        }
        if let n = index(after: "layers"), ![0, 11].contains(n) { return false }
        if let n = index(after: "resblocks"), ![0, 31].contains(n) { return false }
        if let n = index(after: "input_blocks"), ![0, 1, 3, 4, 7].contains(n) { return false }
        if let n = index(after: "output_blocks"), ![0, 2, 5, 8].contains(n) { return false }
        if let n = index(after: "transformer_blocks"), ![0, 9].contains(n) { return false }
        return true
    }

    /// The kohya LoRA/LoCon modules of this checkpoint (names, out/in features, kernels).
    public static let targets: [LoRATarget] = KohyaLoRA.sdxlTargets(checkpoint: tensors, includeConv: true)

    nonisolated(unsafe) private static var memFile: MemFile? = nil

    public static let file: SafeTensorsFile = {
        let layout = try! FileLayout(tensors: tensors.map(\.outputTensor), metadata: nil)
        let m = MemFile(name: "graft-fuzz-checkpoint")
        m.replace(with: layout.headerBytes, length: layout.totalByteCount)
        memFile = m
        return try! m.open()
    }()

    public static let mapper = KeyMapper(tensors: file.tensors, metadata: file.metadata)
}

/// Everything graft does with an adapter before touching tensor data: analysis, the
/// `list` report, key mapping, per-module resolution and merge planning against
/// ``FixedCheckpoint``. Errors are expected; only traps and sanitizer reports count.
public enum AdapterPipeline {
    public static func run(_ file: SafeTensorsFile) {
        let alpha: (TensorInfo) throws -> Double? = { try file.scalarValue(of: $0) }
        let analysis = AdapterAnalysis(tensors: file.tensors, metadata: file.metadata, alphaValue: alpha)
        _ = (analysis.ranks, analysis.convRanks, analysis.alphas, analysis.convAlphas)
        _ = (analysis.moduleCounts, analysis.kindCounts, analysis.layerCounts, analysis.invalidModules)
        for m in analysis.modules {
            _ = m.delta?.description
            _ = analysis.module(named: m.name)
        }

        let report = ListReport(tensors: file.tensors, metadata: file.metadata, alphaValue: alpha, includeModules: true)
        _ = try? JSONEncoder().encode(report)

        let mapper = FixedCheckpoint.mapper
        _ = mapper.compatibility(with: analysis)
        _ = try? mapper.checkCompatible(analysis)
        let plan = mapper.plan(analysis)
        _ = (plan.resolved.count, plan.unresolved.count, plan.differingFromSDScripts.count, plan.overlaps)
        for m in analysis.modules {
            _ = mapper.resolve(m)
            if let target = try? mapper.resolve(m, adapterFamily: analysis.baseModel.family).get() {
                _ = mapper.sdScriptsTreatment(of: m, target: target)
            }
        }

        // The planner indexes the whole checkpoint before looking at the adapter, and throws
        // right after the analysis when this guard fails: skip it then (most raw inputs).
        guard !analysis.modules.isEmpty, analysis.kind != .unknown else { return }
        // Strict (fp32) or --allow-unmatched (fp16, bf16 output), by the input's size:
        // one plan per input, for the same reason.
        let allowUnmatched = file.byteCount % 2 == 0
        do {
            let precision: MergePrecision = allowUnmatched ? .fp16 : .fp32
            let request = MergeRequest(
                checkpoint: FixedCheckpoint.file, adapters: [MergeInput(file: file, ratio: 0.75)],
                savePrecision: allowUnmatched ? .BF16 : nil, precision: precision,
                allowUnmatched: allowUnmatched, outputPath: "fuzz-out.safetensors", graftVersion: "fuzz")
            guard let merge = try? MergePlanner.plan(request, mapper: FixedCheckpoint.mapper) else { return }
            _ = merge.unmatched
            _ = try? FileLayout(tensors: merge.execution.tensors.map(\.output), metadata: merge.execution.metadata)
        }
    }
}
