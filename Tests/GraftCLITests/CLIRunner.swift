import Foundation
import Testing

/// Runs the built `graft` binary: `$GRAFT_BIN` when set (the Makefile points it at the
/// release build), else the debug build next to this package.
struct CLIResult {
    let status: Int32
    let stdout: String
    let stderr: String
    /// The raw bytes of stdout (binary output of `-o -`); empty when stdout went to `stdoutPath`.
    var stdoutData = Data()
}

enum CLI {
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["GRAFT_BIN"], !b.isEmpty { return b }
        for config in ["debug", "release"] {
            let p = repoRoot.appendingPathComponent(".build/\(config)/graft").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return "graft"
    }

    @discardableResult
    /// - Parameter stdoutPath: send stdout to this file or device (e.g. /dev/full) instead of a pipe.
    static func run(
        _ args: [String], stdin: Data? = nil, cwd: URL? = nil, environment: [String: String] = [:],
        stdoutPath: String? = nil
    ) throws -> CLIResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = cwd }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe()
        if let stdoutPath {
            guard let handle = FileHandle(forWritingAtPath: stdoutPath) else { throw CocoaError(.fileNoSuchFile) }
            p.standardOutput = handle
            try out.fileHandleForWriting.close()
        } else {
            p.standardOutput = out
        }
        p.standardError = err
        let inPipe = Pipe()
        p.standardInput = stdin == nil ? FileHandle.nullDevice : inPipe
        try p.run()
        if let stdin {
            inPipe.fileHandleForWriting.write(stdin)
            try inPipe.fileHandleForWriting.close()
        }
        // Read both pipes fully before waiting, so a large output cannot block the child.
        let group = DispatchGroup()
        nonisolated(unsafe) var errData = Data()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return CLIResult(
            status: p.terminationStatus,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self),
            stdoutData: outData)
    }

    /// A fresh temporary directory, removed by the caller with `cleanup`.
    static func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("graft-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// The shared fixtures folder (../shared next to the repo), or nil.
    static func sharedFile(_ relative: String) -> URL? {
        let u = repoRoot.deletingLastPathComponent().appendingPathComponent("shared/\(relative)")
        return FileManager.default.fileExists(atPath: u.path) ? u : nil
    }

    /// True when a missing fixture must fail the test (on CI) rather than skip it.
    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty } ?? false }
}
