import Adapters
import Foundation
import Testing
import Fixtures
import SafeTensors

/// The reference key lists in ../shared/models (next to the repository).
enum ReferenceKeys {
    struct Entry: Decodable, Equatable {
        let name: String
        let dtype: String
        let shape: [Int]
    }
    struct File: Decodable {
        let tensors: [Entry]
        let metadata: [String: String]?
    }

    static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/models")

    static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    /// Run when the file is there; on CI (env `CI` set) run anyway, so a missing file fails.
    static func shouldRun(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: url(name).path) || ProcessInfo.processInfo.environment["CI"] != nil
    }

    static func load(_ name: String) throws -> File {
        let data = try Data(contentsOf: url(name))
        return try JSONDecoder().decode(File.self, from: data)
    }
}

extension SyntheticTensor {
    var entry: ReferenceKeys.Entry { .init(name: name, dtype: dtype.rawValue, shape: shape) }
}

/// Fails with the first differences between two entry lists (compared sorted by name).
func expectSameEntries(
    _ actual: [ReferenceKeys.Entry], _ expected: [ReferenceKeys.Entry],
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let a = actual.sorted { $0.name < $1.name }, e = expected.sorted { $0.name < $1.name }
    #expect(a.count == e.count, "tensor count", sourceLocation: sourceLocation)
    let aNames = Set(a.map(\.name)), eNames = Set(e.map(\.name))
    let missing = eNames.subtracting(aNames).sorted(), extra = aNames.subtracting(eNames).sorted()
    #expect(missing.isEmpty, "missing: \(missing.prefix(10))", sourceLocation: sourceLocation)
    #expect(extra.isEmpty, "unexpected: \(extra.prefix(10))", sourceLocation: sourceLocation)
    let byName = Dictionary(uniqueKeysWithValues: e.map { ($0.name, $0) })
    let wrong = a.filter { byName[$0.name] != nil && byName[$0.name] != $0 }
        .map { "\($0.name): \($0.dtype) \($0.shape), expected \(byName[$0.name]!.dtype) \(byName[$0.name]!.shape)" }
    #expect(wrong.isEmpty, "wrong dtype/shape: \(wrong.prefix(10))", sourceLocation: sourceLocation)
}

@Suite struct FixturesTests {
    // MARK: Reference layouts

    @Test(
        .enabled(
            if: ReferenceKeys.shouldRun("sdxl-checkpoint-keys.json"),
            "../shared/models/sdxl-checkpoint-keys.json not found (set CI to make this a failure)"))
    func fullSizeSDXLMatchesRealCheckpoint() throws {
        let reference = try ReferenceKeys.load("sdxl-checkpoint-keys.json")
        let generated = SDXLArchitecture().checkpointTensors(dtype: .F16)
        #expect(generated.count == 2514)
        expectSameEntries(generated.map(\.entry), reference.tensors)
    }

    @Test(
        .enabled(
            if: ReferenceKeys.shouldRun("sdxl-locon-keys.json"),
            "../shared/models/sdxl-locon-keys.json not found (set CI to make this a failure)"))
    func fullSizeLoConMatchesKohyaFile() throws {
        let reference = try ReferenceKeys.load("sdxl-locon-keys.json")
        let options = KohyaLoRAOptions(rank: 16, alpha: 8, convRank: 8, convAlpha: 4)
        let checkpoint = SDXLArchitecture().checkpointTensors()
        let lora = KohyaLoRA.sdxl(checkpoint: checkpoint, options: options)
        expectSameEntries(lora.map(\.entry), reference.tensors)

        // The training keys graft reads agree with sd-scripts' spelling.
        let ours = KohyaLoRA.metadata(.sdxl, options: options, title: "L2")
        let theirs = try #require(reference.metadata)
        for key in [
            "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
            "ss_base_model_version", "ss_v2", "modelspec.architecture", "modelspec.implementation",
            "modelspec.resolution", "modelspec.sai_model_spec", "modelspec.prediction_type",
            "modelspec.title", "ss_output_name", "ss_network_train_unet_only",
            "ss_network_train_text_encoder_only",
        ] {
            #expect(ours[key] == theirs[key], "metadata \(key)")
        }
    }

