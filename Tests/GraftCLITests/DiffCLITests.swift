import FileIO
import Fixtures
import Foundation
import SafeTensors
import Testing

// `graft diff` end to end: exit status like cmp (0 same, 1 different, 2 error), the
// JSON document against values computed here, key-set changes, --threshold, and
// --lora explaining a merge made by `graft merge`.

private func writeFloats(
    _ tensors: [(String, [UInt64], DType, [Float])], metadata: [String: String]? = nil, to url: URL
) throws {
    func bytes(_ d: DType, _ xs: [Float]) -> [UInt8] {
        d == .F16
            ? xs.flatMap { x in withUnsafeBytes(of: Float16(x).bitPattern.littleEndian) { Array($0) } }
            : xs.flatMap { x in withUnsafeBytes(of: x.bitPattern.littleEndian) { Array($0) } }
    }
    let layout = try FileLayout(
        tensors: tensors.map { OutputTensor(name: $0.0, dtype: $0.2, shape: $0.1) }, metadata: metadata, file: url.path)
    let out = try AtomicOutput(path: url.path, overwrite: true)
    try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
    for (i, info) in layout.tensors.enumerated() {
        let t = tensors.first { $0.0 == info.name }!
        try bytes(t.2, t.3).withUnsafeBytes { try out.write($0, at: layout.fileOffset(ofTensorAt: i)) }
    }
    try out.commit()
}

private func document(_ s: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any], "not JSON: \(s.prefix(200))")
}

private func values(_ n: Int, seed: UInt64) -> [Float] {
    var g = seed
    return (0..<n).map { _ in
        g = g &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int32(truncatingIfNeeded: g >> 32)) / Float(Int32.max) * 0.1
    }
}

@Suite("DiffCLITests: graft diff")
struct DiffCLITests {
    @Test("identical files exit 0; one changed tensor exits 1 with max/mean/rel/cosine as computed here")
    func exitStatusAndValues() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = values(1200, seed: 1)
        var b = a
        for i in stride(from: 3, to: 1200, by: 5) { b[i] *= 1.25 }
        let fa = dir.appendingPathComponent("a.safetensors"), fb = dir.appendingPathComponent("b.safetensors")
        try writeFloats(
            [
                ("model.diffusion_model.input_blocks.1.0.w", [40, 30], .F32, a),
                ("first_stage_model.k", [2], .F32, [1, 2]),
            ], to: fa)
        try writeFloats(
            [
                ("model.diffusion_model.input_blocks.1.0.w", [40, 30], .F32, b),
                ("first_stage_model.k", [2], .F32, [1, 2]),
            ], to: fb)

        let same = try CLI.run(["diff", fa.path, fa.path])
        #expect(same.status == 0, "\(same.stderr)")
        #expect(same.stdout.contains("identical"))

