import FileIO
import Foundation
import Testing

import Fixtures
import SafeTensors

// Tests for the writer: `FileLayout` (order, offsets and header bytes exactly as the
// reference writes them, docs/safetensors.md §8) and `AtomicOutput` (temporary file,
// refusals, cleanup, commit); round trips through our reader, and agreement with the
// reference Python package in both directions.

// MARK: - Helpers

/// A tensor to write together with its bytes.
private struct WriterCase {
    var tensor: OutputTensor
    var bytes: [UInt8]

    init(_ name: String, _ dtype: DType, _ shape: [UInt64], bytes: [UInt8]? = nil) {
        tensor = OutputTensor(name: name, dtype: dtype, shape: shape)
        let count = (try? TensorInfo.expectedByteCount(dtype: dtype, shape: shape).get()).map { Int($0) } ?? 0
        self.bytes = bytes ?? (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ name.utf8.count) }
    }
}

/// A fresh directory under the system temporary directory, removed by `body`'s caller.
private func withWriterDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-writer-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    return try body(dir)
}

/// Writes a complete file with `FileLayout` + `AtomicOutput` (tensor data in reverse
/// data order, to show that positional writes need no particular order).
@discardableResult
private func writeWithGraft(_ cases: [WriterCase], metadata: [String: String]?, to path: String) throws -> FileLayout {
    let layout = try FileLayout(tensors: cases.map(\.tensor), metadata: metadata, file: path)
    var bytesByName: [[UInt8]: [UInt8]] = [:]
    for c in cases { bytesByName[Array(c.tensor.name.utf8)] = c.bytes }
    let out = try AtomicOutput(path: path, overwrite: false)
    try out.reserve(byteCount: layout.totalByteCount)
    try layout.headerBytes.withUnsafeBytes { try out.write($0, at: 0) }
    for i in layout.tensors.indices.reversed() {
        let data = bytesByName[Array(layout.tensors[i].name.utf8)] ?? []
        try data.withUnsafeBytes { try out.write($0, at: layout.fileOffset(ofTensorAt: i)) }
    }
    try out.commit()
    return layout
}

/// The 8-byte little-endian prefix followed by `json` padded with spaces to a multiple of 8.
private func expectedHeader(_ json: String) -> [UInt8] {
    var body = Array(json.utf8)
    while body.count % 8 != 0 { body.append(0x20) }
    let n = UInt64(body.count)
    return (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) } + body
}

private func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

private func readBytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

private func utf8Hex(_ s: String) -> String { s.utf8.map { String(format: "%02x", $0) }.joined() }

private func bytesHex(_ b: some Sequence<UInt8>) -> String { b.map { String(format: "%02x", $0) }.joined() }

private func bytesFromHex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.utf8.makeIterator()
    func nibble(_ c: UInt8) -> UInt8 { c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10 }
    while let hi = it.next(), let lo = it.next() { out.append(nibble(hi) << 4 | nibble(lo)) }
    return out
}

// MARK: - Layout and header bytes

@Suite("writer: layout and header bytes")
struct LayoutWriterTests {
    @Test("no tensors and no metadata is {} and 6 spaces: a 16-byte file")
    func emptyFile() throws {
        let layout = try FileLayout(tensors: [], metadata: nil)
        #expect(layout.headerBytes == [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
        #expect(layout.totalByteCount == 16)
        #expect(layout.tensors.isEmpty)
    }

    @Test("one U8 tensor: the reference's exact 64-byte header (N = 56 with 3 spaces)")
    func singleTensor() throws {
        let layout = try FileLayout(tensors: [OutputTensor(name: "a", dtype: .U8, shape: [1])], metadata: nil)
        let json = #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#
        #expect(json.utf8.count == 53)
        #expect(layout.headerBytes == [56, 0, 0, 0, 0, 0, 0, 0] + Array(json.utf8) + [0x20, 0x20, 0x20])
        #expect(layout.totalByteCount == 65)
    }

