import Foundation
import Testing

import Fixtures
import SafeTensors

#if canImport(Glibc)
import Glibc
#endif

// End-to-end tests of `graft list`: the built binary on a synthetic SDXL checkpoint and
// a kohya LoRA (Fixtures, real key names at 1/64 width), text and JSON output, --filter,
// metadata summaries, --stats against values computed here, standard input and .zst
// input, one malformed file per rule, and a seeded mutation fuzz loop.

// MARK: - Fixtures

/// The files shared by the tests of this file, written once per test process into a
/// temporary directory that is removed at exit.
private final class ListFixtures: Sendable {
    let dir: URL
    let checkpoint: String
    let lora: String
    let checkpointTensors: [SyntheticTensor]
    let loraTensors: [SyntheticTensor]
    let loraMetadata: [String: String]
    let expectedModuleCounts: [String: Int]

    static let rank = 4
    static let alpha: Float = 2
    /// A realistic, long `ss_tag_frequency` (kohya writes it as JSON in a string).
    static let tagFrequency: String = {
        var tags: [String] = []
        for i in 0..<400 { tags.append("\"tag number \(i)\": \(400 - i)") }
        return "{\"10_graftcat\": {" + tags.joined(separator: ", ") + "}, \"5_reg\": {\"cat\": 3}}"
    }()
    static let datasets =
        "[{\"is_dreambooth\": true, \"batch_size_per_device\": 2, \"num_train_images\": 40, "
        + "\"subsets\": [{\"image_dir\": \"10_graftcat\", \"num_repeats\": 10, \"keep_tokens\": 1}], "
        + "\"bucket_info\": {\"buckets\": {\"0\": {\"resolution\": [1024, 1024], \"count\": 40}}}}]"

    nonisolated(unsafe) private static let cleanupPath = UnsafeMutablePointer<CChar>.allocate(capacity: 4096)

    private static let shared: Result<ListFixtures, any Error> = Result { try ListFixtures() }

    /// The shared fixtures (written on first use).
    static func load() throws -> ListFixtures { try shared.get() }

    private init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-list-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        _ = dir.path.withCString { strncpy(Self.cleanupPath, $0, 4095) }
        atexit {
            let path = String(cString: ListFixtures.cleanupPath)
            if path.contains("graft-list-") { try? FileManager.default.removeItem(atPath: path) }
        }
        let arch = SDXLArchitecture(widthDivisor: 64)
        checkpointTensors = arch.checkpointTensors(dtype: .F16)
        checkpoint = dir.appendingPathComponent("sdxl.safetensors").path
        try writeSynthetic(
            tensors: checkpointTensors,
            metadata: ["modelspec.architecture": "stable-diffusion-xl-v1-base", "modelspec.title": "sdxl"],
            to: checkpoint, seed: 1)

        let options = KohyaLoRAOptions(rank: Self.rank, alpha: Self.alpha)
        loraTensors = KohyaLoRA.sdxl(checkpoint: checkpointTensors, options: options)
        var metadata = KohyaLoRA.metadata(.sdxl, options: options, title: "graftcat")
        metadata["ss_tag_frequency"] = Self.tagFrequency
        metadata["ss_datasets"] = Self.datasets
        metadata["ss_training_comment"] = "line one\nline two \u{1B}[31mred"
        loraMetadata = metadata
        lora = dir.appendingPathComponent("lora.safetensors").path
        try writeSynthetic(tensors: loraTensors, metadata: metadata, to: lora, seed: 2)

        var counts: [String: Int] = [:]
        for t in KohyaLoRA.sdxlTargets(checkpoint: checkpointTensors, includeConv: false) {
            let component = t.moduleName.split(separator: "_")[1]
            counts[String(component), default: 0] += 1
        }
        expectedModuleCounts = counts
    }
}

// MARK: - Running the binary

private struct Run {
    let status: Int32
    /// True when the process ended by a signal (`status` is then the signal number).
    let signalled: Bool
    let timedOut: Bool
    let stdout: String
    let stderr: String
    var stderrLines: [Substring] { stderr.split(separator: "\n", omittingEmptySubsequences: false).dropLast() }
}

/// Runs `graft` with a deadline; stdin is /dev/null unless `stdin` is given.
private func runGraft(_ args: [String], stdin: Data? = nil, timeout: Double = 20) throws -> Run {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: CLI.binary)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["TERM"] = "dumb"
    p.environment = env
    let out = Pipe(), err = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = stdin == nil ? FileHandle.nullDevice : input
    try p.run()
    let group = DispatchGroup()
    nonisolated(unsafe) var outData = Data(), errData = Data()
    DispatchQueue.global().async(group: group) { outData = out.fileHandleForReading.readDataToEndOfFile() }
    DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
    if let stdin {
        DispatchQueue.global().async(group: group) {
            // The child may exit before reading everything: write with SIGPIPE ignored.
            signal(SIGPIPE, SIG_IGN)
            stdin.withUnsafeBytes { buf in
                var done = 0
                let fd = input.fileHandleForWriting.fileDescriptor
                while done < buf.count {
                    let n = write(fd, buf.baseAddress! + done, buf.count - done)
                    if n <= 0 { break }
                    done += n
                }
            }
            try? input.fileHandleForWriting.close()
        }
    }
    var timedOut = false
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning {
        if Date() > deadline {
            timedOut = true
            kill(p.processIdentifier, SIGKILL)
            break
        }
        usleep(2_000)
    }
    p.waitUntilExit()
    group.wait()
    return Run(
        status: p.terminationStatus, signalled: p.terminationReason == .uncaughtSignal, timedOut: timedOut,
        stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}

