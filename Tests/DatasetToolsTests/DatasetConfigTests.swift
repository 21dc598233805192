@testable import DatasetTools
import Testing

@Suite("DatasetConfig")
struct DatasetConfigTests {
    static func masked() -> Fallbacks {
        var f = Fallbacks()
        f.maskedLoss = true
        return f
    }

    static func kinds(_ config: DatasetConfig) -> [Finding.Kind] { config.findings.map(\.kind) }

    static func finding(_ config: DatasetConfig, _ kind: Finding.Kind) -> Finding? {
        config.findings.first { $0.kind == kind }
    }

    @Test("a clean DreamBooth config has no findings and resolves subset ← dataset ← general ← flags")
    func inheritance() throws {
        var flags = Fallbacks()
        flags.flipAug = true
        flags.trainBatchSize = 3
        flags.datasetRepeats = 7
        let config = DatasetConfig(
            toml: """
                [general]
                resolution = [1024, 768]
                caption_extension = "txt"
                shuffle_caption = true
                keep_tokens = 1
                class_tokens = "sks dog"
                enable_bucket = true
                max_bucket_reso = 2048

                [[datasets]]
                batch_size = 2
                keep_tokens = 2
                network_multiplier = 0.5

                  [[datasets.subsets]]
                  image_dir = "/data/a"
                  num_repeats = 10
                  keep_tokens = 3
                  caption_extension = ".caption"

                  [[datasets.subsets]]
                  image_dir = "/data/b"
                  is_reg = true
                  shuffle_caption = false

                [[datasets]]
                resolution = 512
                  [[datasets.subsets]]
                  image_dir = "/data/c"
                """, fallbacks: flags)
        #expect(Self.kinds(config) == [.captionExtensionWithoutDot, .captionExtensionWithoutDot])
        #expect(config.worstSeverity == .info)
        try #require(config.datasets.count == 2)
        let d0 = config.datasets[0]
        #expect(d0.kind == .dreamBooth && d0.resolution == Resolution(1024, 768) && d0.batchSize == 2)
        #expect(d0.networkMultiplier == 0.5 && d0.enableBucket)
        #expect(d0.bucketSettings == BucketSettings(resolution: Resolution(1024, 768), minReso: 256, maxReso: 2048))
        #expect(d0.validatedBuckets?.settings.maxReso == 2048)
        let a = d0.subsets[0]
        let b = d0.subsets[1]
        #expect(a.path == "datasets[0].subsets[0]" && a.imageDir == "/data/a")
        #expect(a.numRepeats == 10 && b.numRepeats == 7)  // subset, then --dataset_repeats
        #expect(a.keepTokens == 3 && b.keepTokens == 2)  // subset, then dataset
        #expect(a.shuffleCaption && !b.shuffleCaption)  // general, then subset
        #expect(a.captionExtension == ".caption" && b.captionExtension == ".txt")  // dot added
        #expect(a.classTokens == "sks dog" && b.isReg && !a.isReg)
        #expect(a.flipAug && b.flipAug)  // --flip_aug
        let d1 = config.datasets[1]
        #expect(d1.resolution == Resolution(512, 512) && d1.batchSize == 3)  // --train_batch_size
        #expect(d1.subsets[0].keepTokens == 1)  // general
    }

