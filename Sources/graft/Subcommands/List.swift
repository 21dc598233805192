import ArgumentParser
import Foundation
import SafeTensors
import Adapters
import GraftEngine

extension Graft {
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what a checkpoint or adapter file is: tensors, dtypes, shapes, metadata.",
            discussion: """
                Without --stats only the header is read, so this is instant even for a 7 GB checkpoint. \
                Long JSON-in-string metadata (ss_tag_frequency, ss_datasets...) is summarised; \
                --metadata prints every value in full.
                """
        )

        @Argument(help: "A .safetensors (or .safetensors.zst) file, or '-' for standard input.")
        var file: String

        @Option(help: "Only tensors whose name matches this shell glob (e.g. '*attn2*').")
        var filter: String?

        @Flag(help: "Print every metadata value in full.")
        var metadata = false

        @Flag(help: "Compute per-tensor min/max/mean/std/abs-mean and NaN/Inf counts (reads all data).")
        var stats = false

        @Flag(help: "Do not list the tensors, only the summary.")
        var noTensors = false

        @Flag(help: "For an adapter, list every module: component, kind, layer type, rank and alpha.")
        var modules = false

        @OptionGroup var options: OutputOptions

        func run() throws {
            try reportingErrors(json: options.json ? "list" : nil) {
                let f = try SafeTensorsFile(path: file)
                let selected = f.tensors.filter { t in filter.map { globMatches($0, t.name) } ?? true }
                var statistics: [TensorStatistics]? = nil
                if stats {
                    let bar = ProgressBar(label: "stats", enabled: options.showsProgress && !options.json)
                    statistics = try StatisticsRunner().run(file: f, tensors: selected, progress: bar.callback)
                    bar.finish()
                }
                let report = FileInspection(file: f, selected: selected, statistics: statistics, modules: modules)
                if options.json {
                    try printEncoded(report.json(fullMetadata: true))
                } else {
                    printResult(
                        report.text(listTensors: !noTensors, fullMetadata: metadata, verbose: options.verbose),
                        terminator: "")
                }
            }
        }
    }
}

/// Prints an Encodable value as one JSON document (sorted keys, indented), through
/// ``printResult(_:terminator:)``.
func printEncoded<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    printResult(String(decoding: data, as: UTF8.self))
}
