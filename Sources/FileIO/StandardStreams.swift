#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Facts about terminals (`isatty`, `TERM`).
public enum Terminal {
    /// Whether `fd` is a terminal (`isatty(3)`).
    public static func isTerminal(_ fd: Int32) -> Bool { isatty(fd) == 1 }

    /// Whether `fd` is a terminal that can show redrawn lines: a TTY whose TERM is not "dumb".
    public static func isInteractive(_ fd: Int32) -> Bool {
        guard isTerminal(fd) else { return false }
        return SystemInfo.environment("TERM") != "dumb"
    }
}

/// A buffered writer to standard output that notices failed writes (`print` ignores
/// them: `graft list > /dev/full` would succeed). Text is collected and written in
/// blocks; the first failure is kept, later text is dropped, and ``flush()`` throws it.
/// Thread-safe.
public final class StandardOutput: @unchecked Sendable {
    /// The process's standard output (file descriptor 1).
    public static let shared = StandardOutput(descriptor: 1, displayName: "<stdout>")

    private let descriptor: Int32
    private let displayName: String
    private let lock = Lock()
    private var buffer: [UInt8] = []
    private var failure: FileIOError?
    private static let blockSize = 64 << 10

    /// - Parameter displayName: the name used in errors.
    public init(descriptor: Int32, displayName: String) {
        self.descriptor = descriptor
        self.displayName = displayName
    }

    /// Queues `text` (written once 64 KiB have gathered, or on ``flush()``).
    public func write(_ text: String) {
        lock.withLock {
            guard failure == nil else { return }
            buffer.append(contentsOf: text.utf8)
            if buffer.count >= Self.blockSize { drain() }
        }
    }

    /// Queues `text` and a newline, like `print`.
    public func print(_ text: String) { write(text + "\n") }

    /// Drops what is queued and not yet written (a failed command replaces its partial
    /// result with an error document).
    public func discard() {
        lock.withLock { buffer.removeAll(keepingCapacity: true) }
    }

    /// Writes what is queued.
    /// - Throws: ``FileIOError`` for the first failed write (kind `.noSpace` for a full disk,
    ///   `.systemCall` otherwise; `<stdout>: write failed: no space left on device`).
    public func flush() throws(FileIOError) {
        let failure = lock.withLock { () -> FileIOError? in
            drain()
            return self.failure
        }
        if let failure { throw failure }
    }

    private func drain() {
        guard failure == nil, !buffer.isEmpty else { buffer.removeAll(keepingCapacity: true); return }
        do {
            try buffer.withUnsafeBytes { raw in try writeAll(descriptor, raw, path: displayName) }
        } catch let error as FileIOError {
            failure = error
        } catch {
            failure = FileIOError(.systemCall, path: displayName, "\(error)")
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Writes straight to standard error (unbuffered; safe from any thread; errors ignored:
/// there is nowhere left to report them).
public func writeStandardError(_ s: String) {
    var s = s
    s.withUTF8 { buf in
        var done = 0
        while done < buf.count {
            let n = Glibc.write(2, buf.baseAddress! + done, buf.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
    }
}
