import FuzzSupport
import SafeTensors

// Target (a): the safetensors header parser on arbitrary bytes, like
// huggingface/safetensors' fuzz_target_1. Any thrown SafeTensorsError is fine.
func fuzzHeader(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let header = try? Header.parse(file: bytes, source: "fuzz") {
        // A parsed header promises every tensor is in bounds and sized right.
        for t in header.tensors {
            precondition(header.dataStart + Int(t.dataOffsets.upperBound) <= size, "tensor past the end of the file")
            _ = (t.elementCount, t.byteCount, t.dims)
        }
    }
    if size >= 8 { _ = try? Header.declaredFileSize(prefix: bytes, source: "fuzz") }
    return 0
}

runLibFuzzer(fuzzHeader)