    @Test("unknown, misplaced, argparse-only keys and wrong types are all reported, not only the first")
    func keysAndTypes() {
        let config = DatasetConfig(
            toml: """
                epoch = 10
                [general]
                alpha_mask = true
                prior_loss_weight = 1.0
                resolution = 1024
                validation_split = 0
                face_crop_aug_range = [1, 2.0]
                [[datasets]]
                num_repeats = 1.5
                colour_aug = true
                image_dir = "/x"
                resolution = [1024, 1024, 3]
                  [[datasets.subsets]]
                  image_dir = "/data/a"
                  caption_extension = ".txt"
                  batch_size = 4
                  flip_aug = 1
                  keep_tokens = true
                  custom_attributes = "x"
                """)
        let got = config.findings.map { "\($0.kind.rawValue) \($0.path)" }
        #expect(
            got == [
                "unknownKey epoch",
                "keyNotAllowedHere general.alpha_mask",
                "wrongType general.face_crop_aug_range",
                "argparseOnlyKey general.prior_loss_weight",
                "wrongType general.validation_split",
                "unknownKey datasets[0].colour_aug",
                "keyNotAllowedHere datasets[0].image_dir",
                "wrongType datasets[0].num_repeats",
                "wrongType datasets[0].resolution",
                "keyNotAllowedHere datasets[0].subsets[0].batch_size",
                "wrongType datasets[0].subsets[0].custom_attributes",
                "wrongType datasets[0].subsets[0].flip_aug",
                "boolAsInt datasets[0].subsets[0].keep_tokens",
            ])
        #expect(
            Self.finding(config, .wrongType)?.description
                == "error: general.face_crop_aug_range: expected [float, float] for dictionary value, found list")
        #expect(config.datasets.first?.resolution == Resolution(1024, 1024))  // from [general]
        #expect(config.datasets.first?.subsets.first?.keepTokens == 1)
    }

    @Test("a TOML syntax error is one finding with line and column")
    func syntax() {
        let config = DatasetConfig(toml: "[general]\nresolution = = 3\n")
        #expect(Self.kinds(config) == [.tomlSyntax])
        #expect(config.findings[0].message.hasPrefix("line 2, column"))
        #expect(config.datasets.isEmpty)
    }

    @Test("classification: masks only with --masked_loss and every subset; FT; DB; mixed")
    func classification() {
        let toml = """
            [general]
            resolution = 1024
            caption_extension = ".txt"
            [[datasets]]
              [[datasets.subsets]]
              image_dir = "/a"
              conditioning_data_dir = "/m/a"
            [[datasets]]
              [[datasets.subsets]]
              metadata_file = "/meta.json"
              image_dir = "/b"
            [[datasets]]
              [[datasets.subsets]]
              metadata_file = "/meta.json"
              [[datasets.subsets]]
              image_dir = "/c"
            """
        let plain = DatasetConfig(toml: toml)
        #expect(plain.datasets.map(\.kind) == [.dreamBooth, .fineTuning, .dreamBooth])
        #expect(Self.kinds(plain) == [.conditioningWithoutMaskedLoss, .mixedDreamBoothFineTuning])
        #expect(
            Self.finding(plain, .conditioningWithoutMaskedLoss)?.path
                == "datasets[0].subsets[0].conditioning_data_dir")
        let masked = DatasetConfig(toml: toml, fallbacks: Self.masked())
        #expect(masked.datasets.map(\.kind) == [.masks, .fineTuning, .dreamBooth])
        #expect(masked.datasets[0].subsets[0].conditioningDataDir == "/m/a")
        #expect(masked.datasets[1].subsets[0].captionExtension == nil)  // FT has no caption files
        #expect(Self.kinds(masked) == [.mixedDreamBoothFineTuning])
        #expect(masked.datasets[2].subsets[0].metadataFile == "/meta.json")
        #expect(masked.datasets[2].subsets.map(\.kind) == [.fineTuning, .dreamBooth])
    }

    @Test("mask subsets: partial conditioning, is_reg/class_tokens/alpha_mask, random_crop, shared folders")
    func masks() {
        let config = DatasetConfig(
            toml: """
                [general]
                resolution = 1024
                caption_extension = ".txt"
                random_crop = true
                [[datasets]]
                class_tokens = "x"
                  [[datasets.subsets]]
                  image_dir = "/a"
                  conditioning_data_dir = "/m/a/"
                  is_reg = true
                  alpha_mask = true
                  class_tokens = "y"
                  [[datasets.subsets]]
                  image_dir = "/b"
                  conditioning_data_dir = "/m/a"
                  random_crop = false
                [[datasets]]
                  [[datasets.subsets]]
                  image_dir = "/c"
                  conditioning_data_dir = "/m/./a"
                  random_crop = false
                  [[datasets.subsets]]
                  image_dir = "/m/d"
                  conditioning_data_dir = "/m/d"
                  random_crop = false
                [[datasets]]
                  [[datasets.subsets]]
                  image_dir = "/e"
                  conditioning_data_dir = "/m/e"
                  [[datasets.subsets]]
                  image_dir = "/f"
                """, fallbacks: Self.masked())
        let got = config.findings.map { "\($0.kind.rawValue) \($0.path)" }
        #expect(
            got == [
                "keyNotAllowedHere datasets[0].class_tokens",
                "keyNotAllowedHere datasets[0].subsets[0].alpha_mask",
                "keyNotAllowedHere datasets[0].subsets[0].class_tokens",
                "keyNotAllowedHere datasets[0].subsets[0].is_reg",
                "randomCropWithMasks datasets[0].subsets[0]",
                "maskFolderSharedInDataset datasets[0].subsets[1]",
                "maskFolderIsImageDir datasets[1].subsets[1]",
                "partialConditioning datasets[2]",
                "sharedMaskFolder datasets[1].subsets[0].conditioning_data_dir",
            ])
        #expect(config.datasets.map(\.kind) == [.masks, .masks, .dreamBooth])
        #expect(config.datasets[0].subsets[0].isReg == false && config.datasets[0].subsets[0].classTokens == nil)
    }

    @Test("values: resolution, buckets, interpolation, cache_latents, validation_split, repeats, duplicates")
    func values() {
        var flags = Fallbacks()
        flags.cacheLatents = true
        let config = DatasetConfig(
            toml: """
                [general]
                caption_extension = ".txt"
                enable_bucket = true
                [[datasets]]
                  [[datasets.subsets]]
                  image_dir = "/a"
                [[datasets]]
                resolution = 1024
                bucket_reso_steps = 48
                validation_split = 1.5
                resize_interpolation = "fancy"
                  [[datasets.subsets]]
                  image_dir = "/a"
                  color_aug = true
                  num_repeats = 0
                  [[datasets.subsets]]
                  image_dir = "/a"
                [[datasets]]
                resolution = 1024
                min_bucket_reso = 300
                max_bucket_reso = 2000
                  [[datasets.subsets]]
                  image_dir = "/a"
                  resize_interpolation = "area"
                """, fallbacks: flags)
        let got = config.findings.map { "\($0.severity.rawValue) \($0.kind.rawValue) \($0.path)" }
        #expect(
            got == [
                "error missingResolution datasets[0]",
                "error unknownInterpolation datasets[1].resize_interpolation",
                "error invalidBucketSettings datasets[1]",
                "error validationSplitOutOfRange datasets[1]",
                "silent numRepeatsBelowOne datasets[1].subsets[0]",
                "error cacheLatentsWithAugmentation datasets[1].subsets[0]",
                "silent duplicateImageDir datasets[1].subsets[1]",
                "warn bucketResoAdjusted datasets[2]",
                "warn bucketResoAdjusted datasets[2]",
            ])
        #expect(config.datasets[2].validatedBuckets?.settings.minReso == 256)
        #expect(config.datasets[2].validatedBuckets?.settings.maxReso == 2048)
        #expect(config.datasets[2].subsets[0].resizeInterpolation == "area")
        #expect(config.datasets[1].validatedBuckets == nil)
    }

    @Test("missing keys, default caption extension, empty and reg-only datasets, no datasets")
    func missingAndEmpty() {
        let config = DatasetConfig(
            toml: """
                [general]
                resolution = 1024
                [[datasets]]
                  [[datasets.subsets]]
                  num_repeats = 2
                [[datasets]]
                  [[datasets.subsets]]
                  image_dir = "/r"
                  is_reg = true
                [[datasets]]
                batch_size = 2
                [[datasets]]
                  [[datasets.subsets]]
                  metadata_file = "/m.json"
                """)
        let got = config.findings.map { "\($0.severity.rawValue) \($0.kind.rawValue) \($0.path)" }
        #expect(
            got == [
                "error missingRequiredKey datasets[0].subsets[0].image_dir",
                "warn defaultCaptionExtension datasets[0].subsets[0]",
                "warn defaultCaptionExtension datasets[1].subsets[0]",
                "silent regOnlyDataset datasets[1]",
                "warn emptyDataset datasets[2]",
            ])
        #expect(config.datasets[0].subsets[0].captionExtension == ".caption")
        #expect(config.datasets[2].kind == .fineTuning)  // all([]) is True, as in sd-scripts
        // With --masked_loss an empty dataset validates as masks: caption_extension allowed, class_tokens not.
        let empty = DatasetConfig(
            toml: "[general]\nresolution = 512\n[[datasets]]\ncaption_extension = \".txt\"\nclass_tokens = \"x\"\n",
            fallbacks: Self.masked())
        #expect(empty.datasets[0].kind == .masks)
        #expect(empty.findings.map(\.path) == ["datasets[0]", "datasets[0].class_tokens"])
        #expect(config.datasets[3].kind == .fineTuning && config.datasets[3].subsets[0].imageDir == nil)
        #expect(Self.kinds(DatasetConfig(toml: "[general]\nresolution = 512\n")) == [.noDatasets])
        var flags = Fallbacks()
        flags.captionExtension = ".txt"
        flags.resolution = Resolution(512, 512)
        let viaFlags = DatasetConfig(toml: "[[datasets]]\n[[datasets.subsets]]\nimage_dir = \"/a\"\n", fallbacks: flags)
        #expect(viaFlags.findings.isEmpty)
        #expect(viaFlags.datasets[0].resolution == Resolution(512, 512))
    }

    @Test("every finding kind is covered by a test above")
    func coverage() {
        // Kinds not produced by the configs above would show here.
        let produced: Set<Finding.Kind> = [
            .tomlSyntax, .jsonSyntax, .unknownKey, .keyNotAllowedHere, .argparseOnlyKey, .wrongType, .boolAsInt,
            .missingRequiredKey, .mixedDreamBoothFineTuning, .conditioningWithoutMaskedLoss, .partialConditioning,
            .randomCropWithMasks, .sharedMaskFolder, .maskFolderSharedInDataset, .maskFolderIsImageDir,
            .missingResolution, .invalidBucketSettings, .bucketResoAdjusted, .unknownInterpolation,
            .cacheLatentsWithAugmentation, .validationSplitOutOfRange, .numRepeatsBelowOne, .duplicateImageDir,
            .defaultCaptionExtension, .captionExtensionWithoutDot, .noDatasets, .emptyDataset, .regOnlyDataset,
            .epochIgnored,  // TrainConfigTests
            // DatasetFilesTests
            .imageDirMissing, .noImages, .ignoredExtensionCase, .imagesInSubfolder, .duplicateStem, .missingCaption,
            .classTokensAsCaption, .captionExtensionMismatch, .orphanCaption, .maskDirMissing, .missingMask, .extraMask,
            .unreadableImage, .unbucketableImage,  // GraftCLITests (dataset check)
        ]
        #expect(Set(Finding.Kind.allCases) == produced)
    }
}

