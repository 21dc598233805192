// The folder checks of `dataset check` that need only directory listings (dataset-tools.md §A4, §B2
// groups 3, 5 and 6): which files sd-scripts takes as images, caption files by name, and mask pairing.
// Reading images and caption contents is left to later checks.
import Foundation

/// One entry of a directory listing.
public struct DirectoryEntry: Equatable, Sendable {
    public var name: String
    /// A directory, or a symbolic link to one.
    public var isDirectory: Bool

    public init(_ name: String, isDirectory: Bool = false) {
        self.name = name
        self.isDirectory = isDirectory
    }
}

/// Lists directories; tests use an in-memory tree.
public protocol DirectoryLister {
    /// The entries of the directory at `path`, or nil when it does not exist or is not a directory.
    func entries(of path: String) -> [DirectoryEntry]?
}

/// The real file system, through Foundation. Symbolic links are followed.
public struct FileSystemLister: DirectoryLister {
    public init() {}

    public func entries(of path: String) -> [DirectoryEntry]? {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
            let names = try? manager.contentsOfDirectory(atPath: path)
        else { return nil }
        return names.map { name in
            var childIsDirectory: ObjCBool = false
            _ = manager.fileExists(atPath: path + "/" + name, isDirectory: &childIsDirectory)
            return DirectoryEntry(name, isDirectory: childIsDirectory.boolValue)
        }
    }
}

/// sd-scripts' `IMAGE_EXTENSIONS` without the optional AVIF/JXL plug-ins: matched case-sensitively.
public let imageExtensions: [String] = [
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP",
]

/// The image files sd-scripts' `glob_images(dir, "*")` finds among `entries`, sorted: not dot-files, not
/// directories, with a case-sensitive extension from `imageExtensions`.
public func sdScriptsImageNames(_ entries: [DirectoryEntry]) -> [String] {
    entries.filter { e in
        !e.isDirectory && !e.name.hasPrefix(".") && imageExtensions.contains { e.name.hasSuffix($0) && e.name != $0 }
    }.map(\.name).sorted()
}

// os.path.splitext for a file name: the stem before the last '.', unless the name starts with it.
func splitExtension(_ name: String) -> (stem: String, ext: String) {
    guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return (name, "") }
    return (String(name[..<dot]), String(name[dot...]))
}

/// What the folder checks found, and the images sd-scripts would take from each subset.
public struct FileScan: Sendable {
    public var findings: [Finding]
    /// Per dataset and subset: the image paths (directory + "/" + name), in sd-scripts' order; empty for
    /// skipped subsets.
    public var images: [[[String]]]
}

