@testable import DatasetTools
import Testing

@Suite("Buckets")
struct BucketsTests {
    // §A6: SDXL 1024, min 256, max 2048, steps 64.
    static let sdxl41: [Resolution] = {
        let pairs: [(Int, [Int])] = [
            (256, [2048]), (320, [2048]), (384, [2048]), (448, [2048]), (512, [1856, 1920, 1984, 2048]),
            (576, [1664, 1728, 1792]), (640, [1536, 1600]), (704, [1408, 1472]), (768, [1280, 1344]),
            (832, [1216]), (896, [1152]), (960, [1088]),
        ]
        var all: [Resolution] = [Resolution(1024, 1024)]
        for (w, hs) in pairs {
            for h in hs {
                all.append(Resolution(w, h))
                all.append(Resolution(h, w))
            }
        }
        return all.sorted()
    }()

    @Test("SDXL 1024/256/2048/64 gives exactly the 41 buckets of §A6")
    func sdxlList() {
        let list = makeBucketResolutions(resolution: Resolution(1024, 1024), minReso: 256, maxReso: 2048, steps: 64)
        #expect(list.count == 41)
        #expect(list == Self.sdxl41)
    }

    @Test("max 1024 gives 25 buckets: w×1024 and transposes")
    func max1024() {
        let list = makeBucketResolutions(resolution: Resolution(1024, 1024), minReso: 256, maxReso: 1024, steps: 64)
        var expected: Set<Resolution> = []
        for w in stride(from: 256, through: 1024, by: 64) {
            expected.insert(Resolution(w, 1024))
            expected.insert(Resolution(1024, w))
        }
        #expect(list.count == 25)
        #expect(list == expected.sorted())
    }

    @Test("defaults are the GUI's")
    func defaults() {
        let s = BucketSettings()
        #expect(s.resolution == Resolution(1024, 1024) && s.minReso == 256 && s.maxReso == 2048 && s.steps == 64)
        #expect(!s.noUpscale)
    }

