import Adapters
import SafeTensors
import Testing

// Shapes come from files: no claimed shape may trap the analysis (review §4 #16).
@Suite("adapter analysis: checked shape arithmetic")
struct ShapeArithmeticTests {
    func info(_ name: String, _ shape: [UInt64], _ dtype: DType = .F16) -> TensorInfo {
        TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: 0..<0)
    }

    func module(_ tensors: [TensorInfo]) -> AdapterModule? {
        AdapterAnalysis(tensors: tensors).modules.first
    }

    @Test("the 176-byte LoKr (lokr_w1 [2^62, 0], lokr_w2 [4, 0]) is a bad shape, not a trap")
    func lokrOverflow() throws {
        let m = try #require(
            module([info("lora_unet_x.lokr_w1", [1 << 62, 0]), info("lora_unet_x.lokr_w2", [4, 0])]))
        #expect(m.kind == .lokr)
        #expect(m.issues.map(\.kind).contains(.badShape))
        #expect(m.factors == nil)
    }

    @Test(
        "LoKr sides whose products overflow Int are bad shapes",
        arguments: [
            ([UInt64(1) << 62, 4], [UInt64(4), 2]),
            ([UInt64(4), 2], [UInt64(1) << 62, 1 << 62]),
            ([UInt64.max, 2], [UInt64(3), 3]),
        ])
    func lokrProducts(w1: [UInt64], w2: [UInt64]) throws {
        let m = try #require(module([info("lora_unet_x.lokr_w1", w1), info("lora_unet_x.lokr_w2", w2)]))
        #expect(m.issues.map(\.kind).contains(.badShape))
        _ = m.delta?.description  // printing must not trap either
    }

    @Test("a LoCon whose input features times kernel area overflow is a bad shape")
    func loconOverflow() throws {
        let m = try #require(
            module([
                info("lora_unet_x.lora_down.weight", [4, 1 << 62, 3, 3]),
                info("lora_unet_x.lora_up.weight", [8, 4, 1, 1]),
            ]))
        #expect(m.issues.map(\.kind).contains(.badShape))
        #expect(m.factors == nil)
        _ = m.delta?.description
    }

    @Test("LoHa Tucker with huge kernels, zero dims and 5-D factors are issues, not traps")
    func lohaOddShapes() throws {
        let tucker = try #require(
            module([
                info("lora_unet_x.hada_w1_a", [4, 8]), info("lora_unet_x.hada_w1_b", [4, 1 << 62]),
                info("lora_unet_x.hada_w2_a", [4, 8]), info("lora_unet_x.hada_w2_b", [4, 1 << 62]),
                info("lora_unet_x.hada_t1", [4, 4, 1 << 40, 1 << 40]),
                info("lora_unet_x.hada_t2", [4, 4, 1 << 40, 1 << 40]),
            ]))
        #expect(tucker.issues.map(\.kind).contains(.badShape))
        let zero = try #require(
            module([
                info("lora_unet_x.hada_w1_a", [0, 4]), info("lora_unet_x.hada_w1_b", [4, 8]),
                info("lora_unet_x.hada_w2_a", [0, 4]), info("lora_unet_x.hada_w2_b", [4, 8, 1, 1, 1]),
            ]))
        #expect(zero.issues.map(\.kind).contains(.badShape))
    }

    @Test("the kinds consume every part they are given; leftovers are named")
    func leftovers() throws {
        let m = try #require(
            module([
                info("lora_unet_x.hada_w1_a", [8, 4]), info("lora_unet_x.hada_w1_b", [4, 8]),
                info("lora_unet_x.hada_w2_a", [8, 4]), info("lora_unet_x.hada_w2_b", [4, 8]),
                info("lora_unet_x.lora_mid.weight", [4, 4, 3, 3]),
            ]))
        #expect(m.kind == .loha)
        #expect(m.issues.map(\.kind) == [.unusedPart])
        let full = try #require(module([info("lora_unet_x.diff", [8, 8]), info("lora_unet_x.alpha", [])]))
        #expect(full.issues.map(\.kind) == [.unusedPart])
    }

    @Test("factors are parsed once into the closed set of shapes")
    func factorsParsed() throws {
        let lora = try #require(
            module([
                info("lora_unet_x.lora_down.weight", [4, 16]), info("lora_unet_x.lora_up.weight", [8, 4]),
                info("lora_unet_x.alpha", []), info("lora_unet_x.dora_scale", [8, 1]),
            ]))
        guard case .lowRank(let f)? = lora.factors else {
            Issue.record("not low-rank: \(String(describing: lora.factors))"); return
        }
        #expect(f.rank == 4 && f.mid == nil)
        #expect(lora.modifiers.dora?.axis == .output)
        #expect(lora.modifiers.alpha?.name == "lora_unet_x.alpha")
        let lokr = try #require(
            module([
                info("lora_unet_x.lokr_w1", [4, 4]), info("lora_unet_x.lokr_w2_a", [2, 3]),
                info("lora_unet_x.lokr_w2_b", [3, 5]),
            ]))
        guard case .kronecker(let k)? = lokr.factors else { Issue.record("not kronecker"); return }
        #expect(k.rank == 3 && !k.w1.isFactorized && k.w2.isFactorized)
        #expect(lokr.delta?.outFeatures == 8 && lokr.delta?.flatInFeatures == 20)
    }

    @Test("a zero-sized diff with a huge kernel: the layer type and the rank tallies do not trap")
    func hugeKernelOfEmptyDiff() throws {
        // Found by the structure-aware fuzzer: a full-difference `diff` [4, 0, 2^62, 4] has 0
        // elements, so its size does not overflow, but its kernel area 2^62 · 4 did
        // (LayerType.isSpatialConv, reached from AdapterAnalysis.ranks).
        let analysis = AdapterAnalysis(tensors: [info("lora_unet_x.diff", [4, 0, 1 << 62, 4])])
        _ = (analysis.ranks, analysis.convRanks, analysis.alphas, analysis.convAlphas, analysis.layerCounts)
        let m = try #require(analysis.modules.first)
        #expect(m.kind == .full)
        #expect(m.layer.isSpatialConv)
        #expect(LayerType.conv(kernelHeight: Int.max, kernelWidth: Int.max).isSpatialConv)
        #expect(!LayerType.conv(kernelHeight: 0, kernelWidth: Int.max).isSpatialConv)
        #expect(!LayerType.conv(kernelHeight: 1, kernelWidth: 1).isSpatialConv)
    }
}
