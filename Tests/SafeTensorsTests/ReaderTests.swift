import FileIO
import Foundation
import Testing
import Fixtures

import SafeTensors

#if canImport(Glibc)
import Glibc
#endif

// Tests for `SafeTensorsFile`: regular files, pipes (a named FIFO stands in for stdin,
// which is covered through the CLI), zstd-compressed files, files that are not files,
// scalar reads for every dtype and byte-exact name lookup. Header rules themselves are
// in HeaderParserTests.

// MARK: - Helpers

/// A fresh directory, removed after `body`.
private func withReaderDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-reader-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    return try body(dir)
}

/// The bytes of a complete file for `tensors` (name, dtype, shape, data), via FileLayout.
private func fileBytes(_ tensors: [(String, DType, [UInt64], [UInt8])], metadata: [String: String]? = nil) throws
    -> [UInt8]
{
    let layout = try FileLayout(
        tensors: tensors.map { OutputTensor(name: $0.0, dtype: $0.1, shape: $0.2) }, metadata: metadata)
    var out = layout.headerBytes
    for t in layout.tensors {
        out += tensors.first { Array($0.0.utf8) == Array(t.name.utf8) }!.3
    }
    return out
}

private func write(_ bytes: [UInt8], to url: URL) throws {
    try Data(bytes).write(to: url)
}

/// Expects `SafeTensorsFile(path:)` to throw a SafeTensorsError and returns it.
private func openFailure(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) -> SafeTensorsError? {
    do {
        let f = try SafeTensorsFile(path: path)
        Issue.record("expected an error, opened \(f.tensors.count) tensors", sourceLocation: sourceLocation)
    } catch let e as SafeTensorsError {
        #expect(!e.description.contains("\n"), "one line: \(e)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("threw a non-SafeTensorsError: \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// The `zstd` command-line tool, or nil.
private let zstdTool: String? = ["/usr/bin/zstd", "/usr/local/bin/zstd", "/opt/homebrew/bin/zstd"]
    .first { FileManager.default.isExecutableFile(atPath: $0) }
private let readerCI = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty } ?? false

/// Compresses `input` to `output` with the zstd tool.
private func zstdCompress(_ input: URL, to output: URL, level: Int = 3) throws {
    let tool = try #require(zstdTool, "CI is set but the zstd command-line tool is missing")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = ["-q", "-f", "-\(level)", input.path, "-o", output.path]
    try p.run()
    p.waitUntilExit()
    try #require(p.terminationStatus == 0, "zstd failed")
}

private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }

/// A small file with every kind of tensor used below.
private func sampleTensors() -> [(String, DType, [UInt64], [UInt8])] {
    [
        (
            "w", .F32, [2, 2],
            le(Float(1).bitPattern) + le(Float(-2).bitPattern) + le(Float(0.5).bitPattern) + le(Float(8).bitPattern)
        ),
        ("h", .F16, [3], le(Float16(1).bitPattern) + le(Float16(-1).bitPattern) + le(Float16(0.25).bitPattern)),
        ("i", .I64, [], le(Int64(-7))),
        ("b", .BOOL, [2], [1, 0]),
        ("z", .U8, [0], []),
        ("zz", .F32, [4, 0], []),
    ]
}

// MARK: - Regular files, pipes and zstd

@Suite("reader: sources")
struct SourceReaderTests {
    @Test("a regular file: tensors in data order, metadata, sizes, offsets and data views")
    func regularFile() throws {
        try withReaderDirectory { dir in
            let url = dir.appendingPathComponent("a.safetensors")
            let bytes = try fileBytes(sampleTensors(), metadata: ["format": "pt"])
            try write(bytes, to: url)
            let f = try SafeTensorsFile(path: url.path)
            #expect(f.path == url.path)
            #expect(f.byteCount == bytes.count)
            #expect(f.metadata == ["format": "pt"])
            #expect(f.tensors.map(\.name) == ["i", "w", "zz", "h", "z", "b"])
            for (name, _, shape, data) in sampleTensors() {
                let t = try #require(f.tensor(named: name))
                #expect(t.shape == shape)
                #expect(Array(f.data(of: t)) == data, "\(name)")
                #expect(f.fileOffset(of: t) == f.header.dataStart + Int(t.dataOffsets.lowerBound))
                #expect(Array(bytes[f.fileOffset(of: t)..<f.fileOffset(of: t) + t.byteCount]) == data)
            }
            #expect(f.tensor(named: "missing") == nil)
        }
    }