@Suite("DatasetConfig JSON")
struct DatasetConfigJSONTests {
    @Test("JSON configs keep Python's int / float / bool distinctions and resolve like TOML")
    func json() throws {
        let config = DatasetConfig(
            json: #"""
                {"general": {"resolution": [1024, 1024], "caption_extension": ".txt", "network_multiplier": 1,
                             "caption_dropout_rate": 1e-1, "keep_tokens": 1.0},
                 "datasets": [{"batch_size": 2, "network_multiplier": 0.5,
                               "subsets": [{"image_dir": "/data/\u00e9t\u00e9 \"x\"", "num_repeats": 3,
                                            "flip_aug": true, "class_tokens": null}]}]}
                """#)
        let got = config.findings.map { "\($0.kind.rawValue) \($0.path)" }
        #expect(
            got == [
                "wrongType general.keep_tokens", "wrongType general.network_multiplier",
                "wrongType datasets[0].subsets[0].class_tokens",
            ])
        let subset = try #require(config.datasets.first?.subsets.first)
        #expect(subset.imageDir == "/data/été \"x\"" && subset.numRepeats == 3 && subset.flipAug)
        #expect(config.datasets[0].batchSize == 2 && config.datasets[0].networkMultiplier == 0.5)
        #expect(config.datasets[0].resolution == Resolution(1024, 1024))
    }

    @Test("a JSON syntax error is one finding with the byte offset")
    func syntax() {
        for text in ["{\"general\": {", "{\"a\": 1,}", "[1 2]", "{\"a\": tru}", "{} x", "\"\\q\""] {
            let config = DatasetConfig(json: text)
            #expect(config.findings.map(\.kind) == [.jsonSyntax], "\(text)")
        }
        #expect(DatasetConfig(json: "[]").findings.map(\.kind) == [.wrongType])
        #expect(DatasetConfig(json: "{}").findings.map(\.kind) == [.noDatasets])
    }
}
