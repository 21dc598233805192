#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The one error type of the FileIO module: a failed system call (with its name and
/// errno, as swift-nio's `SystemCallError`), a full disk, a refused destination, or a
/// malformed compressed input.
///
/// It prints as one line, `PATH[ at byte N]: what failed`, for example
/// `out.safetensors: creating a temporary file in .: open failed: permission denied`.
public struct FileIOError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A closed, stable classification.
    public enum Kind: String, Sendable, Codable {
        /// A system call failed: ``systemCall`` and ``errnoCode`` say which and why.
        case systemCall
        /// The disk (or quota) is full (`ENOSPC`/`EDQUOT` while reserving or writing).
        case noSpace
        /// The destination was refused before anything was written; ``refusal`` says why.
        case refused
        /// A zstd-compressed input is malformed or truncated.
        case compression
        /// A stream went on past the size its own header declared (see ``InputSpool``).
        case exceedsDeclaredSize
    }

    /// Why a destination was refused.
    public enum Refusal: String, Sendable, Codable {
        /// It exists and overwriting was not allowed.
        case exists
        /// It is one of the inputs (same device and inode).
        case sameAsInput
        /// It is not a regular file: a directory, FIFO, device or socket (or a symlink to one).
        case notRegularFile
        /// Binary data would go to a terminal (standard output).
        case terminal
    }

    public var kind: Kind
    /// The file as the caller named it (`<stdin>`, `<stdout>` for the standard streams).
    public var path: String
    /// The failed call (`open`, `pwrite`, `linkat`...), for ``Kind/systemCall`` and ``Kind/noSpace``.
    public var systemCall: String?
    /// The errno value the call set.
    public var errnoCode: Int32?
    /// Set for ``Kind/refused``.
    public var refusal: Refusal?
    /// Absolute byte offset in the file, when known.
    public var offset: UInt64?
    /// What was being done and what failed, in lowercase words.
    public var detail: String

    public init(
        _ kind: Kind, path: String, systemCall: String? = nil, errnoCode: Int32? = nil,
        refusal: Refusal? = nil, offset: UInt64? = nil, _ detail: String
    ) {
        self.kind = kind
        self.path = path
        self.systemCall = systemCall
        self.errnoCode = errnoCode
        self.refusal = refusal
        self.offset = offset
        self.detail = detail
    }

    /// A refused destination.
    public static func refused(_ path: String, _ refusal: Refusal, _ detail: String) -> FileIOError {
        FileIOError(.refused, path: path, refusal: refusal, detail)
    }

    /// The error for a failed system call: `[doing: ]call failed: strerror`. ENOSPC and
    /// EDQUOT give ``Kind/noSpace``.
    /// - Parameters:
    ///   - call: the C name of the call.
    ///   - code: the errno it set (read `errno` right after the call).
    package static func systemCall(
        _ call: String, path: String, errno code: Int32, offset: UInt64? = nil,
        _ doing: String? = nil
    ) -> FileIOError {
        let text = String(cString: strerror(code)).lowercased()
        let prefix = doing.map { "\($0): " } ?? ""
        let kind: Kind = code == ENOSPC || code == EDQUOT ? .noSpace : .systemCall
        return FileIOError(
            kind, path: path, systemCall: call, errnoCode: code, offset: offset,
            "\(prefix)\(call) failed: \(text)")
    }

    public var description: String {
        var location = path
        if let offset { location += " at byte \(offset)" }
        return "\(location): \(detail)"
    }
}

/// The current thread's errno.
package var currentErrno: Int32 { errno }

/// Retries a system call returning -1/errno on EINTR.
@inline(__always)
package func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r == -1 && errno == EINTR { continue }
        return r
    }
}