    @Test("a header-only file ({} and no data) opens with no tensors")
    func headerOnly() throws {
        try withReaderDirectory { dir in
            let url = dir.appendingPathComponent("e.safetensors")
            try write([2, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8), to: url)
            let f = try SafeTensorsFile(path: url.path)
            #expect(f.tensors.isEmpty)
            #expect(f.metadata == nil)
            #expect(f.byteCount == 10)
        }
    }

    @Test("a pipe (named FIFO) is spooled and read like a file, plain and zstd-compressed", arguments: [false, true])
    func fifo(compressed: Bool) throws {
        if compressed && zstdTool == nil && !readerCI { return }
        try withReaderDirectory { dir in
            let plain = dir.appendingPathComponent("p.safetensors")
            // Larger than the 1 MiB spool buffer, so the read loop runs more than once.
            let big = (0..<(300_000 * 4)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
            let bytes = try fileBytes(sampleTensors() + [("big", .F32, [300_000], big)])
            try write(bytes, to: plain)
            var source = plain
            if compressed {
                source = dir.appendingPathComponent("p.safetensors.zst")
                try zstdCompress(plain, to: source)
            }
            let payload = try Data(contentsOf: source)
            let fifo = dir.appendingPathComponent("fifo").path
            try #require(mkfifo(fifo, 0o600) == 0, "mkfifo: errno \(errno)")
            // The writer blocks in open() until the reader opens the FIFO.
            let writer = Thread {
                let fd = open(fifo, O_WRONLY)
                guard fd >= 0 else { return }
                payload.withUnsafeBytes { p in
                    var done = 0
                    while done < p.count {
                        let n = Glibc.write(fd, p.baseAddress! + done, p.count - done)
                        if n <= 0 { break }
                        done += n
                    }
                }
                close(fd)
            }
            writer.start()
            let f = try SafeTensorsFile(path: fifo)
            #expect(f.path == fifo)
            #expect(f.byteCount == bytes.count)
            let t = try #require(f.tensor(named: "big"))
            #expect(Array(f.data(of: t)) == big)
            #expect(f.tensors.count == sampleTensors().count + 1)
        }
    }

    @Test(
        "a .zst file is decompressed transparently (levels 1 and 19)",
        .enabled(if: zstdTool != nil || readerCI, "zstd command-line tool not found"), arguments: [1, 19])
    func zstdFile(level: Int) throws {
        try withReaderDirectory { dir in
            let plain = dir.appendingPathComponent("a.safetensors")
            let bytes = try fileBytes(sampleTensors(), metadata: ["k": "v"])
            try write(bytes, to: plain)
            let compressed = dir.appendingPathComponent("a.safetensors.zst")
            try zstdCompress(plain, to: compressed, level: level)
            let f = try SafeTensorsFile(path: compressed.path)
            #expect(f.path == compressed.path)
            #expect(f.byteCount == bytes.count)
            #expect(f.metadata == ["k": "v"])
            for (name, _, _, data) in sampleTensors() {
                #expect(Array(f.data(of: try #require(f.tensor(named: name)))) == data)
            }
        }
    }

    @Test("a zstd file is detected by its magic, whatever its name")
    func zstdByMagic() throws {
        try #require(zstdTool != nil || !readerCI, "zstd tool missing on CI")
        guard zstdTool != nil else { return }
        try withReaderDirectory { dir in
            let plain = dir.appendingPathComponent("a.safetensors")
            try write(try fileBytes(sampleTensors()), to: plain)
            let disguised = dir.appendingPathComponent("disguised.safetensors")
            try zstdCompress(plain, to: disguised)
            #expect(try SafeTensorsFile(path: disguised.path).tensors.count == sampleTensors().count)
        }
    }

    @Test(
        "a truncated .zst is a compression error naming the file, at every cut",
        .enabled(if: zstdTool != nil || readerCI, "zstd command-line tool not found"))
    func truncatedZstd() throws {
        try withReaderDirectory { dir in
            let plain = dir.appendingPathComponent("a.safetensors")
            let big = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 7919) }
            try write(try fileBytes(sampleTensors() + [("big", .U8, [40_000], big)]), to: plain)
            let compressed = dir.appendingPathComponent("a.safetensors.zst")
            try zstdCompress(plain, to: compressed)
            let full = Array(try Data(contentsOf: compressed))
            let cut = dir.appendingPathComponent("cut.safetensors.zst")
            // Every cut from 5 bytes (magic + 1) to one byte short; a cut at exactly a block
            // boundary may decode a prefix, which then fails as safetensors: either way a
            // clean error, never a crash.
            var compressionErrors = 0
            for length in stride(from: 5, to: full.count, by: max(1, full.count / 60)) + [full.count - 1] {
                try write(Array(full[..<length]), to: cut)
                let e = try #require(openFailure(cut.path), "cut at \(length) of \(full.count)")
                #expect(e.file == cut.path)
                if e.kind == .compression { compressionErrors += 1 }
            }
            #expect(compressionErrors > 0)
            try write(Array(full.dropLast()), to: cut)
            #expect(openFailure(cut.path)?.kind == .compression)
        }
    }

    @Test("garbage after the zstd magic is an error (seeded)", arguments: [1, 2, 3] as [UInt64])
    func zstdGarbage(seed: UInt64) throws {
        try withReaderDirectory { dir in
            var rng = SplitMix64(seed: seed)
            let url = dir.appendingPathComponent("g.safetensors.zst")
            for length in [0, 1, 3, 17, 200, 5000] {
                let garbage = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                try write([0x28, 0xB5, 0x2F, 0xFD] + garbage, to: url)
                let e = try #require(openFailure(url.path), "seed \(seed), \(length) bytes")
                #expect(
                    e.kind == .compression || e.kind == .headerTooSmall || e.kind == .headerTooLarge
                        || e.kind == .invalidHeaderLength, "seed \(seed), \(length) bytes: \(e)")
                #expect(e.file == url.path)
            }
            // The magic alone.
            try write([0x28, 0xB5, 0x2F, 0xFD], to: url)
            #expect(openFailure(url.path)?.kind == .compression)
        }
    }
}

