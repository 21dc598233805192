import FileIO
import Fixtures
import Foundation
import SafeTensors
import Testing

// `graft convert` end to end through the built binary: exact bit patterns, overflow
// reporting and --strict, selection and metadata flags, determinism across thread
// counts, the Python reference reader, and zstd output.

private func writeF32(
    _ tensors: [(String, [UInt64], [UInt32])], extra: [(String, DType, [UInt64], [UInt8])] = [],
    metadata: [String: String]? = nil, to url: URL
) throws {
    var all: [(String, DType, [UInt64], [UInt8])] = tensors.map { t in
        (t.0, .F32, t.1, t.2.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } })
    }
    all += extra
    let layout = try FileLayout(
        tensors: all.map { OutputTensor(name: $0.0, dtype: $0.1, shape: $0.2) }, metadata: metadata, file: url.path)
    let out = try AtomicOutput(path: url.path, overwrite: true)
    try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
    for (i, info) in layout.tensors.enumerated() {
        try all.first { $0.0 == info.name }!.3.withUnsafeBytes {
            try out.write($0, at: layout.fileOffset(ofTensorAt: i))
        }
    }
    try out.commit()
}

private func halfBits(_ f: SafeTensorsFile, _ name: String) throws -> [UInt16] {
    let t = try #require(f.tensor(named: name))
    let raw = f.data(of: t)
    return (0..<raw.count / 2).map { raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) }
}

private func json(_ s: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any])
}

