import Adapters
import Foundation
import FuzzSupport
import GraftEngine

/// Writes the seed corpora: `fuzz-seeds DIR` creates DIR/{header,adapter,adapter-structured,zstd}/.
@main
struct SeedMain {
    static func main() throws {
        let args = CommandLine.arguments
        if args.count == 2, args[1] == "--check" { return check() }
        guard args.count == 2 else {
            FileHandle.standardError.write("usage: fuzz-seeds DIR | --check\n".data(using: .utf8)!)
            exit(64)
        }
        let root = URL(fileURLWithPath: args[1])
        let malformed = SeedFiles.malformed, adapters = SeedFiles.adapters
        let sets: [(String, [String: [UInt8]])] = [
            ("header", malformed.merging(adapters) { a, _ in a }),
            ("adapter", malformed.merging(adapters) { a, _ in a }),
            ("adapter-structured", SeedFiles.recipes),
            ("zstd", SeedFiles.zstd),
        ]
        for (target, seeds) in sets {
            let dir = root.appendingPathComponent(target)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for (name, bytes) in seeds {
                try Data(bytes).write(to: dir.appendingPathComponent("seed-" + name))
            }
            let total = seeds.values.reduce(0) { $0 + $1.count }
            print("fuzz-seeds: \(target): \(seeds.count) seeds, \(total) bytes")
        }
    }

    /// Shows how far each adapter seed gets: the checkpoint's detection, then per seed
    /// the analysis and the merge plan (strict), so seeds that stop early are visible.
    static func check() {
        let ckpt = CheckpointAnalysis(tensors: FixedCheckpoint.file.tensors)
        print("checkpoint: \(FixedCheckpoint.file.tensors.count) tensors, \(ckpt.architecture), \(FixedCheckpoint.targets.count) LoRA targets")
        let mem = MemFile(name: "check")
        for (name, bytes) in SeedFiles.adapters.sorted(by: { $0.key < $1.key }) {
            mem.replace(with: bytes)
            guard let file = try? mem.open() else { print("\(name): does not parse"); continue }
            let a = AdapterAnalysis(tensors: file.tensors, metadata: file.metadata, alphaValue: { try file.scalarValue(of: $0) })
            let plan = FixedCheckpoint.mapper.plan(a)
            var outcome: String
            do {
                let m = try MergePlanner.plan(MergeRequest(
                    checkpoint: FixedCheckpoint.file, adapters: [MergeInput(file: file, ratio: 1)], savePrecision: nil,
                    precision: .fp32, allowUnmatched: true, outputPath: "x", graftVersion: "check"))
                outcome = "plan: \(m.adapters[0].merged.count) merged, \(m.adapters[0].skipped.count) skipped"
            } catch {
                outcome = "plan throws: \(String(describing: error).prefix(100))"
            }
            print("\(name): \(a.kind) \(a.baseModel.family) \(a.modules.count) modules, \(a.invalidModules.count) invalid, mapped \(plan.resolved.count); \(outcome)")
        }
    }
}