// MARK: - Things that are not safetensors files

@Suite("reader: bad sources")
struct BadSourceReaderTests {
    @Test("an empty file is headerTooSmall")
    func emptyFile() throws {
        try withReaderDirectory { dir in
            let url = dir.appendingPathComponent("empty.safetensors")
            try write([], to: url)
            let e = try #require(openFailure(url.path))
            #expect(e.kind == .headerTooSmall)
            #expect(e.file == url.path)
        }
    }

    @Test("a file shorter than 8 bytes is headerTooSmall", arguments: 1..<8)
    func shortFile(length: Int) throws {
        try withReaderDirectory { dir in
            let url = dir.appendingPathComponent("short.safetensors")
            try write(Array(repeating: 0x7B, count: length), to: url)
            #expect(openFailure(url.path)?.kind == .headerTooSmall)
        }
    }

    @Test("a directory is an io error naming it")
    func directory() throws {
        try withReaderDirectory { dir in
            let e = try #require(openFailure(dir.path))
            #expect(e.kind == .io)
            #expect(e.file == dir.path)
            #expect(e.description.contains("directory"))
        }
    }

    @Test("a diffusers folder (with model_index.json) is notSafeTensors, not a bare io error")
    func diffusersFolder() throws {
        try withReaderDirectory { dir in
            try write(
                Array(#"{"_class_name": "StableDiffusionXLPipeline"}"#.utf8),
                to: dir.appendingPathComponent("model_index.json"))
            let e = try #require(openFailure(dir.path))
            #expect(e.kind == .notSafeTensors)
            #expect(e.file == dir.path)
            #expect(e.detail.contains("diffusers folder"))
        }
    }

    @Test("a missing file is an io error naming the file")
    func missing() throws {
        let path = "/nonexistent-graft-\(UUID().uuidString)/model.safetensors"
        let e = try #require(openFailure(path))
        #expect(e.kind == .io)
        #expect(e.file == path)
        #expect(e.description.hasPrefix(path))
        #expect(e.description.lowercased().contains("no such file"), "\(e)")
    }

    @Test("an unreadable file is an io error", .enabled(if: getuid() != 0, "root can read any file"))
    func unreadable() throws {
        try withReaderDirectory { dir in
            let url = dir.appendingPathComponent("secret.safetensors")
            try write(try fileBytes(sampleTensors()), to: url)
            chmod(url.path, 0)
            #expect(openFailure(url.path)?.kind == .io)
        }
    }

    @Test("/dev/null (a character device, empty stream) is headerTooSmall")
    func devNull() throws {
        let e = try #require(openFailure("/dev/null"))
        #expect(e.kind == .headerTooSmall)
        #expect(e.file == "/dev/null")
    }
}

// MARK: - Values and names

@Suite("reader: scalars and names")
struct ValueReaderTests {
    static let scalarCases: [(DType, [UInt8], Double)] = [
        (.F32, le(Float(-3.25).bitPattern), -3.25),
        (.F64, le(Double(1e300).bitPattern), 1e300),
        (.F16, le(Float16(0.5).bitPattern), 0.5),
        (.F16, le(UInt16(0x7BFF)), 65504),
        (.BF16, le(UInt16(0x3FC0)), 1.5),
        (.BF16, le(UInt16(0xC2F7)), -123.5),
        (.I64, le(Int64.min), Double(Int64.min)),
        (.I32, le(Int32(-123_456)), -123_456),
        (.I16, le(Int16(-300)), -300),
        (.I8, le(Int8(-128)), -128),
        (.U8, [255], 255),
        (.U16, le(UInt16(65535)), 65535),
        (.U32, le(UInt32(4_000_000_000)), 4_000_000_000),
        (.U64, le(UInt64(1) << 63), 9_223_372_036_854_775_808),
    ]

