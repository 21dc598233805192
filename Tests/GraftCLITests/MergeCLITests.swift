import Fixtures
import Foundation
import SafeTensors
import Testing

#if canImport(Glibc)
import Glibc
#endif

// `graft merge` through the built binary: exit codes, stdout/stderr, files written or not,
// inputs never modified, and clean-up when interrupted.

/// Inputs for the merge CLI tests, written once per test into its own directory.
struct MergeInputs {
    static let architecture = SDXLArchitecture(widthDivisor: 64)
    let dir: URL
    let checkpoint: String
    let lora: String

    init(seed: UInt64 = 42) throws {
        dir = try CLI.temporaryDirectory()
        checkpoint = dir.appendingPathComponent("base.safetensors").path
        lora = dir.appendingPathComponent("style.safetensors").path
        let tensors = Self.architecture.checkpointTensors()
        try writeSynthetic(tensors: tensors, metadata: ["modelspec.title": "Base"], to: checkpoint, seed: seed)
        let targets = Self.chosenTargets(tensors)
        let options = KohyaLoRAOptions(rank: 4, alpha: 2, convRank: 2, convAlpha: 1)
        try writeSynthetic(
            tensors: KohyaLoRA.tensors(for: targets, options: options),
            metadata: KohyaLoRA.metadata(.sdxl, options: options, title: "style"), to: lora, seed: seed &+ 1)
    }

    /// A linear, a 3x3 conv and the TE2 q/k/v thirds.
    static func chosenTargets(_ checkpoint: [SyntheticTensor]) -> [LoRATarget] {
        let all = KohyaLoRA.sdxlTargets(checkpoint: checkpoint, includeConv: true)
        let names: Set<String> = [
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            "lora_unet_output_blocks_2_2_conv",
            "lora_te2_text_model_encoder_layers_3_self_attn_q_proj",
            "lora_te2_text_model_encoder_layers_3_self_attn_k_proj",
            "lora_te2_text_model_encoder_layers_3_self_attn_v_proj",
        ]
        return all.filter { names.contains($0.moduleName) }
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Writes a kohya-named adapter from explicit (name, shape) pairs, all fp16.
    func writeAdapter(_ name: String, _ tensors: [(String, [Int])], base: KohyaLoRA.Base = .sdxl) throws -> String {
        let p = path(name)
        let list = tensors.map { n, shape in
            SyntheticTensor(
                name: n, dtype: .F16, shape: shape, fill: n.hasSuffix(".alpha") ? .constant(1) : .normal(std: 0.02))
        }
        try writeSynthetic(
            tensors: list, metadata: KohyaLoRA.metadata(base, options: KohyaLoRAOptions(), title: name), to: p, seed: 7)
        return p
    }

    /// Visible and hidden entries of the directory.
    func entries() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] }

    func cleanup() { try? FileManager.default.removeItem(at: dir) }
}

/// Size, modification time and (for files up to 64 MB) the bytes: enough to tell that a
/// file was not touched.
struct FileFingerprint: Equatable {
    let size: Int
    let mtime: Int
    let mtimeNanos: Int
    let inode: UInt64
    let bytes: Data?

    init(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw CocoaError(.fileNoSuchFile) }
        size = Int(st.st_size)
        mtime = Int(st.st_mtim.tv_sec)
        mtimeNanos = Int(st.st_mtim.tv_nsec)
        inode = UInt64(st.st_ino)
        bytes = size <= 64 << 20 ? try Data(contentsOf: URL(fileURLWithPath: path)) : nil
    }
}

private struct MergeJSON: Decodable {
    struct Adapter: Decodable {
        let path: String
        let ratio: Double
        let modules: Int
        let merged_modules: Int
        let not_merged: [NotMerged]
    }
    struct NotMerged: Decodable { let module: String; let reason: String; let message: String }
    struct Overflow: Decodable { let tensor: String; let count: Int }
    struct Output: Decodable {
        let path: String?
        let tensors: Int
        let merged: Int
        let copied: Int
        let converted: Int
    }
    let schema: Int
    let command: String
    let dry_run: Bool
    let adapters: [Adapter]
    let output: Output
    let overflows: [Overflow]?
}

