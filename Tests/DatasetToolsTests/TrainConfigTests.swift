import DatasetTools
import Testing

@Suite("TrainConfig")
struct TrainConfigTests {
    @Test("a GUI config file is flattened across sections into fallbacks and step inputs")
    func gui() {
        let config = TrainConfig(
            toml: """
                dataset_config = "/cfg/dataset.toml"
                [basic]
                resolution = "1024,768"
                train_batch_size = 2
                epoch = 8
                masked_loss = true
                enable_bucket = true
                max_bucket_reso = 2048
                [advanced]
                gradient_accumulation_steps = 4
                caption_extension = ".txt"
                cache_latents_to_disk = true
                keep_tokens = "1"
                """)
        #expect(config.fallbacks.resolution == Resolution(1024, 768))
        #expect(config.fallbacks.trainBatchSize == 2 && config.fallbacks.maskedLoss && config.fallbacks.enableBucket)
        #expect(config.fallbacks.maxBucketReso == 2048 && config.fallbacks.captionExtension == ".txt")
        #expect(config.fallbacks.cacheLatentsToDisk && config.gradientAccumulationSteps == 4)
        #expect(config.maxTrainEpochs == nil && config.maxTrainSteps == nil)
        #expect(config.datasetConfig == "/cfg/dataset.toml")
        #expect(
            config.findings.map { "\($0.kind.rawValue) \($0.path)" } == [
                "wrongType advanced.keep_tokens", "epochIgnored basic.epoch",
            ])
        // The GUI case: no steps, no epochs, so sd-scripts' 1600 steps.
        let schedule = EpochLength.schedule(
            batchesPerEpoch: 50, gradientAccumulation: config.gradientAccumulationSteps,
            maxTrainEpochs: config.maxTrainEpochs, maxTrainSteps: config.maxTrainSteps)
        #expect(schedule.usesDefaultSteps && schedule.totalSteps == 1600 && schedule.stepsPerEpoch == 13)
    }

    @Test("resolution spellings, max_train_epochs silences the epoch warning, syntax errors")
    func details() {
        let a = TrainConfig(toml: "resolution = \"512\"\nmax_train_epochs = 10\nepoch = 3\n")
        #expect(a.fallbacks.resolution == Resolution(512, 512) && a.maxTrainEpochs == 10 && a.findings.isEmpty)
        let b = TrainConfig(toml: "[x]\nresolution = \"512,x\"\n")
        #expect(b.findings.map(\.kind) == [.wrongType] && b.fallbacks.resolution == nil)
        #expect(TrainConfig(toml: "a = \n").findings.map(\.kind) == [.tomlSyntax])
    }
}
