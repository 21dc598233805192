import FuzzSupport
import SafeTensors

// Target (b'), structure-aware: the input is a recipe (see StructuredAdapter) that always
// decodes to a valid safetensors header with adapter keys of mutated shapes and dtypes.
// Also checks that every file graft's writer lays out is accepted by graft's parser.
private let memFile = MemFile(name: "graft-fuzz-structured")

func fuzzAdapterStructured(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = FixedCheckpoint.mapper
    guard let (layout, values) = StructuredAdapter.file(from: UnsafeRawBufferPointer(start: data, count: size))
    else { return 0 }
    memFile.replace(with: layout.headerBytes, length: layout.totalByteCount)
    for v in values { memFile.write(v.bytes, at: v.offset) }
    let file: SafeTensorsFile
    do {
        file = try memFile.open()
    } catch {
        fatalError("FileLayout wrote a header the parser rejects: \(error)")
    }
    AdapterPipeline.run(file)
    return 0
}

runLibFuzzer(fuzzAdapterStructured)
