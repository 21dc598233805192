/// Recognises the files people most often mistake for safetensors, from their first
/// bytes: PyTorch checkpoints (zip or raw pickle), an HTML or XML page saved by a failed
/// download, a JSON error body from a model hub, a git-lfs pointer, GGUF.
///
/// Used only after the length prefix was found implausible (beyond the size limit or
/// past the end of the file), so a valid safetensors file is never second-guessed. A
/// real length prefix below 2^48 has zero bytes at positions 6 and 7, while every text
/// format here has none in its first eight bytes, which keeps the text checks honest.
enum ForeignFormat {
    /// How many leading bytes ``describe(_:)`` looks at, at most.
    static let sniffLength = 512

    /// What the file looks like, as a phrase for "not a safetensors file: looks like …",
    /// or nil when it is none of the known formats.
    static func describe(_ bytes: UnsafeRawBufferPointer) -> String? {
        func starts(_ magic: [UInt8]) -> Bool {
            bytes.count >= magic.count && zip(bytes, magic).allSatisfy { $0 == $1 }
        }
        let convert = "convert it to .safetensors first (in Python: torch.load, then safetensors.torch.save_file)"
        if starts([0x50, 0x4B, 0x03, 0x04]) {
            // torch.save's zip holds "<name>/data.pkl" first; any other zip is just an archive
            // (a LoRA downloaded as .zip, say).
            if zipFirstEntry(bytes)?.hasSuffix("data.pkl") == true {
                return "a PyTorch checkpoint (.ckpt/.pt/.pth, a zip archive holding data.pkl); " + convert
            }
            return "a zip archive, not a model file (unpack it first: it may hold the .safetensors file)"
        }
        // Pickle protocol 2-5 opens with PROTO (0x80) and the protocol number.
        if bytes.count >= 2 && bytes[0] == 0x80 && (2...5).contains(bytes[1]) {
            return "a PyTorch checkpoint (.ckpt/.pt/.pth, a raw Python pickle); " + convert
        }
        if starts(Array("GGUF".utf8)) {
            return "a GGUF file (llama.cpp's format), which graft does not read"
        }
        guard let text = leadingText(bytes) else { return nil }
        let lower = text.lowercased()
        if lower.hasPrefix("version https://git-lfs.github.com/spec/") {
            let size =
                text.split(separator: "\n").first { $0.hasPrefix("size ") }.map { " of \($0.dropFirst(5)) bytes" } ?? ""
            return
                "a git-lfs pointer, not the file it points to\(size) (run `git lfs pull`, or download the file itself)"
        }
        let trimmed = lower.drop { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == "\u{FEFF}" }
        if trimmed.hasPrefix("<!doctype html") || trimmed.hasPrefix("<html") || trimmed.hasPrefix("<!--")
            || trimmed.hasPrefix("<head") || trimmed.hasPrefix("<body")
        {
            return "an HTML page (a failed download? the site may want a login or an API token)"
        }
        if trimmed.hasPrefix("<?xml") {
            return "an XML document (an error page from the server? a failed download?)"
        }
        if trimmed.hasPrefix("{") || trimmed.hasPrefix("[") {
            // Quote the start: a hub's error body says what went wrong ({"error": "..."}).
            let firstLine = text.drop { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == "\u{FEFF}" }
                .prefix { $0 != "\n" && $0 != "\r" }
            let excerpt = firstLine.count > 100 ? firstLine.prefix(97) + "..." : firstLine
            return "a JSON document, not a model (an error response from a model hub?): \(excerpt)"
        }
        return nil
    }

    /// The name of the first entry of a zip archive (from its local file header: the name
    /// length at byte 26, the name from byte 30), when the bytes hold it.
    private static func zipFirstEntry(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard bytes.count >= 30 else { return nil }
        let length = Int(bytes[26]) | Int(bytes[27]) << 8
        guard length > 0, bytes.count >= 30 + length else { return nil }
        return String(decoding: bytes[30..<(30 + length)], as: UTF8.self)
    }

    /// The first bytes (up to 512) as text, when they are UTF-8 with no NUL and no
    /// control characters other than tab, newline and carriage return.
    private static func leadingText(_ bytes: UnsafeRawBufferPointer) -> String? {
        let head = Array(bytes.prefix(512))
        guard head.count >= 8 else { return nil }
        // The window may split a multi-byte character at its end: drop up to 3 bytes.
        guard let text = (0...3).lazy.compactMap({ String(validating: head.dropLast($0), as: UTF8.self) }).first
        else { return nil }
        let control = text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\t" && $0 != "\n" && $0 != "\r" }
        return control ? nil : text
    }
}
