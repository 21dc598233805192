/// A problem with one file or with the whole request, as a kind plus the path it concerns.
public struct DatasetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: String, Sendable, Codable {
        /// The image cannot be decoded (zero bytes, truncated, corrupt, unknown format).
        case undecodable
        /// Two images in one folder share a stem (`a.png` + `a.jpg`): sd-scripts would pair both
        /// with one mask, so neither gets one.
        case duplicateStem
        /// An output file exists and overwriting was not allowed.
        case outputExists
        /// The input or output folder is unusable (missing, not a folder, the same as the input).
        case badDirectory
        /// Reading or writing a file failed.
        case io
        /// An option value is out of range.
        case invalidOption
    }

    public var kind: Kind
    /// The file or folder concerned (relative to the input folder for per-image problems).
    public var path: String
    public var message: String
    /// Further paths with the same problem (existing outputs beyond the first).
    public var others: [String]

    public init(_ kind: Kind, path: String, _ message: String, others: [String] = []) {
        self.kind = kind
        self.path = path
        self.message = message
        self.others = others
    }

    public var description: String { "\(path): \(message)" }
}

/// A non-fatal finding about one image.
public struct DatasetWarning: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable {
        /// An extension such as `.Png`: sd-scripts matches extensions case-sensitively on Linux.
        case mixedCaseExtension
        /// The mask's mean weight is below the warning level: the image contributes little loss.
        case lowMeanWeight
        /// The mask is all zero: the image trains nothing.
        case allZero
        /// An image in the mask folder has no image of its stem in the input folder: sd-scripts
        /// asserts on such "extra" masks.
        case strayMask
        /// An image without alpha got no mask (`skipWithoutAlpha`).
        case noAlpha
        /// An image shares its stem with an earlier one (sorted path order) whose mask sd-scripts
        /// pairs with it too (`firstOfDuplicates`).
        case duplicateStem
        /// An animated image: sd-scripts (Pillow) and graft use its first frame only.
        case animated
    }

    public var kind: Kind
    public var path: String
    public var message: String

    public init(_ kind: Kind, path: String, _ message: String) {
        self.kind = kind
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}
