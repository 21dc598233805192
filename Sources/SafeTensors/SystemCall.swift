#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Builds the `.io` error for a failed system call, naming the call and errno text.
func systemError(_ call: String, file: String, errno code: Int32 = errno, _ what: String? = nil) -> SafeTensorsError {
    let text = String(cString: strerror(code))
    let doing = what.map { "\($0): " } ?? ""
    return SafeTensorsError(.io, file: file, "\(doing)\(call) failed: \(text.lowercased())")
}

/// Retries a system call returning -1/errno on EINTR.
@inline(__always)
func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r == -1 && errno == EINTR { continue }
        return r
    }
}