@Suite("graft merge (CLI)")
struct MergeCLITests {
    @Test("success: writes the file and prints a one-line summary; inputs unchanged")
    func success() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let before = try [FileFingerprint(fx.checkpoint), FileFingerprint(fx.lora)]
        let out = fx.path("merged.safetensors")
        let r = try CLI.run(["merge", fx.checkpoint, fx.lora + ":0.8", "-o", out, "--save-precision", "fp16"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("merged 5 modules"), "stdout: \(r.stdout)")
        #expect(r.stdout.contains(out))
        let merged = try SafeTensorsFile(path: out)
        let input = try SafeTensorsFile(path: fx.checkpoint)
        #expect(merged.tensors.count == input.tensors.count)
        #expect(merged.metadata?["modelspec.title"] == "merged")
        let q = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
        #expect(Array(merged.data(of: merged.tensor(named: q)!)) != Array(input.data(of: input.tensor(named: q)!)))
        #expect(try [FileFingerprint(fx.checkpoint), FileFingerprint(fx.lora)] == before, "an input was modified")
        #expect(!fx.entries().contains { $0.contains("graft-partial") }, "\(fx.entries())")
    }

    @Test("--json prints one schema-2 document")
    func json() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("merged.safetensors")
        let r = try CLI.run(["merge", fx.checkpoint, fx.lora + ":-0.5", "-o", out, "--json"])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let doc = try JSONDecoder().decode(MergeJSON.self, from: Data(r.stdout.utf8))
        #expect(doc.schema == 2 && doc.command == "merge" && !doc.dry_run)
        #expect(doc.adapters.count == 1)
        #expect(doc.adapters.first?.ratio == -0.5)
        #expect(doc.adapters.first?.path == fx.lora)
        #expect(doc.adapters.first?.modules == 5 && doc.adapters.first?.merged_modules == 5)
        #expect(doc.output.path == out)
        #expect(doc.output.merged == 3, "to_q, the conv and one in_proj_weight")
        #expect(doc.output.merged + doc.output.copied + doc.output.converted == doc.output.tensors)
        #expect(FileManager.default.fileExists(atPath: out))
    }

    @Test("--dry-run writes nothing (text and JSON)")
    func dryRun() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("merged.safetensors")
        let before = Set(fx.entries())
        let text = try CLI.run(["merge", fx.checkpoint, fx.lora, "-o", out, "--dry-run"])
        #expect(text.status == 0, "stderr: \(text.stderr)")
        #expect(text.stdout.contains("merged: 5 modules"), "stdout: \(text.stdout)")
        let json = try CLI.run(["merge", fx.checkpoint, fx.lora, "-o", out, "--dry-run", "--json"])
        #expect(json.status == 0)
        let doc = try JSONDecoder().decode(MergeJSON.self, from: Data(json.stdout.utf8))
        #expect(doc.dry_run && doc.schema == 2)
        #expect(Set(fx.entries()) == before, "dry run created \(Set(fx.entries()).subtracting(before))")
    }

    @Test("existing output: refused without --force (untouched), replaced with it")
    func overwrite() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("merged.safetensors")
        try Data("precious".utf8).write(to: URL(fileURLWithPath: out))
        let before = try FileFingerprint(out)
        let refused = try CLI.run(["merge", fx.checkpoint, fx.lora, "-o", out])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("--force"), "stderr: \(refused.stderr)")
        #expect(try FileFingerprint(out) == before)
        let forced = try CLI.run(["merge", fx.checkpoint, fx.lora, "-o", out, "--force"])
        #expect(forced.status == 0, "stderr: \(forced.stderr)")
        #expect(try SafeTensorsFile(path: out).tensors.count == SafeTensorsFile(path: fx.checkpoint).tensors.count)
        #expect(!fx.entries().contains { $0.contains("graft-partial") })
    }

    @Test("output == an input is refused even with --force, input untouched", arguments: [false, true])
    func outputIsInput(viaSymlink: Bool) throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        var out = fx.checkpoint
        if viaSymlink {
            out = fx.path("alias.safetensors")
            try FileManager.default.createSymbolicLink(atPath: out, withDestinationPath: fx.checkpoint)
        }
        for target in [fx.checkpoint, fx.lora] {
            let dest = viaSymlink && target == fx.checkpoint ? out : target
            let before = try FileFingerprint(target)
            let r = try CLI.run(["merge", fx.checkpoint, fx.lora, "-o", dest, "--force"])
            #expect(r.status == 2, "output \(dest): stdout \(r.stdout)")
            #expect(r.stderr.contains("same file"), "stderr: \(r.stderr)")
            #expect(try FileFingerprint(target) == before, "\(target) was modified")
        }
        #expect(!fx.entries().contains { $0.contains("graft-partial") })
    }

    @Test("a module that matches no tensor: exit 2 naming it; --allow-unmatched merges the rest and lists it")
    func unmatchedModule() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        // output_blocks.5 is at a level with 2 transformer blocks; block 7 does not exist.
        let ghost = "lora_unet_output_blocks_5_1_transformer_blocks_7_attn1_to_q"
        let real = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
        let w = MergeInputs.architecture.modelChannels * 2
        let lora = try fx.writeAdapter(
            "partial.safetensors",
            [
                (ghost + ".lora_down.weight", [4, 4 * w]), (ghost + ".lora_up.weight", [4 * w, 4]),
                (ghost + ".alpha", []),
                (real + ".lora_down.weight", [4, w]), (real + ".lora_up.weight", [w, 4]), (real + ".alpha", []),
            ])
        let out = fx.path("merged.safetensors")
        let failed = try CLI.run(["merge", fx.checkpoint, lora, "-o", out])
        #expect(failed.status == 2)
        #expect(failed.stderr.contains(ghost), "stderr: \(failed.stderr)")
        #expect(failed.stderr.contains("--allow-unmatched"), "stderr: \(failed.stderr)")
        #expect(!failed.stderr.contains(real + ":"), "the good module is not listed as a problem")
        #expect(!FileManager.default.fileExists(atPath: out))

        let allowed = try CLI.run(["merge", fx.checkpoint, lora, "-o", out, "--allow-unmatched"])
        #expect(allowed.status == 0, "stderr: \(allowed.stderr)")
        #expect(allowed.stderr.contains(ghost), "still reported on stderr: \(allowed.stderr)")
        #expect(!allowed.stdout.contains("warning"), "diagnostics stay off stdout")
        #expect(allowed.stdout.contains("merged 1 modules"), "stdout: \(allowed.stdout)")
        #expect(FileManager.default.fileExists(atPath: out))
    }

    @Test("an SD 1.x LoRA on an SDXL checkpoint is refused before any output")
    func wrongBaseModel() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let sd1 = SD15Architecture(widthDivisor: 64).checkpointTensors()
        let options = KohyaLoRAOptions(rank: 4, alpha: 1)
        let lora = fx.path("sd1.safetensors")
        let modules = KohyaLoRA.sd1Targets(checkpoint: sd1, includeConv: false).prefix(12)
        try writeSynthetic(
            tensors: KohyaLoRA.tensors(for: Array(modules), options: options),
            metadata: KohyaLoRA.metadata(.sd1, options: options, title: "sd1"), to: lora, seed: 3)
        let out = fx.path("merged.safetensors")
        let before = Set(fx.entries())
        let r = try CLI.run(["merge", fx.checkpoint, lora, "-o", out])
        #expect(r.status == 2)
        #expect(r.stderr.contains("SD 1"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains(lora), "names the adapter: \(r.stderr)")
        #expect(Set(fx.entries()) == before, "nothing written")
        // --allow-unmatched does not turn a wrong base model into a partial merge.
        let allowed = try CLI.run(["merge", fx.checkpoint, lora, "-o", out, "--allow-unmatched"])
        #expect(allowed.status == 2, "stdout: \(allowed.stdout)")
        #expect(Set(fx.entries()) == before)
    }

    @Test("shape mismatch names both shapes")
    func shapeMismatch() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let m = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
        let w = MergeInputs.architecture.modelChannels * 2
        let lora = try fx.writeAdapter(
            "wrong.safetensors",
            [
                (m + ".lora_down.weight", [4, w + 3]), (m + ".lora_up.weight", [w, 4]), (m + ".alpha", []),
            ])
        let out = fx.path("merged.safetensors")
        let r = try CLI.run(["merge", fx.checkpoint, lora, "-o", out])
        #expect(r.status == 2)
        #expect(r.stderr.contains(m), "stderr: \(r.stderr)")
        let shapeSpellings = ["[\(w), \(w)]", "[\(w), \(w + 3)]", "\(w)x\(w + 3)", "\(w + 3)"]
        #expect(r.stderr.contains("[\(w), \(w)]") || r.stderr.contains("\(w)x\(w)"), "checkpoint shape in: \(r.stderr)")
        #expect(shapeSpellings.dropFirst().contains { r.stderr.contains($0) }, "adapter shape in: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test("LoHa and LoKr modules merge into their target", arguments: ["loha", "lokr"])
    func lycorisKindsMerge(kind: String) throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let m = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k"
        let w = MergeInputs.architecture.modelChannels * 2
        let keys: [(String, [Int])] =
            kind == "loha"
            ? [
                (m + ".hada_w1_a", [w, 4]), (m + ".hada_w1_b", [4, w]), (m + ".hada_w2_a", [w, 4]),
                (m + ".hada_w2_b", [4, w]), (m + ".alpha", []),
            ]
            : [(m + ".lokr_w1", [2, 2]), (m + ".lokr_w2", [w / 2, w / 2]), (m + ".alpha", [])]
        let lora = try fx.writeAdapter("\(kind).safetensors", keys)
        let out = fx.path("merged.safetensors")
        let r = try CLI.run(["merge", fx.checkpoint, lora, "-o", out, "--json"])
        #expect(r.status == 0, "stdout: \(r.stdout) stderr: \(r.stderr)")
        let doc = try JSONDecoder().decode(MergeJSON.self, from: Data(r.stdout.utf8))
        #expect(doc.adapters.first?.merged_modules == 1)
        let target = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_k.weight"
        let input = try SafeTensorsFile(path: fx.checkpoint), merged = try SafeTensorsFile(path: out)
        let a = try #require(input.tensor(named: target)), b = try #require(merged.tensor(named: target))
        #expect(Array(input.data(of: a)) != Array(merged.data(of: b)), "\(target) unchanged")
    }

    @Test(
        "formats graft cannot merge are named, and --allow-unmatched skips them",
        arguments: [("oft_R.weight", "OFTv2"), ("lambda_layer", "T-LoRA"), ("bias_values", "sparse bias")])
    func unmergeableFormats(suffix: String, name: String) throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let m = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k"
        let q = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
        let w = MergeInputs.architecture.modelChannels * 2
        let lora = try fx.writeAdapter(
            "\(name).safetensors",
            [
                (m + "." + suffix, [4, 6]), (q + ".lora_down.weight", [4, w]), (q + ".lora_up.weight", [w, 4]),
                (q + ".alpha", []),
            ])
        let out = fx.path("merged.safetensors")
        let r = try CLI.run(["merge", fx.checkpoint, lora, "-o", out])
        #expect(r.status == 2, "stdout: \(r.stdout) stderr: \(r.stderr)")
        #expect(r.stderr.contains(m), "stderr: \(r.stderr)")
        #expect(r.stderr.contains(name), "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let allowed = try CLI.run(["merge", fx.checkpoint, lora, "-o", out, "--allow-unmatched", "--json"])
        #expect(allowed.status == 0, "stderr: \(allowed.stderr)")
        let doc = try JSONDecoder().decode(MergeJSON.self, from: Data(allowed.stdout.utf8))
        #expect(doc.adapters.first?.merged_modules == 1)
        #expect(doc.adapters.first?.not_merged.map(\.reason) == ["unsupported_part"])
    }

    @Test("adapter argument: ':abc' is part of the path, the last ':number' is the ratio, colons in paths work")
    func ratioSyntax() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("merged.safetensors")
        // file:abc is a file name that does not exist.
        let abc = try CLI.run(["merge", fx.checkpoint, fx.lora + ":abc", "-o", out])
        #expect(abc.status == 2)
        #expect(abc.stderr.contains(fx.lora + ":abc"), "stderr: \(abc.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))

        // A path containing a colon, with and without a ratio.
        let colonPath = fx.path("a:b.safetensors")
        try FileManager.default.copyItem(atPath: fx.lora, toPath: colonPath)
        for (arg, ratio) in [
            (colonPath, 1.0), (colonPath + ":0.5", 0.5), (colonPath + ":-2", -2.0), (colonPath + ":1e-1", 0.1),
        ] {
            let r = try CLI.run(["merge", fx.checkpoint, arg, "-o", out, "--force", "--json"])
            #expect(r.status == 0, "\(arg): \(r.stderr)")
            let doc = try JSONDecoder().decode(MergeJSON.self, from: Data(r.stdout.utf8))
            #expect(doc.adapters.first?.path == colonPath, "\(arg)")
            #expect(doc.adapters.first?.ratio == ratio, "\(arg)")
        }
    }

    @Test(
        "usage errors exit 64",
        arguments: [
            ["merge", "CKPT", "-o", "OUT"],
            ["merge", "CKPT", "LORA", "-o", "OUT", "--precision", "fp8"],
            ["merge", "CKPT", "LORA", "-o", "OUT", "--save-precision", "int8"],
            ["merge", "CKPT", "LORA", "-o", "OUT", "--threads", "0"],
            ["merge", "CKPT", "LORA"],
        ])
    func usageErrors(args: [String]) throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("merged.safetensors")
        let resolved = args.map { $0 == "CKPT" ? fx.checkpoint : $0 == "LORA" ? fx.lora : $0 == "OUT" ? out : $0 }
        let r = try CLI.run(resolved)
        #expect(r.status == 64, "\(args): stderr \(r.stderr)")
        #expect(!r.stderr.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test("a truncated checkpoint: exit 2, one stderr line naming the file")
    func truncatedCheckpoint() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let broken = fx.path("broken.safetensors")
        let data = try Data(contentsOf: URL(fileURLWithPath: fx.checkpoint))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: broken))
        let out = fx.path("merged.safetensors")
        let r = try CLI.run(["merge", broken, fx.lora, "-o", out])
        #expect(r.status == 2)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(r.stderr)")
        #expect(r.stderr.contains(broken), "stderr: \(r.stderr)")
        #expect(r.stderr.hasPrefix("graft: error:"), "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
        // Same for a truncated adapter.
        let brokenLoRA = fx.path("broken-lora.safetensors")
        let l = try Data(contentsOf: URL(fileURLWithPath: fx.lora))
        try l.prefix(l.count - 10).write(to: URL(fileURLWithPath: brokenLoRA))
        let r2 = try CLI.run(["merge", fx.checkpoint, brokenLoRA, "-o", out])
        #expect(r2.status == 2)
        #expect(r2.stderr.split(separator: "\n").count == 1 && r2.stderr.contains(brokenLoRA), "stderr: \(r2.stderr)")
    }
}