/// Runs and decodes stdout as one JSON object.
private func listJSON(_ args: [String], stdin: Data? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws
    -> [String: Any]
{
    let r = try runGraft(["list"] + args + ["--json"], stdin: stdin)
    try #require(r.status == 0 && !r.signalled, "exit \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stderr.isEmpty, "\(r.stderr)", sourceLocation: sourceLocation)
    let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
    return try #require(object as? [String: Any], sourceLocation: sourceLocation)
}

/// The stdout lines that start with `  label` (a summary field).
private func field(_ label: String, in text: String) -> String? {
    text.split(separator: "\n").first { $0.hasPrefix("  \(label)") }.map {
        String($0.dropFirst(2 + label.count)).trimmingCharacters(in: .whitespaces)
    }
}

private let zstdCLI: String? = ["/usr/bin/zstd", "/usr/local/bin/zstd", "/opt/homebrew/bin/zstd"]
    .first { FileManager.default.isExecutableFile(atPath: $0) }

private func zstd(_ data: Data) throws -> Data {
    let tool = try #require(zstdCLI, "CI is set but the zstd command-line tool is missing")
    let dir = try CLI.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let input = dir.appendingPathComponent("in"), output = dir.appendingPathComponent("out.zst")
    try data.write(to: input)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = ["-q", "-f", input.path, "-o", output.path]
    try p.run()
    p.waitUntilExit()
    try #require(p.terminationStatus == 0)
    return try Data(contentsOf: output)
}

private func withListDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let dir = try CLI.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    return try body(dir)
}

/// Assembles a file: little-endian N, the header bytes, the data.
private func rawFile(_ header: [UInt8], data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let n = declaredLength ?? UInt64(header.count)
    return (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) } + header + data
}

private func entry(_ name: String, _ dtype: String, _ shape: [UInt64], _ begin: UInt64, _ end: UInt64) -> String {
    "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
}

private func rawFile(_ entries: [String], dataCount: Int) -> [UInt8] {
    rawFile(Array(("{" + entries.joined(separator: ",") + "}").utf8), data: Array(repeating: 0, count: dataCount))
}

/// Keys whose children are data (names, dtypes, metadata keys), not schema keys.
private let dataMaps: Set<String> = [
    "metadata", "metadata_full", "metadata_summaries", "dtypes", "dtype_bytes", "module_counts", "module_kinds",
    "layer_types", "network_args", "modelspec", "parts",
]

/// Every schema key in a JSON value, with its path.
private func schemaKeys(_ value: Any, path: String = "") -> [(String, String)] {
    if let d = value as? [String: Any] {
        return d.flatMap { k, v -> [(String, String)] in
            let own = [(path + "/" + k, k)]
            return dataMaps.contains(k) ? own : own + schemaKeys(v, path: path + "/" + k)
        }
    }
    if let a = value as? [Any] { return a.flatMap { schemaKeys($0, path: path + "[]") } }
    return []
}

private func isSnakeCase(_ s: String) -> Bool {
    guard let first = s.unicodeScalars.first, ("a"..."z").contains(first) else { return false }
    return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
}

// MARK: - A checkpoint

@Suite("graft list: checkpoint", .serialized)
struct CheckpointListCLITests {
    fileprivate let fx: ListFixtures
    init() throws { fx = try ListFixtures.load() }