    @Test("mixed dtypes: dtype descending, then name bytes; offsets packed from 0")
    func mixedOrder() throws {
        let input = [
            OutputTensor(name: "b", dtype: .F32, shape: [2]),
            OutputTensor(name: "m", dtype: .BOOL, shape: [2]),
            OutputTensor(name: "a", dtype: .F16, shape: [3]),
            OutputTensor(name: "z", dtype: .U8, shape: [0]),
            OutputTensor(name: "x", dtype: .BF16, shape: [1, 2]),
            OutputTensor(name: "c", dtype: .I64, shape: []),
            OutputTensor(name: "f", dtype: .F4, shape: [2, 3]),
            OutputTensor(name: "a2", dtype: .F32, shape: [0, 5]),
            OutputTensor(name: "B", dtype: .F32, shape: [1]),
        ]
        let layout = try FileLayout(tensors: input, metadata: nil)
        let json =
            "{"
            + #""c":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"#
            + #""B":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"#
            + #""a2":{"dtype":"F32","shape":[0,5],"data_offsets":[12,12]},"#
            + #""b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},"#
            + #""x":{"dtype":"BF16","shape":[1,2],"data_offsets":[20,24]},"#
            + #""a":{"dtype":"F16","shape":[3],"data_offsets":[24,30]},"#
            + #""z":{"dtype":"U8","shape":[0],"data_offsets":[30,30]},"#
            + #""f":{"dtype":"F4","shape":[2,3],"data_offsets":[30,33]},"#
            + #""m":{"dtype":"BOOL","shape":[2],"data_offsets":[33,35]}"#
            + "}"
        #expect(
            layout.headerBytes == expectedHeader(json),
            "\(String(decoding: layout.headerBytes.dropFirst(8), as: UTF8.self))")
        #expect(layout.tensors.map(\.name) == ["c", "B", "a2", "b", "x", "a", "z", "f", "m"])
        #expect(layout.totalByteCount == layout.headerBytes.count + 35)
        #expect(layout.fileOffset(ofTensorAt: 3) == layout.headerBytes.count + 12)
    }

    @Test("the order over all 22 dtypes is the reference's descending enum order")
    func allDTypesOrder() throws {
        // Two elements of every dtype except F6 (needs four for whole bytes).
        let input = DType.allCases.enumerated().map { i, d in
            OutputTensor(name: "t\(i)", dtype: d, shape: [d.bitCount == 6 ? 4 : 2])
        }
        let layout = try FileLayout(tensors: input.shuffled(), metadata: nil)
        #expect(
            layout.tensors.map(\.dtype.rawValue) == [
                "U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
                "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0", "F8_E4M3", "F8_E5M2", "I8", "U8",
                "F6_E3M2", "F6_E2M3", "F4", "BOOL",
            ])
        // Every tensor starts at a file offset that is a multiple of its element size.
        for (i, t) in layout.tensors.enumerated() where t.dtype.bitCount >= 8 {
            #expect(layout.fileOffset(ofTensorAt: i) % (t.dtype.bitCount / 8) == 0, "\(t.name) \(t.dtype)")
        }
    }

    @Test("names: quote, backslash and controls escaped as serde_json does; DEL and non-ASCII raw")
    func nameEscaping() throws {
        let name = "q\"\\\u{0}\u{1}\u{8}\u{C}\n\r\t\u{1F}\u{7F}é😀"
        let layout = try FileLayout(tensors: [OutputTensor(name: name, dtype: .U8, shape: [])], metadata: nil)
        let json =
            "{\"" + #"q\"\\\u0000\u0001\b\f\n\r\t\u001f"# + "\u{7F}é😀\""
            + #":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}"#
        #expect(layout.headerBytes == expectedHeader(json))
    }

    @Test("names are ordered by UTF-8 bytes, not by Swift String comparison")
    func byteOrder() throws {
        // "Z" (5A) < "a" (61) < "é" (C3 A9) < "ｚ" (EF BD 9A) < "😀" (F0 9F 98 80);
        // NFD "é" (65 CC 81) sorts right after "e".
        let names = ["😀", "ｚ", "é", "a", "Z", "e\u{301}", "e"]
        let layout = try FileLayout(
            tensors: names.map { OutputTensor(name: $0, dtype: .F16, shape: [1]) }, metadata: nil)
        #expect(
            layout.tensors.map { Array($0.name.utf8) }
                == ["Z", "a", "e", "e\u{301}", "é", "ｚ", "😀"].map { Array($0.utf8) })
    }

    @Test("metadata comes first, keys sorted by bytes, keys and values escaped")
    func metadataFirst() throws {
        let metadata = ["b": "x", "a\"": "é\n", "A": "\u{1}"]
        let layout = try FileLayout(tensors: [OutputTensor(name: "t", dtype: .I8, shape: [2])], metadata: metadata)
        let json =
            #"{"__metadata__":{"A":"\u0001","a\"":"é\n","b":"x"},"t":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}"#
        #expect(layout.headerBytes == expectedHeader(json))
    }

    @Test("empty metadata with no tensors is valid JSON (the reference 0.8 writes a broken header here)")
    func emptyMetadataNoTensors() throws {
        let layout = try FileLayout(tensors: [], metadata: [:])
        #expect(layout.headerBytes == expectedHeader(#"{"__metadata__":{}}"#))
        let header = try layout.headerBytes.withUnsafeBytes { try Header.parse(file: $0, source: "m") }
        #expect(header.metadata == [:])
    }

    @Test("padding is spaces to a multiple of 8 and N counts it, for every residue", arguments: 1...16)
    func padding(nameLength: Int) throws {
        let name = String(repeating: "n", count: nameLength)
        let layout = try FileLayout(tensors: [OutputTensor(name: name, dtype: .U8, shape: [1])], metadata: nil)
        let h = layout.headerBytes
        let n = h.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        #expect(Int(n) == h.count - 8)
        #expect(h.count % 8 == 0)
        let unpadded = #"{"\#(name)":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#.utf8.count
        #expect(h.count - 8 - unpadded < 8)
        #expect(h[(8 + unpadded)...].allSatisfy { $0 == 0x20 })
        #expect(h[8 + unpadded - 1] == UInt8(ascii: "}"))
    }

    @Test("the layout does not depend on the input order", arguments: [1, 2, 3] as [UInt64])
    func deterministic(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let tensors = randomWriterCases(&rng, count: 12).map(\.tensor)
        let a = try FileLayout(tensors: tensors, metadata: ["k": "v", "j": "w"])
        let b = try FileLayout(tensors: tensors.shuffled(using: &rng), metadata: ["j": "w", "k": "v"])
        #expect(a.headerBytes == b.headerBytes, "seed \(seed)")
        #expect(a.tensors == b.tensors, "seed \(seed)")
    }

    @Test("a repeated name is duplicateTensor; NFC and NFD spellings are two tensors")
    func duplicates() throws {
        let error = #expect(throws: SafeTensorsError.self) {
            try FileLayout(
                tensors: [
                    OutputTensor(name: "w", dtype: .F16, shape: [1]),
                    OutputTensor(name: "w", dtype: .F32, shape: [1]),
                ], metadata: nil, file: "out.st")
        }
        #expect(error?.kind == .duplicateTensor)
        #expect(error?.tensor == "w")
        #expect(error?.file == "out.st")
        let layout = try FileLayout(
            tensors: [
                OutputTensor(name: "caf\u{E9}", dtype: .F16, shape: [1]),
                OutputTensor(name: "cafe\u{301}", dtype: .F16, shape: [1]),
            ], metadata: nil)
        #expect(layout.tensors.count == 2)
    }

    @Test("impossible shapes are refused: overflow, and sub-byte sizes that are not whole bytes")
    func impossibleShapes() throws {
        let cases: [(OutputTensor, SafeTensorsError.Kind)] = [
            (OutputTensor(name: "o", dtype: .U8, shape: [1 << 62, 1 << 62]), .overflow),
            (OutputTensor(name: "o", dtype: .U8, shape: [1 << 61]), .overflow),  // 2^64 bits
            (OutputTensor(name: "o", dtype: .F4, shape: [3]), .misalignedSlice),
            (OutputTensor(name: "o", dtype: .F6_E2M3, shape: [1]), .misalignedSlice),
        ]
        for (t, kind) in cases {
            let error = #expect(throws: SafeTensorsError.self, "\(t)") { try FileLayout(tensors: [t], metadata: nil) }
            #expect(error?.kind == kind, "\(t)")
            #expect(error?.tensor == "o")
        }
        // The total size overflowing across tensors is caught too.
        let huge = [
            OutputTensor(name: "a", dtype: .U8, shape: [1 << 60]),
            OutputTensor(name: "b", dtype: .U8, shape: [1 << 60]),
            OutputTensor(name: "c", dtype: .U64, shape: [1 << 60]),
        ]
        #expect(throws: SafeTensorsError.self) { try FileLayout(tensors: huge, metadata: nil) }
        // Zero-element tensors with a huge dimension are fine (0 × anything, left to right).
        let zero = try FileLayout(
            tensors: [OutputTensor(name: "z", dtype: .F32, shape: [0, UInt64.max])], metadata: nil)
        #expect(zero.tensors[0].dataOffsets == 0..<0)
    }
}

