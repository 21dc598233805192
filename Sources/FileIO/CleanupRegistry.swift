#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Paths of temporary files to delete if the process is killed by a signal. The
/// handler only calls async-signal-safe functions (unlink, signal, raise) on C strings
/// prepared ahead of time, and takes no lock.
enum CleanupRegistry {
    static let capacity = 64
    nonisolated(unsafe) static let paths: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
        p.initialize(repeating: nil, count: capacity)
        return p
    }()
    nonisolated(unsafe) static var installed = false
    static let lock = Lock()

    /// Registers `path` for removal on a fatal signal; returns its slot, or -1 when the
    /// registry is full (the file is then still removed on ordinary failure paths).
    static func register(_ path: String) -> Int {
        lock.withLock {
            if !installed {
                installed = true
                // A parent may have started us with these signals blocked (the mask is
                // inherited); unblock them so Ctrl-C and kill still clean up.
                var set = sigset_t()
                sigemptyset(&set)
                for sig in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&set, sig) }
                pthread_sigmask(SIG_UNBLOCK, &set, nil)
                for sig in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] {
                    signal(sig) { sig in
                        for i in 0..<CleanupRegistry.capacity {
                            if let p = CleanupRegistry.paths[i] { unlink(p) }
                        }
                        signal(sig, SIG_DFL)
                        raise(sig)
                    }
                }
            }
            for i in 0..<capacity where paths[i] == nil {
                paths[i] = strdup(path)
                return i
            }
            return -1
        }
    }

    // The path strings are deliberately never freed: a signal handler running on another
    // thread may have read a slot just before it was cleared, and must not find freed
    // memory. That is a few dozen bytes per output file for the life of the process; they
    // stay reachable in `retired` (so leak checkers see them as held, not lost).
    nonisolated(unsafe) static var retired: [UnsafeMutablePointer<CChar>] = []

    /// Forgets a slot (the file was renamed into place or never created).
    static func forget(slot: Int) {
        guard slot >= 0 else { return }
        lock.withLock {
            if let p = paths[slot] { retired.append(p) }
            paths[slot] = nil
        }
    }

    /// Removes the slot's file and forgets it.
    static func removeFile(slot: Int) {
        guard slot >= 0 else { return }
        let p = lock.withLock { () -> UnsafeMutablePointer<CChar>? in
            let p = paths[slot]
            if let p { retired.append(p) }
            paths[slot] = nil
            return p
        }
        if let p { unlink(p) }
    }
}
