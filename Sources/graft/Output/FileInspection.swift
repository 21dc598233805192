import Adapters
import GraftEngine
import SafeTensors

/// What `graft list` prints about one file: the Adapters layer's analysis plus the
/// file-level facts (sizes, tensors, statistics).
struct FileInspection: Encodable {
    let path: String
    let fileBytes: Int
    let headerBytes: Int
    let report: ListReport
    let tensors: [TensorInfo]
    let statistics: [TensorStatistics]?
    let fullMetadata: [String: String]
    /// Bytes per dtype over all tensors (not only the selected ones).
    let bytesByDType: [String: Int]

    /// - Parameter modules: list every adapter module (name, component, kind, layer, rank, alpha).
    init(file: SafeTensorsFile, selected: [TensorInfo], statistics: [TensorStatistics]?, modules: Bool = false) {
        path = file.path
        fileBytes = file.byteCount
        headerBytes = file.header.byteCount
        report = ListReport(
            tensors: file.tensors, metadata: file.metadata,
            alphaValue: { try file.scalarValue(of: $0) }, includeModules: modules)
        tensors = selected
        self.statistics = statistics
        fullMetadata = file.metadata ?? [:]
        bytesByDType = file.tensors.reduce(into: [:]) { $0[$1.dtype.rawValue, default: 0] += $1.byteCount }
    }

    private enum Keys: String, CodingKey {
        case file, fileBytes = "file_bytes", headerBytes = "header_bytes", tensors, statistics, metadataFull =
            "metadata_full"
        case dtypeBytes = "dtype_bytes"
    }

    private struct TensorJSON: Encodable {
        let name: String
        let dtype: String
        let shape: [UInt64]
        let bytes: Int
        let data_offsets: [UInt64]
    }

    /// The JSON document: the ListReport's keys plus file, sizes, tensors and stats.
    func json(fullMetadata: Bool) -> some Encodable { JSONView(inspection: self) }

    private struct JSONView: Encodable {
        let inspection: FileInspection
        func encode(to encoder: Encoder) throws { try inspection.encode(to: encoder) }
    }

    func encode(to encoder: Encoder) throws {
        try report.encode(to: encoder)
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(path, forKey: .file)
        try c.encode(fileBytes, forKey: .fileBytes)
        try c.encode(headerBytes, forKey: .headerBytes)
        try c.encode(bytesByDType, forKey: .dtypeBytes)
        try c.encode(
            tensors.map {
                TensorJSON(
                    name: $0.name, dtype: $0.dtype.rawValue, shape: $0.shape, bytes: $0.byteCount,
                    data_offsets: [$0.dataOffsets.lowerBound, $0.dataOffsets.upperBound])
            },
            forKey: .tensors)
        if let statistics { try c.encode(statistics, forKey: .statistics) }
        try c.encode(fullMetadata, forKey: .metadataFull)
    }

    // MARK: text

