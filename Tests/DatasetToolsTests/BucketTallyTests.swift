@testable import DatasetTools
import Testing

@Suite("BucketTally")
struct BucketTallyTests {
    @Test("images and repeats per bucket, batches, upscale and crop counts")
    func table() throws {
        let manager = BucketManager(BucketSettings())
        let tally = try BucketTally(
            subsets: [
                SubsetImages(
                    numRepeats: 3,
                    sizes: [
                        Resolution(1000, 1500), Resolution(1000, 1500), Resolution(512, 512), Resolution(896, 1152),
                    ]),
                SubsetImages(numRepeats: 0, sizes: [Resolution(1024, 1024)]),
            ], manager: manager, batchSize: 4)
        #expect(tally.skippedSubsets == 1)
        #expect(
            tally.rows == [
                .init(bucket: Resolution(832, 1216), images: 2, samples: 6, batches: 2),
                .init(bucket: Resolution(896, 1152), images: 1, samples: 3, batches: 1),
                .init(bucket: Resolution(1024, 1024), images: 1, samples: 3, batches: 1),
            ])
        #expect(tally.batches == 4)
        #expect(tally.upscaledImages == 1 && tally.maxUpscale == 2)
        #expect(tally.croppedImages == 2)
        let expectedError = 2 * abs(832.0 / 1216.0 - 1000.0 / 1500.0) / 4
        #expect(abs(tally.meanAspectError - expectedError) < 1e-12)
    }

    @Test("reg images are balanced against train samples; the rest are unused")
    func reg() throws {
        let manager = BucketManager(fixed: Resolution(512, 512))
        let tally = try BucketTally(
            subsets: [
                SubsetImages(numRepeats: 2, sizes: [Resolution(512, 512), Resolution(600, 600)]),
                SubsetImages(numRepeats: 1, isReg: true, sizes: Array(repeating: Resolution(512, 768), count: 6)),
            ], manager: manager, batchSize: 2)
        // 4 train samples: the first 4 reg images, once each.
        #expect(tally.usedRegImages == 4 && tally.unusedRegImages == 2)
        #expect(tally.rows == [.init(bucket: Resolution(512, 512), images: 6, samples: 8, batches: 4)])
        #expect(tally.croppedImages == 4)  // the reg images are 2:3, cut to square
        let regOnly = try BucketTally(
            subsets: [SubsetImages(numRepeats: 1, isReg: true, sizes: [Resolution(512, 512)])], manager: manager,
            batchSize: 1)
        #expect(regOnly.rows.isEmpty && regOnly.batches == 0 && regOnly.unusedRegImages == 1)
        #expect(regOnly.meanAspectError == 0)
    }
}
