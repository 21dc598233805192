@testable import DatasetTools
import Foundation
import Testing

struct MemoryLister: DirectoryLister {
    var tree: [String: [DirectoryEntry]]
    func entries(of path: String) -> [DirectoryEntry]? { tree[path] }
}

private func files(_ names: String...) -> [DirectoryEntry] { names.map { DirectoryEntry($0) } }

@Suite("DatasetFiles")
struct DatasetFilesTests {
    @Test("the image set is sd-scripts' glob: case-sensitive extensions, no dot-files, sorted")
    func imageSet() {
        let entries =
            files("b.png", "a.JPG", "c.Png", ".hidden.png", "d.txt", "e.jpeg", ".png") + [
                DirectoryEntry("sub.png", isDirectory: true)
            ]
        #expect(sdScriptsImageNames(entries) == ["a.JPG", "b.png", "e.jpeg"])
    }

    @Test("DreamBooth folders: missing dir, no images, mixed case, sub-folders, stems, captions")
    func dreamBooth() {
        var flags = Fallbacks()
        flags.resolution = Resolution(512, 512)
        let config = DatasetConfig(
            toml: """
                [general]
                caption_extension = ".txt"
                [[datasets]]
                  [[datasets.subsets]]
                  image_dir = "a"
                  [[datasets.subsets]]
                  image_dir = "/missing"
                  [[datasets.subsets]]
                  image_dir = "/empty"
                  [[datasets.subsets]]
                  image_dir = "/tok"
                  class_tokens = "sks"
                  [[datasets.subsets]]
                  image_dir = "/skipped"
                  num_repeats = 0
                  [[datasets.subsets]]
                  image_dir = "/tok"
                """, fallbacks: flags)
        let lister = MemoryLister(tree: [
            "/base/a": files(
                "1.png", "1.txt", "2.png", "2.jpg", "3.Png", "4.webp", "4.caption", "old.txt", "x_1_2_3_4.png", "x.txt")
                + [DirectoryEntry("more", isDirectory: true)],
            "/base/a/more": files("5.png"),
            "/empty": files("notes.txt"),
            "/tok": files("t.png"),
        ])
        let scan = config.scanFiles(lister, baseDirectory: "/base")
        let got = scan.findings.map { "\($0.severity.rawValue) \($0.kind.rawValue) \($0.path)" }
        #expect(
            got == [
                "warn ignoredExtensionCase datasets[0].subsets[0].image_dir",
                "info imagesInSubfolder datasets[0].subsets[0].image_dir",
                "silent duplicateStem datasets[0].subsets[0].image_dir",
                "silent missingCaption datasets[0].subsets[0]",
                "warn captionExtensionMismatch datasets[0].subsets[0]",
                "warn orphanCaption datasets[0].subsets[0]",
                "silent imageDirMissing datasets[0].subsets[1].image_dir",
                "silent noImages datasets[0].subsets[2].image_dir",
                "info classTokensAsCaption datasets[0].subsets[3]",
            ])
        #expect(scan.findings[3].message.hasPrefix("3 images"))  // 2.jpg, 2.png (2.txt absent), 4.webp
        #expect(scan.findings[5].message == "1 caption files have no image: old.txt")
        #expect(
            scan.images[0][0] == [
                "/base/a/1.png", "/base/a/2.jpg", "/base/a/2.png", "/base/a/4.webp", "/base/a/x_1_2_3_4.png",
            ])
        #expect(scan.images[0][4].isEmpty)
        #expect(scan.images[0][3] == ["/tok/t.png"] && scan.images[0][5].isEmpty)  // duplicate image_dir
    }

    @Test("mask pairing: by stem with any extension, missing and extra masks, dataset-wide")
    func masks() {
        var flags = Fallbacks()
        flags.maskedLoss = true
        flags.resolution = Resolution(512, 512)
        flags.captionExtension = ".txt"
        let config = DatasetConfig(
            toml: """
                [[datasets]]
                  [[datasets.subsets]]
                  image_dir = "/i1"
                  conditioning_data_dir = "/m1"
                  [[datasets.subsets]]
                  image_dir = "/i2"
                  conditioning_data_dir = "/m1"
                [[datasets]]
                  [[datasets.subsets]]
                  image_dir = "/i3"
                  conditioning_data_dir = "/nowhere"
                """, fallbacks: flags)
        let lister = MemoryLister(tree: [
            "/i1": files("a.jpg", "a.txt", "b.png", "b.txt"),
            "/i2": files("c.png", "c.txt", "d.png", "d.txt"),
            "/m1": files("a.png", "b.webp", "c.png", "stray.png"),
            "/i3": files("e.png", "e.txt"),
        ])
        let scan = config.scanFiles(lister, baseDirectory: "/")
        let got = scan.findings.map { "\($0.kind.rawValue) \($0.path) \($0.message)" }
        #expect(
            got == [
                "missingMask datasets[0].subsets[1].conditioning_data_dir missing conditioning data for 1 images: d.png",
                "extraMask datasets[0].subsets[0].conditioning_data_dir extra conditioning data for 1 images: stray.png",
                "maskDirMissing datasets[1].subsets[0].conditioning_data_dir '/nowhere' is not a directory",
            ])
        #expect(config.findings.map(\.kind) == [.maskFolderSharedInDataset])
    }

    @Test("the real file system lister follows the tree")
    func realLister() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-ds-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data().write(to: URL(fileURLWithPath: dir + "/a.png"))
        let entries = try #require(FileSystemLister().entries(of: dir))
        #expect(
            entries.sorted { $0.name < $1.name } == [DirectoryEntry("a.png"), DirectoryEntry("sub", isDirectory: true)])
        #expect(FileSystemLister().entries(of: dir + "/a.png") == nil)
        #expect(FileSystemLister().entries(of: dir + "/none") == nil)
    }
}
