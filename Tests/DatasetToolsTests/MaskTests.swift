import DatasetTools
import Foundation
import Testing

/// Runs the whole `masks` job on `input` into a fresh output folder and reads one mask back.
private func masks(
    _ input: String, _ options: MaskOptions = MaskOptions(), output: String? = nil, threads: Int = 1
) throws -> (report: MaskReport, output: String) {
    let out = try output ?? (TestImages.folder() + "/out")
    let plan = try MaskRunner.plan(input: input, output: out, options: options, overwrite: false)
    return (MaskRunner.run(plan, threads: threads), out)
}

/// The single mask of a folder holding one RGBA image with `alpha`.
private func singleMask(alpha: [UInt8], width: Int, height: Int, _ options: MaskOptions) throws -> [UInt8] {
    let dir = try TestImages.folder()
    try TestImages.saveRGBA(alpha: alpha, width: width, height: height, to: dir + "/img.png")
    let (report, out) = try masks(dir, options)
    #expect(report.errors.isEmpty)
    let m = try TestImages.readMask(out + "/img.png")
    #expect(m.width == width && m.height == height)
    return m.pixels
}

private let ramp: [UInt8] = [0, 1, 2, 100, 127, 128, 129, 200, 254, 255, 0, 255]

@Suite("graft masks: pixel values")
struct MaskPixelTests {
    @Test("binary default: A > 0 ? 255 : 0")
    func binaryDefault() throws {
        let m = try singleMask(alpha: ramp, width: 4, height: 3, MaskOptions())
        #expect(m == ramp.map { $0 > 0 ? 255 : 0 })
    }

    @Test("binary with --threshold 128")
    func threshold() throws {
        var o = MaskOptions()
        o.threshold = 128
        let m = try singleMask(alpha: ramp, width: 4, height: 3, o)
        #expect(m == ramp.map { $0 > 128 ? 255 : 0 })
    }

    @Test("linear: m = A")
    func linear() throws {
        var o = MaskOptions()
        o.alpha = .linear
        #expect(try singleMask(alpha: ramp, width: 6, height: 2, o) == ramp)
    }

    @Test("invert")
    func invert() throws {
        var o = MaskOptions()
        o.invert = true
        #expect(try singleMask(alpha: ramp, width: 3, height: 4, o) == ramp.map { $0 > 0 ? 0 : 255 })
        o.alpha = .linear
        #expect(try singleMask(alpha: ramp, width: 3, height: 4, o) == ramp.map { 255 - $0 })
    }

    @Test("min weight: 255*W + m*(1-W), round half up")
    func minWeight() throws {
        var o = MaskOptions()
        o.alpha = .linear
        o.minWeight = 0.1
        let m = try singleMask(alpha: ramp, width: 4, height: 3, o)
        #expect(m[0] == 26)  // 25.5 rounds up
        #expect(m[9] == 255)
        #expect(m == ramp.map { UInt8((25.5 + Double($0) * 0.9 + 0.5).rounded(.down)) })
        o.minWeight = 1
        #expect(try singleMask(alpha: ramp, width: 4, height: 3, o) == [UInt8](repeating: 255, count: 12))
    }

    @Test("an opaque RGB image (PNG and JPEG) gives an all-white mask")
    func opaque() throws {
        let dir = try TestImages.folder()
        try TestImages.save([UInt8](repeating: 9, count: 5 * 4 * 3), width: 5, height: 4, bands: 3, to: dir + "/a.png")
        try TestImages.save([UInt8](repeating: 9, count: 5 * 4 * 3), width: 5, height: 4, bands: 3, to: dir + "/b.jpg")
        try TestImages.save([UInt8](repeating: 9, count: 5 * 4), width: 5, height: 4, bands: 1, to: dir + "/c.png")
        let (report, out) = try masks(dir)
        #expect(report.errors.isEmpty && report.written == 3)
        for name in ["a", "b", "c"] {
            #expect(try TestImages.readMask(out + "/\(name).png").pixels == [UInt8](repeating: 255, count: 20))
        }
    }

