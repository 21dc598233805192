import Foundation
import FuzzSupport

/// Writes the seed corpora: `fuzz-seeds DIR` creates DIR/{header,adapter,adapter-structured,zstd}/.
@main
struct SeedMain {
    static func main() throws {
        let args = CommandLine.arguments
        guard args.count == 2 else {
            FileHandle.standardError.write("usage: fuzz-seeds DIR\n".data(using: .utf8)!)
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
}