/// posix_spawn with an empty signal mask and default dispositions. Foundation's Process
/// passes on the spawning thread's mask, and the test runner's threads block SIGINT and
/// SIGTERM, so a child started that way never sees the signal (graft does not unblock them).
private func spawnWithDefaultSignals(_ argv: [String], environment: [String: String]) throws -> pid_t {
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var empty = sigset_t(), defaults = sigset_t()
    sigemptyset(&empty)
    sigemptyset(&defaults)
    for s in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&defaults, s) }
    posix_spawnattr_setsigmask(&attr, &empty)
    posix_spawnattr_setsigdefault(&attr, &defaults)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for fd in [Int32(0), 1, 2] {
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
    }
    let cArgs = argv.map { strdup($0) } + [nil]
    let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { cArgs.forEach { free($0) }; cEnv.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgs, cEnv)
    guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
    return pid
}

/// Starts `graft args` with `GRAFT_TEST_PAUSE_FILE` set, waits until the pause file
/// appears (the first chunk has been handed to the writer, so the output file exists and
/// is being written), sends `signal`, and returns the wait status.
private func runAndInterrupt(_ args: [String], signal sig: Int32, namedTemporary: Bool) throws -> (
    status: Int32, paused: Bool
) {
    let pauseDir = try CLI.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: pauseDir) }
    let pauseFile = pauseDir.appendingPathComponent("paused").path
    var env = ProcessInfo.processInfo.environment
    env["GRAFT_TEST_PAUSE_FILE"] = pauseFile
    if namedTemporary { env["GRAFT_NO_TMPFILE"] = "1" }
    let pid = try spawnWithDefaultSignals([CLI.binary] + args + ["--no-progress"], environment: env)
    var status: Int32 = 0
    var paused = false
    let started = Date()
    while Date().timeIntervalSince(started) < 60 {
        if FileManager.default.fileExists(atPath: pauseFile) { paused = true; break }
        if waitpid(pid, &status, WNOHANG) == pid { return (status, false) }  // ended without pausing
        usleep(2_000)
    }
    kill(pid, sig)
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status, paused)
}