        let r = try CLI.run(["diff", fa.path, fb.path, "--json"])
        #expect(r.status == 1, "\(r.stderr)")
        let doc = try document(r.stdout)
        #expect(doc["schema"] as? Int == 1)
        #expect(doc["command"] as? String == "diff")
        #expect(doc["identical"] as? Bool == false)
        let tensors = try #require(doc["tensors"] as? [[String: Any]])
        let w = try #require(tensors.first { $0["name"] as? String == "model.diffusion_model.input_blocks.1.0.w" })
        var maxAbs = 0.0, sumAbs = 0.0, sqd = 0.0, sqa = 0.0, sqb = 0.0, dot = 0.0, differ = 0
        for i in 0..<a.count {
            let x = Double(a[i]), y = Double(b[i])
            maxAbs = max(maxAbs, abs(x - y)); sumAbs += abs(x - y); sqd += (x - y) * (x - y)
            sqa += x * x; sqb += y * y; dot += x * y
            if a[i] != b[i] { differ += 1 }
        }
        #expect(w["changed"] as? Bool == true)
        #expect(w["identical_bytes"] as? Bool == false)
        #expect(w["differing"] as? Int == differ)
        #expect(w["group"] as? String == "unet.input_blocks.1")
        #expect(abs((w["max_abs_diff"] as? Double ?? -1) - maxAbs) <= 1e-12)
        // Compared in fp32, summed in fp32 blocks then in double: ~1e-7 relative.
        #expect(abs((w["mean_abs_diff"] as? Double ?? -1) - sumAbs / 1200) <= 1e-6 * sumAbs / 1200)
        #expect(abs((w["relative_change"] as? Double ?? -1) - sqd.squareRoot() / sqa.squareRoot()) <= 1e-9)
        #expect(abs((w["cosine"] as? Double ?? -1) - dot / (sqa.squareRoot() * sqb.squareRoot())) <= 1e-6)
        #expect(doc["top"] as? [String] == ["model.diffusion_model.input_blocks.1.0.w"])
        let groups = try #require(doc["groups"] as? [[String: Any]])
        #expect(groups.first?["group"] as? String == "unet.input_blocks.1")
        let summary = try #require(doc["summary"] as? [String: Any])
        #expect(summary["changed"] as? Int == 1 && summary["unchanged"] as? Int == 1 && summary["in_both"] as? Int == 2)