    @Test(
        "scalarValue reads every numeric dtype (shape [], [1] and [1,1], unaligned offsets)",
        arguments: scalarCases.indices)
    func scalar(index: Int) throws {
        let (dtype, bytes, expected) = Self.scalarCases[index]
        try withReaderDirectory { dir in
            // A U8 tensor of 1 byte is placed first among the small dtypes so that the
            // others land at odd offsets whenever the dtype order allows it.
            let url = dir.appendingPathComponent("s.safetensors")
            try write(
                try fileBytes([
                    ("s0", dtype, [], bytes), ("s1", dtype, [1], bytes), ("s2", dtype, [1, 1], bytes),
                    ("pad", .BOOL, [1], [1]),
                ]), to: url)
            let f = try SafeTensorsFile(path: url.path)
            for name in ["s0", "s1", "s2"] {
                let t = try #require(f.tensor(named: name))
                #expect(try f.scalarValue(of: t) == expected, "\(dtype) \(name)")
            }
        }
    }

    @Test("scalarValue also reads values at odd file offsets (files from other writers)")
    func unalignedScalar() throws {
        try withReaderDirectory { dir in
            // The F32 at data offset 1, with N chosen so that its file offset is odd.
            var json =
                #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[],"data_offsets":[1,5]}}"#
            if (8 + json.utf8.count + 1) % 2 == 0 { json += " " }
            var bytes = le(UInt64(json.utf8.count)) + Array(json.utf8)
            bytes += [9] + le(Float(6.5).bitPattern)
            try write(bytes, to: dir.appendingPathComponent("u.safetensors"))
            let f = try SafeTensorsFile(path: dir.appendingPathComponent("u.safetensors").path)
            let t = try #require(f.tensor(named: "b"))
            #expect(f.fileOffset(of: t) % 2 == 1)
            #expect(try f.scalarValue(of: t) == 6.5)
        }
    }

    @Test("scalarValue refuses dtypes without a numeric reading and tensors of more than one element")
    func scalarRefused() throws {
        try withReaderDirectory { dir in
            let url = dir.appendingPathComponent("r.safetensors")
            try write(
                try fileBytes([
                    ("bool", .BOOL, [], [1]), ("f8", .F8_E4M3, [], [0x38]),
                    ("c64", .C64, [], Array(repeating: 0, count: 8)),
                    ("two", .F32, [2], Array(repeating: 0, count: 8)), ("none", .F16, [0], []),
                    ("f4", .F4, [2], [0x11]),
                ]), to: url)
            let f = try SafeTensorsFile(path: url.path)
            for name in ["bool", "f8", "c64", "two", "none", "f4"] {
                let t = try #require(f.tensor(named: name))
                let e = #expect(throws: SafeTensorsError.self, "\(name)") { try f.scalarValue(of: t) }
                #expect(e?.kind == .unsupported, "\(name)")
                #expect(e?.tensor == name)
                #expect(e?.file == url.path)
            }
        }
    }

