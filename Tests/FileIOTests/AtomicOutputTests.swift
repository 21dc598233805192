import FileIO
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

private func withDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-fileio-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    return try body(dir)
}

private func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }
private func readBytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
private func entries(_ dir: URL) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
}

/// A pid that no process has: one above the kernel's pid_max.
private func deadPID() -> Int32 {
    let max =
        (try? String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8))
        .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 4_194_304
    return max + 1
}

/// Both temporary-file strategies: O_TMPFILE (anonymous) and the named fallback.
private let modes = [true, false]

@Suite("FileIO: AtomicOutput")
struct AtomicOutputTests {
    @Test("an existing destination is refused without overwrite and left untouched", arguments: modes)
    func refusesExisting(anonymous: Bool) throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("out.safetensors").path
            try Data("old".utf8).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: FileIOError.self) {
                try AtomicOutput(path: path, overwrite: false, anonymousTemporary: anonymous)
            }
            #expect(error?.kind == .refused)
            #expect(error?.refusal == .exists)
            #expect(error?.path == path)
            #expect(try readBytes(path) == Array("old".utf8))
            #expect(try entries(dir) == ["out.safetensors"], "no temporary file left behind")

            let out = try AtomicOutput(path: path, overwrite: true, anonymousTemporary: anonymous)
            try Array("new!".utf8).withUnsafeBytes { try out.write($0, at: 0) }
            #expect(try readBytes(path) == Array("old".utf8), "not replaced before commit")
            try out.commit()
            #expect(try readBytes(path) == Array("new!".utf8))
            #expect(try entries(dir) == ["out.safetensors"], "no temporary name left after replacing")
        }
    }

    @Test("the output may never be an input: same path, ./ path, symlink, hard link (even with overwrite)")
    func refusesInput() throws {
        try withDirectory { dir in
            let input = dir.appendingPathComponent("in.safetensors").path
            try Data("input".utf8).write(to: URL(fileURLWithPath: input))
            let link = dir.appendingPathComponent("link.safetensors").path
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: input)
            let hard = dir.appendingPathComponent("hard.safetensors").path
            try FileManager.default.linkItem(atPath: input, toPath: hard)
            let dotted = dir.path + "/./sub/../in.safetensors"
            try FileManager.default.createDirectory(
                at: dir.appendingPathComponent("sub"), withIntermediateDirectories: true)
            let candidates: [(output: String, inputs: [String])] = [
                (input, [input]), (dotted, [input]), (input, [dotted]), (link, [input]), (input, [link]),
                (hard, [input]), (input, ["-", "/nonexistent/x", link]),
            ]
            for (output, inputs) in candidates {
                let error = #expect(throws: FileIOError.self, "\(output) from \(inputs)") {
                    try AtomicOutput(path: output, overwrite: true, inputs: inputs)
                }
                #expect(error?.kind == .refused, "\(output)")
                #expect(error?.refusal == .sameAsInput, "\(String(describing: error))")
            }
            // A relative "./../.." spelling from the working directory (not changed: tests run in parallel).
            let depth = FileManager.default.currentDirectoryPath.split(separator: "/").count
            let relative = "./" + String(repeating: "../", count: depth) + input.dropFirst()
            #expect(throws: FileIOError.self, "\(relative)") {
                try AtomicOutput(path: relative, overwrite: true, inputs: [input])
            }
            #expect(throws: FileIOError.self, "\(relative)") {
                try AtomicOutput(path: input, overwrite: false, inputs: [relative])
            }
            #expect(try readBytes(input) == Array("input".utf8))
            #expect(try entries(dir) == ["hard.safetensors", "in.safetensors", "link.safetensors", "sub"])
        }
    }

    @Test("a directory, FIFO, character device or a symlink to one is refused even with overwrite, and left alone")
    func refusesNonRegular() throws {
        try withDirectory { dir in
            let fifo = dir.appendingPathComponent("fifo").path
            #expect(mkfifo(fifo, 0o644) == 0)
            let fifoLink = dir.appendingPathComponent("fifo-link").path
            try FileManager.default.createSymbolicLink(atPath: fifoLink, withDestinationPath: fifo)
            let nullLink = dir.appendingPathComponent("null-link").path
            try FileManager.default.createSymbolicLink(atPath: nullLink, withDestinationPath: "/dev/null")
            for (path, what) in [
                (dir.path, "a directory"), (fifo, "a FIFO"), (fifoLink, "a symlink to a FIFO"),
                ("/dev/null", "a character device"), (nullLink, "a symlink to a character device"),
            ] {
                for anonymous in modes {
                    let error = #expect(throws: FileIOError.self, "\(path)") {
                        try AtomicOutput(path: path, overwrite: true, anonymousTemporary: anonymous)
                    }
                    #expect(
                        error?.kind == .refused && error?.refusal == .notRegularFile,
                        "\(path): \(String(describing: error))")
                    #expect(error?.path == path)
                    #expect(error?.detail.contains(what) == true, "\(String(describing: error))")
                }
            }
            var st = stat()
            #expect(stat(fifo, &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO, "the FIFO is still a FIFO")
            #expect(stat("/dev/null", &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR)
            #expect(try entries(dir) == ["fifo", "fifo-link", "null-link"])
        }
    }

    @Test("with O_TMPFILE the file being written has no name: the directory stays empty until commit")
    func anonymousHasNoName() throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("out.bin").path
            let out = try AtomicOutput(path: path, overwrite: false)
            #expect(out.temporaryPath == nil, "this test needs a file system with O_TMPFILE (ext4, xfs, btrfs, tmpfs)")
            try out.reserve(byteCount: 1 << 20)
            try Array(repeating: UInt8(9), count: 4096).withUnsafeBytes { try out.write($0, at: 4096) }
            #expect(try entries(dir).isEmpty)
            try out.commit()
            #expect(try entries(dir) == ["out.bin"])
            #expect(try readBytes(path).count == 1 << 20)
        }
    }

    @Test("abort removes the temporary file and creates nothing", arguments: modes)
    func abortRemoves(anonymous: Bool) throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("out.safetensors").path
            let out = try AtomicOutput(path: path, overwrite: false, anonymousTemporary: anonymous)
            if !anonymous {
                let temporary = try #require(out.temporaryPath)
                #expect(temporary.hasPrefix(dir.path + "/.out.safetensors.graft-partial-"))
                #expect(fileExists(temporary))
            }
            try Array(repeating: UInt8(7), count: 100).withUnsafeBytes { try out.write($0, at: 50) }
            out.abort()
            out.abort()  // idempotent
            #expect(!fileExists(path))
            #expect(try entries(dir).isEmpty)
        }
    }

    @Test("releasing an uncommitted output removes the temporary file", arguments: modes)
    func deinitRemoves(anonymous: Bool) throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("out.safetensors").path
            func writeAndDrop() throws {
                let out = try AtomicOutput(path: path, overwrite: false, anonymousTemporary: anonymous)
                try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try out.write($0, at: 0) }
            }
            try writeAndDrop()
            #expect(!fileExists(path))
            #expect(try entries(dir).isEmpty)
        }
    }

    @Test("commit puts the file in place; writes at offsets and appends land where asked", arguments: modes)
    func commitPlaces(anonymous: Bool) throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("out.bin").path
            let out = try AtomicOutput(path: path, overwrite: false, anonymousTemporary: anonymous)
            try out.reserve(byteCount: 8)
            try Array("EFGH".utf8).withUnsafeBytes { try out.write($0, at: 4) }
            try Array("ABCD".utf8).withUnsafeBytes { try out.write($0, at: 0) }
            try out.commit()
            #expect(try readBytes(path) == Array("ABCDEFGH".utf8))
            #expect(try entries(dir) == ["out.bin"])
            out.abort()  // after commit: does nothing
            #expect(fileExists(path))

            let appended = try AtomicOutput(
                path: dir.path + "/appended.bin", overwrite: false, anonymousTemporary: anonymous)
            try Array("12".utf8).withUnsafeBytes { try appended.append($0) }
            try Array("34".utf8).withUnsafeBytes { try appended.append($0) }
            try appended.commit()
            #expect(try readBytes(dir.path + "/appended.bin") == Array("1234".utf8))
        }
    }

    @Test("a destination created by someone else while writing is not overwritten without overwrite", arguments: modes)
    func appearedMeanwhile(anonymous: Bool) throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("out.bin").path
            let out = try AtomicOutput(path: path, overwrite: false, anonymousTemporary: anonymous)
            try Data("theirs".utf8).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: FileIOError.self) { try out.commit() }
            #expect(error?.refusal == .exists)
            out.abort()
            #expect(try readBytes(path) == Array("theirs".utf8))
            #expect(try entries(dir) == ["out.bin"])
        }
    }

    @Test("the scoped write commits when the body returns and aborts when it throws", arguments: modes)
    func scopedWrite(anonymous: Bool) throws {
        struct Boom: Error {}
        try withDirectory { dir in
            let path = dir.appendingPathComponent("out.bin").path
            #expect(throws: Boom.self) {
                try AtomicOutput.write(to: .file(path), overwrite: false, anonymousTemporary: anonymous) { out in
                    try Array("x".utf8).withUnsafeBytes { try out.write($0, at: 0) }
                    throw Boom()
                }
            }
            #expect(try entries(dir).isEmpty)
            let n = try AtomicOutput.write(to: .file(path), overwrite: false, anonymousTemporary: anonymous) { out in
                try Array("done".utf8).withUnsafeBytes { try out.write($0, at: 0) }
                return 4
            }
            #expect(n == 4)
            #expect(try readBytes(path) == Array("done".utf8))
        }
    }

    @Test("stale partial outputs of dead processes for the same name are removed and reported", arguments: modes)
    func stalePartials(anonymous: Bool) throws {
        try withDirectory { dir in
            let dead = deadPID()
            let stale = ".out.bin.graft-partial-\(dead)-0"
            let staleReplace = ".out.bin.graft-partial-\(dead)-r3"
            let live = ".out.bin.graft-partial-\(getpid())-7"  // ours: alive
            let init1 = ".out.bin.graft-partial-1-0"  // pid 1: alive
            let other = ".other.bin.graft-partial-\(dead)-0"  // another output's
            let unrelated = ".out.bin.graft-partial-\(dead)-0.keep"  // not our pattern
            for name in [stale, staleReplace, live, init1, other, unrelated] {
                try Data("x".utf8).write(to: dir.appendingPathComponent(name))
            }
            let out = try AtomicOutput(
                path: dir.appendingPathComponent("out.bin").path, overwrite: false,
                anonymousTemporary: anonymous)
            #expect(out.removedStalePartials == [stale, staleReplace].sorted())
            out.abort()
            #expect(try entries(dir) == [live, init1, other, unrelated].sorted())
        }
    }

    @Test("reserving an impossible size (1 PB, Int.max) fails with an error, not a crash")
    func hugeReserve() throws {
        try withDirectory { dir in
            for size in [1 << 50, Int.max] {
                let path = dir.appendingPathComponent("huge-\(size).bin").path
                let out = try AtomicOutput(path: path, overwrite: false)
                let error = #expect(throws: FileIOError.self, "reserve(\(size))") { try out.reserve(byteCount: size) }
                #expect(error?.kind == .systemCall || error?.kind == .noSpace, "\(String(describing: error))")
                #expect(error?.systemCall != nil && error?.errnoCode != nil)
                #expect(error?.path == path)
                out.abort()
            }
            #expect(try entries(dir).isEmpty)
        }
    }

    @Test("a missing destination directory is a system-call error naming the path and the call")
    func missingDirectory() throws {
        let path = "/nonexistent-graft-dir-\(UUID().uuidString)/out.safetensors"
        for anonymous in modes {
            let error = #expect(throws: FileIOError.self) {
                try AtomicOutput(path: path, overwrite: false, anonymousTemporary: anonymous)
            }
            #expect(error?.kind == .systemCall)
            #expect(error?.systemCall == "open")
            #expect(error?.errnoCode == ENOENT)
            #expect(error?.description.contains(path) == true)
        }
    }

    @Test("the O_DIRECT descriptor reaches the O_TMPFILE file through /proc/self/fd")
    func directDescriptorOnAnonymousFile() throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("out.bin").path
            let out = try AtomicOutput(path: path, overwrite: false)
            try out.reserve(byteCount: 8192)
            // tmpfs may refuse O_DIRECT; then there is nothing to check.
            if let direct = out.openDirectDescriptor() {
                let block = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                defer { block.deallocate() }
                block.initializeMemory(as: UInt8.self, repeating: 0x5A)
                try direct.write(UnsafeRawBufferPointer(block), at: 4096)
            }
            try out.commit()
            let bytes = try readBytes(path)
            #expect(bytes.count == 8192)
            if bytes[4096] != 0 { #expect(bytes[4096..<8192].allSatisfy { $0 == 0x5A }) }
        }
    }
}