        // Text mode: summary, group table and the tensor in the top list; exit 1.
        let text = try CLI.run(["diff", fa.path, fb.path, "--top", "3"])
        #expect(text.status == 1)
        #expect(
            text.stdout.contains("values: 1 changed") && text.stdout.contains("unet.input_blocks.1")
                && text.stdout.contains("different"))
        // --threshold above the largest difference: identical, exit 0.
        #expect(try CLI.run(["diff", fa.path, fb.path, "--threshold", "1"]).status == 0)
        #expect(try CLI.run(["diff", fa.path, fb.path, "--threshold", "1e-9"]).status == 1)
        #expect(try CLI.run(["diff", fa.path, fb.path, "--filter", "first_stage_model.*", "-q"]).status == 0)
    }

    @Test("key-set differences: only in A/B, dtype and shape changes are listed and make the files different")
    func keySets() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fa = dir.appendingPathComponent("a.safetensors"), fb = dir.appendingPathComponent("b.safetensors")
        try writeFloats(
            [("old", [1], .F32, [1]), ("s", [4], .F32, [1, 2, 3, 4]), ("d", [2], .F32, [0.5, 1])],
            metadata: ["title": "a", "only_a": "1"], to: fa)
        try writeFloats(
            [("new", [1], .F32, [1]), ("s", [2, 2], .F32, [1, 2, 3, 4]), ("d", [2], .F16, [0.5, 1])],
            metadata: ["title": "b"], to: fb)
        let r = try CLI.run(["diff", fa.path, fb.path, "--json"])
        #expect(r.status == 1)
        let doc = try document(r.stdout)
        #expect((doc["only_in_a"] as? [[String: Any]])?.map { $0["name"] as? String } == ["old"])
        #expect((doc["only_in_b"] as? [[String: Any]])?.map { $0["name"] as? String } == ["new"])
        let dt = try #require((doc["dtype_changes"] as? [[String: Any]])?.first)
        #expect(dt["name"] as? String == "d" && dt["dtype_a"] as? String == "F32" && dt["dtype_b"] as? String == "F16")
        let sc = try #require((doc["shape_changes"] as? [[String: Any]])?.first)
        #expect(sc["shape_a"] as? [Int] == [4] && sc["shape_b"] as? [Int] == [2, 2])
        let md = try #require(doc["metadata"] as? [String: Any])
        #expect(md["only_in_a"] as? [String] == ["only_a"] && md["changed"] as? [String] == ["title"])
        let text = try CLI.run(["diff", fa.path, fb.path])
        #expect(
            text.stdout.contains("only in A (1)") && text.stdout.contains("d: F32 -> F16")
                && text.stdout.contains("s: [4] -> [2, 2]"))
    }

    @Test("errors exit 2: a missing file, a malformed file, an adapter that is not one")
    func errors() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fa = dir.appendingPathComponent("a.safetensors")
        try writeFloats([("w", [1], .F32, [1])], to: fa)
        let missing = try CLI.run(["diff", fa.path, dir.appendingPathComponent("nope.safetensors").path])
        #expect(missing.status == 2 && missing.stderr.hasPrefix("graft: error:"))
        let junk = dir.appendingPathComponent("junk.safetensors")
        try Data([1, 2, 3]).write(to: junk)
        #expect(try CLI.run(["diff", fa.path, junk.path]).status == 2)
        let notLoRA = try CLI.run(["diff", fa.path, fa.path, "--lora", fa.path])
        #expect(notLoRA.status == 2 && notLoRA.stderr.contains("not an adapter"), "\(notLoRA.stderr)")
        #expect(try CLI.run(["diff", fa.path, fa.path, "--top", "-1"]).status == 64)
    }

    @Test("--lora explains a checkpoint merged by graft merge: residual ~ 0, nothing unexplained; a wrong ratio shows")
    func loraExplainsMerge() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = SDXLArchitecture(widthDivisor: 64).checkpointTensors(dtype: .F32)
        let base = dir.appendingPathComponent("base.safetensors"),
            lora = dir.appendingPathComponent("style.safetensors")
        try writeSynthetic(tensors: ckpt, metadata: nil, to: base.path, seed: 21)
        let o = KohyaLoRAOptions(rank: 8, alpha: 4)
        try writeSynthetic(
            tensors: KohyaLoRA.sdxl(checkpoint: ckpt, options: o),
            metadata: KohyaLoRA.metadata(.sdxl, options: o, title: "style"),
            to: lora.path, seed: 22)
        let merged = dir.appendingPathComponent("merged.safetensors")
        let m = try CLI.run(["merge", base.path, "\(lora.path):0.6", "-o", merged.path, "-q"])
        #expect(m.status == 0, "\(m.stderr)")

        let r = try CLI.run(["diff", base.path, merged.path, "--lora", "\(lora.path):0.6", "--json"])
        #expect(r.status == 1, "\(r.stderr)")
        let doc = try document(r.stdout)
        let l = try #require(doc["lora"] as? [String: Any])
        #expect((l["unexplained"] as? [String])?.isEmpty == true)
        #expect((l["unchanged"] as? [String])?.isEmpty == true)
        #expect((l["partially_explained"] as? [String])?.isEmpty == true)
        let explained = try #require(l["explained"] as? [String])
        #expect(explained.count > 100)
        let tensors = try #require(doc["tensors"] as? [[String: Any]])
        let residuals = tensors.compactMap { ($0["lora"] as? [String: Any])?["residual"] as? Double }
        #expect(residuals.count == explained.count)
        #expect((residuals.max() ?? 1) < 1e-5)
        let adapters = try #require(l["adapters"] as? [[String: Any]])
        #expect(adapters.first?["ratio"] as? Double == 0.6)

        // The text report says so too.
        let text = try CLI.run(["diff", base.path, merged.path, "--lora", "\(lora.path):0.6"])
        #expect(
            text.stdout.contains("explained (residual <= 0.05): \(explained.count) tensors"),
            "\(text.stdout.suffix(600))")
        // Ratio 1 instead of 0.6: every target only partially explained (residual 0.4 / 0.6).
        let wrong = try document(try CLI.run(["diff", base.path, merged.path, "--lora", lora.path, "--json"]).stdout)
        let wl = try #require(wrong["lora"] as? [String: Any])
        #expect((wl["partially_explained"] as? [String])?.count == explained.count)
    }

    @Test(
        "--lora explains LyCORIS merges too (same computation as merge): residual ~ 0",
        arguments: ["loha", "lokr", "dora-input", "dora-output-comfyui"])
    func loraExplainsLyCORISMerge(kind: String) throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = SDXLArchitecture(widthDivisor: 64).checkpointTensors(dtype: .F32)
        let base = dir.appendingPathComponent("base.safetensors")
        let adapter = dir.appendingPathComponent("\(kind).safetensors")
        try writeSynthetic(tensors: ckpt, metadata: nil, to: base.path, seed: 31)
        let targets = LyCORISAdapter.sdxlUNetTargets(checkpoint: ckpt)
        let tensors: [SyntheticTensor]
        switch kind {
        case "loha": tensors = LyCORISAdapter.loha(targets: targets, options: LoHaOptions(dim: 4, alpha: 2))
        case "lokr": tensors = LyCORISAdapter.lokr(targets: targets, options: LoKrOptions(factor: 2))
        default:
            let axis: DoRAOptions.Axis = kind == "dora-input" ? .input : .output
            tensors = LyCORISAdapter.dora(
                targets: targets, lora: KohyaLoRAOptions(rank: 4, alpha: 2), dora: DoRAOptions(axis: axis))
        }
        try writeSynthetic(tensors: tensors, metadata: nil, to: adapter.path, seed: 32)
        let compat = kind.hasSuffix("comfyui") ? "comfyui" : "lycoris"
        let merged = dir.appendingPathComponent("merged.safetensors")
        let m = try CLI.run(
            ["merge", base.path, "\(adapter.path):0.7", "-o", merged.path, "-q", "--compat", compat])
        #expect(m.status == 0, "\(m.stderr)")
        let r = try CLI.run(
            ["diff", base.path, merged.path, "--lora", "\(adapter.path):0.7", "--json", "--compat", compat])
        #expect(r.status == 1, "\(r.stderr)")
        let l = try #require(try document(r.stdout)["lora"] as? [String: Any])
        #expect((l["unexplained"] as? [String])?.isEmpty == true)
        #expect((l["partially_explained"] as? [String])?.isEmpty == true)
        #expect(((l["explained"] as? [String])?.count ?? 0) > 100)
        let tensorsDoc = try #require(try document(r.stdout)["tensors"] as? [[String: Any]])
        let residuals = tensorsDoc.compactMap { ($0["lora"] as? [String: Any])?["residual"] as? Double }
        #expect((residuals.max() ?? 1) < 1e-5)
    }

    @Test(".zst input is read transparently (diff of a .zst and its plain file: identical)")
    func zstdInput() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fa = dir.appendingPathComponent("a.safetensors"), packed = dir.appendingPathComponent("a.safetensors.zst")
        try writeFloats([("w", [300], .F32, values(300, seed: 5))], to: fa)
        #expect(try CLI.run(["convert", fa.path, "-o", packed.path, "--dtype", "fp32"]).status == 0)
        let r = try CLI.run(["diff", packed.path, fa.path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("identical"))
    }
}

