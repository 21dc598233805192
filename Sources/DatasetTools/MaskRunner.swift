import FileIO
import Foundation

/// What `graft masks` will do: the images, their outputs and the images refused up front.
public struct MaskPlan: Sendable {
    /// One image and the mask it gets.
    public struct Item: Sendable {
        public var image: ImageSet.Entry
        /// `OUT/folder/stem.png`, relative to the output folder.
        public var outputRelativePath: String
    }

    public var input: String
    public var output: String
    public var options: MaskOptions
    public var overwrite: Bool
    /// Images that get a mask, in sorted order.
    public var items: [Item]
    /// Number of accepted images (including those refused below).
    public var imageCount: Int
    /// Images refused before decoding (duplicate stems), one error each.
    public var refused: [DatasetError]
    /// Scan warnings (mixed-case extensions) and stray files already in the output folder.
    public var warnings: [DatasetWarning]
}

/// The outcome for one image.
public struct MaskResult: Sendable {
    public var imageRelativePath: String
    public var outputRelativePath: String
    public var width = 0
    public var height = 0
    public var statistics: MaskStatistics?
    public var written = false
    public var error: DatasetError?
    public var warnings: [DatasetWarning] = []
}

/// The outcome of a run, in sorted image order (independent of the thread count).
public struct MaskReport: Sendable {
    public var plan: MaskPlan
    public var results: [MaskResult]
    public var seconds: Double
    public var threads: Int

    /// Every error: refused images, then per-image failures, in path order.
    public var errors: [DatasetError] {
        (plan.refused + results.compactMap(\.error)).sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
    }
    /// Every warning, in path order.
    public var warnings: [DatasetWarning] {
        (plan.warnings + results.flatMap(\.warnings)).sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
    }
    public var written: Int { results.filter(\.written).count }
}

