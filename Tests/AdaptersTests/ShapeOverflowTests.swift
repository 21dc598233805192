import Testing
import SafeTensors
@testable import Adapters

// Regression tests for inputs found by the fuzz targets (Fuzz/, `make fuzz`). Each file is
// built in code as the bytes a user could hand graft, and goes through the real header
// parser, so the tensors are exactly what `list` and `merge` would see.

/// The file FileLayout writes for `tensors` (zero data): its size and its parsed tensors.
private func parsedFile(_ tensors: [OutputTensor]) throws -> (byteCount: Int, tensors: [TensorInfo]) {
    let layout = try FileLayout(tensors: tensors, metadata: nil)
    let bytes = layout.headerBytes + [UInt8](repeating: 0, count: layout.totalByteCount - layout.dataStart)
    return (bytes.count, try bytes.withUnsafeBytes { try Header.parse(file: $0, source: "fuzz.safetensors") }.tensors)
}

@Suite("Shape arithmetic on hostile adapter files")
struct ShapeOverflowTests {
    /// Review §4 #16: a 176-byte LoKr whose factors have zero elements but dimensions whose
    /// product overflows: `a * b` in `FactorCheck.lokr` (AdapterModule.swift:420) trapped
    /// with "arithmetic overflow" during AdapterAnalysis (`graft list`, `graft merge`).
    @Test
    func lokrZeroElementFactorsWithHugeDimensions() throws {
        let (byteCount, tensors) = try parsedFile([
            OutputTensor(name: "lora_unet_m.lokr_w1", dtype: .F16, shape: [1 << 62, 0]),
            OutputTensor(name: "lora_unet_m.lokr_w2", dtype: .F16, shape: [4, 0]),
        ])
        #expect(byteCount == 176)
        let analysis = AdapterAnalysis(tensors: tensors)
        let m = try #require(analysis.module(named: "lora_unet_m"))
        #expect(m.kind == .lokr)
        #expect(m.issues.map(\.kind).contains(.badShape))
        _ = m.delta?.description
        _ = ListReport(tensors: tensors, metadata: nil, includeModules: true)
    }

    /// The LoCon variant: `lora_down` [0, 2^62, 2, 2] makes `inFeatures * area` in
    /// `FactorCheck.lora` (AdapterModule.swift:356) overflow.
    @Test
    func loconZeroRankWithHugeInputWidth() throws {
        let (_, tensors) = try parsedFile([
            OutputTensor(name: "lora_unet_m.lora_down.weight", dtype: .F16, shape: [0, 1 << 62, 2, 2]),
            OutputTensor(name: "lora_unet_m.lora_up.weight", dtype: .F16, shape: [4, 0, 1, 1]),
            OutputTensor(name: "lora_unet_m.alpha", dtype: .F16, shape: []),
        ])
        let analysis = AdapterAnalysis(tensors: tensors)
        let m = try #require(analysis.module(named: "lora_unet_m"))
        #expect(!m.isValid)
        #expect(m.issues.map(\.kind).contains(.badShape))
        _ = m.delta?.description
        _ = ListReport(tensors: tensors, metadata: nil, includeModules: true)
    }
}