    @Test("text: what the file is, summary, tensors table, metadata")
    func text() throws {
        let r = try runGraft(["list", fx.checkpoint])
        try #require(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.isEmpty)
        let out = r.stdout
        #expect(out.hasPrefix(fx.checkpoint + "\n"))
        let kind = try #require(field("kind:", in: out), "\(out)")
        #expect(kind.contains("SDXL") && kind.contains("checkpoint"), "\(kind)")
        let components = try #require(field("components:", in: out))
        for c in ["unet", "te1", "te2", "vae"] { #expect(components.contains(c), "\(components)") }
        #expect(field("tensors:", in: out)?.hasPrefix("\(fx.checkpointTensors.count), ") == true)
        #expect(field("dtypes:", in: out)?.hasPrefix("F16 \(fx.checkpointTensors.count) (") == true)
        let size = try #require(field("size:", in: out))
        #expect(size.contains("header"))
        #expect(out.contains("metadata (2 keys):\n"))
        #expect(out.contains("  modelspec.architecture: stable-diffusion-xl-v1-base\n"))
        #expect(out.contains("\ntensors:\n"))
        // One row per tensor: name, dtype, shape, size.
        let arch = SDXLArchitecture(widthDivisor: 64)
        let name = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
        let row = try #require(out.split(separator: "\n").first { $0.hasPrefix("  \(name) ") }, "no row for \(name)")
        let fields = row.split(separator: " ", omittingEmptySubsequences: true)
        let c = 2 * arch.modelChannels, w = arch.contextWidth
        #expect(fields.first == Substring(name))
        #expect(fields.dropFirst().first == "F16")
        #expect(row.contains("[\(c), \(w)]"), "\(row)")
        #expect(row.hasSuffix(" \(c * w * 2) B"), "\(row)")
        let rows = out.split(separator: "\n").drop { $0 != "tensors:" }.dropFirst()
        #expect(rows.count == fx.checkpointTensors.count)
    }

    @Test("--no-tensors prints only the summary and metadata")
    func noTensors() throws {
        let r = try runGraft(["list", fx.checkpoint, "--no-tensors"])
        #expect(r.status == 0)
        #expect(!r.stdout.contains("model.diffusion_model."))
        #expect(field("kind:", in: r.stdout) != nil)
    }

    @Test("--json: one document, schema 1, snake_case keys, counts that match the file")
    func json() throws {
        let d = try listJSON([fx.checkpoint])
        #expect(d["schema"] as? Int == 1)
        #expect(d["kind"] as? String == "checkpoint")
        #expect(d["file"] as? String == fx.checkpoint)
        #expect(d["tensor_count"] as? Int == fx.checkpointTensors.count)
        #expect(d["parameter_count"] as? Int == fx.checkpointTensors.reduce(0) { $0 + $1.elementCount })
        #expect(d["dtypes"] as? [String: Int] == ["F16": fx.checkpointTensors.count])
        #expect(d["dtype_bytes"] as? [String: Int] == ["F16": fx.checkpointTensors.dataByteCount])
        let fileBytes = try #require(d["file_bytes"] as? Int)
        let attributes = try FileManager.default.attributesOfItem(atPath: fx.checkpoint)
        #expect(fileBytes == (attributes[.size] as? Int))
        let headerBytes = try #require(d["header_bytes"] as? Int)
        #expect(headerBytes % 8 == 0)
        #expect(8 + headerBytes + fx.checkpointTensors.dataByteCount == fileBytes)
        let checkpoint = try #require(d["checkpoint"] as? [String: Any])
        #expect(checkpoint["architecture"] as? String == "sdxl_base", "\(checkpoint["architecture"] ?? "nil")")
        let components = try #require(checkpoint["components"] as? [[String: Any]])
        #expect(Set(components.compactMap { $0["component"] as? String }) == ["unet", "te1", "te2", "vae"])
        #expect(components.reduce(0) { $0 + ($1["tensor_count"] as? Int ?? 0) } == fx.checkpointTensors.count)
        let tensors = try #require(d["tensors"] as? [[String: Any]])
        #expect(tensors.count == fx.checkpointTensors.count)
        var end = 0
        for t in tensors {
            let offsets = try #require(t["data_offsets"] as? [Int])
            #expect(offsets[0] == end)
            #expect(offsets[1] - offsets[0] == t["bytes"] as? Int)
            end = offsets[1]
        }
        #expect(end == fx.checkpointTensors.dataByteCount)
        let bad = schemaKeys(d).filter { !isSnakeCase($0.1) }
        #expect(bad.isEmpty, "not snake_case: \(bad.map(\.0))")
    }

    @Test("--filter selects tensors by glob; the summary still counts the whole file")
    func filter() throws {
        let matching = fx.checkpointTensors.filter { $0.name.contains("attn2.to_k") }
        #expect(matching.count == 70)  // SDXL: 70 cross-attention blocks
        let r = try runGraft(["list", fx.checkpoint, "--filter", "*attn2.to_k*"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("tensors (\(matching.count) of \(fx.checkpointTensors.count) shown):\n"))
        let rows = r.stdout.split(separator: "\n").drop { !$0.hasPrefix("tensors (") }.dropFirst()
        #expect(rows.count == matching.count)
        #expect(rows.allSatisfy { $0.contains("attn2.to_k") })
        #expect(field("tensors:", in: r.stdout)?.hasPrefix("\(fx.checkpointTensors.count), ") == true)

        let d = try listJSON([fx.checkpoint, "--filter", "model.diffusion_model.out.?.weight"])
        let names = (d["tensors"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
        #expect(names == ["model.diffusion_model.out.0.weight", "model.diffusion_model.out.2.weight"])
        #expect(d["tensor_count"] as? Int == fx.checkpointTensors.count)

        let none = try runGraft(["list", fx.checkpoint, "--filter", "no such tensor"])
        #expect(none.status == 0)
        #expect(none.stdout.contains("tensors (0 of \(fx.checkpointTensors.count) shown):\n"))
    }
}

// MARK: - A kohya LoRA

@Suite("graft list: kohya LoRA", .serialized)
struct LoRAListCLITests {
    fileprivate let fx: ListFixtures
    init() throws { fx = try ListFixtures.load() }

    @Test("text: adapter kind, naming scheme, base model, module counts, rank, alpha, training")
    func text() throws {
        let r = try runGraft(["list", fx.lora, "--no-tensors"])
        try #require(r.status == 0, "\(r.stderr)")
        let out = r.stdout
        let kind = try #require(field("kind:", in: out), "\(out)")
        #expect(kind.contains("LoRA") && kind.contains("adapter"), "\(kind)")
        #expect(field("naming:", in: out)?.contains("kohya") == true, "\(out)")
        #expect(field("base model:", in: out) == "SDXL")
        #expect(field("evidence:", in: out) == nil)
        let modules = try #require(field("modules:", in: out))
        let total = fx.expectedModuleCounts.values.reduce(0, +)
        #expect(modules.hasPrefix("\(total) ("), "\(modules)")
        for (component, n) in fx.expectedModuleCounts { #expect(modules.contains("\(component) \(n)"), "\(modules)") }
        #expect(Set(fx.expectedModuleCounts.keys) == ["unet", "te1", "te2"])
        #expect(field("rank:", in: out) == "\(ListFixtures.rank)")
        #expect(field("alpha:", in: out) == "2")
        let training = try #require(field("training:", in: out))
        for part in ["module networks.lora", "dim 4", "alpha 2", "base sdxl_base_v1-0", "steps 2000", "40 images"] {
            #expect(training.contains(part), "\(training)")
        }
        #expect(field("tensors:", in: out)?.hasPrefix("\(fx.loraTensors.count), ") == true)

        // -v adds why the base model was chosen.
        let verbose = try runGraft(["list", fx.lora, "--no-tensors", "-v"])
        let evidence = try #require(field("evidence:", in: verbose.stdout), "\(verbose.stdout)")
        #expect(evidence.contains("ss_base_model_version = sdxl_base_v1-0"), "\(evidence)")
    }

    @Test("long JSON metadata is summarised; --metadata prints every value in full")
    func metadataSummaries() throws {
        let r = try runGraft(["list", fx.lora, "--no-tensors"])
        #expect(r.status == 0)
        #expect(!r.stdout.contains("tag number 17"))
        #expect(!r.stdout.contains("bucket_info"))
        let tags = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("  ss_tag_frequency: ") })
        #expect(tags.contains("JSON object") && tags.contains("--metadata"), "\(tags)")
        #expect(tags.count < 120)
        let datasets = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("  ss_datasets: ") })
        #expect(datasets.contains("JSON array"), "\(datasets)")
        #expect(r.stdout.contains("metadata (\(fx.loraMetadata.count) keys):\n"))
        // Every metadata line is one line: a newline or an escape sequence in a value is shown escaped.
        #expect(!r.stdout.contains("\u{1B}"))
        #expect(r.stdout.contains(#"  ss_training_comment: line one\nline two \u{1b}[31mred"#), "\(r.stdout)")

        let full = try runGraft(["list", fx.lora, "--no-tensors", "--metadata"])
        #expect(full.status == 0)
        #expect(full.stdout.contains("  ss_tag_frequency: \(ListFixtures.tagFrequency)\n"))
        #expect(full.stdout.contains("  ss_datasets: \(ListFixtures.datasets)\n"))
        #expect(!full.stdout.contains("\u{1B}"))
    }

    @Test("--json: adapter report with module counts, ranks, alphas, training and summaries")
    func json() throws {
        let d = try listJSON([fx.lora])
        #expect(d["schema"] as? Int == 1)
        #expect(d["kind"] as? String == "adapter")
        #expect(d["tensor_count"] as? Int == fx.loraTensors.count)
        let adapter = try #require(d["adapter"] as? [String: Any])
        #expect(adapter["kind"] as? String == "lora")
        #expect((adapter["scheme"] as? String)?.hasPrefix("kohya") == true)
        #expect((adapter["base_model"] as? [String: Any])?["family"] as? String == "sdxl")
        #expect(adapter["module_counts"] as? [String: Int] == fx.expectedModuleCounts)
        let total = fx.expectedModuleCounts.values.reduce(0, +)
        #expect(adapter["module_count"] as? Int == total)
        let ranks = try #require(adapter["ranks"] as? [[String: Any]])
        #expect(ranks.count == 1 && ranks.first?["value"] as? Int == 4 && ranks.first?["count"] as? Int == total)
        let alphas = try #require(adapter["alphas"] as? [[String: Any]])
        #expect(alphas.count == 1 && alphas.first?["value"] as? Double == 2)
        let training = try #require(adapter["training"] as? [String: Any])
        #expect(training["network_dim"] as? Int == 4)
        #expect(training["network_alpha"] as? Double == 2)
        #expect(training["base_model_version"] as? String == "sdxl_base_v1-0")
        let summaries = try #require(d["metadata_summaries"] as? [String: [String: Any]])
        #expect(summaries["ss_tag_frequency"]?["json_kind"] as? String == "object")
        #expect(summaries["ss_tag_frequency"]?["byte_count"] as? Int == ListFixtures.tagFrequency.utf8.count)
        #expect(summaries["ss_tag_frequency"]?["entry_count"] as? Int == 2)
        #expect(summaries["ss_datasets"]?["json_kind"] as? String == "array")
        let short = try #require(d["metadata"] as? [String: String])
        #expect(short["ss_tag_frequency"] == nil)
        #expect(short["ss_network_dim"] == "4")
        #expect(d["metadata_full"] as? [String: String] == fx.loraMetadata)
        let bad = schemaKeys(d).filter { !isSnakeCase($0.1) }
        #expect(bad.isEmpty, "not snake_case: \(bad.map(\.0))")
    }
}

// MARK: - Statistics

@Suite("graft list: --stats", .serialized)
struct StatsListCLITests {
    /// Float values with NaN and infinities, and one tensor larger than a statistics
    /// chunk (4 Mi elements) so that per-chunk results are combined.
    static let special: [Float] = [1, -2, 3.5, .nan, .infinity, -.infinity, 0, 0.25, .nan, -.infinity]
    static let bigCount = 4_500_000
    static func big(_ i: Int) -> Float { Float(i % 1000) * 0.002 - 0.75 }
    static let halves: [Float] = [0.5, -0.5, 1, 2, -65504]
    static let bf16Bits: [UInt16] = [0x3F80, 0xC000, 0x4040]  // 1, -2, 3

