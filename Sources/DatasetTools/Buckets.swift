// sd-scripts' aspect-ratio buckets, reproduced exactly (dataset-tools.md §A6):
// library/model_util.py `make_bucket_resolutions`, library/train_util.py `BucketManager.select_bucket`,
// `trim_and_resize_if_required` and the epoch-length arithmetic of train_network.py.
// Python semantics are kept on purpose: `int(x + 0.5)` truncates a positive double, `//` is floor
// division, `/` is float division, and numpy's argmin keeps the first of equal minima.

/// A width × height pair in pixels. Sorts as Python sorts `(w, h)` tuples: by width, then height.
public struct Resolution: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var width: Int
    public var height: Int

    public init(_ width: Int, _ height: Int) {
        self.width = width
        self.height = height
    }

    public static func < (lhs: Resolution, rhs: Resolution) -> Bool {
        (lhs.width, lhs.height) < (rhs.width, rhs.height)
    }

    public var description: String { "\(width)x\(height)" }
}

/// A bucket settings error: the run-time asserts sd-scripts raises while building its datasets.
public struct BucketError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// A resolution, bucket size or step that is not positive.
        case nonPositive
        /// SDXL: `bucket_reso_steps % 32 != 0` (`verify_bucket_reso_steps(32)`).
        case stepsNotMultipleOf32
        /// `max_bucket_reso < min_bucket_reso`, or `max_bucket_reso` below a side of `resolution`.
        case maxBelowMin
        /// `min(resolution) < min_bucket_reso` (after rounding min down to a multiple of steps).
        case resolutionBelowMin
        /// `max(resolution) > max_bucket_reso` (after rounding max up to a multiple of steps).
        case resolutionAboveMax
        /// An image with a zero side (sd-scripts: ZeroDivisionError).
        case emptyImage
        /// no_upscale: a bucket side rounds to 0 (a side shorter than steps; ZeroDivisionError in sd-scripts).
        case zeroBucketSide
    }

    public var kind: Kind
    public var detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String { detail }
}

/// The bucket parameters of one dataset, with the bmaltais GUI's defaults (1024, 256, 2048, 64).
/// sd-scripts' own argparse default for `max_bucket_reso` is 1024.
public struct BucketSettings: Equatable, Sendable {
    public var resolution: Resolution
    public var minReso: Int
    public var maxReso: Int
    public var steps: Int
    public var noUpscale: Bool

    public init(
        resolution: Resolution = Resolution(1024, 1024), minReso: Int = 256, maxReso: Int = 2048, steps: Int = 64,
        noUpscale: Bool = false
    ) {
        self.resolution = resolution
        self.minReso = minReso
        self.maxReso = maxReso
        self.steps = steps
        self.noUpscale = noUpscale
    }

    /// A value sd-scripts changed with a log warning (`adjust_min_max_bucket_reso_by_steps`).
    public struct Adjustment: Equatable, Sendable {
        public enum Key: String, Sendable { case minBucketReso = "min_bucket_reso", maxBucketReso = "max_bucket_reso" }
        public var key: Key
        public var from: Int
        public var to: Int
    }

    /// The settings sd-scripts actually uses, and the adjustments it warned about.
    public struct Validated: Equatable, Sendable {
        public var settings: BucketSettings
        public var adjustments: [Adjustment]
    }