    @Test("names are looked up by bytes: NFC and NFD forms are distinct tensors")
    func byteExactNames() throws {
        try withReaderDirectory { dir in
            let url = dir.appendingPathComponent("n.safetensors")
            let nfc = "caf\u{E9}", nfd = "cafe\u{301}", angstrom = "\u{212B}", aRing = "\u{C5}"
            #expect(nfc == nfd, "Swift String == merges them; the reader must not")
            try write(
                try fileBytes([(nfc, .U8, [1], [1]), (nfd, .U8, [2], [2, 2]), (angstrom, .U8, [1], [3])]), to: url)
            let f = try SafeTensorsFile(path: url.path)
            #expect(f.tensors.count == 3)
            let a = try #require(f.tensor(named: nfc))
            let b = try #require(f.tensor(named: nfd))
            #expect(Array(a.name.utf8) == Array(nfc.utf8))
            #expect(Array(b.name.utf8) == Array(nfd.utf8))
            #expect(Array(f.data(of: a)) == [1])
            #expect(Array(f.data(of: b)) == [2, 2])
            #expect(f.tensor(named: angstrom).map { Array(f.data(of: $0)) } == [3])
            // Canonically equivalent to U+212B, but not the same bytes: not found.
            #expect(f.tensor(named: aRing) == nil)
            #expect(f.tensor(named: "CAF\u{C9}") == nil)
        }
    }

    @Test("names with NUL, control characters, quotes and emoji round-trip through the reader")
    func oddNames() throws {
        try withReaderDirectory { dir in
            let names = ["", "\u{0}", "a\u{0}b", "q\"\\", "\n\t", "😀/../x", String(repeating: "long", count: 250)]
            let url = dir.appendingPathComponent("o.safetensors")
            try write(try fileBytes(names.enumerated().map { ($0.element, .U8, [1], [UInt8($0.offset)]) }), to: url)
            let f = try SafeTensorsFile(path: url.path)
            for (i, name) in names.enumerated() {
                let t = try #require(f.tensor(named: name), "\(name.debugDescription)")
                #expect(Array(f.data(of: t)) == [UInt8(i)])
            }
        }
    }
}

@Suite("reader: FileIO errors and borrowed data")
struct FileIOInteropTests {
    @Test("FileIOError kinds map to SafeTensorsError kinds, keeping the message and the cause")
    func mapping() {
        let cases: [(FileIOError.Kind, SafeTensorsError.Kind)] = [
            (.systemCall, .io), (.noSpace, .io), (.refused, .refused), (.compression, .compression),
            (.exceedsDeclaredSize, .incompleteBuffer),
        ]
        for (from, to) in cases {
            let e = FileIOError(from, path: "x", offset: 3, "what happened")
            let s = SafeTensorsError(e)
            #expect(s.kind == to)
            #expect(s.description == e.description)
            #expect(s.cause == e)
        }
    }

    @Test("withData(of:) lends exactly the tensor's bytes")
    func withData() throws {
        var header = Array(
            #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[3],"data_offsets":[2,5]}}"#
                .utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
        bytes += [1, 2, 7, 8, 9]
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("graft-withdata-\(UUID().uuidString)")
            .path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let f = try SafeTensorsFile(path: path)
        #expect(f.withData(of: try #require(f.tensor(named: "a"))) { Array($0) } == [1, 2])
        #expect(f.withData(of: try #require(f.tensor(named: "b"))) { Array($0) } == [7, 8, 9])
    }

    @Test("a missing file is .io with the failed call in its cause")
    func missingFileCause() {
        let error = #expect(throws: SafeTensorsError.self) {
            try SafeTensorsFile(path: "/nonexistent-\(UUID().uuidString)")
        }
        #expect(error?.kind == .io)
        #expect(error?.cause?.systemCall == "open")
        #expect(error?.cause?.errnoCode == ENOENT)
    }
}