    struct Expected {
        var count = 0, nan = 0, pinf = 0, ninf = 0
        var min = Double.infinity, max = -Double.infinity, sum = 0.0, sumAbs = 0.0
        var values: [Double] = []
        var finite: Double { Double(count - nan - pinf - ninf) }
        var mean: Double { sum / finite }
        /// Two passes (not sum_sq/n - mean^2, which cancels for a large mean).
        var std: Double { (values.reduce(0.0) { $0 + ($1 - mean) * ($1 - mean) } / finite).squareRoot() }
        var absMean: Double { sumAbs / finite }
        mutating func add(_ v: Double) {
            count += 1
            if v.isNaN { nan += 1; return }
            if v == .infinity { pinf += 1; return }
            if v == -.infinity { ninf += 1; return }
            min = Swift.min(min, v); max = Swift.max(max, v)
            sum += v; sumAbs += abs(v); values.append(v)
        }
    }

    static func expected(_ values: [Double]) -> Expected {
        var e = Expected()
        for v in values { e.add(v) }
        return e
    }

    private func writeStatsFile(to path: String) throws {
        func f32(_ v: [Float]) -> [UInt8] { v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
        var bigBytes = [UInt8](repeating: 0, count: Self.bigCount * 4)
        bigBytes.withUnsafeMutableBytes { p in
            for i in 0..<Self.bigCount {
                p.storeBytes(of: Self.big(i).bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self)
            }
        }
        let tensors: [(String, DType, [UInt64], [UInt8])] = [
            ("special", .F32, [2, 5], f32(Self.special)),
            ("big", .F32, [UInt64(Self.bigCount)], bigBytes),
            (
                "half", .F16, [5],
                Self.halves.flatMap { withUnsafeBytes(of: Float16($0).bitPattern.littleEndian, Array.init) }
            ),
            ("brain", .BF16, [3], Self.bf16Bits.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }),
            ("scalar", .F64, [], withUnsafeBytes(of: Double(-7.5).bitPattern.littleEndian, Array.init)),
            ("empty", .F32, [0, 3], []),
        ]
        let layout = try FileLayout(
            tensors: tensors.map { OutputTensor(name: $0.0, dtype: $0.1, shape: $0.2) }, metadata: nil)
        var bytes = layout.headerBytes
        for t in layout.tensors { bytes += tensors.first { $0.0 == t.name }!.3 }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test("min/max/mean/std/abs_mean and NaN/Inf counts match values computed here")
    func stats() throws {
        try withListDirectory { dir in
            let path = dir.appendingPathComponent("stats.safetensors").path
            try writeStatsFile(to: path)
            let d = try listJSON([path, "--stats"])
            let list = try #require(d["statistics"] as? [[String: Any]])
            var byName: [String: [String: Any]] = [:]
            for s in list { if let n = s["name"] as? String { byName[n] = s } }
            let cases: [(String, Expected)] = [
                ("special", Self.expected(Self.special.map(Double.init))),
                ("big", Self.expected((0..<Self.bigCount).map { Double(Self.big($0)) })),
                ("half", Self.expected(Self.halves.map { Double(Float16($0)) })),
                ("brain", Self.expected([1, -2, 3])),
                ("scalar", Self.expected([-7.5])),
            ]
            for (name, e) in cases {
                let s = try #require(byName[name], "no statistics for \(name)")
                #expect(s["count"] as? Int == e.count, "\(name)")
                #expect(s["nan_count"] as? Int == e.nan, "\(name)")
                #expect(s["pos_inf_count"] as? Int == e.pinf, "\(name)")
                #expect(s["neg_inf_count"] as? Int == e.ninf, "\(name)")
                #expect(s["min"] as? Double == e.min, "\(name)")
                #expect(s["max"] as? Double == e.max, "\(name)")
                func close(_ key: String, _ want: Double) {
                    let got = s[key] as? Double ?? .nan
                    #expect(abs(got - want) <= 1e-9 * Swift.max(1, abs(want)), "\(name).\(key): \(got) vs \(want)")
                }
                close("mean", e.mean)
                close("std", e.std)
                close("abs_mean", e.absMean)
            }
            let empty = try #require(byName["empty"])
            #expect(empty["count"] as? Int == 0)
            #expect(empty["mean"] == nil)

            // The text rows show the same numbers and the NaN/Inf counts.
            let r = try runGraft(["list", path, "--stats"])
            #expect(r.status == 0)
            let row = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("  special ") })
            #expect(row.contains("min -2.0000 max 3.5000"), "\(row)")
            #expect(row.contains("nan 2") && row.contains("inf 3"), "\(row)")
        }
    }

