import FileIO
import Foundation
import Testing
@testable import GraftEngine
import SafeTensors

// The zstd output path: the ordered sink feeds chunks to the compressor in file order,
// and `zstd -d` of graft's .zst gives exactly the bytes of the uncompressed output.

private final class ZstdScratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("graft-zstd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    deinit { try? FileManager.default.removeItem(at: url) }
}

private let zstdTool = ["/usr/bin/zstd", "/usr/local/bin/zstd"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}
private let onCI = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty } ?? false

private func zstdDecompress(_ input: String, to output: String) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try #require(zstdTool))
    p.arguments = ["-d", "-q", "-f", input, "-o", output]
    try p.run()
    p.waitUntilExit()
    try #require(p.terminationStatus == 0, "zstd -d failed on \(input)")
}

/// A file of several tensors, big enough for many chunks.
private func makeInput(_ path: String) throws {
    var g: UInt64 = 5
    func next() -> Float {
        g = g &* 6364136223846793005 &+ 1442695040888963407;
        return Float(Int32(truncatingIfNeeded: g >> 32)) / Float(Int32.max)
    }
    let specs: [(String, DType, [UInt64])] = [
        ("a", .F32, [300, 100]), ("b", .F32, [7]), ("c", .I32, [1000]), ("d", .F32, [64, 64]),
    ]
    let layout = try FileLayout(
        tensors: specs.map { OutputTensor(name: $0.0, dtype: $0.1, shape: $0.2) }, metadata: ["m": "1"], file: path)
    let out = try AtomicOutput(path: path, overwrite: true)
    try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
    for (i, t) in layout.tensors.enumerated() {
        let bytes = (0..<t.elementCount).flatMap { _ in
            withUnsafeBytes(of: next().bitPattern.littleEndian) { Array($0) }
        }
        try bytes.withUnsafeBytes { try out.write($0, at: layout.fileOffset(ofTensorAt: i)) }
    }
    try out.commit()
}

@Suite("ZstdTests: compressed output")
struct ZstdTests {
    @Test(
        "zstd -d of a .zst output equals the uncompressed output, for any threads / chunking / level",
        .enabled(if: zstdTool != nil || onCI, "zstd command-line tool not found"),
        arguments: [(1, 1 << 20, 3), (2, 1000, 1), (3, 333, 19), (2, 4096, -1)])
    func matchesPlain(threads: Int, chunk: Int, level: Int) throws {
        let dir = try ZstdScratch()
        try makeInput(dir.path("in.safetensors"))
        let f = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let plan = try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .F16))
        func run(_ path: String, _ encoding: OutputEncoding) throws -> ExecutionReport {
            let out = try AtomicOutput(path: path, overwrite: true)
            var e = Executor()
            e.threads = threads
            e.chunkElements = chunk
            e.copyChunkBytes = chunk
            e.encoding = encoding
            let r = try e.run(plan.execution, into: out)
            try out.commit()
            return r
        }
        let plain = try run(dir.path("out.safetensors"), .raw)
        let packed = try run(dir.path("out.safetensors.zst"), .zstd(level: level, workers: threads))
        #expect(plain.compressedBytes == nil)
        let size = try FileManager.default.attributesOfItem(atPath: dir.path("out.safetensors.zst"))[.size] as? Int
        #expect(packed.compressedBytes == size)
        #expect(packed.overflows == plain.overflows)
        try zstdDecompress(dir.path("out.safetensors.zst"), to: dir.path("back.safetensors"))
        let a = try Data(contentsOf: URL(fileURLWithPath: dir.path("out.safetensors")))
        let b = try Data(contentsOf: URL(fileURLWithPath: dir.path("back.safetensors")))
        #expect(a == b)
    }

    @Test(
        "single-threaded zstd, more workers than chunks, copies and conversions mixed",
        .enabled(if: zstdTool != nil || onCI, "zstd command-line tool not found"))
    func mergeZstd() throws {
        let dir = try ZstdScratch()
        try makeInput(dir.path("in.safetensors"))
        let f = try SafeTensorsFile(path: dir.path("in.safetensors"))
        let plan = try ConvertPlanner.plan(ConvertRequest(input: f, dtype: .BF16, keep: ["a"]))
        for (path, enc) in [("p.safetensors", OutputEncoding.raw), ("p.safetensors.zst", .zstd(level: 3, workers: 0))] {
            let out = try AtomicOutput(path: dir.path(path), overwrite: true)
            var e = Executor()
            e.threads = 8
            e.encoding = enc
            _ = try e.run(plan.execution, into: out)
            try out.commit()
        }
        try zstdDecompress(dir.path("p.safetensors.zst"), to: dir.path("q.safetensors"))
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: dir.path("p.safetensors")))
                == Data(contentsOf: URL(fileURLWithPath: dir.path("q.safetensors"))))
    }

    @Test("the ordered sink consumes out-of-order submissions in index order")
    func orderedSink() throws {
        final class Log: @unchecked Sendable { var items: [UInt8] = [] }
        let log = Log()
        let sink = OrderedSink(consume: { bytes in log.items.append(contentsOf: bytes) })
        let counter = WorkCounter(limit: 200)
        runOnThreads(4) { worker in
            while let i = counter.take() {
                if (i + worker) % 3 == 0 { usleep(100) }
                var b = UInt8(truncatingIfNeeded: i)
                try? withUnsafeBytes(of: &b) { try sink.submit(i, $0) }
            }
        }
        #expect(log.items == (0..<200).map { UInt8(truncatingIfNeeded: $0) })
    }

    @Test("cancelling the sink wakes waiting workers with an error instead of a hang")
    func cancel() throws {
        let sink = OrderedSink(consume: { _ in })
        final class Box: @unchecked Sendable { var error: Error? }
        let box = Box()
        runOnThreads(2) { worker in
            if worker == 0 {
                usleep(20_000)
                sink.cancel()  // chunk 0 "failed"
            } else {
                do { try [UInt8(1)].withUnsafeBytes { try sink.submit(1, $0) } } catch { box.error = error }
            }
        }
        #expect(box.error is OrderedSink.Cancelled)
    }
}
