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

    /// Keeps TE1 layer 0, TE2 layer 0 (fused q/k/v), UNet input blocks 0 (conv_in), 3
    /// (downsampler), 4 (resnet with a 1×1 skip, attention), output blocks 2 (upsampler) and
    /// 5, transformer block 0, and every tensor outside numbered blocks; of the VAE only
    /// conv_in/conv_out: every layer kind once, so that planning stays cheap per input.
    static func keep(_ t: SyntheticTensor) -> Bool {
        let parts = t.name.split(separator: ".")
        func index(after word: String) -> Int? {
            guard let i = parts.firstIndex(where: { $0 == word }), i + 1 < parts.count else { return nil }
            return Int(parts[i + 1])
        }
        if t.name.hasPrefix(SDXLArchitecture.vaePrefix) {
            return t.name.contains("encoder.conv_in.") || t.name.contains("decoder.conv_out.")
        }
        if let n = index(after: "layers"), n != 0 { return false }
        if let n = index(after: "resblocks"), n != 0 { return false }
        if let n = index(after: "input_blocks"), ![0, 3, 4].contains(n) { return false }
        if let n = index(after: "output_blocks"), ![2, 5].contains(n) { return false }
        if let n = index(after: "transformer_blocks"), n != 0 { return false }
        if t.name.contains(".middle_block.") { return false }
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
            // The planner lays the output out itself (MergePlan.outputBytes).
            guard let merge = try? MergePlanner.plan(request, mapper: FixedCheckpoint.mapper) else { return }
            _ = (merge.unmatched, merge.outputBytes)
        }
    }
}
