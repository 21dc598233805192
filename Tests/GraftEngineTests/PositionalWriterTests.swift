import FileIO
import Foundation
import Testing
@testable import GraftEngine
import SafeTensors

/// The uncompressed write path: O_DIRECT window assembly (several 32 MiB windows,
/// chunks arriving out of order from two workers, an unaligned file end) must give
/// exactly the bytes of plain buffered writes, whatever the threads and chunk sizes.
@Suite("PositionalWriter")
struct PositionalWriterTests {
    /// A ~140 MB input: F32 tensors (converted to F16) and F16/I64 tensors (copied),
    /// with sizes that put tensor boundaries and the file end off any 4096 boundary.
    static func makeInput(in dir: URL) throws -> String {
        let specs: [(String, DType, [UInt64])] = [
            ("a.big", .F32, [6001, 4099]),  // 98 MB, converted to 49 MB
            ("b.copy", .F16, [5003, 2049]),  // 20 MB, copied
            ("c.odd", .F32, [7, 13]),
            ("d.ints", .I64, [1_000_003]),  // 8 MB, copied
            ("e.big2", .F32, [2_500_001]),  // 10 MB, converted
        ]
        let tensors = specs.map { OutputTensor(name: $0.0, dtype: $0.1, shape: $0.2) }
        let layout = try FileLayout(tensors: tensors, metadata: ["k": "v"])
        let path = dir.appendingPathComponent("in.safetensors").path
        let out = try AtomicOutput(path: path, overwrite: false)
        try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
        var state: UInt64 = 12345
        for (i, t) in layout.tensors.enumerated() {
            let n = t.byteCount
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 8)
            defer { buf.deallocate() }
            if t.dtype == .F32 {
                let f = buf.bindMemory(to: Float.self)
                for j in 0..<f.count {
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    f[j] = Float(Int64(bitPattern: state) >> 40) * 1e-6
                }
            } else {
                for j in 0..<n {
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    buf[j] = UInt8(truncatingIfNeeded: state >> 56)
                }
            }
            try out.write(UnsafeRawBufferPointer(buf), at: layout.fileOffset(ofTensorAt: i))
        }
        try out.commit()
        return path
    }

    func run(_ input: SafeTensorsFile, to path: String, direct: Bool, threads: Int, chunk: Int) throws -> Data {
        let planned = input.tensors.map { t -> PlannedTensor in
            let outType: DType = t.dtype == .F32 ? .F16 : t.dtype
            return PlannedTensor(
                source: input, input: t, output: OutputTensor(name: t.name, dtype: outType, shape: t.shape),
                operation: outType == t.dtype ? .copy : .convert)
        }
        var e = Executor()
        e.directIO = direct
        e.threads = threads
        e.chunkElements = chunk
        e.copyChunkBytes = chunk
        let out = try AtomicOutput(path: path, overwrite: true)
        let report = try e.run(ExecutionPlan(tensors: planned, metadata: input.metadata), into: out)
        try out.commit()
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(data.count == report.bytesWritten)
        return data
    }

    @Test("direct and buffered writes give identical files for any threads and chunk sizes")
    func directEqualsBuffered() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-pw-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = try SafeTensorsFile(path: try Self.makeInput(in: dir))
        let out = dir.appendingPathComponent("out.safetensors").path
        let reference = try run(input, to: out, direct: false, threads: 1, chunk: 1 << 20)
        #expect(reference.count > 2 * PositionalWriter.windowBytes, "the output must span several windows")
        #expect(reference.count % 4096 != 0, "the file end must be unaligned")
        for (threads, chunk) in [(2, 1 << 20), (2, 77_777), (1, 1 << 16), (3, 1 << 18)] {
            let got = try run(input, to: out, direct: true, threads: threads, chunk: chunk)
            #expect(got == reference, "direct write, \(threads) threads, chunk \(chunk)")
        }
        // And the result is a valid safetensors file.
        let reread = try SafeTensorsFile(path: out)
        #expect(Set(reread.tensors.map(\.name)) == Set(input.tensors.map(\.name)))
    }
}
