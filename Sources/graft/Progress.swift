import FileIO
import GraftEngine

/// A one-line progress bar on stderr, redrawn in place at most ~10 times a second.
/// Safe to call from worker threads.
final class ProgressBar: @unchecked Sendable {
    private let label: String
    private let enabled: Bool
    private let lock = Lock()
    private var lastDraw: Double = 0
    private let start: Double

    init(label: String, enabled: Bool) {
        self.label = label
        self.enabled = enabled
        start = monotonicSeconds()
    }

    /// The callback to hand to the engine.
    var callback: ProgressCallback? {
        guard enabled else { return nil }
        return { [self] done, total in self.update(done: done, total: total) }
    }

    func update(done: Int, total: Int) {
        lock.lock()
        defer { lock.unlock() }
        let t = monotonicSeconds()
        guard t - lastDraw >= 0.1 || done == total else { return }
        lastDraw = t
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        let rate = Double(done) / max(t - start, 1e-6) / 1e9
        let line = "\r\(label) [\(bar)] \(Int(fraction * 100))% \(formatBytes(done))/\(formatBytes(total)) \(String(format1: rate)) GB/s"
        writeStderr(line)
    }

    func finish() {
        guard enabled else { return }
        writeStderr("\r\u{1B}[K")
    }
}

func formatBytes(_ n: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var v = Double(n)
    var i = 0
    while v >= 1000 && i < units.count - 1 { v /= 1000; i += 1 }
    return i == 0 ? "\(n) B" : "\(String(format1: v)) \(units[i])"
}

extension String {
    /// A number with one decimal, without Foundation.
    init(format1 v: Double) {
        guard v.isFinite else { self = "\(v)"; return }
        let r = (v * 10).rounded() / 10
        let whole = Int(r)
        let frac = Int(((r - Double(whole)) * 10).rounded().magnitude)
        self = "\(r < 0 && whole == 0 ? "-" : "")\(whole).\(frac)"
    }
}