    @Test("16-bit RGBA: alpha as v >> 8")
    func sixteenBit() throws {
        let dir = try TestImages.folder()
        let alpha: [UInt16] = [0, 255, 256, 511, 0x7FFF, 0x8000, 0xFF00, 0xFFFF]
        var s: [UInt16] = []
        for a in alpha { s += [1000, 2000, 3000, a] }
        try TestImages.save16(s, width: 4, height: 2, bands: 4, to: dir + "/x.png")
        var o = MaskOptions()
        o.alpha = .linear
        let (report, out) = try masks(dir, o)
        #expect(report.errors.isEmpty)
        #expect(try TestImages.readMask(out + "/x.png").pixels == alpha.map { UInt8($0 >> 8) })
    }

    @Test("grey + alpha (2 bands) uses the alpha")
    func greyAlpha() throws {
        let dir = try TestImages.folder()
        var s: [UInt8] = []
        for a in ramp { s += [50, a] }
        try TestImages.save(s, width: 4, height: 3, bands: 2, to: dir + "/g.png")
        var o = MaskOptions()
        o.alpha = .linear
        let (_, out) = try masks(dir, o)
        #expect(try TestImages.readMask(out + "/g.png").pixels == ramp)
    }

    @Test("palette PNG: tRNS counts as alpha")
    func palette() throws {
        let dir = try TestImages.folder()
        var s: [UInt8] = []
        for a in ramp { s += [a == 0 ? 0 : 200, 40, 90, a == 0 ? 0 : 255] }
        try TestImages.savePalette(s, width: 4, height: 3, to: dir + "/p.png")
        // The encoder quantises (it may merge colours), so the expected mask comes from the
        // file's own alpha: colour type 3 with a tRNS chunk and some transparent pixels.
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/p.png")))
        #expect(bytes[25] == 3)
        #expect(String(decoding: bytes, as: UTF8.self).contains("tRNS"))
        let decoded = try AlphaImage.decode(bytes, path: "p.png")
        let alpha = try #require(decoded.alpha)
        #expect(alpha.contains(0) && alpha.contains(255))
        let (report, out) = try masks(dir)
        #expect(report.errors.isEmpty)
        #expect(try TestImages.readMask(out + "/p.png").pixels == alpha.map { $0 > 0 ? 255 : 0 })
    }

    @Test("animated WebP: first frame, with a warning")
    func animated() throws {
        let dir = try TestImages.folder()
        var s: [UInt8] = []
        for a in ramp { s += [9, 9, 9, a] }
        for _ in ramp { s += [9, 9, 9, 0] }
        try TestImages.saveAnimatedWebP(s, width: 4, pageHeight: 3, pages: 2, to: dir + "/anim.webp")
        var o = MaskOptions()
        o.alpha = .linear
        let (report, out) = try masks(dir, o)
        #expect(report.errors.isEmpty)
        #expect(report.warnings.map(\.kind) == [.animated])
        #expect(try TestImages.readMask(out + "/anim.png").pixels == ramp)
    }

    @Test("dilate then erode over a Euclidean disk, edges clamped", arguments: [(3, 0), (0, 2), (2, 1), (5, 3)])
    func morphology(dilate: Int, erode: Int) throws {
        let (w, h) = (23, 17)
        var rng = SplitMix64(state: UInt64(dilate * 10 + erode))
        let alpha = rng.bytes(w * h).map { $0 > 230 ? $0 : $0 / 4 }
        var o = MaskOptions()
        o.alpha = .linear
        o.dilate = dilate
        o.erode = erode
        var expected = alpha
        if dilate > 0 { expected = bruteDisk(expected, w, h, dilate, max) }
        if erode > 0 { expected = bruteDisk(expected, w, h, erode, min) }
        #expect(try singleMask(alpha: alpha, width: w, height: h, o) == expected)
    }

    @Test("morphology and feathering on images smaller than the radius")
    func tiny() throws {
        for (w, h) in [(1, 1), (3, 2), (2, 7)] {
            var rng = SplitMix64(state: UInt64(w * 7 + h))
            let alpha = rng.bytes(w * h)
            var o = MaskOptions()
            o.alpha = .linear
            o.dilate = 5
            #expect(try singleMask(alpha: alpha, width: w, height: h, o) == bruteDisk(alpha, w, h, 5, max))
            o.dilate = 0
            o.erode = 9
            #expect(try singleMask(alpha: alpha, width: w, height: h, o) == bruteDisk(alpha, w, h, 9, min))
            o.erode = 0
            o.feather = 8
            let m = try singleMask(alpha: alpha, width: w, height: h, o)
            let expected = bruteGaussian(alpha.map(Double.init), w, h, sigma: 4)
            #expect(zip(m, expected).allSatisfy { abs(Double($0) - $1) <= 1 })
        }
    }