// MARK: - Round trip through our reader

/// Random tensors over all 22 dtypes: ranks 0-3, dimensions 0-5, names from an alphabet
/// with quotes, backslashes, control characters and non-ASCII; unique as bytes.
private func randomWriterCases(_ rng: inout SplitMix64, count: Int) -> [WriterCase] {
    let alphabet: [String] = [
        "a", "b", "_", ".", "0", "9", "\"", "\\", "\n", "\u{1}", "\u{7F}", "é", "e\u{301}", "😀", "ｚ", "/", " ",
    ]
    var seen = Set<[UInt8]>()
    var out: [WriterCase] = []
    while out.count < count {
        let length = Int(rng.next() % 6)
        let name = (0..<length).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }.joined()
        guard seen.insert(Array(name.utf8)).inserted else { continue }
        let dtype = DType.allCases[Int(rng.next() % UInt64(DType.allCases.count))]
        var shape = (0..<Int(rng.next() % 4)).map { _ in rng.next() % 6 }
        if case .failure = TensorInfo.expectedByteCount(dtype: dtype, shape: shape) { shape.append(4) }
        let n = Int((try? TensorInfo.expectedByteCount(dtype: dtype, shape: shape).get()) ?? 0)
        out.append(WriterCase(name, dtype, shape, bytes: (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }))
    }
    return out
}