extension DatasetConfig {
    /// Checks the folders of every DreamBooth and mask subset: the image set, caption files by name and,
    /// for mask datasets, the pairing of masks with images. Fine-tuning subsets are not scanned.
    /// - Parameters:
    ///   - lister: the file system, or a test double.
    ///   - baseDirectory: what relative paths are resolved against (sd-scripts: the training process's CWD).
    public func scanFiles(_ lister: some DirectoryLister, baseDirectory: String) -> FileScan {
        var findings: [Finding] = []
        var allImages: [[[String]]] = []
        func resolve(_ path: String) -> String {
            path.hasPrefix("/") ? path : baseDirectory + "/" + path
        }
        func add(_ s: Finding.Severity, _ k: Finding.Kind, _ path: String, _ message: String) {
            findings.append(Finding(s, k, path, message))
        }
        for dataset in datasets {
            var datasetImages: [[String]] = []
            // Mask pairing is dataset-wide: stems (mask dir + stem) claimed by some image.
            var pairedMasks: Set<String> = []
            var maskDirs: [(path: String, subset: String)] = []
            var seenImageDirs: Set<String> = []
            for subset in dataset.subsets {
                // Skipped by sd-scripts (reported by the config checks): repeats < 1, or an image_dir already
                // used in this dataset (raw strings, the first wins).
                guard subset.kind != .fineTuning, subset.numRepeats >= 1, let imageDir = subset.imageDir,
                    seenImageDirs.insert(imageDir).inserted
                else {
                    datasetImages.append([])
                    continue
                }
                let dir = resolve(imageDir)
                guard let entries = lister.entries(of: dir) else {
                    add(
                        .silent, .imageDirMissing, "\(subset.path).image_dir",
                        "'\(imageDir)' is not a directory: sd-scripts skips this subset")
                    datasetImages.append([])
                    continue
                }
                let names = sdScriptsImageNames(entries)
                if names.isEmpty {
                    add(
                        .silent, .noImages, "\(subset.path).image_dir",
                        "no images in '\(imageDir)': sd-scripts skips this subset")
                }
                let lowerExtensions = Set(imageExtensions.map { $0.lowercased() })
                let ignored = entries.filter { e in
                    let ext = splitExtension(e.name).ext
                    return !e.isDirectory && !e.name.hasPrefix(".") && lowerExtensions.contains(ext.lowercased())
                        && !imageExtensions.contains(ext)
                }.map(\.name).sorted()
                if !ignored.isEmpty {
                    add(
                        .warn, .ignoredExtensionCase, "\(subset.path).image_dir",
                        "\(ignored.count) image(s) with a mixed-case extension are ignored on Linux: "
                            + ignored.prefix(3).joined(separator: ", "))
                }
                let withImages = entries.filter(\.isDirectory).map(\.name).sorted().filter { sub in
                    !sdScriptsImageNames(lister.entries(of: dir + "/" + sub) ?? []).isEmpty
                }
                if !withImages.isEmpty {
                    add(
                        .info, .imagesInSubfolder, "\(subset.path).image_dir",
                        "sub-folders with images are not scanned: " + withImages.prefix(3).joined(separator: ", "))
                }
                var byStem: [String: [String]] = [:]
                for name in names { byStem[splitExtension(name).stem, default: []].append(name) }
                for stem in byStem.keys.sorted() where byStem[stem]!.count > 1 {
                    add(
                        .silent, .duplicateStem, "\(subset.path).image_dir",
                        "\(byStem[stem]!.joined(separator: ", ")) share one caption, mask and latent cache")
                }
                if !names.isEmpty {
                    checkCaptions(subset, names: names, entries: entries, add: { findings.append($0) })
                }

                if dataset.kind == .masks, let maskDir = subset.conditioningDataDir {
                    let resolved = resolve(maskDir)
                    maskDirs.append((resolved, subset.path))
                    if let maskEntries = lister.entries(of: resolved) {
                        let maskNames = Set(sdScriptsImageNames(maskEntries))
                        var missing: [String] = []
                        for name in names {
                            let stem = splitExtension(name).stem
                            // sorted(glob(stem + ext))[0]: any accepted extension pairs.
                            if let mask = imageExtensions.map({ stem + $0 }).filter(maskNames.contains).sorted().first {
                                pairedMasks.insert(resolved + "/" + splitExtension(mask).stem)
                            } else {
                                missing.append(name)
                            }
                        }
                        if !missing.isEmpty {
                            add(
                                .error, .missingMask, "\(subset.path).conditioning_data_dir",
                                "missing conditioning data for \(missing.count) images: "
                                    + missing.prefix(3).joined(separator: ", "))
                        }
                    } else {
                        add(
                            .error, .maskDirMissing, "\(subset.path).conditioning_data_dir",
                            "'\(maskDir)' is not a directory")
                    }
                }
                datasetImages.append(names.map { dir + "/" + $0 })
            }
            // Every image file in each mask folder that no image of this dataset claimed is "extra".
            var reported: Set<String> = []
            for (maskDir, subsetPath) in maskDirs where reported.insert(maskDir).inserted {
                let extra = sdScriptsImageNames(lister.entries(of: maskDir) ?? []).filter {
                    !pairedMasks.contains(maskDir + "/" + splitExtension($0).stem)
                }
                if !extra.isEmpty {
                    add(
                        .error, .extraMask, "\(subsetPath).conditioning_data_dir",
                        "extra conditioning data for \(extra.count) images: " + extra.prefix(3).joined(separator: ", "))
                }
            }
            allImages.append(datasetImages)
        }
        return FileScan(findings: findings, images: allImages)
    }

    // Caption files by name only: `<stem><caption_extension>`, or the face-crop fallback that drops the
    // last 4 `_`-separated tokens of a stem with at least 5.
    private func checkCaptions(
        _ subset: ResolvedSubset, names: [String], entries: [DirectoryEntry], add: (Finding) -> Void
    ) {
        guard let ext = subset.captionExtension, !subset.cacheInfo else { return }
        let files = Set(entries.filter { !$0.isDirectory }.map(\.name))
        func captionName(_ stem: String) -> String? {
            if files.contains(stem + ext) { return stem + ext }
            let tokens = stem.split(separator: "_", omittingEmptySubsequences: false)
            if tokens.count >= 5 {
                let short = tokens.dropLast(4).joined(separator: "_") + ext
                if files.contains(short) { return short }
            }
            return nil
        }
        var missing: [String] = []
        var used: Set<String> = []
        for name in names {
            if let caption = captionName(splitExtension(name).stem) {
                used.insert(caption)
            } else {
                missing.append(name)
            }
        }
        if !missing.isEmpty {
            if subset.classTokens == nil {
                add(
                    Finding(
                        .silent, .missingCaption, subset.path,
                        "\(missing.count) images have no '\(ext)' caption and there are no class_tokens: "
                            + "they train with an empty caption"))
            } else {
                add(
                    Finding(
                        .info, .classTokensAsCaption, subset.path,
                        "\(missing.count) images have no '\(ext)' caption: class_tokens is used"))
            }
            // The classic missing caption_extension: captions exist, under another extension.
            let stems = Set(missing.map { splitExtension($0).stem })
            let others = Set(
                files.compactMap { f -> String? in
                    let (stem, e) = splitExtension(f)
                    return stems.contains(stem) && [".txt", ".caption", ".tags"].contains(e) && e != ext ? e : nil
                })
            if !others.isEmpty {
                add(
                    Finding(
                        .warn, .captionExtensionMismatch, subset.path,
                        "captions exist as \(others.sorted().joined(separator: ", ")) but caption_extension is '\(ext)'"
                    ))
            }
        }
        let orphans = files.filter { $0.hasSuffix(ext) && !$0.hasPrefix(".") && !used.contains($0) }.sorted()
        if !orphans.isEmpty {
            add(
                Finding(
                    .warn, .orphanCaption, subset.path,
                    "\(orphans.count) caption files have no image: " + orphans.prefix(3).joined(separator: ", ")))
        }
    }
}