    /// Checks the settings as sd-scripts does before it buckets, in its order: min is rounded down and max
    /// up to a multiple of steps (warnings), then the resolution is asserted inside [min, max], then
    /// `BucketManager` asserts max ≥ each side of resolution and max ≥ min.
    /// - Parameter sdxl: SDXL scripts also require `steps % 32 == 0`.
    /// - Throws: `BucketError` of kind `nonPositive`, `stepsNotMultipleOf32`, `resolutionBelowMin`,
    ///   `resolutionAboveMax` or `maxBelowMin`.
    public func validated(sdxl: Bool) throws(BucketError) -> Validated {
        guard resolution.width > 0, resolution.height > 0 else {
            throw BucketError(.nonPositive, "resolution \(resolution) must be positive")
        }
        guard steps > 0 else { throw BucketError(.nonPositive, "bucket_reso_steps \(steps) must be positive") }
        guard minReso > 0, maxReso > 0 else {
            throw BucketError(
                .nonPositive, "min_bucket_reso \(minReso) and max_bucket_reso \(maxReso) must be positive")
        }
        if sdxl && steps % 32 != 0 {
            throw BucketError(.stepsNotMultipleOf32, "bucket_reso_steps \(steps) is not a multiple of 32 (SDXL)")
        }
        var out = self
        var adjustments: [Adjustment] = []
        if minReso % steps != 0 {
            out.minReso = minReso - minReso % steps
            adjustments.append(Adjustment(key: .minBucketReso, from: minReso, to: out.minReso))
        }
        if maxReso % steps != 0 {
            out.maxReso = maxReso + steps - maxReso % steps
            adjustments.append(Adjustment(key: .maxBucketReso, from: maxReso, to: out.maxReso))
        }
        let shortSide = min(resolution.width, resolution.height)
        let longSide = max(resolution.width, resolution.height)
        if shortSide < out.minReso {
            throw BucketError(
                .resolutionBelowMin, "resolution \(resolution) is below min_bucket_reso \(out.minReso)")
        }
        if longSide > out.maxReso {
            throw BucketError(
                .resolutionAboveMax, "resolution \(resolution) is above max_bucket_reso \(out.maxReso)")
        }
        if out.maxReso < out.minReso {
            throw BucketError(.maxBelowMin, "max_bucket_reso \(out.maxReso) is below min_bucket_reso \(out.minReso)")
        }
        return Validated(settings: out, adjustments: adjustments)
    }
}

/// sd-scripts' `make_bucket_resolutions`: the sorted bucket list for `resolution`'s area.
/// - Parameters:
///   - resolution: the training resolution; only its area counts.
///   - minReso, maxReso, steps: the bucket bounds and step (taken as given; see `BucketSettings.validated`).
public func makeBucketResolutions(resolution: Resolution, minReso: Int, maxReso: Int, steps: Int) -> [Resolution] {
    precondition(steps > 0 && minReso > 0, "makeBucketResolutions: steps and minReso must be positive")
    let area = resolution.width * resolution.height
    var buckets: Set<Resolution> = []
    // int(math.sqrt(max_area) // divisible) * divisible
    let side = Int((Double(area).squareRoot() / Double(steps)).rounded(.down)) * steps
    buckets.insert(Resolution(side, side))
    var width = minReso
    while width <= maxReso {
        let height = min(maxReso, (area / width) / steps * steps)
        if height >= minReso {
            buckets.insert(Resolution(width, height))
            buckets.insert(Resolution(height, width))
        }
        width += steps
    }
    return buckets.sorted()
}

/// Where one image goes: its bucket, the size it is resized to, and what is cut off.
public struct BucketSelection: Equatable, Sendable {
    /// The bucket (the size of the training sample).
    public var bucket: Resolution
    /// The size the image is resized to before the centre crop; it covers the bucket.
    public var resized: Resolution
    /// `resized` over the original size: the cover scale (list mode), or the larger axis ratio (no_upscale).
    public var scale: Double
    /// `w_b/h_b − W/H`, as sd-scripts logs it.
    public var aspectError: Double
    /// The image is exactly a bucket size (list mode) or already fits (no_upscale): no resize.
    public var isExactBucket: Bool
    /// The left and top offsets of the centre crop (`excess // 2`), without `random_crop`.
    public var cropOffset: Resolution

    /// The pixels cut off in each axis (`resized − bucket`), never negative.
    public var excess: Resolution { Resolution(resized.width - bucket.width, resized.height - bucket.height) }
    /// The image is made larger than its original size.
    public var isUpscaled: Bool { scale > 1 }
    /// Part of the resized image is cut away.
    public var isCropped: Bool { resized != bucket }
}

/// sd-scripts' `BucketManager` for one dataset: the predefined bucket list (empty with no_upscale) and
/// `select_bucket`.
public struct BucketManager: Sendable {
    public let settings: BucketSettings
    /// The sorted predefined buckets; empty with `noUpscale`, whose buckets are made per image.
    public let buckets: [Resolution]
    private let bucketSet: Set<Resolution>
    private let aspectRatios: [Double]