/// Writes F32 tensors with FileLayout and Foundation only (names may hold any character).
private func writePlain(_ tensors: [(String, [Float])], metadata: [String: String]? = nil, to url: URL) throws {
    let layout = try FileLayout(
        tensors: tensors.map { OutputTensor(name: $0.0, dtype: .F32, shape: [UInt64($0.1.count)]) },
        metadata: metadata)
    var bytes = layout.headerBytes
    for t in layout.tensors {
        let values = tensors.first { $0.0 == t.name }!.1
        bytes += values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
    }
    try Data(bytes).write(to: url)
}

@Suite("DiffCLITests: names from files and --filter")
struct DiffHostileCLITests {
    /// A name that would colour the terminal red and forge a line of output (review §4 #12).
    static let evil = "evil\u{1B}[31mRED\nfake line"

    @Test("tensor names and metadata keys with ESC and newline are escaped in every text section")
    func hostileNames() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fa = dir.appendingPathComponent("a.safetensors"), fb = dir.appendingPathComponent("b.safetensors")
        try writePlain(
            [(Self.evil, [1, 2, 3]), ("onlyA\u{1B}]0;title\u{07}", [1]), ("w", [1, 2])],
            metadata: ["key\u{1B}[2J": "x"], to: fa)
        try writePlain(
            [(Self.evil, [1, 2, 4]), ("w\ronlyB", [5]), ("w", [1, 2])], metadata: ["key\u{1B}[2J": "y"], to: fb)
        for extra in [[], ["-v"]] {
            let r = try CLI.run(["diff", fa.path, fb.path] + extra)
            #expect(r.status == 1, "\(r.stderr)")
            #expect(
                !r.stdout.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" },
                "a control character reached stdout")
            #expect(!r.stdout.unicodeScalars.contains { (0x7F...0x9F).contains($0.value) })
            let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(!lines.contains { $0.hasPrefix("fake line") }, "a forged line")
            #expect(r.stdout.contains("evil\\u{1b}[31mRED\\nfake line"), "\(r.stdout)")
            #expect(r.stdout.contains("onlyA\\u{1b}]0;title\\u{7}"))
            #expect(r.stdout.contains("w\\ronlyB"))
            #expect(r.stdout.contains("changed: key\\u{1b}[2J"))
        }
    }

    @Test("--filter that matches no tensor in either file is an error (exit 2), alone or among others")
    func filterMatchingNothing() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fa = dir.appendingPathComponent("a.safetensors"), fb = dir.appendingPathComponent("b.safetensors")
        try writePlain([("unet.w", [1, 2]), ("vae.w", [3])], to: fa)
        try writePlain([("unet.w", [1, 2]), ("te.only_in_b", [3])], to: fb)

        let none = try CLI.run(["diff", fa.path, fb.path, "--filter", "vae"])
        #expect(none.status == 2, "\(none.stdout)")
        #expect(none.stdout.isEmpty)
        #expect(none.stderr == "graft: error: --filter 'vae' matches no tensor in either file\n", "\(none.stderr)")

        // One glob of several matching nothing fails too, and names only the culprits.
        let some = try CLI.run(["diff", fa.path, fb.path, "--filter", "unet.*", "--filter", "tx*", "--filter", "x?"])
        #expect(some.status == 2)
        #expect(some.stderr == "graft: error: --filter 'tx*', 'x?' match no tensor in either file\n", "\(some.stderr)")

        // A glob that matches on one side only is fine (it is then a key-set difference).
        #expect(try CLI.run(["diff", fa.path, fb.path, "--filter", "unet.*"]).status == 0)
        #expect(try CLI.run(["diff", fa.path, fb.path, "--filter", "te.*"]).status == 1)
        #expect(try CLI.run(["diff", fa.path, fb.path, "--filter", "vae.*", "--json"]).status == 1)
    }
}

