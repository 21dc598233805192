import CVips
import DatasetTools
import Foundation
import Testing

/// Saves a flat grey RGB PNG of the given size through libvips.
private func savePNG(width: Int, height: Int, to url: URL) {
    Vips.start()
    let samples = [UInt8](repeating: 128, count: width * height * 3)
    let rc = samples.withUnsafeBytes {
        graft_vips_save_samples($0.baseAddress, Int32(width), Int32(height), 3, 0, url.path)
    }
    #expect(rc == 0)
}

@Suite("graft dataset check (CLI)")
struct DatasetCheckCLITests {
    private struct Doc: Decodable {
        struct Problem: Decodable {
            let severity: String
            let kind: String
            let path: String
        }
        struct Row: Decodable {
            let bucket: [Int]
            let images: Int
            let samples: Int
            let batches: Int
        }
        struct Dataset: Decodable {
            let kind: String
            let buckets: [Row]?
            let captions_found: Int
            let captions_missing: Int
            let masks_paired: Int?
            let masks_missing: Int?
        }
        struct Image: Decodable {
            let path: String
            let size: [Int]
            let bucket: [Int]?
        }
        struct Steps: Decodable {
            let batches_per_epoch: Int
            let steps_per_epoch: Int
            let total_steps: Int
            let epochs: Int
            let default_steps: Bool
        }
        let schema: Int
        let command: String
        let findings: [Problem]
        let datasets: [Dataset]
        let images: [Image]
        let steps: Steps
    }

