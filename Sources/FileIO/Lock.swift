#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A mutex with one condition variable (`pthread_mutex_t` + `pthread_cond_t`), the one
/// lock type of the package.
///
/// Why not `inout` on a stored `pthread_mutex_t`: Swift does not promise a stable
/// address for `&property` of a class, and a pthread mutex must not move. Here both live
/// in memory allocated once per lock and freed in `deinit` after `pthread_*_destroy`
/// (swift-nio's `NIOLock`/`ConditionLock` use a `ManagedBuffer` for the same reason).
/// Why not `Synchronization.Mutex`: it has no condition variable, and the writer, the
/// I/O ring and the ordered sink all sleep until another thread changes shared state.
public final class Lock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        let m = pthread_mutex_init(mutex, nil), c = pthread_cond_init(condition, nil)
        precondition(m == 0 && c == 0, "pthread_mutex_init / pthread_cond_init failed")
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deinitialize(count: 1)
        condition.deallocate()
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Acquires the mutex (`pthread_mutex_lock`).
    public func lock() { pthread_mutex_lock(mutex) }

    /// Releases the mutex (`pthread_mutex_unlock`).
    public func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` holding the mutex.
    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Sleeps until another thread calls ``broadcast()`` (`pthread_cond_wait`); the
    /// caller holds the mutex, which is released while asleep. Wake-ups may be spurious:
    /// call it in a loop over the awaited condition.
    public func wait() { pthread_cond_wait(condition, mutex) }

    /// Wakes every thread in ``wait()`` (`pthread_cond_broadcast`).
    public func broadcast() { pthread_cond_broadcast(condition) }
}