private func describe(_ status: Int32) -> String {
    let sig = status & 0x7f
    return sig != 0 && sig != 0x7f ? "signal \(sig)" : "exit \((status >> 8) & 0xff)"
}

@Suite("graft merge / convert (CLI): interruption", .serialized)
struct InterruptionTests {
    static let cases: [(command: String, signal: Int32, namedTemporary: Bool)] = [
        ("merge", SIGINT, false), ("merge", SIGTERM, false), ("merge", SIGKILL, false),
        ("merge", SIGINT, true), ("merge", SIGTERM, true), ("merge", SIGHUP, true),
        ("convert", SIGKILL, false), ("convert", SIGTERM, true),
        ("merge-zst", SIGKILL, false), ("merge-zst", SIGINT, true),
    ]

    /// The command line writing into `outDir` (which holds nothing else).
    static func arguments(_ command: String, _ fx: MergeInputs, outDir: URL) -> [String] {
        switch command {
        case "merge":
            return ["merge", fx.checkpoint, fx.lora, "-o", outDir.appendingPathComponent("merged.safetensors").path]
        case "merge-zst":
            return [
                "merge", fx.checkpoint, fx.lora, "-o", outDir.appendingPathComponent("merged.safetensors.zst").path,
            ]
        default:
            return [
                "convert", fx.checkpoint, "--dtype", "bf16", "-o", outDir.appendingPathComponent("c.safetensors").path,
            ]
        }
    }

