import FuzzSupport
import SafeTensors

// Target (c): zstd-compressed input (the spool that `.zst` files and zstd on stdin go
// through): the bytes, prefixed with the zstd magic when they lack it, are opened as a
// file, decompressed into a bounded spool in $TMPDIR, mapped and validated.
private let memFile = MemFile(name: "graft-fuzz-zstd")
private let magic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]

func fuzzZstd(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    if input.starts(with: magic) {
        memFile.replace(with: input)
    } else {
        memFile.replace(with: magic + Array(input))
    }
    guard let file = try? memFile.open() else { return 0 }
    // Touch the first and last byte of every tensor: all of them must be mapped.
    var sum = 0
    for t in file.tensors where t.byteCount > 0 {
        sum &+= file.withData(of: t) { Int($0[0]) &+ Int($0[$0.count - 1]) }
        if t.elementCount == 1 { _ = try? file.scalarValue(of: t) }
    }
    precondition(file.byteCount == file.header.dataStart + Int(file.tensors.last?.dataOffsets.upperBound ?? 0))
    return Int32(truncatingIfNeeded: sum & 0)
}

runLibFuzzer(fuzzZstd)