    /// `list --stats` printed "10.0e-5" (its own formatter missed the 9.995 roll-over)
    /// and std 6.11e-4 for fp32 1000 +- 1e-3 (review §4 #21).
    @Test("--stats text: 9.9996e-5 prints as 1.00e-4, and a tiny spread around 1000 keeps its std")
    func statsText() throws {
        try withListDirectory { dir in
            let path = dir.appendingPathComponent("hard.safetensors").path
            let wide = (0..<4096).map { Float($0 % 2 == 0 ? 1000 - 1e-3 : 1000 + 1e-3) }
            let tensors: [(String, DType, [UInt64], [UInt8])] = [
                ("tiny", .F64, [], withUnsafeBytes(of: Double(9.9996e-5).bitPattern.littleEndian, Array.init)),
                ("wide", .F32, [4096], wide.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }),
            ]
            let layout = try FileLayout(
                tensors: tensors.map { OutputTensor(name: $0.0, dtype: $0.1, shape: $0.2) },
                metadata: nil)
            var bytes = layout.headerBytes
            for t in layout.tensors { bytes += tensors.first { $0.0 == t.name }!.3 }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let r = try runGraft(["list", path, "--stats"])
            #expect(r.status == 0, "\(r.stderr)")
            let lines = r.stdout.split(separator: "\n")
            let tiny = try #require(lines.first { $0.hasPrefix("  tiny ") })
            #expect(tiny.contains("min 1.00e-4 max 1.00e-4 mean 1.00e-4 std 0 |x| 1.00e-4"), "\(tiny)")
            let wideRow = try #require(lines.first { $0.hasPrefix("  wide ") })
            // fp32 1000 +- 1e-3 is 1000 -+ 9.765625e-4: std 9.77e-4 (the old formula said 6.11e-4).
            #expect(wideRow.contains("mean 1000.0000 std 9.77e-4"), "\(wideRow)")
        }
    }

    @Test("--stats with --filter computes only the selected tensors")
    func statsFiltered() throws {
        try withListDirectory { dir in
            let path = dir.appendingPathComponent("stats.safetensors").path
            try writeStatsFile(to: path)
            let d = try listJSON([path, "--stats", "--filter", "h*"])
            let names = (d["statistics"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
            #expect(names == ["half"])
        }
    }
}

// MARK: - Standard input and compressed input

@Suite("graft list: stdin and .zst", .serialized)
struct InputListCLITests {
    fileprivate let fx: ListFixtures
    init() throws { fx = try ListFixtures.load() }

    @Test("'-' reads the file from standard input")
    func stdin() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: fx.lora))
        let d = try listJSON(["-"], stdin: data)
        #expect(d["file"] as? String == "<stdin>")
        #expect(d["tensor_count"] as? Int == fx.loraTensors.count)
        #expect(d["file_bytes"] as? Int == data.count)
        #expect((d["adapter"] as? [String: Any])?["module_counts"] as? [String: Int] == fx.expectedModuleCounts)
        let text = try runGraft(["list", "-", "--no-tensors"], stdin: data)
        #expect(text.status == 0)
        #expect(text.stdout.hasPrefix("<stdin>\n"))
    }

    @Test("'-' with empty or malformed standard input is exit 2 naming <stdin>")
    func badStdin() throws {
        for input in [Data(), Data([1, 2, 3]), Data(rawFile(Array("{\"a\":1}".utf8)))] {
            let r = try runGraft(["list", "-"], stdin: input)
            #expect(r.status == 2 && !r.signalled, "\(r.stderr)")
            #expect(r.stderrLines.count == 1, "\(r.stderr)")
            #expect(r.stderr.hasPrefix("graft: error: <stdin>"), "\(r.stderr)")
            #expect(r.stdout.isEmpty)
        }
        let null = try runGraft(["list", "-"])  // stdin is /dev/null
        #expect(null.status == 2)
        #expect(null.stderr.hasPrefix("graft: error: <stdin>"))
    }

    @Test(
        "a .zst file and zstd on standard input are decompressed transparently",
        .enabled(if: zstdCLI != nil || CLI.isCI, "zstd command-line tool not found"))
    func zstdInput() throws {
        let plain = try Data(contentsOf: URL(fileURLWithPath: fx.checkpoint))
        let compressed = try zstd(plain)
        try withListDirectory { dir in
            let path = dir.appendingPathComponent("sdxl.safetensors.zst").path
            try compressed.write(to: URL(fileURLWithPath: path))
            let d = try listJSON([path])
            #expect(d["file"] as? String == path)
            #expect(d["tensor_count"] as? Int == fx.checkpointTensors.count)
            #expect(d["file_bytes"] as? Int == plain.count)
            let s = try listJSON(["-"], stdin: compressed)
            #expect(s["tensor_count"] as? Int == fx.checkpointTensors.count)

            // Truncated: exit 2 with a one-line compression error.
            let cut = dir.appendingPathComponent("cut.safetensors.zst").path
            try compressed.prefix(compressed.count / 2).write(to: URL(fileURLWithPath: cut))
            let r = try runGraft(["list", cut])
            #expect(r.status == 2)
            #expect(r.stderrLines.count == 1 && r.stderr.hasPrefix("graft: error: \(cut)"), "\(r.stderr)")
            #expect(r.stderr.contains("zstd"), "\(r.stderr)")
        }
    }
}

