import FileIO

/// The one error type of the SafeTensors module.
///
/// It prints as a single line naming the file, the tensor and byte offset when they
/// are known, and the rule that was broken:
/// `a.safetensors: tensor 'up.3' at byte 4104: data_offsets end 9000 > data size 8192`.
public struct SafeTensorsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A closed, stable classification (used by tests and `--json` output).
    public enum Kind: String, Sendable, Codable, Error {
        /// The file is shorter than the 8-byte length prefix.
        case headerTooSmall
        /// The length prefix exceeds 100,000,000 bytes.
        case headerTooLarge
        /// 8 + N is beyond the end of the file.
        case invalidHeaderLength
        /// The header is not valid UTF-8.
        case invalidUTF8
        /// The header is not strict JSON, or does not fit the header model
        /// (unknown dtype, missing field, bad number, metadata value not a string...).
        case invalidJSON
        /// A tensor name appears twice (the reference silently keeps the last one; graft refuses).
        case duplicateTensor
        /// Tensors do not tile the data buffer: a hole, an overlap or begin > end.
        case invalidOffset
        /// Shape product or bit count overflows 64 bits.
        case overflow
        /// A sub-byte dtype whose total bit count is not a multiple of 8.
        case misalignedSlice
        /// The byte range does not match shape x dtype.
        case tensorInvalidInfo
        /// Data after the last tensor that no tensor covers (or tensor ends past 2^64).
        case incompleteBuffer
        /// The file ends before its header or its tensors do: an incomplete download.
        /// The detail says how many bytes are missing (at least).
        case truncated
        /// The file is something else: a PyTorch checkpoint, an HTML page, a JSON error
        /// body, a git-lfs pointer, a GGUF file, a diffusers folder (recognised only when the
        /// length prefix is implausible, so no valid safetensors file is reclassified).
        case notSafeTensors
        /// A tensor that was asked for is not in the file.
        case tensorNotFound
        /// A system call failed (open, mmap, write, rename...).
        case io
        /// A compressed (zstd) input is malformed or truncated.
        case compression
        /// The caller asked for something the file cannot give (wrong dtype for a view...).
        case unsupported
        /// A file was refused (kept for callers; FileIO's `AtomicOutput` itself throws
        /// `FileIOError` of kind `.refused`, which ``init(_:)`` maps here).
        case refused
    }

    public var kind: Kind
    /// The file, as the user named it (`<stdin>` for standard input).
    public var file: String
    public var tensor: String?
    /// Absolute byte offset in the file, when known.
    public var offset: UInt64?
    /// What was expected and what was found, in lowercase words.
    public var detail: String
    /// The system-level error behind an `.io` / `.compression` / `.refused` error, when there is one.
    public var cause: FileIOError?

    public init(_ kind: Kind, file: String, tensor: String? = nil, offset: UInt64? = nil, _ detail: String) {
        self.kind = kind
        self.file = file
        self.tensor = tensor
        self.offset = offset
        self.detail = detail
    }

    public var description: String {
        var location = file
        if let tensor { location += ": tensor '\(tensor)'" }
        if let offset { location += " at byte \(offset)" }
        return "\(location): \(detail)"
    }
}
