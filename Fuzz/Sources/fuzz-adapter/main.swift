import FuzzSupport

// Target (b): arbitrary bytes as an adapter file (in a memfd), then analysis, `list`
// report, key mapping and merge planning against a fixed reduced SDXL checkpoint.
private let memFile = MemFile(name: "graft-fuzz-adapter")

func fuzzAdapter(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = FixedCheckpoint.mapper
    memFile.replace(with: UnsafeRawBufferPointer(start: data, count: size))
    guard let file = try? memFile.open() else { return 0 }
    AdapterPipeline.run(file)
    return 0
}

runLibFuzzer(fuzzAdapter)