@Suite("FileIO: StandardOutput, Lock, MappedFile")
struct StreamsAndLockTests {
    @Test("a write to a full device is reported at flush: <path>: write failed: no space left on device")
    func fullDevice() throws {
        let fd = open("/dev/full", O_WRONLY | O_CLOEXEC)
        try #require(fd >= 0, "/dev/full is missing")
        defer { close(fd) }
        let out = StandardOutput(descriptor: fd, displayName: "<stdout>")
        out.print("hello")
        let error = #expect(throws: FileIOError.self) { try out.flush() }
        #expect(error?.kind == .noSpace)
        #expect(error?.systemCall == "write")
        #expect(error?.errnoCode == ENOSPC)
        #expect(error?.description == "<stdout>: write failed: no space left on device")
        // The failure sticks: later text is dropped and flush keeps failing.
        out.print("more")
        #expect(throws: FileIOError.self) { try out.flush() }
    }

    @Test("text is written in order and flush succeeds on a working descriptor")
    func writesInOrder() throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("text").path
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            try #require(fd >= 0)
            let out = StandardOutput(descriptor: fd, displayName: path)
            let big = String(repeating: "x", count: 100_000)  // more than one block
            out.print("a")
            out.write(big)
            out.print("b")
            try out.flush()
            close(fd)
            #expect(try readBytes(path) == Array(("a\n" + big + "b\n").utf8))
        }
    }

    @Test("Lock: wait/broadcast hand a value between threads; withLock serialises increments")
    func lockHandsOver() throws {
        final class Box: @unchecked Sendable {
            let lock = Lock()
            var turn = 0
            var count = 0
        }
        let box = Box()
        let rounds = 200
        let t = Thread {
            for i in 0..<rounds {
                box.lock.withLock {
                    while box.turn != 2 * i + 1 { box.lock.wait() }
                    box.turn += 1
                    box.count += 1
                    box.lock.broadcast()
                }
            }
        }
        t.start()
        for i in 0..<rounds {
            box.lock.withLock {
                while box.turn != 2 * i { box.lock.wait() }
                box.turn += 1
                box.count += 1
                box.lock.broadcast()
            }
        }
        box.lock.withLock { while box.turn != 2 * rounds { box.lock.wait() } }
        #expect(box.count == 2 * rounds)
    }

    @Test("MappedFile lends its bytes through withBytes; an empty file maps to an empty buffer")
    func mappedFile() throws {
        try withDirectory { dir in
            let path = dir.appendingPathComponent("m").path
            try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
            let m = try MappedFile(path: path)
            #expect(m.byteCount == 3)
            #expect(m.withBytes { Array($0) } == [1, 2, 3])
            let empty = dir.appendingPathComponent("e").path
            try Data().write(to: URL(fileURLWithPath: empty))
            #expect(try MappedFile(path: empty).withBytes { $0.count } == 0)
            let error = #expect(throws: FileIOError.self) {
                try MappedFile(path: dir.appendingPathComponent("missing").path)
            }
            #expect(error?.systemCall == "open" && error?.errnoCode == ENOENT)
        }
    }
}