    // MARK: Architecture facts

    @Test func sdxlModuleCounts() {
        let checkpoint = SDXLArchitecture().checkpointTensors()
        let lora = KohyaLoRA.sdxlTargets(checkpoint: checkpoint, includeConv: false)
        let locon = KohyaLoRA.sdxlTargets(checkpoint: checkpoint, includeConv: true)
        #expect(lora.filter { $0.moduleName.hasPrefix("lora_unet_") }.count == 722)
        #expect(locon.filter { $0.moduleName.hasPrefix("lora_unet_") }.count == 788)
        #expect(lora.filter { $0.moduleName.hasPrefix("lora_te1_") }.count == 72)
        #expect(lora.filter { $0.moduleName.hasPrefix("lora_te2_") }.count == 192)
        // Every target names a real tensor whose shape the module's delta fits.
        let shapes = Dictionary(uniqueKeysWithValues: checkpoint.map { ($0.name, $0.shape) })
        for m in locon {
            let shape = shapes[m.targetKey]
            #expect(shape != nil, "\(m)")
            guard let shape else { continue }
            #expect((m.rows?.count ?? shape[0]) == m.outFeatures && shape[1] == m.inFeatures, "\(m)")
            #expect(Array(shape.dropFirst(2)) == m.kernel, "\(m)")
        }
        let v = locon.first { $0.moduleName == "lora_te2_text_model_encoder_layers_31_self_attn_v_proj" }
        #expect(v?.targetKey == "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight")
        #expect(v?.rows == 2560..<3840)
    }

    @Test(arguments: [2, 4, 16, 64])
    func reducedWidthSDXLIsConsistent(divisor: Int) {
        let arch = SDXLArchitecture(widthDivisor: divisor)
        let full = SDXLArchitecture().checkpointTensors()
        let small = arch.checkpointTensors()
        #expect(small.map(\.name) == full.map(\.name))
        // Each dimension is either kept (kernels, 77 positions, 3/4/8 image and latent
        // channels, scalars) or divided; 4-D tensors keep their kernel size.
        for (f, s) in zip(full, small) {
            #expect(f.shape.count == s.shape.count, "\(s)")
            for (df, ds) in zip(f.shape, s.shape) {
                #expect(ds == df || ds * divisor == df, "\(s) vs \(f)")
            }
            if f.shape.count == 4 { #expect(Array(f.shape[2...]) == Array(s.shape[2...]), "\(s)") }
        }
        let shape = Dictionary(uniqueKeysWithValues: small.map { ($0.name, $0.shape) })
        let w1 = arch.te1Width, w2 = arch.te2Width
        #expect(arch.contextWidth == w1 + w2)
        #expect(shape["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] == [3 * w2, w2])
        #expect(shape["conditioner.embedders.1.model.positional_embedding"] == [77, w2])
        #expect(
            shape["conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"] == [77, w1])
        #expect(shape["model.diffusion_model.label_emb.0.0.weight"] == [4 * arch.modelChannels, arch.labelInputWidth])
        for t in small where t.name.hasPrefix("model.diffusion_model.") {
            let c = t.shape.first ?? 0
            if t.name.hasSuffix("attn2.to_k.weight") || t.name.hasSuffix("attn2.to_v.weight") {
                #expect(t.shape == [c, w1 + w2], "\(t)")
            } else if t.name.hasSuffix("ff.net.0.proj.weight") {
                #expect(t.shape == [c, c / 8], "\(t)")
                #expect(c % 8 == 0)
            } else if t.name.hasSuffix("ff.net.2.weight") {
                #expect(t.shape == [c, 4 * c], "\(t)")
            }
        }
        // A LoRA for it still fits every module.
        let lora = KohyaLoRA.sdxl(checkpoint: small, options: .init(rank: 4, alpha: 2, convRank: 2))
        #expect(lora.count == 3 * (722 + 66 + 264))
    }

    // MARK: SD 1.x