// MARK: - Malformed files

/// One malformed file per rule, with the tensor the message must name (when known).
private let malformedCases: [(rule: String, bytes: [UInt8], tensor: String?)] = [
    ("too-small", [1, 2, 3], nil),
    ("header-too-large", rawFile(Array("{}".utf8), declaredLength: 100_000_001), nil),
    ("header-beyond-eof", rawFile(Array("{}".utf8), declaredLength: 50), nil),
    ("bad-utf8", rawFile(Array("{\"".utf8) + [0xC3, 0x28] + Array("\":{}}".utf8)), nil),
    ("bad-json", rawFile(Array("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],}}".utf8), data: [0]), nil),
    ("nul-padding", rawFile(Array("{}".utf8) + [0, 0, 0, 0, 0, 0]), nil),
    ("unknown-dtype", rawFile([entry("w", "Q4_0", [1], 0, 1)], dataCount: 1), "w"),
    ("duplicate-name", rawFile([entry("w", "U8", [1], 0, 1), entry("w", "U8", [1], 1, 2)], dataCount: 2), "w"),
    ("hole", rawFile([entry("a", "U8", [1], 0, 1), entry("b", "U8", [1], 2, 3)], dataCount: 3), "b"),
    ("overlap", rawFile([entry("a", "U8", [2], 0, 2), entry("b", "U8", [2], 1, 3)], dataCount: 3), "b"),
    ("trailing-bytes", rawFile([entry("a", "U8", [1], 0, 1)], dataCount: 2), nil),
    ("truncated-data", rawFile([entry("a", "F32", [4], 0, 16)], dataCount: 10), nil),
    ("overflowing-shape", rawFile([entry("a", "U8", [1 << 62, 1 << 62], 0, 0)], dataCount: 0), "a"),
    ("misaligned-f4", rawFile([entry("a", "F4", [3], 0, 2)], dataCount: 2), "a"),
    ("size-mismatch", rawFile([entry("a", "F16", [3], 0, 4)], dataCount: 4), "a"),
    ("begin-after-end", rawFile([entry("a", "U8", [0], 3, 1)], dataCount: 0), "a"),
    // A name with an escaped newline and ESC: the message must still be one line.
    (
        "control-chars-in-name",
        rawFile(
            [entry(#"x\n\u001b[2Jy"#, "U8", [1], 0, 1), entry(#"x\n\u001b[2Jy"#, "U8", [1], 1, 2)],
            dataCount: 2), nil
    ),
]

@Suite("graft list: malformed files")
struct MalformedListCLITests {
    @Test(
        "each malformed file: exit 2, one stderr line naming the file (and tensor), nothing on stdout",
        arguments: malformedCases.indices)
    func malformed(index: Int) throws {
        let c = malformedCases[index]
        try withListDirectory { dir in
            let path = dir.appendingPathComponent("\(c.rule).safetensors").path
            try Data(c.bytes).write(to: URL(fileURLWithPath: path))
            for extra in [[], ["--json"], ["--stats"]] as [[String]] {
                let r = try runGraft(["list", path] + extra, timeout: 10)
                #expect(!r.signalled && !r.timedOut, "\(c.rule): signal \(r.status)")
                #expect(r.status == 2, "\(c.rule) \(extra): exit \(r.status), \(r.stderr)")
                if extra == ["--json"] {
                    // With --json the failure is one JSON document naming the rule's kind.
                    let doc = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
                    let error = doc?["error"] as? [String: Any]
                    #expect(doc?["command"] as? String == "list" && error?["kind"] is String, "\(c.rule): \(r.stdout)")
                } else {
                    #expect(r.stdout.isEmpty, "\(c.rule): \(r.stdout)")
                }
                #expect(r.stderrLines.count == 1, "\(c.rule): \(r.stderr.debugDescription)")
                #expect(r.stderr.hasPrefix("graft: error: \(path)"), "\(c.rule): \(r.stderr)")
                if let tensor = c.tensor { #expect(r.stderr.contains("tensor '\(tensor)'"), "\(c.rule): \(r.stderr)") }
                #expect(!r.stderr.contains("\u{1B}"), "\(c.rule): raw escape character on stderr")
            }
        }
    }

    @Test("a directory or a missing file: exit 2 and one line")
    func notAFile() throws {
        try withListDirectory { dir in
            for path in [dir.path, dir.appendingPathComponent("missing.safetensors").path] {
                let r = try runGraft(["list", path])
                #expect(r.status == 2, "\(r.stderr)")
                #expect(r.stderrLines.count == 1 && r.stderr.hasPrefix("graft: error: \(path)"), "\(r.stderr)")
                #expect(r.stdout.isEmpty)
            }
        }
    }

    /// The three most common "bad file" cases of the field got "header length 85966670672
    /// exceeds the limit" (newcomer report rows 26-27).
    @Test("a .ckpt, an HTML page, a git-lfs pointer, a JSON error, a truncated download, a diffusers folder: said so")
    func notSafeTensors() throws {
        try withListDirectory { dir in
            let header = Array(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.utf8)
            let files: [(String, [UInt8], String)] = [
                (
                    "model.ckpt",
                    [0x50, 0x4B, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00] + Array(repeating: 0, count: 18)
                        + [16, 0, 0, 0] + Array("archive/data.pkl".utf8) + Array(repeating: 0, count: 100),
                    "not a safetensors file: looks like a PyTorch checkpoint (.ckpt/.pt/.pth, a zip archive holding data.pkl); convert it"
                ),
                (
                    "page.safetensors", Array("<!DOCTYPE html>\n<html><body>Please log in</body></html>".utf8),
                    "not a safetensors file: looks like an HTML page (a failed download?"
                ),
                (
                    "lfs.safetensors",
                    Array("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 123\n".utf8),
                    "not a safetensors file: looks like a git-lfs pointer, not the file it points to of 123 bytes (run `git lfs pull`"
                ),
                (
                    "error.safetensors", Array(#"{"error":"Repository not found"}"#.utf8),
                    #"not a safetensors file: looks like a JSON document, not a model (an error response from a model hub?): {"error":"Repository not found"}"#
                ),
                (
                    "cut.safetensors", rawFile(header, data: Array(repeating: 0, count: 6)),
                    "file is truncated: 10 bytes missing (incomplete download?)"
                ),
            ]
            for (name, bytes, message) in files {
                let path = dir.appendingPathComponent(name).path
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                let r = try runGraft(["list", path])
                #expect(r.status == 2, "\(name): \(r.stderr)")
                #expect(r.stderrLines.count == 1 && r.stderr.hasPrefix("graft: error: \(path) at byte "), "\(r.stderr)")
                #expect(r.stderr.contains(": " + message), "\(name): \(r.stderr)")
            }
            let folder = dir.appendingPathComponent("sdxl-diffusers")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: folder.appendingPathComponent("model_index.json"))
            let r = try runGraft(["list", folder.path])
            #expect(r.status == 2)
            #expect(
                r.stderr.hasPrefix("graft: error: \(folder.path): not a safetensors file: a diffusers folder"),
                "\(r.stderr)")
        }
    }

    @Test("the text's header size is the JSON's header_bytes (review §4 #13: 8 vs 16)")
    func headerSize() throws {
        try withListDirectory { dir in
            let path = dir.appendingPathComponent("empty.safetensors").path
            try Data(rawFile(Array("{}      ".utf8))).write(to: URL(fileURLWithPath: path))
            let d = try listJSON([path])
            #expect(d["header_bytes"] as? Int == 8)
            let r = try runGraft(["list", path])
            #expect(r.stdout.contains("size:       16 B, header 8 B\n"), "\(r.stdout)")
        }
    }

    @Test("usage errors are exit 64")
    func usage() throws {
        #expect(try runGraft(["list"]).status == 64)
        #expect(try runGraft(["list", "a", "b"]).status == 64)
        #expect(try runGraft(["list", "--no-such-flag", "a"]).status == 64)
    }
}

// MARK: - Fuzzing the binary

private final class FailureLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}

@Suite("graft list: fuzz")
struct FuzzListCLITests {
    /// A small valid file with metadata, several dtypes, a scalar and a zero-size tensor.
    static func seedFile() throws -> [UInt8] {
        let tensors = [
            OutputTensor(name: "lora_unet_a.alpha", dtype: .F16, shape: []),
            OutputTensor(name: "lora_unet_a.lora_down.weight", dtype: .F16, shape: [2, 3]),
            OutputTensor(name: "lora_unet_a.lora_up.weight", dtype: .F32, shape: [3, 2]),
            OutputTensor(name: "z", dtype: .U8, shape: [0]),
            OutputTensor(name: "f4", dtype: .F4, shape: [2]),
        ]
        let layout = try FileLayout(
            tensors: tensors, metadata: ["ss_network_dim": "2", "ss_tag_frequency": "{\"a\": {\"b\": 1}}"])
        var bytes = layout.headerBytes
        var rng = SplitMix64(seed: 5)
        bytes += (0..<(layout.totalByteCount - bytes.count)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        return bytes
    }

    /// One seeded mutation of `base`.
    static func mutate(_ base: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var b = base
        func at(_ n: Int) -> Int { Int(rng.next() % UInt64(Swift.max(n, 1))) }
        switch rng.next() % 7 {
        case 0:  // change one to four bytes
            for _ in 0...at(4) { b[at(b.count)] = UInt8(truncatingIfNeeded: rng.next()) }
        case 1:  // truncate
            b = Array(b.prefix(at(b.count)))
        case 2:  // a random length prefix, small or huge
            let n = rng.next() % 2 == 0 ? rng.next() % 400 : rng.next()
            for i in 0..<8 { b[i] = UInt8(truncatingIfNeeded: n >> (8 * UInt64(i))) }
        case 3:  // a header digit replaced by a run of nines (huge shapes and offsets)
            let digits = b.indices.filter { $0 >= 8 && $0 < 8 + 200 && (0x30...0x39).contains(b[$0]) }
            if let i = digits.isEmpty ? nil : digits[at(digits.count)] {
                b.replaceSubrange(i...i, with: Array(repeating: 0x39, count: 1 + at(20)))
                let n = UInt64(b.count - base.count) + (UInt64(base[0]) | UInt64(base[1]) << 8)
                b[0] = UInt8(truncatingIfNeeded: n); b[1] = UInt8(truncatingIfNeeded: n >> 8)
            }
        case 4:  // insert or delete a byte inside the header
            let i = 8 + at(b.count - 8)
            if rng.next() % 2 == 0 { b.insert(UInt8(truncatingIfNeeded: rng.next()), at: i) } else { b.remove(at: i) }
        case 5:  // append bytes
            b += (0..<(1 + at(16))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        default:  // a byte set to a JSON-significant character
            let specials = Array("{}[]\",:\\0-9e.".utf8) + [0x00, 0x20, 0xFF]
            b[8 + at(b.count - 8)] = specials[at(specials.count)]
        }
        return b
    }

    @Test(
        "300 seeded mutations: exit 0 or 2, never a signal or a hang; errors are one line",
        arguments: [20_240_601] as [UInt64])
    func fuzz(seed: UInt64) throws {
        let base = try Self.seedFile()
        let count = 300
        var rng = SplitMix64(seed: seed)
        let files = (0..<count).map { _ in Self.mutate(base, &rng) }
        try withListDirectory { dir in
            let failures = FailureLog()
            let accepted = FailureLog()
            let workers = 2
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                for i in stride(from: w, to: count, by: workers) {
                    let path = dir.appendingPathComponent("fuzz-\(i).safetensors").path
                    do {
                        try Data(files[i]).write(to: URL(fileURLWithPath: path))
                        let args = i % 5 == 0 ? ["list", path, "--stats", "--json"] : ["list", path]
                        let r = try runGraft(args, timeout: 10)
                        let context = "seed \(seed), mutation \(i)"
                        if r.timedOut {
                            failures.add("\(context): timed out")
                        } else if r.signalled {
                            failures.add("\(context): killed by signal \(r.status)")
                        } else if r.status == 0 {
                            accepted.add(path)
                            if !r.stderr.isEmpty { failures.add("\(context): exit 0 with stderr \(r.stderr)") }
                        } else if r.status == 2 {
                            let jsonDocument = args.contains("--json") && r.stdout.contains("\"error\"")
                            if r.stderrLines.count != 1 || !r.stderr.hasPrefix("graft: error: ")
                                || !(r.stdout.isEmpty || jsonDocument)
                            {
                                failures.add("\(context): bad error output \(r.stderr.debugDescription)")
                            }
                        } else {
                            failures.add("\(context): exit \(r.status): \(r.stderr)")
                        }
                        try? FileManager.default.removeItem(atPath: path)
                    } catch {
                        failures.add("seed \(seed), mutation \(i): \(error)")
                    }
                }
            }
            #expect(failures.all.isEmpty, "\(failures.all.prefix(10).joined(separator: "\n"))")
            #expect(!accepted.all.isEmpty, "some mutations (data bytes, whitespace) must still be valid; seed \(seed)")
            #expect(accepted.all.count < count, "seed \(seed)")
        }
    }
}