private func randomMetadata(_ rng: inout SplitMix64) -> [String: String]? {
    switch rng.next() % 3 {
    case 0: return nil
    case 1: return [:]
    default:
        let values = ["", "x", "é\n\"\\", "{\"a\": [1, 2]}", "😀\u{0}", String(repeating: "long ", count: 50)]
        var m: [String: String] = [:]
        for i in 0..<Int(rng.next() % 5) {
            m["k\(i)\(values[Int(rng.next() % 6)].prefix(2))"] = values[Int(rng.next() % 6)]
        }
        return m
    }
}

@Suite("writer: round trip")
struct RoundTripWriterTests {
    @Test("random files written by FileLayout + AtomicOutput read back identically", arguments: 0..<40 as Range<UInt64>)
    func roundTrip(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let cases = randomWriterCases(&rng, count: 1 + Int(rng.next() % 10))
        let metadata = randomMetadata(&rng)
        try withWriterDirectory { dir in
            let path = dir.appendingPathComponent("rt.safetensors").path
            let layout = try writeWithGraft(cases, metadata: metadata, to: path)
            let f = try SafeTensorsFile(path: path)
            #expect(f.byteCount == layout.totalByteCount, "seed \(seed)")
            #expect(f.header.byteCount % 8 == 0, "seed \(seed)")
            #expect(f.header.dataStart == layout.dataStart, "seed \(seed)")
            #expect(f.tensors == layout.tensors, "seed \(seed)")
            #expect(f.tensors.map { Array($0.name.utf8) } == layout.tensors.map { Array($0.name.utf8) }, "seed \(seed)")
            #expect(f.metadata == metadata, "seed \(seed)")
            for c in cases {
                let t = try #require(f.tensor(named: c.tensor.name), "seed \(seed): \(c.tensor.name.debugDescription)")
                #expect(Array(f.data(of: t)) == c.bytes, "seed \(seed): \(c.tensor.name.debugDescription)")
                #expect(t.dtype == c.tensor.dtype && t.shape == c.tensor.shape, "seed \(seed)")
            }
            let raw = try readBytes(path)
            #expect(Array(raw.prefix(layout.dataStart)) == layout.headerBytes, "seed \(seed)")
        }
    }
}

