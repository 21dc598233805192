// The bucket table of one dataset as sd-scripts logs it ("bucket i: resolution (w, h), count: n",
// "mean ar error (without repeats)"), and the batches it contributes to an epoch (dataset-tools.md §A6,
// §B2 group 8). Image sizes come from the caller; no file is read here.

/// The images of one subset, in sd-scripts' order (sorted paths), with the values that count for buckets.
public struct SubsetImages: Equatable, Sendable {
    public var numRepeats: Int
    public var isReg: Bool
    /// The raw pixel size of each image.
    public var sizes: [Resolution]

    public init(numRepeats: Int, isReg: Bool = false, sizes: [Resolution]) {
        self.numRepeats = numRepeats
        self.isReg = isReg
        self.sizes = sizes
    }
}

/// How the images of one dataset fall into buckets, and the batches they make per epoch.
public struct BucketTally: Equatable, Sendable {
    /// One bucket: its images, the samples per epoch (images × repeats) and the batches they fill.
    public struct Row: Equatable, Sendable {
        public var bucket: Resolution
        public var images: Int
        public var samples: Int
        public var batches: Int
    }

    /// The non-empty buckets, in sorted order.
    public var rows: [Row]
    /// Mean |aspect error| over images, without repeats (0 without images), as sd-scripts logs it.
    public var meanAspectError: Double
    /// Images made larger than they are, and the largest such scale (1 when none).
    public var upscaledImages: Int
    public var maxUpscale: Double
    /// Images of which part is cut away after resizing.
    public var croppedImages: Int
    /// Regularisation images used (effective repeats > 0) and left unused by the balancing.
    public var usedRegImages: Int
    public var unusedRegImages: Int
    /// Subsets skipped because `num_repeats < 1`.
    public var skippedSubsets: Int
    /// Batches this dataset contributes per epoch: `Σ ceil(samples_b / batchSize)`.
    public var batches: Int

    /// Tallies one dataset as sd-scripts buckets it.
    /// - Parameters:
    ///   - subsets: the images of each subset, in config order.
    ///   - manager: the dataset's buckets; `BucketManager(fixed:)` without `enable_bucket`.
    ///   - batchSize: the dataset's `batch_size`.
    /// - Throws: `BucketError` for an image sd-scripts cannot bucket (a zero side; no_upscale side < steps).
    public init(subsets: [SubsetImages], manager: BucketManager, batchSize: Int) throws(BucketError) {
        precondition(batchSize > 0, "batchSize must be positive")
        let kept = subsets.filter { $0.numRepeats >= 1 }
        skippedSubsets = subsets.count - kept.count
        let trainCount = kept.filter { !$0.isReg }.reduce(0) { $0 + $1.sizes.count * $1.numRepeats }
        let regImages = kept.filter(\.isReg).flatMap { s in s.sizes.map { (size: $0, repeats: s.numRepeats) } }
        let regRepeats = EpochLength.regRepeats(trainCount: trainCount, regRepeats: regImages.map(\.repeats))
        var images: [(size: Resolution, repeats: Int)] = kept.filter { !$0.isReg }.flatMap { s in
            s.sizes.map { (size: $0, repeats: s.numRepeats) }
        }
        for (i, reg) in regImages.enumerated() where regRepeats[i] > 0 {
            images.append((size: reg.size, repeats: regRepeats[i]))
        }
        usedRegImages = regRepeats.filter { $0 > 0 }.count
        unusedRegImages = regImages.count - usedRegImages

        var perBucket: [Resolution: (images: Int, samples: Int)] = [:]
        var errorSum = 0.0
        upscaledImages = 0
        maxUpscale = 1
        croppedImages = 0
        for image in images {
            let selection = try manager.select(width: image.size.width, height: image.size.height)
            perBucket[selection.bucket, default: (0, 0)].images += 1
            perBucket[selection.bucket, default: (0, 0)].samples += image.repeats
            errorSum += abs(selection.aspectError)
            if selection.isUpscaled {
                upscaledImages += 1
                maxUpscale = max(maxUpscale, selection.scale)
            }
            if selection.isCropped { croppedImages += 1 }
        }
        meanAspectError = images.isEmpty ? 0 : errorSum / Double(images.count)
        rows = perBucket.keys.sorted().map { bucket in
            let entry = perBucket[bucket]!
            return Row(
                bucket: bucket, images: entry.images, samples: entry.samples,
                batches: EpochLength.batches(bucketCounts: [entry.samples], batchSize: batchSize))
        }
        batches = rows.reduce(0) { $0 + $1.batches }
    }
}