    func text(listTensors: Bool, fullMetadata showAll: Bool, verbose: Bool) -> String {
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        func field(_ name: String, _ value: String) { line("  " + name.padding(12) + displayable(value)) }

        line(displayable(path))
        if let c = report.checkpoint {
            field("kind:", "\(c.architectureName) checkpoint")
            if !c.evidence.isEmpty && verbose { field("evidence:", c.evidence.joined(separator: "; ")) }
            let comps = c.components.map {
                "\($0.component.rawValue) \($0.tensorCount) tensors, \(Format.count($0.parameterCount)) params"
            }
            if !comps.isEmpty { field("components:", comps.joined(separator: "; ")) }
        } else if let a = report.adapter {
            let tucker = a.hasTucker ? " (Tucker)" : ""
            let dora = a.hasDora && a.kind != .dora ? " + DoRA" : ""
            field("kind:", "\(a.kindName)\(tucker)\(dora) adapter")
            field("naming:", a.schemeName)
            field("base model:", a.baseModel.name)
            if !a.baseModel.evidence.isEmpty && verbose {
                field("evidence:", a.baseModel.evidence.joined(separator: "; "))
            }
            if !a.baseModel.conflicts.isEmpty { field("conflicts:", a.baseModel.conflicts.joined(separator: "; ")) }
            let counts = a.moduleCounts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(
                separator: ", ")
            field("modules:", "\(a.moduleCount) (\(counts))")
            field(
                "layers:",
                a.layerTypes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            if !a.ranks.isEmpty { field("rank:", distribution(a.ranks.map { ("\($0.value)", $0.count) })) }
            if !a.convRanks.isEmpty { field("conv rank:", distribution(a.convRanks.map { ("\($0.value)", $0.count) })) }
            if !a.alphas.isEmpty {
                field("alpha:", distribution(a.alphas.map { (Format.shortest($0.value), $0.count) }))
            }
            if !a.convAlphas.isEmpty {
                field("conv alpha:", distribution(a.convAlphas.map { (Format.shortest($0.value), $0.count) }))
            }
            if a.alphasRead && a.alphas.isEmpty && a.convAlphas.isEmpty {
                field("alpha:", "none stored (alpha = rank)")
            }
            let t = a.training
            var training: [String] = []
            if let v = t.networkModule { training.append("module \(v)") }
            if let v = t.networkDim { training.append("dim \(v)") }
            if let v = t.networkAlpha { training.append("alpha \(Format.shortest(v))") }
            if let v = t.networkArgs, !v.isEmpty {
                training.append(
                    "args " + v.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))
            }
            if let v = t.baseModelVersion { training.append("base \(v)") }
            if let v = t.resolution { training.append("resolution \(v)") }
            if let v = t.steps { training.append("steps \(v)") }
            if let v = t.epoch { training.append("epoch \(v)") }
            if let v = t.numTrainImages { training.append("\(v) images") }
            if let v = t.outputName { training.append("output \(v)") }
            if !training.isEmpty { field("training:", training.joined(separator: ", ")) }
            if !a.issues.isEmpty {
                field("issues:", "\(a.issues.count)")
                for i in a.issues.prefix(verbose ? Int.max : 10) {
                    line("    " + displayable("\(i.module): \(i.message)"))
                }
            }
        }
        field("tensors:", "\(report.tensorCount), \(Format.count(report.parameterCount)) parameters")
        field(
            "dtypes:",
            report.dtypes.sorted { $0.key < $1.key }
                .map { "\($0.key) \($0.value) (\(Format.bytes(bytesByDType[$0.key] ?? 0)))" }.joined(separator: ", "))
        field("size:", "\(Format.bytes(fileBytes)), header \(Format.bytes(headerBytes))")

        if !fullMetadata.isEmpty {
            line("metadata (\(fullMetadata.count) keys):")
            for rawKey in fullMetadata.keys.sorted() {
                let value = displayable(fullMetadata[rawKey]!)
                let key = displayable(rawKey)
                if showAll {
                    line("  \(key): \(value)")
                } else if let s = report.metadataSummaries[rawKey] {
                    var desc = "<\(Format.bytes(s.byteCount))"
                    if let k = s.jsonKind { desc += " JSON \(k)" }
                    if let n = s.entryCount { desc += ", \(n) entries" }
                    if let n = s.nestedEntryCount { desc += ", \(n) nested" }
                    line("  \(key): \(desc); --metadata shows it>")
                } else {
                    line("  \(key): \(value.count > 120 ? String(value.prefix(117)) + "..." : value)")
                }
            }
        }
        if let modules = report.adapter?.modules {
            line("adapter modules (\(modules.count)):")
            let width = min(90, modules.map(\.name.count).max() ?? 0)
            for m in modules {
                var row =
                    "  " + displayable(m.name).padding(width) + "  " + m.component.rawValue.padding(5)
                    + "  " + m.kind.rawValue.padding(5) + "  " + m.layer.padding(8)
                if let r = m.rank { row += "  rank \(r)" }
                if let a = m.alpha { row += "  alpha \(Format.shortest(a))" }
                if m.tucker { row += "  tucker" }
                if let axis = m.doraAxis { row += "  dora(\(axis))" }
                line(row)
            }
        }
        if listTensors {
            line(
                "tensors\(tensors.count == report.tensorCount ? "" : " (\(tensors.count) of \(report.tensorCount) shown)"):"
            )
            let names = tensors.map { displayable($0.name) }
            let width = min(90, names.map(\.count).max() ?? 0)
            var statsByName: [String: TensorStatistics] = [:]
            for s in statistics ?? [] { statsByName[s.name] = s }
            for (t, name) in zip(tensors, names) {
                var row =
                    "  " + name.padding(width) + "  " + t.dtype.rawValue.padding(5) + "  "
                    + "[\(t.shape.map(String.init).joined(separator: ", "))]".padding(22) + "  "
                    + Format.bytes(t.byteCount)
                if let s = statsByName[t.name] {
                    if let mn = s.min, let mx = s.max, let mean = s.mean, let std = s.std, let am = s.absMean {
                        row +=
                            "  min \(Format.statistic(mn)) max \(Format.statistic(mx)) mean \(Format.statistic(mean))"
                            + " std \(Format.statistic(std)) |x| \(Format.statistic(am))"
                    }
                    if s.nanCount > 0 { row += "  nan \(s.nanCount)" }
                    if s.positiveInfinityCount + s.negativeInfinityCount > 0 {
                        row += "  inf \(s.positiveInfinityCount + s.negativeInfinityCount)"
                    }
                }
                line(row)
            }
        }
        return out
    }
}

/// A name or metadata text made safe for one terminal line: control characters
/// (C0, DEL, C1) are shown as `\n`, `\t`, `\r` or `\u{XX}`, so a value cannot break
/// the line structure or send escape sequences to the terminal.
func displayable(_ s: String) -> String {
    guard s.unicodeScalars.contains(where: isControl) else { return s }
    var out = ""
    for u in s.unicodeScalars {
        switch u {
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        case _ where isControl(u): out += "\\u{" + String(u.value, radix: 16) + "}"
        default: out.unicodeScalars.append(u)
        }
    }
    return out
}

private func isControl(_ u: Unicode.Scalar) -> Bool {
    u.value < 0x20 || (0x7F...0x9F).contains(u.value)
}

func distribution(_ values: [(String, Int)]) -> String {
    if values.count == 1 { return values[0].0 }
    return values.map { "\($0.0) (\($0.1))" }.joined(separator: ", ")
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