    /// The single bucket sd-scripts uses without `enable_bucket`: `resolution` itself (images are
    /// cover-scaled and centre-cropped to it, `set_predefined_resos([(W, H)])`).
    public init(fixed resolution: Resolution) {
        settings = BucketSettings(
            resolution: resolution, minReso: min(resolution.width, resolution.height),
            maxReso: max(resolution.width, resolution.height), steps: 1)
        buckets = [resolution]
        bucketSet = [resolution]
        aspectRatios = [Double(resolution.width) / Double(resolution.height)]
    }

    /// Builds the bucket list from already validated settings (see `BucketSettings.validated`).
    public init(_ settings: BucketSettings) {
        self.settings = settings
        if settings.noUpscale {
            buckets = []
        } else {
            buckets = makeBucketResolutions(
                resolution: settings.resolution, minReso: settings.minReso, maxReso: settings.maxReso,
                steps: settings.steps)
        }
        bucketSet = Set(buckets)
        aspectRatios = buckets.map { Double($0.width) / Double($0.height) }
    }

    /// sd-scripts' `select_bucket` plus the crop of `trim_and_resize_if_required`.
    /// - Throws: `BucketError` `.emptyImage` for a zero side, `.zeroBucketSide` when no_upscale rounds a
    ///   bucket side to 0 (both are a ZeroDivisionError in sd-scripts).
    public func select(width: Int, height: Int) throws(BucketError) -> BucketSelection {
        guard width > 0, height > 0 else { throw BucketError(.emptyImage, "image size \(width)x\(height)") }
        let aspect = Double(width) / Double(height)
        let bucket: Resolution
        let resized: Resolution
        let scale: Double
        let exact: Bool
        if !settings.noUpscale {
            let size = Resolution(width, height)
            if bucketSet.contains(size) {
                bucket = size
                exact = true
            } else {
                var best = 0
                var bestError = Double.infinity
                for (i, ar) in aspectRatios.enumerated() {
                    let error = abs(ar - aspect)
                    if error < bestError {  // strict: ties keep the first, as numpy argmin
                        best = i
                        bestError = error
                    }
                }
                bucket = buckets[best]
                exact = false
            }
            let bucketAspect = Double(bucket.width) / Double(bucket.height)
            scale =
                aspect > bucketAspect ? Double(bucket.height) / Double(height) : Double(bucket.width) / Double(width)
            resized = Resolution(
                pyRoundHalfUp(Double(width) * scale), pyRoundHalfUp(Double(height) * scale))
        } else {
            let maxArea = settings.resolution.width * settings.resolution.height
            if width * height > maxArea {
                let resizedWidth = (Double(maxArea) * aspect).squareRoot()
                let resizedHeight = Double(maxArea) / resizedWidth
                let bWidth = roundToSteps(resizedWidth)
                let bHeightInWidth = roundToSteps(Double(bWidth) / aspect)
                let bHeight = roundToSteps(resizedHeight)
                let bWidthInHeight = roundToSteps(Double(bHeight) * aspect)
                guard bHeightInWidth > 0, bHeight > 0 else {
                    throw BucketError(
                        .zeroBucketSide,
                        "image \(width)x\(height): a bucket side rounds to 0 at steps \(settings.steps)")
                }
                let arWidthRounded = Double(bWidth) / Double(bHeightInWidth)
                let arHeightRounded = Double(bWidthInHeight) / Double(bHeight)
                if abs(arWidthRounded - aspect) < abs(arHeightRounded - aspect) {
                    resized = Resolution(bWidth, pyRoundHalfUp(Double(bWidth) / aspect))
                } else {
                    resized = Resolution(pyRoundHalfUp(Double(bHeight) * aspect), bHeight)
                }
                exact = false
            } else {
                resized = Resolution(width, height)
                exact = true
            }
            bucket = Resolution(
                resized.width - resized.width % settings.steps, resized.height - resized.height % settings.steps)
            guard bucket.width > 0, bucket.height > 0 else {
                throw BucketError(
                    .zeroBucketSide,
                    "image \(width)x\(height): bucket \(bucket) has a zero side at steps \(settings.steps)")
            }
            scale = max(Double(resized.width) / Double(width), Double(resized.height) / Double(height))
        }
        let crop = Resolution((resized.width - bucket.width) / 2, (resized.height - bucket.height) / 2)
        return BucketSelection(
            bucket: bucket, resized: resized, scale: scale,
            aspectError: Double(bucket.width) / Double(bucket.height) - aspect,
            isExactBucket: exact && bucket == resized, cropOffset: crop)
    }

