import CVips
import DatasetTools
import Foundation
import Testing

/// Saves an RGBA PNG with the given alpha through libvips.
private func saveRGBA(alpha: [UInt8], width: Int, height: Int, to url: URL) throws {
    Vips.start()
    var s: [UInt8] = []
    for a in alpha { s += [10, 20, 30, a] }
    let rc = s.withUnsafeBytes {
        graft_vips_save_samples($0.baseAddress, Int32(width), Int32(height), 4, 0, url.path)
    }
    #expect(rc == 0)
}

private let alpha: [UInt8] = [0, 0, 10, 255, 255, 128, 0, 1, 200, 0, 255, 3]

@Suite("graft masks (CLI)")
struct MasksCLITests {
    /// IN: a.png, sub/b.png (alpha), empty.png (0 bytes), c.png + c.jpg (duplicate stem), d.Png.
    private func makeInput() throws -> URL {
        let root = try CLI.temporaryDirectory()
        let input = root.appendingPathComponent("in")
        try FileManager.default.createDirectory(
            at: input.appendingPathComponent("sub"), withIntermediateDirectories: true)
        try saveRGBA(alpha: alpha, width: 4, height: 3, to: input.appendingPathComponent("a.png"))
        try saveRGBA(alpha: alpha, width: 6, height: 2, to: input.appendingPathComponent("sub/b.png"))
        try saveRGBA(alpha: alpha, width: 4, height: 3, to: input.appendingPathComponent("c.png"))
        try saveRGBA(alpha: alpha, width: 4, height: 3, to: input.appendingPathComponent("d.Png"))
        try Data().write(to: input.appendingPathComponent("empty.png"))
        try Data("x".utf8).write(to: input.appendingPathComponent("c.jpg"))
        return root
    }

    @Test("masks are written, failures reported one line each, exit 1; rerun refused with exit 2")
    func endToEnd() throws {
        let root = try makeInput()
        defer { try? FileManager.default.removeItem(at: root) }
        let out = root.appendingPathComponent("out").path
        let r = try CLI.run(["masks", root.appendingPathComponent("in").path, "-o", out, "-j", "2"])
        #expect(r.status == 1)
        let lines = r.stderr.split(separator: "\n").map(String.init)
        #expect(
            lines == [
                "graft: error: c.jpg: same stem as c.png; sd-scripts would pair both with one mask; no mask written",
                "graft: error: c.png: same stem as c.jpg; sd-scripts would pair both with one mask; no mask written",
                "graft: error: empty.png: empty file (0 bytes)",
                "graft: warning: d.Png: extension .Png is ignored by sd-scripts on Linux (case-sensitive); skipped",
            ])
        #expect(r.stdout.hasPrefix("masks: 5 images, wrote 2 masks, 1 warnings, 3 errors in "))
        let a = try Data(contentsOf: URL(fileURLWithPath: out + "/a.png"))
        #expect(FileManager.default.fileExists(atPath: out + "/sub/b.png"))
        #expect(!FileManager.default.fileExists(atPath: out + "/c.png"))

        // Existing outputs: exit 2, nothing (re)written.
        try FileManager.default.removeItem(atPath: out + "/sub/b.png")
        let again = try CLI.run(["masks", root.appendingPathComponent("in").path, "-o", out])
        #expect(again.status == 2)
        #expect(again.stderr == "graft: error: \(out)/a.png: the output already exists; use --force to overwrite it\n")
        #expect(!FileManager.default.fileExists(atPath: out + "/sub/b.png"))

        // --force, -j 1: the same bytes.
        let forced = try CLI.run(["masks", root.appendingPathComponent("in").path, "-o", out, "--force", "-j", "1"])
        #expect(forced.status == 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/a.png")) == a)
        #expect(FileManager.default.fileExists(atPath: out + "/sub/b.png"))
    }

    @Test("--json report and --dry-run")
    func json() throws {
        let root = try makeInput()
        defer { try? FileManager.default.removeItem(at: root) }
        let out = root.appendingPathComponent("out").path
        let r = try CLI.run(["masks", root.appendingPathComponent("in").path, "-o", out, "--json", "--dry-run"])
        #expect(r.status == 1)
        struct Doc: Decodable {
            struct Image: Decodable {
                let image: String
                let mask: String
                let mean_weight: Double
                let written: Bool
            }
            struct Problem: Decodable {
                let severity: String
                let kind: String
                let path: String
            }
            let schema: Int
            let command: String
            let images: [Image]
            let problems: [Problem]
            let written: Int
        }
        let doc = try JSONDecoder().decode(Doc.self, from: Data(r.stdout.utf8))
        #expect(doc.schema == 1 && doc.command == "masks" && doc.written == 0)
        #expect(doc.images.map(\.mask) == ["a.png", "sub/b.png"])
        #expect(doc.images.allSatisfy { !$0.written && abs($0.mean_weight - 8.0 / 12.0) < 1e-12 })
        #expect(
            doc.problems.map(\.kind) == ["duplicate_stem", "duplicate_stem", "undecodable", "mixed_case_extension"])
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test("bad option values are usage errors")
    func usage() throws {
        let r = try CLI.run(["masks", "/nonexistent", "-o", "/tmp/x", "--threshold", "255"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("--threshold must be between 0 and 254"))
    }
}
