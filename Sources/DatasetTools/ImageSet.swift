import Foundation

/// The images sd-scripts would train on under a folder and its sub-folders (doc part B,
/// "Image set"): case-sensitive extensions from sd-scripts' IMAGE_EXTENSIONS, dot-files
/// skipped, symlinks followed, sorted. sd-scripts itself reads one folder per subset;
/// sub-folders are mirrored by the tools.
public struct ImageSet: Sendable {
    /// sd-scripts' `IMAGE_EXTENSIONS` without the optional AVIF/JXL (matched case-sensitively).
    public static let extensions: Set<String> = [
        "png", "jpg", "jpeg", "webp", "bmp", "PNG", "JPG", "JPEG", "WEBP", "BMP",
    ]

    /// One accepted image.
    public struct Entry: Sendable, Equatable {
        /// Path relative to the root, with `/` separators (`sub/dir/a.png`).
        public var relativePath: String
        /// The folder part of ``relativePath`` ("" at the root).
        public var folder: String
        /// The file name without its extension.
        public var stem: String
    }

    public var root: String
    /// Accepted images in sorted path order.
    public var entries: [Entry]
    /// Files skipped with a warning (mixed-case extensions).
    public var warnings: [DatasetWarning]

    /// Lists the images under `root`.
    /// - Parameter excluding: a folder whose sub-tree is not scanned (an output inside the input).
    /// - Throws: ``DatasetError`` `.badDirectory` when `root` is not a readable folder.
    public static func scan(root: String, excluding: String? = nil) throws(DatasetError) -> ImageSet {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw DatasetError(.badDirectory, path: root, "not a folder")
        }
        let excluded = excluding.map(canonical)
        var entries: [Entry] = []
        var warnings: [DatasetWarning] = []
        var visited: Set<String> = []
        var pending = [""]
        while let folder = pending.popLast() {
            let absolute = folder.isEmpty ? root : root + "/" + folder
            let real = canonical(absolute)
            if let excluded, real == excluded { continue }
            if !visited.insert(real).inserted { continue }  // a symlink loop
            let names: [String]
            do {
                names = try fm.contentsOfDirectory(atPath: absolute).sorted()
            } catch {
                throw DatasetError(.badDirectory, path: absolute, "cannot list the folder")
            }
            var subfolders: [String] = []
            for name in names where !name.hasPrefix(".") {
                let rel = folder.isEmpty ? name : folder + "/" + name
                var sub: ObjCBool = false
                guard fm.fileExists(atPath: absolute + "/" + name, isDirectory: &sub) else { continue }
                if sub.boolValue {
                    subfolders.append(rel)
                    continue
                }
                guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { continue }
                let ext = String(name[name.index(after: dot)...])
                let stem = String(name[..<dot])
                if extensions.contains(ext) {
                    entries.append(Entry(relativePath: rel, folder: folder, stem: stem))
                } else if extensions.contains(ext.lowercased()) {
                    warnings.append(
                        DatasetWarning(
                            .mixedCaseExtension, path: rel,
                            "extension .\(ext) is ignored by sd-scripts on Linux (case-sensitive); skipped"))
                }
            }
            pending.append(contentsOf: subfolders.reversed())
        }
        entries.sort { $0.relativePath.utf8.lexicographicallyPrecedes($1.relativePath.utf8) }
        return ImageSet(root: root, entries: entries, warnings: warnings)
    }

    /// Entries whose stem is shared with another image of the same folder.
    public var duplicateStems: [Entry: [String]] {
        var groups: [String: [Entry]] = [:]
        for e in entries { groups[e.folder + "/" + e.stem, default: []].append(e) }
        var out: [Entry: [String]] = [:]
        for (_, g) in groups where g.count > 1 {
            for e in g { out[e] = g.filter { $0 != e }.map(\.relativePath) }
        }
        return out
    }

    static func canonical(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
    }
}

extension ImageSet.Entry: Hashable {}