    @Test("feather: separable Gaussian sigma = R/2, radius ceil(3 sigma), within 1", arguments: [1.0, 3.0, 5.0])
    func feather(radius: Double) throws {
        let (w, h) = (19, 14)
        var alpha = [UInt8](repeating: 0, count: w * h)
        for y in 3..<9 { for x in 4..<12 { alpha[y * w + x] = 255 } }
        alpha[13 * w + 18] = 255
        var o = MaskOptions()
        o.feather = radius
        let m = try singleMask(alpha: alpha, width: w, height: h, o)
        let expected = bruteGaussian(alpha.map { $0 > 0 ? 255.0 : 0 }, w, h, sigma: radius / 2)
        for i in 0..<(w * h) {
            #expect(abs(Double(m[i]) - expected[i]) <= 1, "pixel \(i): \(m[i]) vs \(expected[i])")
        }
    }

    @Test("feather outward: dilate by ceil(R), then feather")
    func featherOutward() throws {
        let (w, h) = (21, 15)
        var alpha = [UInt8](repeating: 0, count: w * h)
        for y in 5..<9 { for x in 6..<13 { alpha[y * w + x] = 255 } }
        var o = MaskOptions()
        o.feather = 2.5
        o.featherOutward = true
        let m = try singleMask(alpha: alpha, width: w, height: h, o)
        let dilated = bruteDisk(alpha, w, h, 3, max)
        let expected = bruteGaussian(dilated.map(Double.init), w, h, sigma: 1.25)
        #expect(zip(m, expected).allSatisfy { abs(Double($0) - $1) <= 1 })
        // The original region keeps nearly full weight: the kernel reaches 1.5·R, beyond the
        // dilation by R, so a corner loses a little (251 here), far less than without it.
        o.featherOutward = false
        let plain = try singleMask(alpha: alpha, width: w, height: h, o)
        for i in alpha.indices where alpha[i] == 255 { #expect(m[i] >= 250 && m[i] >= plain[i]) }
    }

    @Test("statistics: mean weight and zero fraction; all-zero and low-mean warnings")
    func statistics() throws {
        let s = MaskStatistics([0, 255, 255, 0])
        #expect(s.meanWeight == 0.5 && s.zeroFraction == 0.5)
        let dir = try TestImages.folder()
        try TestImages.saveRGBA(alpha: [UInt8](repeating: 0, count: 16), width: 4, height: 4, to: dir + "/zero.png")
        var low = [UInt8](repeating: 0, count: 100)
        low[0] = 255
        try TestImages.saveRGBA(alpha: low, width: 10, height: 10, to: dir + "/low.png")
        let (report, _) = try masks(dir)
        #expect(report.warnings.map(\.kind) == [.lowMeanWeight, .allZero])
        #expect(report.results.first { $0.imageRelativePath == "low.png" }?.statistics?.zeroFraction == 0.99)
    }
}

@Suite("graft masks: files")
struct MaskFileTests {
    @Test("duplicate stems: an error for both, no mask")
    func duplicates() throws {
        let dir = try TestImages.folder()
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/a.png")
        try TestImages.save([UInt8](repeating: 1, count: 12 * 3), width: 4, height: 3, bands: 3, to: dir + "/a.jpg")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/b.png")
        let (report, out) = try masks(dir)
        #expect(report.errors.map(\.kind) == [.duplicateStem, .duplicateStem])
        #expect(report.errors.map(\.path) == ["a.jpg", "a.png"])
        #expect(!FileManager.default.fileExists(atPath: out + "/a.png"))
        #expect(FileManager.default.fileExists(atPath: out + "/b.png"))
    }