    @Test("validation: steps % 32 for SDXL, resolution within min/max, min/max adjusted to steps")
    func validation() throws {
        #expect(throws: BucketError(.stepsNotMultipleOf32, "bucket_reso_steps 48 is not a multiple of 32 (SDXL)")) {
            try BucketSettings(steps: 48).validated(sdxl: true)
        }
        #expect(try BucketSettings(steps: 48).validated(sdxl: false).adjustments.isEmpty == false)
        let v = try BucketSettings(minReso: 300, maxReso: 2000, steps: 64).validated(sdxl: true)
        #expect(v.settings.minReso == 256 && v.settings.maxReso == 2048)
        #expect(
            v.adjustments == [
                .init(key: .minBucketReso, from: 300, to: 256), .init(key: .maxBucketReso, from: 2000, to: 2048),
            ])
        func kind(_ s: BucketSettings) -> BucketError.Kind? {
            do {
                _ = try s.validated(sdxl: true)
                return nil
            } catch { return error.kind }
        }
        #expect(kind(BucketSettings(minReso: 1088)) == .resolutionBelowMin)
        #expect(kind(BucketSettings(maxReso: 960)) == .resolutionAboveMax)
        #expect(kind(BucketSettings(resolution: Resolution(512, 512), minReso: 512, maxReso: 512)) == nil)
        #expect(kind(BucketSettings(resolution: Resolution(0, 512))) == .nonPositive)
        #expect(kind(BucketSettings(steps: 0)) == .nonPositive)
    }

    @Test("worked example: 1000×1500 → bucket 832×1216, resized 832×1248, 16 px off top and bottom")
    func portrait() throws {
        let m = BucketManager(BucketSettings())
        let s = try m.select(width: 1000, height: 1500)
        #expect(s.bucket == Resolution(832, 1216))
        #expect(s.resized == Resolution(832, 1248))
        #expect(s.cropOffset == Resolution(0, 16))
        #expect(s.excess == Resolution(0, 32))
        #expect(!s.isUpscaled && s.isCropped && !s.isExactBucket)
    }

    @Test("worked example, no_upscale: 3000×2000 → resized 1248×832, bucket 1216×832")
    func noUpscale() throws {
        let m = BucketManager(BucketSettings(noUpscale: true))
        #expect(m.buckets.isEmpty)
        let s = try m.select(width: 3000, height: 2000)
        #expect(s.resized == Resolution(1248, 832))
        #expect(s.bucket == Resolution(1216, 832))
        #expect(s.cropOffset == Resolution(16, 0))
        #expect(!s.isUpscaled)
        let small = try m.select(width: 700, height: 500)
        #expect(small.resized == Resolution(700, 500) && small.bucket == Resolution(640, 448))
        #expect(small.cropOffset == Resolution(30, 26) && !small.isExactBucket)
        let fits = try m.select(width: 640, height: 448)
        #expect(fits.isExactBucket && !fits.isCropped)
        #expect(throws: BucketError.self) { try m.select(width: 40, height: 500) }
        #expect(throws: BucketError.self) { try m.select(width: 0, height: 500) }
    }

    @Test("an image at a bucket size is used as is; a small one is upscaled")
    func exactAndUpscale() throws {
        let m = BucketManager(BucketSettings())
        let e = try m.select(width: 896, height: 1152)
        #expect(e.isExactBucket && e.scale == 1 && !e.isCropped && e.cropOffset == Resolution(0, 0))
        let u = try m.select(width: 512, height: 512)
        #expect(u.bucket == Resolution(1024, 1024) && u.scale == 2 && u.isUpscaled && !u.isCropped)
        // 3:1 → 1856×640? no: nearest AR among the list (argmin); cover scale by height.
        let wide = try m.select(width: 3000, height: 1000)
        #expect(wide.bucket == Resolution(1728, 576))
        #expect(wide.resized == Resolution(1728, 576))
    }

    @Test("argmin ties go to the first bucket in sorted order")
    func tie() throws {
        let m = BucketManager(BucketSettings(resolution: Resolution(256, 256), minReso: 128, maxReso: 512, steps: 128))
        #expect(
            m.buckets == [
                Resolution(128, 384), Resolution(128, 512), Resolution(256, 256), Resolution(384, 128),
                Resolution(512, 128),
            ])
        // AR 3.5 is exactly 0.5 from 384×128 (3) and from 512×128 (4): the first in sorted order wins.
        let s = try m.select(width: 700, height: 200)
        #expect(s.bucket == Resolution(384, 128))
        #expect(s.resized == Resolution(448, 128) && s.cropOffset == Resolution(32, 0))
    }

    @Test("property: bucket in list (or steps multiple), resized covers it, crop within excess", arguments: [1, 7, 42])
    func properties(seed: UInt64) throws {
        var rng = SplitMix64(state: seed)
        let settingsList = [
            BucketSettings(), BucketSettings(maxReso: 1024), BucketSettings(resolution: Resolution(768, 512)),
            BucketSettings(noUpscale: true),
            BucketSettings(resolution: Resolution(512, 512), steps: 32, noUpscale: true),
        ]
        for settings in settingsList {
            let m = BucketManager(settings)
            for _ in 0..<400 {
                let w = Int(rng.next() % 4000) + 64
                let h = Int(rng.next() % 4000) + 64
                let s = try m.select(width: w, height: h)
                if settings.noUpscale {
                    #expect(
                        s.bucket.width % settings.steps == 0 && s.bucket.height % settings.steps == 0, "seed \(seed)")
                    #expect(s.resized.width <= w && s.resized.height <= h, "seed \(seed) \(w)x\(h)")
                    #expect(
                        s.bucket.width * s.bucket.height <= settings.resolution.width * settings.resolution.height + 0)
                } else {
                    #expect(m.buckets.contains(s.bucket), "seed \(seed) \(w)x\(h)")
                }
                #expect(
                    s.resized.width >= s.bucket.width && s.resized.height >= s.bucket.height, "seed \(seed) \(w)x\(h)")
                #expect(s.cropOffset.width >= 0 && s.cropOffset.width <= s.excess.width, "seed \(seed)")
                #expect(s.cropOffset.height >= 0 && s.cropOffset.height <= s.excess.height, "seed \(seed)")
                #expect(s.cropOffset.width + s.bucket.width <= s.resized.width)
                #expect(s.isUpscaled == (s.scale > 1))
            }
        }
    }

    @Test("epoch length: batches per bucket, reg balancing, steps and the 1600 default")
    func epoch() {
        #expect(EpochLength.batches(bucketCounts: [10, 3, 1], batchSize: 4) == 3 + 1 + 1)
        #expect(EpochLength.batches(bucketCounts: [Int](), batchSize: 2) == 0)
        #expect(EpochLength.regRepeats(trainCount: 10, regRepeats: [1, 1, 1]) == [4, 3, 3])
        #expect(EpochLength.regRepeats(trainCount: 3, regRepeats: [2, 2, 2]) == [2, 2, 0])
        #expect(EpochLength.regRepeats(trainCount: 0, regRepeats: [1, 1]) == [0, 0])
        let d = EpochLength.schedule(batchesPerEpoch: 25)
        #expect(
            d == .init(batchesPerEpoch: 25, stepsPerEpoch: 25, totalSteps: 1600, epochs: 64, usesDefaultSteps: true))
        let e = EpochLength.schedule(batchesPerEpoch: 25, gradientAccumulation: 2, numProcesses: 1, maxTrainEpochs: 10)
        #expect(e.stepsPerEpoch == 13 && e.totalSteps == 130 && e.epochs == 10 && !e.usesDefaultSteps)
        let s = EpochLength.schedule(batchesPerEpoch: 25, maxTrainEpochs: 3, maxTrainSteps: 1000)
        #expect(s.totalSteps == 75)
        let t = EpochLength.schedule(batchesPerEpoch: 25, maxTrainSteps: 60)
        #expect(t.totalSteps == 60 && t.epochs == 3)
    }
}
