import SafeTensors

// Shape helpers that never trap, whatever the header claimed.

extension TensorInfo {
    /// Element count saturated at Int.max instead of trapping on overflow; the
    /// analyses may run on tensors no validator has looked at.
    var saturatedElementCount: Int {
        var n = 1
        for d in shape {
            if d == 0 { return 0 }
            let (p, o) = n.multipliedReportingOverflow(by: Int(clamping: d))
            if o { return Int.max }
            n = p
        }
        return n
    }

    /// The dimension at `i` as Int, or nil when the tensor has fewer dimensions.
    func dim(_ i: Int) -> Int? {
        i < shape.count ? Int(clamping: shape[i]) : nil
    }

    /// Product of the dimensions from `i` on (1 when there are none).
    func product(from i: Int) -> Int {
        var n = 1
        for d in shape.dropFirst(i) {
            let (p, o) = n.multipliedReportingOverflow(by: Int(clamping: d))
            if o { return Int.max }
            n = p
        }
        return n
    }
}

/// Saturating product of an Int array.
func saturatedProduct(_ dims: [Int]) -> Int {
    var n = 1
    for d in dims {
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o { return Int.max }
        n = p
    }
    return n
}

/// `[640, 320, 3, 3]` spelled as in the docs.
package func shapeText(_ dims: [Int]) -> String {
    "[" + dims.map(String.init).joined(separator: ", ") + "]"
}

/// Dots to underscores: the kohya spelling of a module path.
func underscored(_ path: some StringProtocol) -> String {
    String(path.map { $0 == "." ? "_" : $0 })
}