    /// root/img: a (64x64), b (96x48), c (40x80, no caption), e.png (0 bytes); root/mask: masks for a and b only.
    private func makeDataset() throws -> URL {
        let root = try CLI.temporaryDirectory()
        let img = root.appendingPathComponent("img"), mask = root.appendingPathComponent("mask")
        for dir in [img, mask] { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) }
        savePNG(width: 64, height: 64, to: img.appendingPathComponent("a.png"))
        savePNG(width: 96, height: 48, to: img.appendingPathComponent("b.png"))
        savePNG(width: 40, height: 80, to: img.appendingPathComponent("c.png"))
        try Data().write(to: img.appendingPathComponent("e.png"))
        for stem in ["a", "b", "e"] { try Data("a photo".utf8).write(to: img.appendingPathComponent(stem + ".txt")) }
        for (stem, w, h) in [("a", 64, 64), ("b", 96, 48), ("e", 8, 8)] {
            savePNG(width: w, height: h, to: mask.appendingPathComponent(stem + ".png"))
        }
        let toml = """
            [general]
            resolution = 64
            enable_bucket = true
            min_bucket_reso = 32
            max_bucket_reso = 128
            bucket_reso_steps = 32
            caption_extension = ".txt"
            batch_size = 2

            [[datasets]]
            [[datasets.subsets]]
            image_dir = "img"
            conditioning_data_dir = "mask"
            num_repeats = 3
            """
        try Data(toml.utf8).write(to: root.appendingPathComponent("dataset.toml"))
        return root
    }

    @Test("findings, buckets as BucketManager selects them, steps; exit 1")
    func json() throws {
        let root = try makeDataset()
        defer { try? FileManager.default.removeItem(at: root) }
        let r = try CLI.run(["dataset", "check", "dataset.toml", "--masked-loss", "--json"], cwd: root)
        #expect(r.status == 1, "\(r.stderr)")
        let doc = try JSONDecoder().decode(Doc.self, from: Data(r.stdout.utf8))
        #expect(doc.schema == 1 && doc.command == "dataset check")
        let kinds = Set(doc.findings.map(\.kind))
        for kind in ["missing_caption", "unreadable_image"] { #expect(kinds.contains(kind), "\(kinds)") }
        // Every finding is one stderr line, worst first.
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == doc.findings.count)
        #expect(lines.allSatisfy { $0.hasPrefix("graft: ") })
        let order = ["error", "silent", "warn", "info"]
        let ranks = doc.findings.map { order.firstIndex(of: $0.severity)! }
        #expect(ranks == ranks.sorted())

        let manager = BucketManager(
            try BucketSettings(resolution: Resolution(64, 64), minReso: 32, maxReso: 128, steps: 32)
                .validated(sdxl: true).settings)
        #expect(doc.images.map { ($0.path as NSString).lastPathComponent } == ["a.png", "b.png", "c.png"])
        for image in doc.images {
            let expected = try manager.select(width: image.size[0], height: image.size[1]).bucket
            #expect(image.bucket == [expected.width, expected.height])
        }
        #expect(doc.images.map(\.size) == [[64, 64], [96, 48], [40, 80]])
        let dataset = try #require(doc.datasets.first)
        #expect(dataset.kind == "masks")
        #expect(dataset.captions_found == 2 && dataset.captions_missing == 1)
        #expect(dataset.masks_paired == 2 && dataset.masks_missing == 1)
        let rows = try #require(dataset.buckets)
        #expect(rows.reduce(0) { $0 + $1.images } == 3)
        #expect(rows.allSatisfy { $0.samples == 3 * $0.images && $0.batches == ($0.samples + 1) / 2 })
        #expect(doc.steps.batches_per_epoch == rows.reduce(0) { $0 + $1.batches })
        #expect(doc.steps.default_steps && doc.steps.total_steps == 1600)

        // c.png has no mask (the mask folder is paired by name).
        #expect(kinds.contains("missing_mask"))
    }

    @Test("text report: bucket table and the 1600-step default; --max-train-epochs")
    func text() throws {
        let root = try makeDataset()
        defer { try? FileManager.default.removeItem(at: root) }
        let r = try CLI.run([
            "dataset", "check", root.appendingPathComponent("dataset.toml").path, "--masked-loss",
            "--base-dir", root.path,
        ])
        #expect(r.status == 1)
        #expect(r.stdout.contains("bucket  images  images×repeats  batches"), "\(r.stdout)")
        #expect(r.stdout.contains("sd-scripts default 1600 steps ≈ "), "\(r.stdout)")
        #expect(r.stdout.contains("captions: 2 found, 1 missing"))
        #expect(r.stderr.contains("graft: error: datasets[0].subsets[0].image_dir: e.png: "), "\(r.stderr)")

        let epochs = try CLI.run(
            ["dataset", "check", "dataset.toml", "--masked-loss", "--max-train-epochs", "2", "--json"], cwd: root)
        let doc = try JSONDecoder().decode(Doc.self, from: Data(epochs.stdout.utf8))
        #expect(!doc.steps.default_steps && doc.steps.epochs == 2)
        #expect(doc.steps.total_steps == 2 * doc.steps.steps_per_epoch)
    }

    @Test("a clean dataset exits 0; unreadable config 2; usage 64; no_upscale side below steps is an error")
    func exitCodes() throws {
        let root = try CLI.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let img = root.appendingPathComponent("img")
        try FileManager.default.createDirectory(at: img, withIntermediateDirectories: true)
        savePNG(width: 64, height: 32, to: img.appendingPathComponent("a.png"))
        try Data("x".utf8).write(to: img.appendingPathComponent("a.txt"))
        savePNG(width: 16, height: 16, to: img.appendingPathComponent("tiny.png"))
        try Data("x".utf8).write(to: img.appendingPathComponent("tiny.txt"))
        let toml = "[general]\nresolution = 64\ncaption_extension = \".txt\"\n[[datasets]]\n[[datasets.subsets]]\n"
        try Data((toml + "image_dir = \"img\"\n").utf8).write(to: root.appendingPathComponent("d.toml"))
        let ok = try CLI.run(["dataset", "check", "d.toml"], cwd: root)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("64x64"))

        let upscale = try CLI.run(
            [
                "dataset", "check", "d.toml", "--enable-bucket", "--bucket-no-upscale", "--min-bucket-reso", "32",
                "--max-bucket-reso", "128", "--bucket-reso-steps", "32", "--json",
            ], cwd: root)
        #expect(upscale.status == 1)
        let doc = try JSONDecoder().decode(Doc.self, from: Data(upscale.stdout.utf8))
        #expect(doc.findings.map(\.kind).contains("unbucketable_image"), "\(upscale.stderr)")

        // Flags are sd-scripts' fallbacks: --cache-latents with --color-aug is an sd-scripts error.
        let cached = try CLI.run(["dataset", "check", "d.toml", "--cache-latents", "--color-aug"], cwd: root)
        #expect(cached.status == 1)
        #expect(cached.stderr.contains("graft: error: "), "\(cached.stderr)")

        let missing = try CLI.run(["dataset", "check", "nope.toml"], cwd: root)
        #expect(missing.status == 2)
        #expect(missing.stderr.split(separator: "\n").count == 1 && missing.stderr.contains("nope.toml"))
        let usage = try CLI.run(["dataset", "check", "d.toml", "--model", "sd3"], cwd: root)
        #expect(usage.status == 64)
    }
}