    /// With O_TMPFILE the output has no name until commit, so even SIGKILL leaves nothing;
    /// with the named temporary file the signal handler removes it (SIGKILL: see below).
    @Test("a signal in the middle of the write leaves no file in the output directory", arguments: cases)
    func interrupted(command: String, signal sig: Int32, namedTemporary: Bool) throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let outDir = fx.dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
        let before = try [FileFingerprint(fx.checkpoint), FileFingerprint(fx.lora)]
        let (status, paused) = try runAndInterrupt(
            Self.arguments(command, fx, outDir: outDir), signal: sig,
            namedTemporary: namedTemporary)
        #expect(paused, "the command never reached the pause point (\(describe(status)))")
        #expect(status & 0x7f == sig, "expected death by signal \(sig), got \(describe(status))")
        let left = try FileManager.default.contentsOfDirectory(atPath: outDir.path)
        #expect(left.isEmpty, "left behind: \(left)")
        #expect(try [FileFingerprint(fx.checkpoint), FileFingerprint(fx.lora)] == before, "an input was modified")
    }

    @Test("SIGKILL with a named temporary file: the next run removes the stale partial and says so once")
    func stalePartialAfterKill() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let outDir = fx.dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
        let args = Self.arguments("merge", fx, outDir: outDir)
        let (status, paused) = try runAndInterrupt(args, signal: SIGKILL, namedTemporary: true)
        #expect(paused && status & 0x7f == SIGKILL, "\(describe(status))")
        let left = try FileManager.default.contentsOfDirectory(atPath: outDir.path)
        try #require(left.count == 1 && left[0].hasPrefix(".merged.safetensors.graft-partial-"), "\(left)")

        // The next run (here with O_TMPFILE) cleans up after the dead one and says so on stderr.
        let r = try CLI.run(args)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr == "graft: note: removed stale partial output \(left[0]) (from an interrupted run)\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: outDir.path) == ["merged.safetensors"])
        // And only once: a further run (with --force) has nothing to report.
        let again = try CLI.run(args + ["--force"])
        #expect(again.status == 0 && again.stderr.isEmpty, "\(again.stderr)")
    }
}

