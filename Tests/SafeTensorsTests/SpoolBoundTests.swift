import Foundation
import SafeTensors
import Testing

/// Streams (zstd, pipes) are spooled to disk only as far as their own header declares.
@Suite("reader: bounded spooling")
struct SpoolBoundTests {
    static let hasZstd = FileManager.default.isExecutableFile(atPath: "/usr/bin/zstd")

    /// A valid 16-byte safetensors file (`{}` + padding) followed by `extra` zero bytes, zstd-compressed.
    func bomb(extra: Int, in dir: URL) throws -> String {
        var bytes = [UInt8](repeating: 0, count: 8)
        bytes[0] = 8
        bytes += Array("{}      ".utf8)
        let raw = dir.appendingPathComponent("bomb.safetensors")
        var data = Data(bytes)
        data.append(Data(count: extra))
        try data.write(to: raw)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/zstd")
        p.arguments = ["-q", "-3", "--rm", raw.path, "-o", raw.path + ".zst"]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return raw.path + ".zst"
    }

    @Test(
        "a zstd stream that decompresses past its declared size stops at once with an error",
        .enabled(if: hasZstd || PythonRunner.isCI, "zstd command not installed"))
    func zstdBomb() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-bomb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = try bomb(extra: 256 << 20, in: dir)  // 256 MiB of zeros, a few KB compressed
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.size] as? Int ?? 0) < 100_000)
        let start = Date()
        do {
            _ = try SafeTensorsFile(path: path)
            Issue.record("expected an error")
        } catch let e as SafeTensorsError {
            #expect(e.kind == .incompleteBuffer, "\(e)")
            #expect(e.detail.contains("past the 16 bytes its header declares"), "\(e)")
        }
        // Stopping at the first decompressed buffer takes milliseconds, not a 256 MiB spool.
        #expect(Date().timeIntervalSince(start) < 2)
    }
}
