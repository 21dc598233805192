import DatasetTools
import Foundation
import Testing

@Suite("ImageHeader")
struct ImageHeaderTests {
    @Test("size from the header: PNG, JPEG, a '[' in the name; empty and non-image files throw")
    func size() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-header-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pixels = [UInt8](repeating: 90, count: 7 * 5 * 3)
        for name in ["a.png", "b.jpg"] {
            try TestImages.save(pixels, width: 7, height: 5, bands: 3, to: dir.appendingPathComponent(name).path)
        }
        // libvips would read "[1]" as load options: such a name is read from memory.
        try FileManager.default.copyItem(
            at: dir.appendingPathComponent("a.png"), to: dir.appendingPathComponent("c[1].png"))
        for name in ["a.png", "b.jpg", "c[1].png"] {
            #expect(try ImageHeader.size(path: dir.appendingPathComponent(name).path) == Resolution(7, 5))
        }
        try Data().write(to: dir.appendingPathComponent("empty.png"))
        try Data("not an image".utf8).write(to: dir.appendingPathComponent("text.png"))
        for name in ["empty.png", "text.png", "missing.png"] {
            #expect(throws: DatasetError.self) { try ImageHeader.size(path: dir.appendingPathComponent(name).path) }
        }
    }
}
