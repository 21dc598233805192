#if canImport(Glibc)
import Glibc
#endif
import CFuzzShims
import SafeTensors

/// An anonymous in-memory file (`memfd_create(2)`), rewritten for every fuzz input and
/// opened through `/proc/self/fd/N`, so the harnesses exercise the real
/// `SafeTensorsFile(path:)` path (open, fstat, zstd sniffing, mmap) without touching disk.
public final class MemFile: @unchecked Sendable {
    public let descriptor: Int32

    public init(name: String) {
        descriptor = graft_fuzz_memfd(name)
        precondition(descriptor >= 0, "memfd_create failed: errno \(errno)")
    }

    deinit { close(descriptor) }

    /// The path `open(2)` accepts for this file.
    public var path: String { "/proc/self/fd/\(descriptor)" }

    /// Replaces the contents with `bytes`, then extends the file with zeros to
    /// `length` bytes (sparse: no memory is used for the zero tail).
    public func replace(with bytes: UnsafeRawBufferPointer, length: Int? = nil) {
        precondition(ftruncate(descriptor, 0) == 0, "ftruncate failed: errno \(errno)")
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(done))
            precondition(n > 0, "pwrite to a memfd failed: errno \(errno)")
            done += n
        }
        if let length, length > bytes.count {
            precondition(ftruncate(descriptor, off_t(length)) == 0, "ftruncate failed: errno \(errno)")
        }
    }

    /// Writes `bytes` at `offset` (the file must already be that long or it grows).
    public func write(_ bytes: [UInt8], at offset: Int) {
        bytes.withUnsafeBytes { b in
            guard let base = b.baseAddress, !b.isEmpty else { return }
            precondition(pwrite(descriptor, base, b.count, off_t(offset)) == b.count, "pwrite failed")
        }
    }

    public func replace(with bytes: [UInt8], length: Int? = nil) {
        bytes.withUnsafeBytes { replace(with: $0, length: length) }
    }

    /// Opens the current contents as a safetensors file.
    public func open() throws -> SafeTensorsFile { try SafeTensorsFile(path: path) }
}

/// Compresses with libzstd (for seeds).
public func zstdCompress(_ bytes: [UInt8], level: Int32 = 3) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: graft_fuzz_zstd_bound(bytes.count))
    let n = out.withUnsafeMutableBytes { dst in
        bytes.withUnsafeBytes { src in
            graft_fuzz_zstd_compress(dst.baseAddress, dst.count, src.baseAddress, src.count, level)
        }
    }
    precondition(n > 0, "zstd compression failed")
    return Array(out[..<n])
}