/// `graft masks`: loss masks from the images' alpha (doc §B1).
public enum MaskRunner {
    /// Scans `input` and checks everything that can be checked before any work.
    /// - Parameters:
    ///   - overwrite: replace existing masks (`--force`).
    ///   - firstOfDuplicates: for images sharing a stem in one folder, make the mask from the first
    ///     in sorted path order (sd-scripts' pairing) and warn about the others, instead of an
    ///     error for each.
    /// - Throws: ``DatasetError`` `.invalidOption`, `.badDirectory` (input missing, output equal
    ///   to the input), `.outputExists` (some outputs exist and `overwrite` is false; all of
    ///   them are in ``DatasetError/others``).
    public static func plan(
        input: String, output: String, options: MaskOptions, overwrite: Bool, firstOfDuplicates: Bool = false
    ) throws(DatasetError) -> MaskPlan {
        try options.validate()
        let fm = FileManager.default
        if ImageSet.canonical(input) == ImageSet.canonical(output) {
            throw DatasetError(.badDirectory, path: output, "the output folder must differ from the input folder")
        }
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: output, isDirectory: &isDir) && !isDir.boolValue {
            throw DatasetError(.badDirectory, path: output, "the output exists and is not a folder")
        }
        let set = try ImageSet.scan(root: input, excluding: output)
        let duplicates = set.duplicateStems
        var items: [MaskPlan.Item] = []
        var refused: [DatasetError] = []
        var duplicateWarnings: [DatasetWarning] = []
        for e in set.entries {
            if let others = duplicates[e], firstOfDuplicates {
                let first = ([e.relativePath] + others).min { $0.utf8.lexicographicallyPrecedes($1.utf8) }!
                if first != e.relativePath {
                    duplicateWarnings.append(
                        DatasetWarning(
                            .duplicateStem, path: e.relativePath,
                            "same stem as \(first), whose mask sd-scripts pairs with this image too; no mask of its own"
                        ))
                    continue
                }
            } else if let others = duplicates[e] {
                refused.append(
                    DatasetError(
                        .duplicateStem, path: e.relativePath,
                        "same stem as \(others.joined(separator: ", ")); sd-scripts would pair both with one mask; no mask written",
                        others: others))
                continue
            }
            let rel = (e.folder.isEmpty ? "" : e.folder + "/") + e.stem + ".png"
            items.append(MaskPlan.Item(image: e, outputRelativePath: rel))
        }
        if !overwrite {
            let existing = items.map { output + "/" + $0.outputRelativePath }.filter { path in
                var st = stat()
                return lstat(path, &st) == 0
            }
            if let first = existing.first {
                throw DatasetError(
                    .outputExists, path: first, "the output already exists", others: Array(existing.dropFirst()))
            }
        }
        return MaskPlan(
            input: input, output: output, options: options, overwrite: overwrite, items: items,
            imageCount: set.entries.count, refused: refused,
            warnings: set.warnings + duplicateWarnings + strays(in: output, for: set))
    }

    /// Images already in `output` whose stem no input image has (same sub-folder).
    static func strays(in output: String, for set: ImageSet) -> [DatasetWarning] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: output, isDirectory: &isDir), isDir.boolValue,
            let existing = try? ImageSet.scan(root: output)
        else { return [] }
        let stems = Set(set.entries.map { $0.folder + "/" + $0.stem })
        return existing.entries.filter { !stems.contains($0.folder + "/" + $0.stem) }.map {
            DatasetWarning(
                .strayMask, path: output + "/" + $0.relativePath,
                "a mask without an image (sd-scripts fails on extra masks in conditioning_data_dir)")
        }
    }

    /// Decodes every planned image, computes its mask and (unless `dryRun`) writes it
    /// atomically. A failing image is reported in its result and the others continue.
    /// - Parameter threads: images processed at once (each libvips pipeline uses one thread).
    public static func run(_ plan: MaskPlan, threads: Int, dryRun: Bool = false) -> MaskReport {
        let start = SystemInfo.monotonicSeconds()
        Vips.setConcurrency(1)
        let n = plan.items.count
        let workers = max(1, min(threads, n))
        let box = ResultBox(count: n)
        let body: @Sendable () -> Void = {
            while let i = box.next() {
                box.store(process(plan.items[i], plan: plan, dryRun: dryRun), at: i)
            }
        }
        var started: [SystemThread] = []
        for _ in 1..<max(workers, 1) {
            if let t = SystemThread.start(body) { started.append(t) }
        }
        body()
        for t in started { t.join() }
        return MaskReport(
            plan: plan, results: box.results, seconds: SystemInfo.monotonicSeconds() - start, threads: workers)
    }

    static func process(_ item: MaskPlan.Item, plan: MaskPlan, dryRun: Bool) -> MaskResult {
        var r = MaskResult(imageRelativePath: item.image.relativePath, outputRelativePath: item.outputRelativePath)
        let inputPath = plan.input + "/" + item.image.relativePath
        do {
            guard let data = FileManager.default.contents(atPath: inputPath) else {
                throw DatasetError(.io, path: item.image.relativePath, "cannot read the file")
            }
            var image = try AlphaImage.decode([UInt8](data), path: item.image.relativePath)
            if image.alpha == nil && plan.options.skipWithoutAlpha {
                r.warnings.append(
                    DatasetWarning(
                        .noAlpha, path: item.image.relativePath,
                        "no alpha channel: no mask written (sd-scripts needs one mask per image)"))
                return r
            }
            let mask: [UInt8]
            do {
                mask = try MaskPipeline.mask(
                    alpha: image.alpha, width: image.width, height: image.height, options: plan.options)
            } catch {
                throw DatasetError(error.kind, path: item.image.relativePath, error.message)
            }
            image.alpha = nil
            if image.pages > 1 {
                r.warnings.append(
                    DatasetWarning(
                        .animated, path: item.image.relativePath,
                        "animated image (\(image.pages) frames): the mask is made from the first frame"))
            }
            r.width = image.width
            r.height = image.height
            let stats = MaskStatistics(mask)
            r.statistics = stats
            if stats.meanWeight == 0 {
                r.warnings.append(
                    DatasetWarning(
                        .allZero, path: item.image.relativePath, "the mask is all zero: the image trains nothing"))
            } else if stats.meanWeight < plan.options.warnMean {
                r.warnings.append(
                    DatasetWarning(
                        .lowMeanWeight, path: item.image.relativePath,
                        "mean mask weight \(String(format: "%.3f", stats.meanWeight)) < \(plan.options.warnMean): the image's loss is scaled down that much"
                    ))
            }
            if !dryRun {
                let png = try encodeGreyPNG(
                    mask, width: image.width, height: image.height, path: item.outputRelativePath)
                try write(png, to: plan.output + "/" + item.outputRelativePath, plan: plan, inputPath: inputPath)
                r.written = true
            }
        } catch let e as DatasetError {
            r.error = e
        } catch {
            r.error = DatasetError(.io, path: item.image.relativePath, "\(error)")
        }
        return r
    }

    static func write(_ bytes: [UInt8], to path: String, plan: MaskPlan, inputPath: String) throws(DatasetError) {
        let folder = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw DatasetError(.io, path: folder, "cannot create the folder")
        }
        do throws(FileIOError) {
            let out = try AtomicOutput(path: path, overwrite: plan.overwrite, inputs: [inputPath])
            do throws(FileIOError) {
                let appended: Result<Void, FileIOError> = bytes.withUnsafeBytes { raw in
                    Result { () throws(FileIOError) in try out.append(raw) }
                }
                try appended.get()
                try out.commit()
            } catch {
                out.abort()
                throw error
            }
        } catch {
            let kind: DatasetError.Kind = error.refusal == .exists ? .outputExists : .io
            throw DatasetError(kind, path: path, error.detail)
        }
    }
}

/// Hands out image indices and collects results from the worker threads.
private final class ResultBox: @unchecked Sendable {
    private let lock = Lock()
    private var nextIndex = 0
    private let count: Int
    private(set) var results: [MaskResult]

    init(count: Int) {
        self.count = count
        results = Array(repeating: MaskResult(imageRelativePath: "", outputRelativePath: ""), count: count)
    }

    func next() -> Int? {
        lock.withLock {
            guard nextIndex < count else { return nil }
            defer { nextIndex += 1 }
            return nextIndex
        }
    }

    func store(_ r: MaskResult, at i: Int) { lock.withLock { results[i] = r } }
}