// (AtomicOutput itself is tested in Tests/FileIOTests/AtomicOutputTests.swift.)

// MARK: - The reference implementation (Python `safetensors`)

private enum PythonReference {
    /// Reads every file of a spec (names, metadata and data as hex) with the reference
    /// three ways (deserialize: raw bytes of every dtype; safe_open: header values,
    /// metadata and numpy tensors; load_file when numpy can hold every dtype) and
    /// prints `VERDICT OK` or the differences.
    static let readScript = #"""
        import json, sys
        import numpy as np
        from safetensors import safe_open, deserialize
        from safetensors.numpy import load_file

        NP = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
              "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}
        h = bytes.fromhex
        problems = []
        for entry in json.load(open(sys.argv[1])):
            path = entry["file"]
            want = {h(t["name"]).decode("utf-8"): t for t in entry["tensors"]}
            md = None if entry["metadata"] is None else {h(k).decode("utf-8"): h(v).decode("utf-8") for k, v in entry["metadata"]}
            try:
                raw = open(path, "rb").read()
                got = dict(deserialize(raw))
                if set(got) != set(want):
                    problems.append(f"{path}: names {sorted(got)!r} != {sorted(want)!r}")
                for name, t in want.items():
                    g = got.get(name)
                    if g is None:
                        continue
                    if g["dtype"] != t["dtype"] or list(g["shape"]) != t["shape"] or bytes(g["data"]) != h(t["data"]):
                        problems.append(f"{path}: deserialize differs for {name!r}: {g['dtype']} {g['shape']}")
                with safe_open(path, framework="np") as f:
                    if f.metadata() != md:
                        problems.append(f"{path}: metadata {f.metadata()!r} != {md!r}")
                    offset_order = [k for k in f.offset_keys()]
                    if offset_order != entry["order"]:
                        problems.append(f"{path}: data order {offset_order!r} != {entry['order']!r}")
                    for name, t in want.items():
                        s = f.get_slice(name)
                        if s.get_dtype() != t["dtype"] or list(s.get_shape()) != t["shape"]:
                            problems.append(f"{path}: slice header differs for {name!r}")
                        if t["dtype"] in NP:
                            a = f.get_tensor(name)
                            e = np.frombuffer(h(t["data"]), dtype=NP[t["dtype"]]).reshape(t["shape"])
                            if a.shape != e.shape or a.dtype != e.dtype.newbyteorder("=") or a.tobytes() != e.tobytes():
                                problems.append(f"{path}: numpy value differs for {name!r}")
                if all(t["dtype"] in NP for t in want.values()):
                    loaded = load_file(path)
                    for name, t in want.items():
                        if loaded[name].tobytes() != h(t["data"]):
                            problems.append(f"{path}: load_file differs for {name!r}")
            except Exception as ex:
                problems.append(f"{path}: {type(ex).__name__}: {ex}")
        print("VERDICT OK" if not problems else "VERDICT FAIL\n" + "\n".join(problems))
        """#

    /// Writes files with the reference (`safetensors.numpy.save_file`) and a manifest of
    /// what each should contain.
    static let writeScript = #"""
        import json, sys, os
        import numpy as np
        from safetensors.numpy import save_file

        out = sys.argv[1]
        rng = np.random.default_rng(1234)
        NAMES = {np.float16: "F16", np.float32: "F32", np.float64: "F64", np.int8: "I8", np.int16: "I16",
                 np.int32: "I32", np.int64: "I64", np.uint8: "U8", np.uint16: "U16", np.uint32: "U32",
                 np.uint64: "U64", np.bool_: "BOOL"}