private let zstdBinary = ["/usr/bin/zstd", "/usr/local/bin/zstd"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

@Suite("ConvertCLITests: graft convert")
struct ConvertCLITests {
    // fp32 input bits and numpy's float16 result.
    static let cases: [(UInt32, UInt16)] = [
        (0x0000_0000, 0x0000), (0x8000_0000, 0x8000), (0x3F80_0000, 0x3C00), (0x477F_E000, 0x7BFF),
        (0x477F_F000, 0x7C00) /* 65520: overflow */, (0xD01502F9, 0xFC00) /* -1e10: overflow */,
        (0x7F80_0000, 0x7C00) /* +inf, not counted */, (0x3F80_1000, 0x3C00) /* tie -> even */,
        (0x3F80_3000, 0x3C02) /* tie -> even */, (0x3380_0000, 0x0001), (0x3300_0000, 0x0000) /* 2^-25 tie -> 0 */,
        (0x33C0_0000, 0x0002) /* 1.5 x 2^-24 -> 2 */, (0x7FC0_0000, 0x7E00), (0x7F80_0001, 0x7C01),
        (0xFFA0_0000, 0xFD00),
    ]

    @Test("fp32 -> fp16: numpy's bits, NaN stays NaN, overflow counted and reported per tensor")
    func bitsAndOverflow() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.safetensors"), output = dir.appendingPathComponent("out.safetensors")
        try writeF32(
            [("w", [UInt64(Self.cases.count)], Self.cases.map(\.0)), ("ok", [2], [0x3F00_0000, 0xBE80_0000])], to: input
        )
        let r = try CLI.run(["convert", input.path, "-o", output.path, "--dtype", "fp16", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let f = try SafeTensorsFile(path: output.path)
        #expect(try halfBits(f, "w") == Self.cases.map(\.1))
        #expect(try halfBits(f, "ok") == [0x3800, 0xB400])
        let doc = try json(r.stdout)
        #expect(doc["schema"] as? Int == 1)
        #expect(doc["overflow_count"] as? Int == 2)
        let overflows = try #require(doc["overflows"] as? [[String: Any]])
        #expect(overflows.count == 1 && overflows[0]["name"] as? String == "w" && overflows[0]["count"] as? Int == 2)

        // Text mode: a warning on stderr naming the tensor and the count.
        let t = try CLI.run(["convert", input.path, "-o", output.path, "--dtype", "half", "--force"])
        #expect(t.status == 0)
        #expect(t.stderr.contains("warning") && t.stderr.contains("w: 2"), "\(t.stderr)")
    }

    @Test("--strict: overflow is an error (exit 2), no output and no temporary file left")
    func strict() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.safetensors"), output = dir.appendingPathComponent("out.safetensors")
        try writeF32([("big", [2], [0x4780_0000, 0x3F80_0000])], to: input)  // 65536 overflows
        let r = try CLI.run(["convert", input.path, "-o", output.path, "--dtype", "fp16", "--strict"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("tensor 'big'") && r.stderr.contains("--strict"), "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["in.safetensors"])
        // Without overflow --strict succeeds.
        try writeF32([("fine", [1], [0x3F80_0000])], to: input)
        #expect(try CLI.run(["convert", input.path, "-o", output.path, "--dtype", "fp16", "--strict"]).status == 0)
    }

    @Test("integers untouched, --keep / --drop / --only, --metadata / --drop-metadata")
    func selectionAndMetadata() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.safetensors")
        let steps: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0xFF]
        try writeF32(
            [
                ("model.diffusion_model.a", [1], [0x3F80_0000]), ("first_stage_model.b", [1], [0x3F80_0000]),
                ("model_ema.c", [1], [0x3F80_0000]),
            ],
            extra: [("global_step", .I64, [1], steps)], metadata: ["format": "pt", "note": "x"], to: input)
        func convert(_ extra: [String]) throws -> SafeTensorsFile {
            let out = dir.appendingPathComponent("o-\(UUID().uuidString).safetensors")
            let r = try CLI.run(["convert", input.path, "-o", out.path, "--dtype", "bf16", "-q"] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.isEmpty)
            return try SafeTensorsFile(path: out.path)
        }
        let a = try convert(["--keep", "first_stage_model.*", "--drop", "model_ema.*"])
        #expect(Set(a.tensors.map(\.name)) == ["model.diffusion_model.a", "first_stage_model.b", "global_step"])
        #expect(a.tensor(named: "model.diffusion_model.a")?.dtype == .BF16)
        #expect(a.tensor(named: "first_stage_model.b")?.dtype == .F32)
        #expect(a.tensor(named: "global_step")?.dtype == .I64)
        #expect(Array(a.data(of: a.tensor(named: "global_step")!)) == steps)
        #expect(a.metadata == ["format": "pt", "note": "x"])

        let b = try convert([
            "--only", "model.diffusion_model.*", "--only", "first_stage_model.*", "--metadata", "note=y", "--metadata",
            "k=a=b",
        ])
        #expect(Set(b.tensors.map(\.name)) == ["model.diffusion_model.a", "first_stage_model.b"])
        #expect(b.metadata == ["format": "pt", "note": "y", "k": "a=b"])

        let c = try convert(["--drop-metadata"])
        #expect(c.metadata == nil)
        let d = try convert(["--drop-metadata", "--metadata", "format=pt"])
        #expect(d.metadata == ["format": "pt"])

        // A glob that matches nothing is a warning; bad flags are usage errors (64).
        let w = try CLI.run([
            "convert", input.path, "-o", dir.appendingPathComponent("w.safetensors").path, "--dtype", "fp16", "--drop",
            "nope*",
        ])
        #expect(w.status == 0 && w.stderr.contains("--drop nope* matches no tensor"))
        #expect(
            try CLI.run([
                "convert", input.path, "-o", dir.appendingPathComponent("x.safetensors").path, "--dtype", "int8",
            ]).status == 64)
        #expect(
            try CLI.run([
                "convert", input.path, "-o", dir.appendingPathComponent("x.safetensors").path, "--dtype", "fp16",
                "--metadata", "novalue",
            ]).status == 64)
        // Existing output without --force: refused, exit 2.
        let e = try CLI.run(["convert", input.path, "-o", input.path, "--dtype", "fp16", "--force"])
        #expect(e.status == 2 && e.stderr.contains("same file as the input"))
    }

    @Test("deterministic: same bytes twice and for GRAFT_THREADS=1 and 2; the Python reference reads the result")
    func deterministicAndPython() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("sdxl32.safetensors")
        try writeSynthetic(
            tensors: SDXLArchitecture(widthDivisor: 64).checkpointTensors(dtype: .F32),
            metadata: ["modelspec.title": "tiny"], to: input.path, seed: 7)
        var outputs: [Data] = []
        for (i, threads) in ["1", "2", "2"].enumerated() {
            let out = dir.appendingPathComponent("out\(i).safetensors")
            let r = try CLI.run(
                ["convert", input.path, "-o", out.path, "--dtype", "fp16", "--keep", "first_stage_model.*"],
                environment: ["GRAFT_THREADS": threads])
            #expect(r.status == 0, "\(r.stderr)")
            outputs.append(try Data(contentsOf: out))
        }
        #expect(outputs[0] == outputs[1] && outputs[1] == outputs[2])

        let hasPython = (try? CLI.runPython(["-c", "import safetensors, numpy"]))?.status == 0
        if !hasPython {
            try #require(!CLI.isCI, "CI is set but python3 with safetensors and numpy is missing")
            return
        }
        // numpy's own float16 conversion of the input must equal graft's output, tensor by tensor.
        let script = """
            import sys, numpy as np
            from safetensors.numpy import load_file
            a = load_file(sys.argv[1]); b = load_file(sys.argv[2])
            assert set(a) == set(b)
            for k in a:
                want = a[k] if k.startswith('first_stage_model.') else a[k].astype(np.float16)
                assert b[k].dtype == want.dtype, k
                assert b[k].tobytes() == want.tobytes(), k
            print('ok', len(a))
            """
        let p = try CLI.runPython(["-c", script, input.path, dir.appendingPathComponent("out0.safetensors").path])
        #expect(p.status == 0 && p.stdout.hasPrefix("ok 2514"), "\(p.stderr)")
    }

    @Test(
        "a .zst output decompresses with zstd -d to the uncompressed output's bytes; --zstd-level needs .zst",
        .enabled(if: zstdBinary != nil || CLI.isCI, "zstd command-line tool not found"))
    func zstdOutput() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.safetensors")
        try writeSynthetic(
            tensors: SDXLArchitecture(widthDivisor: 64).checkpointTensors(dtype: .F32), metadata: nil, to: input.path,
            seed: 8)
        let plain = dir.appendingPathComponent("p.safetensors"),
            packed = dir.appendingPathComponent("p.safetensors.zst")
        #expect(try CLI.run(["convert", input.path, "-o", plain.path, "--dtype", "bf16"]).status == 0)
        let r = try CLI.run([
            "convert", input.path, "-o", packed.path, "--dtype", "bf16", "--zstd-level", "9", "--json",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        let doc = try json(r.stdout)
        let out = try #require(doc["output"] as? [String: Any])
        let size = try FileManager.default.attributesOfItem(atPath: packed.path)[.size] as? Int
        #expect(out["compressed_bytes"] as? Int == size)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try #require(zstdBinary))
        p.arguments = ["-d", "-q", "-f", packed.path, "-o", dir.appendingPathComponent("back.safetensors").path]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(try Data(contentsOf: plain) == Data(contentsOf: dir.appendingPathComponent("back.safetensors")))

        let bad = try CLI.run([
            "convert", input.path, "-o", dir.appendingPathComponent("x.safetensors").path, "--dtype", "bf16",
            "--zstd-level", "5",
        ])
        #expect(bad.status == 64 && bad.stderr.contains("--zstd-level"))
        let range = try CLI.run([
            "convert", input.path, "-o", dir.appendingPathComponent("x.safetensors.zst").path, "--dtype", "bf16",
            "--zstd-level", "99",
        ])
        #expect(range.status == 64)
    }

    @Test(
        "truncated or corrupt .zst input: exit 2 with a one-line message naming the problem",
        .enabled(if: zstdBinary != nil || CLI.isCI, "zstd command-line tool not found"))
    func badZstdInput() throws {
        let dir = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.safetensors")
        try writeSynthetic(
            tensors: SDXLArchitecture(widthDivisor: 64).checkpointTensors(dtype: .F16), metadata: nil, to: input.path,
            seed: 9)
        let packed = dir.appendingPathComponent("in.safetensors.zst")
        #expect(try CLI.run(["convert", input.path, "-o", packed.path, "--dtype", "fp16"]).status == 0)
        let data = try Data(contentsOf: packed)
        let truncated = dir.appendingPathComponent("t.safetensors.zst")
        try data.prefix(data.count / 2).write(to: truncated)
        var corrupt = data
        for i in stride(from: 100, to: min(corrupt.count, 5000), by: 7) { corrupt[i] ^= 0x5A }
        let corruptURL = dir.appendingPathComponent("c.safetensors.zst")
        try corrupt.write(to: corruptURL)
        for (url, word) in [(truncated, "truncated"), (corruptURL, "zstd")] {
            let r = try CLI.run([
                "convert", url.path, "-o", dir.appendingPathComponent("o.safetensors").path, "--dtype", "fp32",
            ])
            #expect(r.status == 2)
            #expect(r.stderr.hasPrefix("graft: error: \(url.path)") && r.stderr.contains(word), "\(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1)
            let d = try CLI.run(["diff", url.path, input.path])
            #expect(d.status == 2)
        }
    }
}

extension CLI {
    /// Runs python3 with these arguments.
    static func runPython(_ args: [String]) throws -> CLIResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return CLIResult(
            status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
            stderr: String(decoding: e, as: UTF8.self))
    }
}
