import Foundation
import GraftEngine
import SafeTensors
import Testing

/// The LyCORIS adapter-family fixtures in ../shared/conformance/zoo: a mini SDXL
/// checkpoint, adapters made by lycoris-lora 4.1.3, and what the LyCORIS library and
/// ComfyUI compute from them (`check_zoo.py` applies the same rule to the CLI).
enum ZooData {
    static let directory = ConformanceData.directory.appendingPathComponent("zoo")
    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    static var isPresent: Bool { FileManager.default.fileExists(atPath: path("zoo_cases.json")) }
    static var shouldRun: Bool { isPresent || ConformanceData.isCI }

    struct Run: Decodable, CustomTestStringConvertible {
        let `case`: String
        let adapter: String
        let ratio: Double
        let compat: String
        let expected: String
        let rows: [Int]?
        let changed: [String]
        var testDescription: String { "\(self.case) x\(ratio) [\(compat)]" }
    }
    struct Spec: Decodable {
        let ckpt: String
        let runs: [Run]
    }

    static func spec() throws -> Spec {
        try JSONDecoder().decode(Spec.self, from: Data(contentsOf: URL(fileURLWithPath: path("zoo_cases.json"))))
    }

    /// The runs, or none when the fixtures are absent (the suite is then disabled).
    static var runs: [Run] { (try? spec().runs) ?? [] }
}

@Suite(
    .enabled(
        if: ZooData.shouldRun,
        "../shared/conformance/zoo not found: adapter-zoo conformance skipped (set CI to make this a failure)"))
struct ZooConformanceTests {
    @Test("the fixtures are there and list every kind")
    func fixturesPresent() throws {
        let runs = try ZooData.spec().runs
        #expect(runs.count >= 61)
        #expect(Set(runs.map(\.compat)) == ["lycoris", "comfyui"])
    }

    /// check_zoo.py's rule on the library's output: changed tensors (the row third of a
    /// fused in_proj) within 1 fp16 ulp of the reference, everything else bit-identical.
    @Test("library merge matches the reference", arguments: ZooData.runs)
    func matchesReference(run: ZooData.Run) throws {
        let dir = try ScratchDirectory("zoo")
        let out = dir.path("out.safetensors")
        let compat = try #require(MergeCompat(rawValue: run.compat))
        let ckptPath = ZooData.path(try ZooData.spec().ckpt)
        try LibraryMerge(savePrecision: .F16, compat: compat)
            .run(checkpoint: ckptPath, adapters: [(ZooData.path(run.adapter), run.ratio)], output: out)
        let got = try SafeTensorsFile(path: out)
        let input = try SafeTensorsFile(path: ckptPath)
        let expected = try SafeTensorsFile(path: ZooData.path(run.expected))
        #expect(got.tensors.map(\.name).sorted() == input.tensors.map(\.name).sorted())
        for t in input.tensors {
            let g = try #require(got.tensor(named: t.name))
            #expect(g.dtype == t.dtype && g.shape == t.shape, "\(t.name)")
            guard let e = expected.tensor(named: t.name) else {
                #expect(tensorBytes(got, t.name) == tensorBytes(input, t.name), "\(t.name) changed")
                continue
            }
            var values = try floats(got, t.name)
            if let rows = run.rows, rows.count == 2 {
                let columns = t.elementCount / Int(t.shape[0])
                let inputValues = try floats(input, t.name)
                let inside = rows[0] * columns..<rows[1] * columns
                for i in values.indices where !inside.contains(i) {
                    #expect(
                        values[i].bitPattern == inputValues[i].bitPattern, "\(t.name): row outside the third changed")
                    if values[i].bitPattern != inputValues[i].bitPattern { break }
                }
                values = Array(values[inside])
            }
            let want = try floats(expected, e.name)
            #expect(values.count == want.count)
            let a = agreement(values, want, dtype: .F16, floor: 0)
            #expect(
                a.beyond == 0 && a.nanMismatch == 0,
                "\(t.name): \(a.beyond) elements beyond 1 ulp; first: \(a.firstBad ?? "-")")
            // The reference changed it, so must graft (guards against a silent copy).
            #expect(tensorBytes(got, t.name) != tensorBytes(input, t.name), "\(t.name) was not merged")
        }
    }
}
