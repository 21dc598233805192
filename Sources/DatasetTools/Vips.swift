import CVips
import FileIO
import Foundation

/// libvips, initialised once per process (`VIPS_INIT`, operation cache off).
public enum Vips {
    private static let initialised: Bool = graft_vips_init("graft") == 0
    private static let errorLock = Lock()

    /// Initialises libvips if needed; false when it cannot start.
    @discardableResult
    public static func start() -> Bool { initialised }

    /// Worker threads inside each libvips pipeline (`vips_concurrency_set`).
    public static func setConcurrency(_ n: Int) {
        start()
        graft_vips_set_concurrency(Int32(max(1, n)))
    }

    /// Takes the process-wide error text (`vips_error_buffer`, then `vips_error_clear`) as one line.
    static func takeError(_ fallback: String) -> String {
        errorLock.withLock {
            let text = graft_vips_error_buffer().map { String(cString: $0) } ?? ""
            graft_vips_error_clear()
            let lines = text.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
            return lines.isEmpty ? fallback : lines.joined(separator: "; ")
        }
    }
}

/// An image's size and its alpha channel as 8-bit samples (nil when it has no alpha).
public struct AlphaImage: Sendable {
    public var width: Int
    public var height: Int
    /// Row-major alpha, `width * height` bytes; 16-bit alpha is reduced as `v >> 8`.
    public var alpha: [UInt8]?
    /// Frames in the file (> 1 for an animated WebP, of which only the first is used).
    public var pages = 1

    public init(width: Int, height: Int, alpha: [UInt8]?, pages: Int = 1) {
        self.width = width
        self.height = height
        self.alpha = alpha
        self.pages = pages
    }

    /// Decodes the whole image held in `bytes` (so truncated or corrupt data is found) and
    /// keeps only its alpha. EXIF orientation is never applied.
    /// - Parameter path: names the image in errors.
    /// - Throws: ``DatasetError`` `.undecodable`.
    public static func decode(_ bytes: [UInt8], path: String) throws(DatasetError) -> AlphaImage {
        guard Vips.start() else { throw DatasetError(.io, path: path, "libvips failed to start") }
        if bytes.isEmpty { throw DatasetError(.undecodable, path: path, "empty file (0 bytes)") }
        let result: Result<AlphaImage, DatasetError> = bytes.withUnsafeBytes { raw in
            guard let image = graft_vips_load_buffer(raw.baseAddress, raw.count) else {
                return .failure(DatasetError(.undecodable, path: path, Vips.takeError("not a decodable image")))
            }
            defer { graft_vips_unref(image) }
            let width = Int(graft_vips_width(image)), height = Int(graft_vips_height(image))
            let pages = Int(graft_vips_n_pages(image))
            if graft_vips_has_alpha(image) == 0 {
                guard graft_vips_decode_all(image) == 0 else {
                    return .failure(DatasetError(.undecodable, path: path, Vips.takeError("decoding failed")))
                }
                return .success(AlphaImage(width: width, height: height, alpha: nil, pages: pages))
            }
            var length = 0
            guard let samples = graft_vips_alpha8(image, &length) else {
                return .failure(DatasetError(.undecodable, path: path, Vips.takeError("decoding failed")))
            }
            defer { graft_vips_free(samples) }
            guard length == width * height else {
                return .failure(DatasetError(.undecodable, path: path, "unexpected alpha size \(length)"))
            }
            let alpha = [UInt8](UnsafeBufferPointer(start: samples, count: length))
            return .success(AlphaImage(width: width, height: height, alpha: alpha, pages: pages))
        }
        return try result.get()
    }
}

/// Encodes 8-bit grey samples as a PNG (colour type 0, depth 8, no metadata chunks).
/// - Throws: ``DatasetError`` `.io` when libvips fails.
public func encodeGreyPNG(_ pixels: [UInt8], width: Int, height: Int, path: String) throws(DatasetError) -> [UInt8] {
    precondition(pixels.count == width * height, "pixel count must be width * height")
    guard Vips.start() else { throw DatasetError(.io, path: path, "libvips failed to start") }
    var buffer: UnsafeMutableRawPointer? = nil
    var length = 0
    let rc = pixels.withUnsafeBufferPointer {
        graft_vips_grey_png($0.baseAddress, Int32(width), Int32(height), &buffer, &length)
    }
    guard rc == 0, let buffer else { throw DatasetError(.io, path: path, Vips.takeError("PNG encoding failed")) }
    defer { graft_vips_free(buffer) }
    return [UInt8](UnsafeRawBufferPointer(start: buffer, count: length))
}

/// An image's pixel size from its header, without decoding pixels.
public enum ImageHeader {
    /// The width and height stored in the file at `path` (EXIF orientation is not applied, as sd-scripts).
    /// A name containing `[` (libvips' option syntax) is read into memory and opened from there.
    /// - Throws: ``DatasetError`` `.undecodable` when the file is empty or not an image libvips reads, `.io`
    ///   when libvips cannot start or the file cannot be read.
    public static func size(path: String) throws(DatasetError) -> Resolution {
        guard Vips.start() else { throw DatasetError(.io, path: path, "libvips failed to start") }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        if let size = attributes?[.size] as? NSNumber, size.intValue == 0 {
            throw DatasetError(.undecodable, path: path, "empty file (0 bytes)")
        }
        if path.contains("[") {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw DatasetError(.io, path: path, "cannot read the file")
            }
            let bytes = [UInt8](data)
            let result: Result<Resolution, DatasetError> = bytes.withUnsafeBytes { raw in
                guard let image = graft_vips_load_buffer(raw.baseAddress, raw.count) else {
                    return .failure(DatasetError(.undecodable, path: path, Vips.takeError("not a decodable image")))
                }
                defer { graft_vips_unref(image) }
                return .success(Resolution(Int(graft_vips_width(image)), Int(graft_vips_height(image))))
            }
            return try result.get()
        }
        guard let image = graft_vips_header_file(path) else {
            throw DatasetError(.undecodable, path: path, Vips.takeError("not a decodable image"))
        }
        defer { graft_vips_unref(image) }
        return Resolution(Int(graft_vips_width(image)), Int(graft_vips_height(image)))
    }
}