@Suite("graft merge (CLI): hardening")
struct MergeHardeningCLITests {
    @Test("a ratio beyond fp32 range is a usage error, nothing is written", arguments: ["1e39", "-4e38"])
    func ratioRange(ratio: String) throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("merged.safetensors")
        let r = try CLI.run(["merge", fx.checkpoint, fx.lora + ":" + ratio, "-o", out])
        #expect(r.status == 64, "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test("overflow to inf in fp16 is reported in text and JSON; --strict fails and writes nothing")
    func overflowReported() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("merged.safetensors")
        let text = try CLI.run(["merge", fx.checkpoint, fx.lora + ":1e9", "-o", out, "--save-precision", "fp16"])
        #expect(text.status == 0, "stderr: \(text.stderr)")
        #expect(text.stderr.contains("overflowed"), "stderr: \(text.stderr)")
        let json = try CLI.run([
            "merge", fx.checkpoint, fx.lora + ":1e9", "-o", out, "--force", "--json", "--save-precision", "fp16",
        ])
        let doc = try JSONDecoder().decode(MergeJSON.self, from: Data(json.stdout.utf8))
        #expect((doc.overflows ?? []).count == doc.output.merged && (doc.overflows ?? []).allSatisfy { $0.count > 0 })
        let strictOut = fx.path("strict.safetensors")
        let strict = try CLI.run([
            "merge", fx.checkpoint, fx.lora + ":1e9", "-o", strictOut, "--save-precision", "fp16", "--strict",
        ])
        #expect(strict.status == 2, "stderr: \(strict.stderr)")
        #expect(!fx.entries().contains { $0.contains("strict") }, "\(fx.entries())")
    }

    /// An adapter whose only module matches no tensor of the checkpoint.
    static func unmatchedAdapter(_ fx: MergeInputs) throws -> String {
        try fx.writeAdapter(
            "elsewhere.safetensors",
            [
                ("lora_unet_no_such_block.lora_down.weight", [4, 32]),
                ("lora_unet_no_such_block.lora_up.weight", [32, 4]),
            ])
    }

    @Test("--allow-unmatched that would merge nothing fails instead of writing a copy")
    func nothingMerged() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let lora = try Self.unmatchedAdapter(fx)
        let out = fx.path("merged.safetensors")
        let r = try CLI.run(["merge", fx.checkpoint, lora, "-o", out, "--allow-unmatched"])
        #expect(r.status == 2, "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test("with --json a failure is still one JSON document, with the error's kind and modules")
    func jsonErrorDocument() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let lora = try Self.unmatchedAdapter(fx)
        let r = try CLI.run(["merge", fx.checkpoint, lora, "--dry-run", "--json"])
        #expect(r.status == 2)
        struct Doc: Decodable {
            struct E: Decodable {
                struct M: Decodable { let module: String; let reason: String }
                let kind: String
                let file: String?
                let modules: [M]
            }
            let schema: Int
            let command: String
            let error: E
        }
        let doc = try JSONDecoder().decode(Doc.self, from: Data(r.stdout.utf8))
        #expect(doc.command == "merge" && doc.error.kind == "unmergeable_modules" && doc.error.file == lora)
        #expect(doc.error.modules.map(\.reason) == ["no_such_tensor"])
        #expect(doc.error.modules.map(\.module) == ["lora_unet_no_such_block"])
    }
}
