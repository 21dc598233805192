import Foundation

/// The Python interpreter, for cross-checks against the reference `safetensors`
/// package and numpy. Tests skip with a message when a package is missing, except on CI
/// (`CI` set), where a missing package is a failure.
enum PythonRunner {
    static let isCI = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty } ?? false
    static let hasSafetensors: Bool = (try? run(["-c", "import safetensors, numpy"]).status) == 0
    static let hasNumpy: Bool = (try? run(["-c", "import numpy"]).status) == 0

    /// Runs `python3 <arguments>`; returns its exit status and combined output.
    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
