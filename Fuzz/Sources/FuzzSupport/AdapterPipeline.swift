import Adapters
import Fixtures
import Foundation
import GraftEngine
import SafeTensors

/// The fixed checkpoint every adapter is planned against: a reduced-width SDXL base
/// (real key names, 2514 tensors) from `Fixtures`. Only its header matters; the data
/// is a sparse zero tail of a memfd.
public enum FixedCheckpoint {
    public static let architecture = SDXLArchitecture(widthDivisor: 16)
    public static let tensors: [SyntheticTensor] = architecture.checkpointTensors()

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

        for (allowUnmatched, precision) in [(false, MergePrecision.fp32), (true, .fp16)] {
            let request = MergeRequest(
                checkpoint: FixedCheckpoint.file, adapters: [MergeInput(file: file, ratio: 0.75)],
                savePrecision: allowUnmatched ? .BF16 : nil, precision: precision,
                allowUnmatched: allowUnmatched, outputPath: "fuzz-out.safetensors", graftVersion: "fuzz")
            guard let merge = try? MergePlanner.plan(request) else { continue }
            _ = merge.unmatched
            _ = try? FileLayout(tensors: merge.execution.tensors.map(\.output), metadata: merge.execution.metadata)
        }
    }
}