        def arr(dtype, shape):
            n = int(np.prod(shape)) if len(shape) else 1
            if dtype is np.bool_:
                return (rng.integers(0, 2, n) == 1).reshape(shape)
            if np.issubdtype(dtype, np.floating):
                return rng.standard_normal(n).astype(dtype).reshape(shape)
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True).reshape(shape)

        cases = {
            "mixed": ({"b": arr(np.float32, (2, 3)), "a": arr(np.float16, (3,)), "c": arr(np.int64, ()),
                       "m": arr(np.bool_, (5,)), "w": arr(np.float64, (2, 2)), "i8": arr(np.int8, (7,)),
                       "u16": arr(np.uint16, (3,)), "i32": arr(np.int32, (1, 1)), "u64": arr(np.uint64, (2,)),
                       "u8": arr(np.uint8, (9,)), "i16": arr(np.int16, (1,)), "u32": arr(np.uint32, (2,))}, None),
            "names": ({'q"uote': arr(np.float32, (1,)), "back\\slash": arr(np.float32, (1,)),
                       "ctl\x00\x01\x08\x0c\n\r\t\x1f\x7f": arr(np.float16, (2,)), "caf\u00e9": arr(np.uint8, (1,)),
                       "cafe\u0301": arr(np.uint8, (2,)), "\U0001F600": arr(np.int64, ()), "": arr(np.uint8, (3,)),
                       "\uff5a/..": arr(np.float64, (1,)), "lora_unet_a.alpha": arr(np.float16, ())}, None),
            "zero_sizes": ({"a": arr(np.float32, (0, 3)), "b": arr(np.float16, (2, 0)), "c": arr(np.int64, (0,)),
                            "d": arr(np.float32, (1,)), "e": arr(np.bool_, (0,))}, None),
            "empty": ({}, None),
            "scalar_only": ({"s": arr(np.float32, ())}, None),
            "meta_one": ({"x": arr(np.float32, (2,))}, {"format": "pt"}),
            "meta_escaped": ({"x": arr(np.float16, (1,))}, {"k\"\n\x01": "v\\\u00e9\U0001F600"}),
            "meta_many": ({"x": arr(np.float32, (2,)), "y": arr(np.int8, (3,))},
                          {"ss_network_dim": "4", "ss_network_alpha": "2.0", "z": "", "\u00e9": "{\"a\": 1}"}),
        }
        for i in range(8):
            dtypes = list(NAMES)
            t = {}
            for j in range(int(rng.integers(1, 7))):
                d = dtypes[int(rng.integers(0, len(dtypes)))]
                shape = tuple(int(x) for x in rng.integers(0, 4, int(rng.integers(0, 3))))
                t[f"t{j}_{i}"] = arr(d, shape)
            cases[f"random{i}"] = (t, None)

        manifest = []
        for name, (tensors, metadata) in cases.items():
            path = os.path.join(out, name + ".safetensors")
            save_file(tensors, path, metadata=metadata)
            manifest.append({
                "file": path,
                "metadata": None if metadata is None else [[k.encode().hex(), v.encode().hex()] for k, v in metadata.items()],
                "tensors": [{"name": k.encode().hex(), "dtype": NAMES[v.dtype.type], "shape": list(v.shape),
                             "data": np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<")).tobytes().hex()}
                            for k, v in tensors.items()],
            })
        json.dump(manifest, open(os.path.join(out, "manifest.json"), "w"))
        print("WROTE", len(manifest))
        """#
}

@Suite("writer: the reference implementation", .serialized)
struct ReferenceWriterTests {
    static let enabled = PythonRunner.hasSafetensors || PythonRunner.isCI

    /// Files covering the dtypes numpy has, BF16 (read raw), sub-byte and F8 types (header
    /// and raw bytes only), scalars, zero-size tensors, metadata and awkward names.
    private func graftFiles(_ rng: inout SplitMix64) -> [(
        name: String, cases: [WriterCase], metadata: [String: String]?
    )] {
        func f16(_ v: [Float]) -> [UInt8] {
            v.flatMap { withUnsafeBytes(of: Float16($0).bitPattern.littleEndian, Array.init) }
        }
        func f32(_ v: [Float]) -> [UInt8] { v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
        func i64(_ v: [Int64]) -> [UInt8] { v.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) } }
        var files: [(String, [WriterCase], [String: String]?)] = [
            (
                "classic",
                [
                    WriterCase("w.f16", .F16, [2, 3], bytes: f16([0, -1.5, 65504, .infinity, -0.0, 1e-7])),
                    WriterCase(
                        "w.f32", .F32, [3], bytes: f32([.pi, -.greatestFiniteMagnitude, .leastNonzeroMagnitude])),
                    WriterCase("w.bf16", .BF16, [2, 2]),
                    WriterCase("n.i64", .I64, [2], bytes: i64([.min, .max])),
                    WriterCase("n.u8", .U8, [4], bytes: [0, 1, 128, 255]),
                    WriterCase("n.bool", .BOOL, [3], bytes: [1, 0, 1]),
                    WriterCase("s.f32", .F32, [], bytes: f32([42.5])),
                    WriterCase("s.bf16", .BF16, []),
                    WriterCase("z.f16", .F16, [0, 4]),
                    WriterCase("z.i64", .I64, [0]),
                    WriterCase("z.bool", .BOOL, [3, 0]),
                ], ["format": "pt", "ss_tag_frequency": #"{"a": {"b": 1}}"#, "é😀": "v\n\"\\\u{1}"]
            ),
            (
                "names",
                [
                    WriterCase("caf\u{E9}", .F32, [1]), WriterCase("cafe\u{301}", .F32, [2]),
                    WriterCase("q\"uote\\back", .F16, [1]), WriterCase("ctl\u{0}\u{1}\n\t\u{1F}\u{7F}", .U8, [2]),
                    WriterCase("😀", .I64, []), WriterCase("", .U8, [1]), WriterCase("\u{212B}", .U8, [1]),
                    WriterCase("\u{C5}", .U8, [1]),
                ], nil
            ),
            ("empty", [], nil),
            ("empty_metadata", [WriterCase("x", .F32, [1])], [:]),
            ("metadata_only", [], ["k": "v"]),
            (
                "exotic",
                [
                    WriterCase("f8a", .F8_E4M3, [3]), WriterCase("f8b", .F8_E5M2, [2]), WriterCase("f4", .F4, [2, 3]),
                    WriterCase("f6", .F6_E2M3, [4]), WriterCase("c64", .C64, [1]), WriterCase("u64", .U64, [2]),
                    WriterCase("i16", .I16, [3]), WriterCase("fnuz", .F8_E5M2FNUZ, [1]),
                    WriterCase("e8m0", .F8_E8M0, [2]),
                ], nil
            ),
        ]
        for i in 0..<6 {
            files.append(("random\(i)", randomWriterCases(&rng, count: 1 + Int(rng.next() % 8)), randomMetadata(&rng)))
        }
        return files
    }

    @Test(
        "the reference reads graft's files back identically (values, raw bytes, metadata, order)",
        .enabled(if: enabled, "python3 with safetensors and numpy not found; reference check skipped"))
    func referenceReadsGraft() throws {
        try #require(PythonRunner.hasSafetensors, "CI is set but `python3 -c \"import safetensors, numpy\"` fails")
        var rng = SplitMix64(seed: 77)
        try withWriterDirectory { dir in
            var spec: [[String: Any]] = []
            for (name, cases, metadata) in graftFiles(&rng) {
                let path = dir.appendingPathComponent("\(name).safetensors").path
                let layout = try writeWithGraft(cases, metadata: metadata, to: path)
                var bytesByName: [[UInt8]: [UInt8]] = [:]
                for c in cases { bytesByName[Array(c.tensor.name.utf8)] = c.bytes }
                var metadataPairs: Any = NSNull()
                if let metadata { metadataPairs = metadata.map { [utf8Hex($0.key), utf8Hex($0.value)] } }
                spec.append([
                    "file": path,
                    "metadata": metadataPairs,
                    "order": layout.tensors.map(\.name),
                    "tensors": cases.map { c in
                        [
                            "name": utf8Hex(c.tensor.name), "dtype": c.tensor.dtype.rawValue,
                            "shape": c.tensor.shape.map { Int($0) }, "data": bytesHex(c.bytes),
                        ] as [String: Any]
                    },
                ])
            }
            let specPath = dir.appendingPathComponent("spec.json")
            try JSONSerialization.data(withJSONObject: spec).write(to: specPath)
            let scriptPath = dir.appendingPathComponent("read.py")
            try Data(PythonReference.readScript.utf8).write(to: scriptPath)
            let result = try PythonRunner.run([scriptPath.path, specPath.path])
            #expect(result.status == 0, "\(result.output)")
            #expect(result.output.contains("VERDICT OK"), "\(result.output)")
        }
    }

    @Test(
        "files written by the reference parse with graft and graft rewrites them byte for byte",
        .enabled(if: enabled, "python3 with safetensors and numpy not found; reference check skipped"))
    func graftMatchesReferenceWriter() throws {
        try #require(PythonRunner.hasSafetensors, "CI is set but `python3 -c \"import safetensors, numpy\"` fails")
        try withWriterDirectory { dir in
            let scriptPath = dir.appendingPathComponent("write.py")
            try Data(PythonReference.writeScript.utf8).write(to: scriptPath)
            let result = try PythonRunner.run([scriptPath.path, dir.path])
            try #require(result.status == 0 && result.output.contains("WROTE"), "\(result.output)")
            let manifestData = try Data(contentsOf: dir.appendingPathComponent("manifest.json"))
            let manifest = try #require(try JSONSerialization.jsonObject(with: manifestData) as? [[String: Any]])
            #expect(manifest.count >= 16)
            var identical = 0
            for entry in manifest {
                let path = try #require(entry["file"] as? String)
                let f = try SafeTensorsFile(path: path)
                let wanted = try #require(entry["tensors"] as? [[String: Any]])
                #expect(f.tensors.count == wanted.count, "\(path)")
                for w in wanted {
                    let nameBytes = bytesFromHex(try #require(w["name"] as? String))
                    let name = String(decoding: nameBytes, as: UTF8.self)
                    let t = try #require(f.tensor(named: name), "\(path): \(name.debugDescription)")
                    #expect(Array(t.name.utf8) == nameBytes, "\(path)")
                    #expect(t.dtype.rawValue == w["dtype"] as? String, "\(path): \(name.debugDescription)")
                    #expect(t.shape.map { Int($0) } == w["shape"] as? [Int], "\(path): \(name.debugDescription)")
                    #expect(
                        Array(f.data(of: t)) == bytesFromHex(try #require(w["data"] as? String)),
                        "\(path): \(name.debugDescription)")
                }
                let wantedMetadata: [String: String]? = (entry["metadata"] as? [[String]]).map { pairs in
                    Dictionary(
                        uniqueKeysWithValues: pairs.map {
                            (
                                String(decoding: bytesFromHex($0[0]), as: UTF8.self),
                                String(decoding: bytesFromHex($0[1]), as: UTF8.self)
                            )
                        })
                }
                #expect(f.metadata == wantedMetadata, "\(path)")

                // Rewrite with graft's layout and the same metadata.
                let layout = try FileLayout(
                    tensors: f.tensors.map { OutputTensor(name: $0.name, dtype: $0.dtype, shape: $0.shape) },
                    metadata: f.metadata)
                var rewritten = layout.headerBytes
                for t in layout.tensors { rewritten += Array(f.data(of: try #require(f.tensor(named: t.name)))) }
                let original = try readBytes(path)
                if (f.metadata?.count ?? 0) <= 1 {
                    // Metadata key order is the reference's hash order, so byte identity is
                    // promised only with at most one key.
                    #expect(
                        rewritten == original,
                        "\(path): graft \(String(decoding: rewritten.prefix(layout.dataStart), as: UTF8.self).debugDescription)"
                    )
                    if rewritten == original { identical += 1 }
                } else {
                    #expect(rewritten.count == original.count, "\(path)")
                    #expect(rewritten[layout.dataStart...] == original[f.header.dataStart...], "\(path): data order")
                    #expect(layout.tensors == f.tensors, "\(path)")
                }
            }
            #expect(identical >= 15)
        }
    }
}
