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
        let line =
            "\r\(label) [\(bar)] \(Int(fraction * 100))% \(Format.bytes(done))/\(Format.bytes(total)) \(Format.fixed(rate, decimals: 1)) GB/s"
        writeStderr(line)
    }

    func finish() {
        guard enabled else { return }
        writeStderr("\r\u{1B}[K")
    }
}