    @Test("first of duplicates: sd-scripts' pairing order, a warning for the others")
    func firstOfDuplicates() throws {
        let dir = try TestImages.folder()
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/a.png")
        try TestImages.save([UInt8](repeating: 1, count: 12 * 3), width: 4, height: 3, bands: 3, to: dir + "/a.jpg")
        let out = try TestImages.folder() + "/o"
        let plan = try MaskRunner.plan(
            input: dir, output: out, options: MaskOptions(), overwrite: false, firstOfDuplicates: true)
        let report = MaskRunner.run(plan, threads: 1)
        #expect(report.errors.isEmpty)
        #expect(report.warnings.map(\.kind) == [.duplicateStem])
        #expect(report.warnings.map(\.path) == ["a.png"])
        // a.jpg sorts first: the mask is its (opaque) one.
        #expect(try TestImages.readMask(out + "/a.png").pixels == [UInt8](repeating: 255, count: 12))
    }

    @Test("skip images without alpha: a warning, no mask")
    func skipWithoutAlpha() throws {
        let dir = try TestImages.folder()
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/a.png")
        try TestImages.save([UInt8](repeating: 1, count: 12 * 3), width: 4, height: 3, bands: 3, to: dir + "/b.png")
        var o = MaskOptions()
        o.skipWithoutAlpha = true
        let (report, out) = try masks(dir, o)
        #expect(report.errors.isEmpty && report.written == 1)
        #expect(report.warnings.map(\.kind) == [.noAlpha])
        #expect(!FileManager.default.fileExists(atPath: out + "/b.png"))
    }

    @Test("zero-byte and truncated images: one error each, the others are written")
    func undecodable() throws {
        let dir = try TestImages.folder()
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/good.png")
        FileManager.default.createFile(atPath: dir + "/empty.png", contents: Data())
        var rng = SplitMix64(state: 5)
        try TestImages.saveRGBA(alpha: rng.bytes(64 * 64), width: 64, height: 64, to: dir + "/cut.png")
        let full = try Data(contentsOf: URL(fileURLWithPath: dir + "/cut.png"))
        try full.prefix(full.count / 2).write(to: URL(fileURLWithPath: dir + "/cut.png"))
        try TestImages.save(
            [UInt8](repeating: 90, count: 64 * 64 * 3), width: 64, height: 64, bands: 3, to: dir + "/j.jpg")
        let jpeg = try Data(contentsOf: URL(fileURLWithPath: dir + "/j.jpg"))
        try jpeg.prefix(jpeg.count / 2).write(to: URL(fileURLWithPath: dir + "/cutj.jpg"))
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: dir + "/text.webp"))
        let (report, out) = try masks(dir)
        #expect(report.errors.map(\.kind) == [.undecodable, .undecodable, .undecodable, .undecodable])
        #expect(report.errors.map(\.path) == ["cut.png", "cutj.jpg", "empty.png", "text.webp"])
        #expect(report.written == 2)
        for name in ["cut", "cutj", "empty", "text"] {
            #expect(!FileManager.default.fileExists(atPath: out + "/\(name).png"))
        }
    }

    @Test("existing outputs are refused before anything is written")
    func existing() throws {
        let dir = try TestImages.folder()
        let out = try TestImages.folder()
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/a.png")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/b.png")
        try Data("old".utf8).write(to: URL(fileURLWithPath: out + "/b.png"))
        #expect {
            _ = try MaskRunner.plan(input: dir, output: out, options: MaskOptions(), overwrite: false)
        } throws: { ($0 as? DatasetError)?.kind == .outputExists && ($0 as? DatasetError)?.path == out + "/b.png" }
        #expect(!FileManager.default.fileExists(atPath: out + "/a.png"))
        let plan = try MaskRunner.plan(input: dir, output: out, options: MaskOptions(), overwrite: true)
        #expect(MaskRunner.run(plan, threads: 2).written == 2)
        #expect(try TestImages.readMask(out + "/b.png").pixels == ramp.map { $0 > 0 ? 255 : 0 })
    }

    @Test("sub-folders are mirrored; an output inside the input is not scanned; set rules")
    func mirroring() throws {
        let dir = try TestImages.folder()
        try TestImages.mkdir(dir + "/10_x/deep")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/top.png")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/10_x/a.PNG")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/10_x/deep/b.webp")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/10_x/.hidden.png")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/10_x/mixed.Png")
        try Data("caption".utf8).write(to: URL(fileURLWithPath: dir + "/top.txt"))
        let out = dir + "/masks"
        let first = try masks(dir, output: out)
        #expect(first.report.errors.isEmpty)
        #expect(first.report.warnings.map(\.kind) == [.mixedCaseExtension])
        #expect(first.report.results.map(\.outputRelativePath) == ["10_x/a.png", "10_x/deep/b.png", "top.png"])
        for rel in ["10_x/a.png", "10_x/deep/b.png", "top.png"] {
            #expect(try TestImages.readMask(out + "/" + rel).pixels == ramp.map { $0 > 0 ? 255 : 0 })
        }
        // A second run into another folder does not see the masks inside the input.
        let again = try MaskRunner.plan(input: dir, output: out, options: MaskOptions(), overwrite: true)
        #expect(again.items.count == 3)
    }

    @Test("masks in the output folder without an image are reported")
    func strays() throws {
        let dir = try TestImages.folder()
        let out = try TestImages.folder()
        try TestImages.mkdir(out + "/sub")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: dir + "/a.png")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: out + "/a.png")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: out + "/sub/a.png")
        try TestImages.saveRGBA(alpha: ramp, width: 4, height: 3, to: out + "/zz.jpg")
        let plan = try MaskRunner.plan(input: dir, output: out, options: MaskOptions(), overwrite: true)
        #expect(plan.warnings.map(\.kind) == [.strayMask, .strayMask])
        #expect(plan.warnings.map(\.path) == [out + "/sub/a.png", out + "/zz.jpg"])
    }

    @Test("the output must differ from the input")
    func sameFolder() throws {
        let dir = try TestImages.folder()
        #expect {
            _ = try MaskRunner.plan(input: dir, output: dir + "/.", options: MaskOptions(), overwrite: true)
        } throws: { ($0 as? DatasetError)?.kind == .badDirectory }
    }

    @Test("results do not depend on the thread count")
    func threads() throws {
        let dir = try TestImages.folder()
        var rng = SplitMix64(state: 11)
        for i in 0..<6 {
            try TestImages.saveRGBA(alpha: rng.bytes(40 * 30), width: 40, height: 30, to: dir + "/i\(i).png")
        }
        var o = MaskOptions()
        o.alpha = .linear
        o.dilate = 2
        o.feather = 3
        o.minWeight = 0.05
        let one = try masks(dir, o, threads: 1), two = try masks(dir, o, threads: 2)
        #expect(two.report.threads == 2)
        for i in 0..<6 {
            let a = try Data(contentsOf: URL(fileURLWithPath: one.output + "/i\(i).png"))
            let b = try Data(contentsOf: URL(fileURLWithPath: two.output + "/i\(i).png"))
            #expect(a == b)
        }
    }

    @Test("option ranges are checked")
    func optionRanges() {
        var o = MaskOptions()
        o.threshold = 255
        #expect(throws: DatasetError.self) { try o.validate() }
        o = MaskOptions()
        o.minWeight = 1.5
        #expect { try o.validate() } throws: { ($0 as? DatasetError)?.kind == .invalidOption }
    }
}

