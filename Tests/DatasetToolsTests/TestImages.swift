import CVips
import DatasetTools
import Foundation
import Testing

/// Builds input images in code through libvips, and reads masks back.
enum TestImages {
    struct Failure: Error, CustomStringConvertible { let description: String }

    /// Saves 8-bit samples (bands 1-4, interleaved) to `path`; the suffix picks the format.
    static func save(_ samples: [UInt8], width: Int, height: Int, bands: Int, to path: String) throws {
        Vips.start()
        precondition(samples.count == width * height * bands)
        let rc = samples.withUnsafeBytes {
            graft_vips_save_samples($0.baseAddress, Int32(width), Int32(height), Int32(bands), 0, path)
        }
        if rc != 0 { throw Failure(description: "save \(path) failed") }
    }

    /// Saves 16-bit samples (native byte order in memory; PNG stores them big-endian).
    static func save16(_ samples: [UInt16], width: Int, height: Int, bands: Int, to path: String) throws {
        Vips.start()
        precondition(samples.count == width * height * bands)
        let rc = samples.withUnsafeBytes {
            graft_vips_save_samples($0.baseAddress, Int32(width), Int32(height), Int32(bands), 2, path)
        }
        if rc != 0 { throw Failure(description: "save16 \(path) failed") }
    }

    /// A palette PNG: RGBA samples whose alpha becomes a tRNS chunk.
    static func savePalette(_ samples: [UInt8], width: Int, height: Int, to path: String) throws {
        Vips.start()
        let rc = samples.withUnsafeBytes {
            graft_vips_save_palette_png($0.baseAddress, Int32(width), Int32(height), 4, path)
        }
        if rc != 0 { throw Failure(description: "palette \(path) failed") }
    }

    /// An animated WebP of `pages` RGBA frames stacked vertically in `samples`.
    static func saveAnimatedWebP(_ samples: [UInt8], width: Int, pageHeight: Int, pages: Int, to path: String) throws {
        Vips.start()
        let rc = samples.withUnsafeBytes {
            graft_vips_save_animated_webp(
                $0.baseAddress, Int32(width), Int32(pageHeight), Int32(pages), 4, path)
        }
        if rc != 0 { throw Failure(description: "animated \(path) failed") }
    }

    /// An RGBA image with the given alpha (colour arbitrary).
    static func saveRGBA(alpha: [UInt8], width: Int, height: Int, to path: String) throws {
        var s: [UInt8] = []
        for (i, a) in alpha.enumerated() { s += [UInt8(i % 251), 7, 200, a] }
        try save(s, width: width, height: height, bands: 4, to: path)
    }

    /// Reads a mask: checks it is an 8-bit grey PNG without gAMA/iCCP/tRNS/sRGB/text chunks, returns its samples.
    static func readMask(_ path: String) throws -> (width: Int, height: Int, pixels: [UInt8]) {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(Array(bytes.prefix(8)) == [137, 80, 78, 71, 13, 10, 26, 10])
        var chunks: [String] = []
        var p = 8
        while p + 8 <= bytes.count {
            let len = bytes[p..<p + 4].reduce(0) { $0 << 8 | Int($1) }
            chunks.append(String(decoding: bytes[p + 4..<p + 8], as: UTF8.self))
            if chunks.count == 1 {
                #expect(bytes[p + 16] == 8, "bit depth")
                #expect(bytes[p + 17] == 0, "colour type grey")
            }
            p += 12 + len
        }
        // libvips always writes pHYs (resolution), which does not change the samples.
        #expect(Set(chunks).isSubset(of: ["IHDR", "pHYs", "IDAT", "IEND"]), "chunks: \(chunks)")
        let result: (Int, Int, [UInt8])? = bytes.withUnsafeBytes { raw in
            guard let image = graft_vips_load_buffer(raw.baseAddress, raw.count) else { return nil }
            defer { graft_vips_unref(image) }
            guard graft_vips_bands(image) == 1 else { return nil }
            var length = 0
            guard let s = graft_vips_alpha8(image, &length) else { return nil }
            defer { graft_vips_free(s) }
            return (
                Int(graft_vips_width(image)), Int(graft_vips_height(image)),
                [UInt8](UnsafeBufferPointer(start: s, count: length))
            )
        }
        guard let result else { throw Failure(description: "cannot read mask \(path)") }
        return result
    }

    /// A fresh temporary folder.
    static func folder() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-masks-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    static func mkdir(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
}

/// Deterministic pseudo-random bytes.
struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next() >> 13) } }
}