@Suite("names from files in other commands' text output")
struct HostileNamesCLITests {
    @Test("convert -v and list escape a tensor name with ESC and newline")
    func convertAndList() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.safetensors"), output = dir.appendingPathComponent("out.safetensors")
        try writePlain([(DiffHostileCLITests.evil, [1, 2, 3]), ("keep\u{1B}[1m", [4])], to: input)
        let runs = [
            try CLI.run(["convert", input.path, "-o", output.path, "--dtype", "fp16", "--keep", "keep*", "-v"]),
            try CLI.run(["list", input.path]),
        ]
        #expect(runs[0].stdout.contains("  kept keep\\u{1b}[1m\n"), "\(runs[0].stdout)")
        #expect(runs[1].stdout.contains("evil\\u{1b}[31mRED\\nfake line"), "\(runs[1].stdout)")
        for r in runs {
            #expect(r.status == 0, "\(r.stderr)")
            for text in [r.stdout, r.stderr] {
                #expect(
                    !text.unicodeScalars.contains {
                        ($0.value < 0x20 && $0 != "\n") || (0x7F...0x9F).contains($0.value)
                    },
                    "a control character reached the terminal: \(text)")
                #expect(!text.split(separator: "\n").contains { $0.hasPrefix("fake line") })
            }
        }
    }
}
