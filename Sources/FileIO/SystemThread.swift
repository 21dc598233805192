#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A joinable POSIX thread. (DispatchQueue.concurrentPerform may run long items serially
/// on Linux; plain pthreads always give real parallelism.)
package struct SystemThread: @unchecked Sendable {
    private let handle: pthread_t

    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Starts `body` on a new thread (`pthread_create`), or returns nil when none can be
    /// started (the caller then runs the work itself or gives up).
    /// - Parameter stackSize: bytes of stack, or nil for the system default.
    package static func start(stackSize: Int? = nil, _ body: @escaping @Sendable () -> Void) -> SystemThread? {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        if let stackSize { pthread_attr_setstacksize(&attr, stackSize) }
        var t = pthread_t()
        let rc = pthread_create(
            &t, &attr,
            { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                box.body()
                return nil
            }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            return nil
        }
        return SystemThread(handle: t)
    }

    /// Waits for the thread to end (`pthread_join`).
    package func join() { pthread_join(handle, nil) }
}

/// Process-wide facts and clocks.
public enum SystemInfo {
    /// Seconds on the monotonic clock (`clock_gettime(CLOCK_MONOTONIC)`), for durations.
    public static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// The number of online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
    public static var onlineProcessorCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// An environment variable's value (`getenv`), or nil when unset.
    public static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// Whether an environment variable is set to something other than "", "0", "false" or "no".
    public static func environmentFlag(_ name: String) -> Bool {
        guard let v = environment(name)?.lowercased() else { return false }
        return !(v.isEmpty || v == "0" || v == "false" || v == "no")
    }

    /// Whether the process `pid` exists (`kill(pid, 0)`; EPERM means it exists but is not ours).
    /// Whether a path names an existing file system entry (`access(2)` with F_OK).
    public static func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func processExists(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }
}

/// **Test hook**, for the interruption tests only: when the environment variable
/// `GRAFT_TEST_PAUSE_FILE` names a path, the first call of ``pauseIfRequested()`` (the
/// executor makes it once the first data chunk has been handed to the writer) creates
/// that file and then blocks the calling thread forever, so that a test can wait for
/// the file and signal the process at a known point of the write. Unset (always, outside
/// tests), it costs one check of a cached value.
package enum TestPause {
    private static let path: String? = SystemInfo.environment("GRAFT_TEST_PAUSE_FILE").flatMap { $0.isEmpty ? nil : $0 }
    private static let once = Lock()
    nonisolated(unsafe) private static var fired = false

    package static func pauseIfRequested() {
        guard let path else { return }
        let first = once.withLock { () -> Bool in
            defer { fired = true }
            return !fired
        }
        guard first else { return }
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        if fd >= 0 { close(fd) }
        while true { pause() }  // until a signal ends the process
    }
}