    @Test func sd1LayoutAndKohyaNames() {
        let arch = SD15Architecture(widthDivisor: 8)
        let checkpoint = arch.checkpointTensors()
        let shapes = Dictionary(uniqueKeysWithValues: checkpoint.map { ($0.name, $0.shape) })
        let c = arch.modelChannels
        #expect(shapes["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == [c, c, 1, 1])
        #expect(shapes["model.diffusion_model.output_blocks.11.1.proj_out.weight"] == [c, c, 1, 1])
        #expect(
            shapes["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == [
                c, arch.teWidth,
            ])
        #expect(shapes["model.diffusion_model.output_blocks.2.1.conv.weight"] == [4 * c, 4 * c, 3, 3])
        #expect(
            shapes["cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight"] == [
                4 * arch.teWidth, arch.teWidth,
            ])

        let plain = KohyaLoRA.sd1Targets(checkpoint: checkpoint, includeConv: false)
        let conv = KohyaLoRA.sd1Targets(checkpoint: checkpoint, includeConv: true)
        #expect(plain.filter { $0.moduleName.hasPrefix("lora_unet_") }.count == 192)
        #expect(conv.filter { $0.moduleName.hasPrefix("lora_unet_") }.count == 278)
        #expect(plain.filter { $0.moduleName.hasPrefix("lora_te_") }.count == 72)
        let map = Dictionary(uniqueKeysWithValues: conv.map { ($0.moduleName, $0.targetKey) })
        let examples = [
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q":
                "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
            "lora_unet_up_blocks_3_attentions_2_proj_out": "output_blocks.11.1.proj_out",
            "lora_unet_down_blocks_1_resnets_0_conv_shortcut": "input_blocks.4.0.skip_connection",
            "lora_unet_up_blocks_0_upsamplers_0_conv": "output_blocks.2.1.conv",
            "lora_unet_up_blocks_2_upsamplers_0_conv": "output_blocks.8.2.conv",
            "lora_unet_down_blocks_2_downsamplers_0_conv": "input_blocks.9.0.op",
            "lora_unet_mid_block_resnets_1_time_emb_proj": "middle_block.2.emb_layers.1",
            "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj":
                "middle_block.1.transformer_blocks.0.ff.net.0.proj",
            "lora_unet_down_blocks_3_resnets_1_conv2": "input_blocks.11.0.out_layers.3",
        ]
        for (module, path) in examples {
            #expect(map[module] == "model.diffusion_model.\(path).weight", "\(module)")
        }
        #expect(
            map["lora_te_text_model_encoder_layers_3_self_attn_out_proj"]
                == "cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.out_proj.weight")

        let lora = KohyaLoRA.sd1(checkpoint: checkpoint, options: .init(rank: 4, alpha: 1))
        let loraShapes = Dictionary(uniqueKeysWithValues: lora.map { ($0.name, $0.shape) })
        let proj = "lora_unet_down_blocks_0_attentions_1_proj_in"
        #expect(loraShapes[proj + ".lora_down.weight"] == [4, c, 1, 1])
        #expect(loraShapes[proj + ".lora_up.weight"] == [c, 4, 1, 1])
        #expect(loraShapes[proj + ".alpha"] == [])
        let meta = KohyaLoRA.metadata(.sd1, options: .init(rank: 4, alpha: 1), title: "t")
        #expect(
            meta["ss_base_model_version"] == "sd_v1" && meta["modelspec.architecture"] == "stable-diffusion-v1/lora")
        #expect(meta["ss_network_alpha"] == "1.0" && meta["ss_network_args"] == nil)
    }

    // MARK: LyCORIS adapters

    @Test func lycorisFactorization() {
        // LyCORIS's factorization(dimension, factor): the factor and the quotient when it divides.
        #expect(LyCORISAdapter.factorization(1280, factor: 8) == (8, 160))
        #expect(LyCORISAdapter.factorization(2048, factor: 8) == (8, 256))
        #expect(LyCORISAdapter.factorization(40, factor: 8) == (5, 8))
        #expect(LyCORISAdapter.factorization(9, factor: 8) == (3, 3))
        #expect(LyCORISAdapter.factorization(77, factor: 8) == (7, 11))
        #expect(LyCORISAdapter.factorization(13, factor: 8) == (1, 13))
        #expect(LyCORISAdapter.factorization(320, factor: -1) == (16, 20))
    }

    @Test func lycorisAdaptersHaveExpectedKeysAndAnalyseCleanly() throws {
        let checkpoint = SDXLArchitecture(widthDivisor: 8).checkpointTensors()
        let unet = LyCORISAdapter.sdxlUNetTargets(checkpoint: checkpoint)
        let all = KohyaLoRA.sdxlTargets(checkpoint: checkpoint, includeConv: false)
        #expect(unet.count == 722)
        #expect(unet.allSatisfy { $0.moduleName.hasPrefix("lora_unet_") && $0.kernel.isEmpty })
        #expect(all.count == 722 + 72 + 192)
        let shapes = Dictionary(uniqueKeysWithValues: checkpoint.map { ($0.name, $0.shape) })

        func infos(_ list: [SyntheticTensor]) -> [TensorInfo] {
            list.map {
                TensorInfo(
                    name: $0.name, dtype: $0.dtype, shape: $0.shape.map(UInt64.init),
                    dataOffsets: 0..<UInt64($0.byteCount))
            }
        }
        /// Analyses the tensors and checks every module: the kind, no issues, a delta that
        /// fits its target; returns the analysis.
        func analyse(_ list: [SyntheticTensor], _ targets: [LoRATarget], kind: ModuleKind) -> AdapterAnalysis {
            let analysis = AdapterAnalysis(tensors: infos(list))
            #expect(analysis.modules.count == targets.count)
            #expect(analysis.invalidModules.isEmpty, "\(analysis.invalidModules.prefix(3).map(\.issues))")
            #expect(analysis.kindCounts == [kind: targets.count])
            for t in targets {
                let m = analysis.module(named: t.moduleName)
                #expect(m != nil, "\(t.moduleName)")
                guard let m, let target = shapes[t.targetKey] else { continue }
                let shape = t.rows.map { [$0.count] + target.dropFirst() } ?? target
                #expect(m.delta?.fits(shape) == true, "\(t): \(m.delta?.description ?? "no delta") vs \(shape)")
            }
            return analysis
        }

        // LoHa d16: alpha, hada_w1_a/w2_a [out, 16], hada_w1_b/w2_b [16, in].
        let loha = LyCORISAdapter.loha(targets: unet, options: LoHaOptions(dim: 16, alpha: 8))
        #expect(loha.count == 5 * unet.count)
        let q = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
        let lohaShapes = Dictionary(uniqueKeysWithValues: loha.map { ($0.name, $0.shape) })
        let width = 2 * 320 / 8, context = 2048 / 8
        #expect(lohaShapes[q + ".hada_w1_a"] == [width, 16] && lohaShapes[q + ".hada_w2_a"] == [width, 16])
        #expect(lohaShapes[q + ".hada_w1_b"] == [16, context] && lohaShapes[q + ".hada_w2_b"] == [16, context])
        #expect(lohaShapes[q + ".alpha"] == [])
        let lohaAnalysis = analyse(loha, unet, kind: .loha)
        #expect(lohaAnalysis.kind == .loha && !lohaAnalysis.hasDoRA && !lohaAnalysis.hasTucker)
        #expect(lohaAnalysis.ranks.map(\.value) == [16] && lohaAnalysis.ranks.map(\.count) == [unet.count])

        // LoKr factor 8: lokr_w1 [a, c], lokr_w2 [b, d] with a·b = out, c·d = in.
        let lokr = LyCORISAdapter.lokr(targets: unet, options: LoKrOptions(factor: 8))
        #expect(lokr.count == 3 * unet.count)
        let lokrShapes = Dictionary(uniqueKeysWithValues: lokr.map { ($0.name, $0.shape) })
        #expect(lokrShapes[q + ".lokr_w1"] == [8, 8] && lokrShapes[q + ".lokr_w2"] == [width / 8, context / 8])
        for t in unet {
            let w1 = try #require(lokrShapes[t.moduleName + ".lokr_w1"])
            let w2 = try #require(lokrShapes[t.moduleName + ".lokr_w2"])
            #expect(w1[0] * w2[0] == t.outFeatures && w1[1] * w2[1] == t.inFeatures, "\(t)")
            #expect(w1[0] <= w2[0] && w1[1] <= w2[1], "\(t)")
        }
        let lokrAnalysis = analyse(lokr, unet, kind: .lokr)
        #expect(lokrAnalysis.kind == .lokr)
        #expect(lokrAnalysis.modules.allSatisfy { $0.rank == nil })  // both factors whole

        // DoRA r32: the kohya LoRA plus dora_scale [out, 1] on every module (TE2 q/k/v: a row third).
        let lora = KohyaLoRAOptions(rank: 32, alpha: 16)
        let dora = LyCORISAdapter.dora(targets: all, lora: lora, dora: DoRAOptions(axis: .output))
        let plain = KohyaLoRA.tensors(for: all, options: lora)
        #expect(Set(dora.map(\.name)) == Set(plain.map(\.name) + all.map { $0.moduleName + ".dora_scale" }))
        let doraShapes = Dictionary(uniqueKeysWithValues: dora.map { ($0.name, $0.shape) })
        for t in all { #expect(doraShapes[t.moduleName + ".dora_scale"] == [t.outFeatures, 1], "\(t)") }
        let doraAnalysis = analyse(dora, all, kind: .lora)
        #expect(doraAnalysis.kind == .dora && doraAnalysis.hasDoRA)
        #expect(doraAnalysis.modules.allSatisfy { $0.doraAxis == .output && $0.rank == 32 })
        // Magnitudes are positive, around the row norms of a 0.02-spread weight.
        let scale = try #require(dora.first { $0.name == q + ".dora_scale" })
        guard case .normalAround(let mean, let std) = scale.fill else {
            Issue.record("dora_scale fill \(scale.fill)")
            return
        }
        #expect(abs(mean - 0.02 * Float(context).squareRoot()) < 1e-5 && std > 0 && mean - 6 * std > 0)

        // The input axis and conv targets: [1, in] and [out, 1, 1, 1] / [1, in, 1, 1].
        let conv = LoRATarget(moduleName: "m", targetKey: "k", outFeatures: 8, inFeatures: 4, kernel: [3, 3])
        let out4 = LyCORISAdapter.doraScales(targets: [conv], options: DoRAOptions(axis: .output))
        let in4 = LyCORISAdapter.doraScales(targets: [conv], options: DoRAOptions(axis: .input))
        #expect(out4.map(\.shape) == [[8, 1, 1, 1]] && in4.map(\.shape) == [[1, 4, 1, 1]])
        #expect(
            LyCORISAdapter.lokr(targets: [conv], options: LoKrOptions(factor: 2)).map(\.shape) == [
                [], [2, 2], [4, 2, 3, 3],
            ])
        #expect(
            LyCORISAdapter.loha(targets: [conv], options: LoHaOptions(dim: 2)).map(\.shape) == [
                [], [8, 2], [2, 36], [8, 2], [2, 36],
            ])
    }

    // MARK: Values and files

    @Test func splitMixMatchesReferenceAndNormalsAreUnit() {
        var r = SplitMix64(seed: 0)
        #expect(r.next() == 0xE220_A839_7B1D_CDAF)
        var g = SplitMix64(seed: 7)
        var sum = 0.0, squares = 0.0
        let n = 200_000
        for _ in 0..<n {
            let x = Double(g.nextNormal())
            sum += x
            squares += x * x
        }
        #expect(abs(sum / Double(n)) < 0.01)
        #expect(abs(squares / Double(n) - 1) < 0.02)
    }

    @Test func writtenFilesReadBackDeterministically() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-fixtures-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        let checkpoint = SDXLArchitecture(widthDivisor: 64).checkpointTensors()
        let options = KohyaLoRAOptions(rank: 4, alpha: 2, convRank: 2, convAlpha: 1)
        let lora = KohyaLoRA.sdxl(checkpoint: checkpoint, options: options)
        let meta = KohyaLoRA.metadata(.sdxl, options: options, title: "t")
        let a = dir.appendingPathComponent("a.safetensors").path
        let b = dir.appendingPathComponent("b.safetensors").path
        let c = dir.appendingPathComponent("c.safetensors").path
        let l = dir.appendingPathComponent("l.safetensors").path
        let written = try writeSynthetic(tensors: checkpoint, metadata: ["k": "v"], to: a, seed: 5)
        try writeSynthetic(tensors: checkpoint, metadata: ["k": "v"], to: b, seed: 5)
        try writeSynthetic(tensors: checkpoint, metadata: ["k": "v"], to: c, seed: 6)
        try writeSynthetic(tensors: lora, metadata: meta, to: l, seed: 5)
        #expect(try Data(contentsOf: URL(fileURLWithPath: a)) == Data(contentsOf: URL(fileURLWithPath: b)))
        #expect(try Data(contentsOf: URL(fileURLWithPath: a)) != Data(contentsOf: URL(fileURLWithPath: c)))
        #expect(written == (try SyntheticWriter.fileByteCount(tensors: checkpoint, metadata: ["k": "v"])))

        let file = try SafeTensorsFile(path: a)
        #expect(file.byteCount == written)
        #expect(file.metadata == ["k": "v"])
        expectSameEntries(
            file.tensors.map { .init(name: $0.name, dtype: $0.dtype.rawValue, shape: $0.dims) },
            checkpoint.map(\.entry))
        let norm = try #require(file.tensor(named: "model.diffusion_model.out.0.weight"))
        let normValues = file.data(of: norm).withMemoryRebound(to: Float16.self) { Array($0) }
        #expect(normValues.allSatisfy { abs(Float($0) - 1) < 0.1 })
        let weight = try #require(file.tensor(named: "conditioner.embedders.1.model.token_embedding.weight"))
        let values = file.data(of: weight).withMemoryRebound(to: Float16.self) { $0.map { Float($0) } }
        #expect(values.contains { $0 != 0 })
        let spread = (values.reduce(0) { $0 + $1 * $1 } / Float(values.count)).squareRoot()
        #expect(abs(spread - 0.02) < 0.002)

        let adapter = try SafeTensorsFile(path: l)
        #expect(adapter.metadata == meta)
        expectSameEntries(
            adapter.tensors.map { .init(name: $0.name, dtype: $0.dtype.rawValue, shape: $0.dims) },
            lora.map(\.entry))
        let alpha = try #require(adapter.tensor(named: "lora_unet_middle_block_1_proj_in.alpha"))
        #expect(try adapter.scalarValue(of: alpha) == 2)
        let convAlpha = try #require(adapter.tensor(named: "lora_unet_output_blocks_2_2_conv.alpha"))
        #expect(try adapter.scalarValue(of: convAlpha) == 1)
    }

    @Test(arguments: [DType.BF16, .F32, .F64])
    func dtypeOverrideAndPooledTensors(dtype: DType) throws {
        // Width 1/16 has tensors above the direct-generation limit, so pools are exercised.
        let checkpoint = SDXLArchitecture(widthDivisor: 16).checkpointTensors()
            .filter { $0.name.hasPrefix("conditioner.embedders.1.model.") }
        #expect(checkpoint.contains { $0.elementCount > SyntheticWriter.directElementLimit })
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "graft-fixtures-\(getpid())-\(dtype).safetensors"
        ).path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try writeSynthetic(tensors: checkpoint, metadata: nil, to: path, seed: 9, dtype: dtype)
        let file = try SafeTensorsFile(path: path)
        #expect(file.tensors.allSatisfy { $0.dtype == dtype })
        #expect(file.tensors.count == checkpoint.count)
        let scale = try #require(file.tensor(named: "conditioner.embedders.1.model.logit_scale"))
        #expect(abs(try file.scalarValue(of: scale) - 4.6052) < 0.02)
        let big = try #require(file.tensor(named: "conditioner.embedders.1.model.token_embedding.weight"))
        let bytes = file.data(of: big)
        #expect(bytes.contains { $0 != 0 })
    }
}