@Suite("FileIO: InputSpool")
struct InputSpoolTests {
    /// Writes `bytes` into a FIFO from another thread and spools it with `bound`.
    func spoolFIFO(_ bytes: [UInt8], bound: @escaping (UnsafeRawBufferPointer) throws -> SpoolBound) throws
        -> MappedFile
    {
        try withDirectory { dir in
            let fifo = dir.appendingPathComponent("pipe").path
            #expect(mkfifo(fifo, 0o644) == 0)
            let writer = Thread {
                let fd = open(fifo, O_WRONLY | O_CLOEXEC)
                if fd >= 0 {
                    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    close(fd)
                }
            }
            writer.start()
            return try InputSpool.open(fifo, bound: bound)
        }
    }

    @Test("a stream is spooled whole while within its bound; the bound sees growing prefixes")
    func withinBound() throws {
        let data = (0..<300).map { UInt8($0 & 0xFF) }
        nonisolated(unsafe) var asked: [Int] = []
        let m = try spoolFIFO(data) { prefix in
            asked.append(prefix.count)
            return prefix.count < 4 ? .needPrefix(4) : prefix.count < 10 ? .needPrefix(10) : .total(300)
        }
        #expect(m.withBytes { Array($0) } == data)
        #expect(asked == [0, 4, 10])
    }

    @Test("a stream longer than its bound stops with exceedsDeclaredSize")
    func pastBound() throws {
        let error = #expect(throws: FileIOError.self) {
            _ = try spoolFIFO([UInt8](repeating: 1, count: 5000)) { _ in .total(100) }
        }
        #expect(error?.kind == .exceedsDeclaredSize)
        #expect(error?.offset == 100)
    }
}