/// Max/min over `dx² + dy² ≤ r²` with clamped coordinates, pixel by pixel.
private func bruteDisk(_ a: [UInt8], _ w: Int, _ h: Int, _ r: Int, _ pick: (UInt8, UInt8) -> UInt8) -> [UInt8] {
    var out = a
    for y in 0..<h {
        for x in 0..<w {
            var v = a[y * w + x]
            for dy in -r...r {
                for dx in -r...r where dx * dx + dy * dy <= r * r {
                    let yy = min(h - 1, max(0, y + dy)), xx = min(w - 1, max(0, x + dx))
                    v = pick(v, a[yy * w + xx])
                }
            }
            out[y * w + x] = v
        }
    }
    return out
}

/// A full 2-D Gaussian (the product kernel) with clamped coordinates.
private func bruteGaussian(_ a: [Double], _ w: Int, _ h: Int, sigma: Double) -> [Double] {
    let r = Int((3 * sigma).rounded(.up))
    let g = (-r...r).map { exp(-Double($0 * $0) / (2 * sigma * sigma)) }
    let sum = g.reduce(0, +)
    var out = a
    for y in 0..<h {
        for x in 0..<w {
            var s = 0.0
            for dy in -r...r {
                for dx in -r...r {
                    let yy = min(h - 1, max(0, y + dy)), xx = min(w - 1, max(0, x + dx))
                    s += g[dy + r] * g[dx + r] / (sum * sum) * a[yy * w + xx]
                }
            }
            out[y * w + x] = s
        }
    }
    return out
}