    // round_to_steps: int(x + 0.5) rounded down to a multiple of steps.
    private func roundToSteps(_ x: Double) -> Int {
        let n = pyRoundHalfUp(x)
        return n - n % settings.steps
    }
}

// Python's int(x + 0.5) for the non-negative sizes used here: truncation toward zero.
func pyRoundHalfUp(_ x: Double) -> Int { Int(x + 0.5) }

/// The epoch arithmetic of sd-scripts (dataset-tools.md §A6 "Epoch length").
public enum EpochLength {
    /// sd-scripts' default `--max_train_steps` when neither steps nor epochs are given.
    public static let defaultMaxTrainSteps = 1600

    /// Batches one dataset contributes per epoch: `Σ_bucket ceil(count_b / batchSize)`, where each count
    /// already includes repeats. Buckets never mix inside a batch.
    public static func batches<C: Collection>(bucketCounts: C, batchSize: Int) -> Int where C.Element == Int {
        precondition(batchSize > 0, "batchSize must be positive")
        return bucketCounts.reduce(0) { $0 + ($1 + batchSize - 1) / batchSize }
    }

    /// DreamBooth regularisation balancing: the effective repeats of each reg image (0 = unused), given
    /// `trainCount` = Σ train images × repeats in the same dataset. sd-scripts registers reg images with
    /// their own repeats in a first pass, then adds 1 per image per later pass, stopping as soon as the
    /// count reaches `trainCount`. With `trainCount` 0 no reg image is used.
    public static func regRepeats(trainCount: Int, regRepeats: [Int]) -> [Int] {
        var effective = [Int](repeating: 0, count: regRepeats.count)
        guard trainCount > 0, !regRepeats.isEmpty else { return effective }
        var n = 0
        var firstPass = true
        while n < trainCount {
            for (i, repeats) in regRepeats.enumerated() {
                if firstPass {
                    effective[i] = repeats
                    n += repeats
                } else {
                    effective[i] += 1
                    n += 1
                }
                if n >= trainCount { break }
            }
            firstPass = false
        }
        return effective
    }

    /// The step schedule of a run, as train_network.py computes it.
    public struct Schedule: Equatable, Sendable {
        /// `len(train_dataloader)`: batches per epoch over all datasets.
        public var batchesPerEpoch: Int
        /// `ceil(batches / num_processes / grad_accum)` (float divisions, as Python).
        public var stepsPerEpoch: Int
        /// `max_train_steps`: `epochs × stepsPerEpoch` with `--max_train_epochs`, else the given steps or 1600.
        public var totalSteps: Int
        /// `ceil(totalSteps / stepsPerEpoch)`, the epochs sd-scripts runs; 0 when there are no batches.
        public var epochs: Int
        /// Neither steps nor epochs were given, so sd-scripts' default of 1600 steps applies (the GUI case).
        public var usesDefaultSteps: Bool
    }

    /// The schedule for `batchesPerEpoch` batches. `maxTrainEpochs` wins over `maxTrainSteps`, as in sd-scripts.
    public static func schedule(
        batchesPerEpoch: Int, gradientAccumulation: Int = 1, numProcesses: Int = 1, maxTrainEpochs: Int? = nil,
        maxTrainSteps: Int? = nil
    ) -> Schedule {
        precondition(
            gradientAccumulation > 0 && numProcesses > 0, "gradientAccumulation and numProcesses must be positive")
        let perEpoch = Int(
            (Double(batchesPerEpoch) / Double(numProcesses) / Double(gradientAccumulation)).rounded(.up))
        let total: Int
        if let maxTrainEpochs {
            total = maxTrainEpochs * perEpoch
        } else {
            total = maxTrainSteps ?? defaultMaxTrainSteps
        }
        let epochs = perEpoch > 0 ? Int((Double(total) / Double(perEpoch)).rounded(.up)) : 0
        return Schedule(
            batchesPerEpoch: batchesPerEpoch, stepsPerEpoch: perEpoch, totalSteps: total, epochs: epochs,
            usesDefaultSteps: maxTrainEpochs == nil && maxTrainSteps == nil)
    }
}
