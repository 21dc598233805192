import ArgumentParser
import FileIO
import GraftEngine
import SafeTensors

/// Flags shared by every subcommand: output format and verbosity.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print one JSON document to stdout instead of text.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print less (errors only).")
    var quiet = false

    @Flag(name: .shortAndLong, help: "Print more detail.")
    var verbose = false

    @Flag(inversion: .prefixedNo, help: "Show a progress bar on stderr (default: only when stderr is a terminal).")
    var progress: Bool? = nil

    /// Whether to draw progress: forced by --progress/--no-progress, else only on a
    /// terminal whose TERM is not "dumb", and never with -q or --json.
    var showsProgress: Bool {
        if let progress { return progress }
        if quiet { return false }
        return Terminal.isInteractive(2)
    }
}

/// Options for commands that write a file.
struct WriteOptions: ParsableArguments {
    @Option(
        name: [.customShort("o"), .customLong("output")],
        help:
            "Output file (.safetensors, or .safetensors.zst for zstd), or '-' for standard output (uncompressed; not a terminal)."
    )
    var outputPath: String?

    /// The output path; commands that write check in validate() that it was given.
    var output: String { outputPath ?? "" }

    @Flag(name: .shortAndLong, help: "Overwrite the output if it exists.")
    var force = false

    @Option(
        help: ArgumentHelp(
            "zstd level for a .zst output (default 3; negative = faster, up to 19+ = smaller).",
            valueName: "n"))
    var zstdLevel: Int?

    /// Whether the output is written zstd-compressed (its name ends in .zst).
    var isCompressed: Bool { output.hasSuffix(".zst") }

    /// Whether the output is standard output (`-o -`): the file streams there in order, and
    /// the summary goes to stderr. Always uncompressed (pipe it through `zstd` to compress).
    var isStandardOutput: Bool { output == "-" }

    /// Where the output goes.
    var destination: OutputDestination { isStandardOutput ? .standardOutput : .file(output) }

    /// Opens the output, runs `body`, commits when it returns and aborts when it throws
    /// (``AtomicOutput/write(to:overwrite:inputs:anonymousTemporary:_:)``), and reports stale
    /// partial outputs of interrupted runs that were cleaned up. `--force` does not matter for
    /// standard output. GRAFT_NO_TMPFILE=1 forces the named temporary file (for tests).
    func withOutput<R>(inputs: [String], quiet: Bool, _ body: (AtomicOutput) throws -> R) throws -> R {
        try AtomicOutput.write(
            to: destination, overwrite: force, inputs: inputs,
            anonymousTemporary: !SystemInfo.environmentFlag("GRAFT_NO_TMPFILE")
        ) { out in
            if !quiet {
                for name in out.removedStalePartials {
                    Terminal.warn(
                        "graft: note: removed stale partial output \(displayable(name)) (from an interrupted run)")
                }
            }
            return try body(out)
        }
    }

    /// Throws unless -o was given (every writing command except `merge --dry-run`).
    func requireOutput() throws {
        if outputPath == nil || outputPath!.isEmpty {
            throw ValidationError("Missing expected argument '--output <output>' (-o).")
        }
    }

    func validate() throws {
        if let zstdLevel {
            guard isCompressed else {
                throw ValidationError("--zstd-level applies only to an output whose name ends in .zst.")
            }
            guard ZstdEncoder.levelRange.contains(zstdLevel) else {
                throw ValidationError(
                    "--zstd-level must be between \(ZstdEncoder.levelRange.lowerBound) and \(ZstdEncoder.levelRange.upperBound) (got \(zstdLevel))."
                )
            }
        }
    }

    /// How the executor should encode the output (zstd with all cores for `.zst`).
    /// - Parameter threads: the command's --threads; caps zstd's own workers too.
    func encoding(threads: Int?) -> OutputEncoding {
        OutputEncoding.forPath(output, zstdLevel: zstdLevel ?? 3, workers: threads ?? defaultThreadCount())
    }
}

/// The CLI's terminal helpers (it shadows FileIO's `Terminal`, which it wraps).
enum Terminal {
    /// A terminal that can show redrawn lines (`FileIO.Terminal.isInteractive`).
    static func isInteractive(_ fd: Int32) -> Bool { FileIO.Terminal.isInteractive(fd) }

    /// Writes a line to stderr.
    static func warn(_ message: String) {
        writeStderr(message + "\n")
    }
}

/// Runs a command body, turning library errors into one stderr line and exit code 2.
/// Result text printed with ``printResult(_:terminator:)`` is flushed at the end, and a
/// failed write to stdout (`> /dev/full`, a closed pipe) is such an error.
func reportingErrors<T>(json command: String? = nil, _ body: () throws -> T) throws -> T {
    do {
        let result = try body()
        try StandardOutput.shared.flush()
        return result
    } catch let e as ExitCode {
        throw e
    } catch let e as ValidationError {
        throw e
    } catch let e as CleanExit {
        throw e
    } catch let error as EngineError {
        Terminal.warn("graft: error: " + displayable(error.description) + engineHint(error))
        for m in error.modules.prefix(20) { Terminal.warn("  " + displayable("\(m.module): \(m.message)")) }
        if error.modules.count > 20 { Terminal.warn("  ... and \(error.modules.count - 20) more") }
        emitErrorDocument(
            command,
            ErrorJSON(
                kind: error.kind.rawValue, file: error.file, tensor: error.tensor,
                module: error.module, message: error.description, modules: error.modules))
        throw ExitCode(2)
    } catch let error as SafeTensorsError {
        // Names and details come from the file: one line, control characters escaped.
        Terminal.warn("graft: error: " + displayable("\(error)"))
        emitErrorDocument(
            command,
            ErrorJSON(
                kind: snakeCase(error.kind.rawValue), file: error.file, tensor: error.tensor,
                module: nil, message: error.description, modules: []))
        throw ExitCode(2)
    } catch let error as FileIOError {
        var line = "\(error)"
        if error.refusal == .exists { line += "; use --force to overwrite it" }
        Terminal.warn("graft: error: " + displayable(line))
        emitErrorDocument(
            command,
            ErrorJSON(
                kind: snakeCase(error.kind.rawValue), file: error.path, tensor: nil,
                module: nil, message: line, modules: []))
        throw ExitCode(2)
    } catch {
        // Our own multi-line messages (lists of modules) keep their line breaks.
        let lines = "\(error)".split(separator: "\n", omittingEmptySubsequences: false).map { displayable(String($0)) }
        Terminal.warn("graft: error: " + lines.joined(separator: "\n"))
        emitErrorDocument(
            command,
            ErrorJSON(
                kind: "error", file: nil, tensor: nil, module: nil,
                message: "\(error)", modules: []))
        throw ExitCode(2)
    }
}

/// The `--json` document of a failed command: `{"schema": 1, "command": …, "error": {…}}`.
struct ErrorJSON: Encodable {
    let kind: String
    let file: String?
    let tensor: String?
    let module: String?
    let message: String
    let modules: [EngineError.ModuleProblem]
}

private struct ErrorDocument: Encodable {
    let schema = 1
    let command: String
    let error: ErrorJSON
}

/// With `--json`, a failure still prints one JSON document on stdout (what was printed
/// before it is discarded), so scripts always have something to parse.
func emitErrorDocument(_ command: String?, _ error: ErrorJSON) {
    guard let command else { return }
    StandardOutput.shared.discard()
    try? printEncoded(ErrorDocument(command: command, error: error))
    try? StandardOutput.shared.flush()
}

/// `headerTooLarge` → `header_too_large`.
func snakeCase(_ s: String) -> String {
    var out = ""
    for c in s {
        if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
    }
    return out
}

/// What the user can do about an engine error, in the CLI's words (libraries name no flags).
func engineHint(_ e: EngineError) -> String {
    switch e.kind {
    case .unmergeableModules: return " (--allow-unmatched merges the rest)"
    case .overflow: return " (without --strict it is written and reported)"
    default: return ""
    }
}

/// An error the CLI reports as exit status 2 with a one-line message.
struct GraftFailure: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// Writes straight to file descriptor 2 (unbuffered; safe from any thread).
func writeStderr(_ s: String) { writeStandardError(s) }

/// Prints result text to stdout through the checked, buffered ``StandardOutput`` (never
/// `print`, which ignores write errors); ``reportingErrors(_:)`` flushes it.
func printResult(_ text: String, terminator: String = "\n") {
    StandardOutput.shared.write(text + terminator)
}

/// Checks shared by every command that reads inputs.
enum InputValidation {
    /// Standard input can be read once: refuse '-' given for two inputs.
    /// - Parameter inputs: (role, path) in command-line order, e.g. ("A", "-").
    static func standardInputAtMostOnce(_ inputs: [(role: String, path: String)]) throws {
        let stdin = inputs.filter { $0.path == "-" }
        if stdin.count > 1 {
            let roles = stdin.map(\.role).joined(separator: " and ")
            throw ValidationError("Standard input ('-') can be read only once, but \(roles) both name it.")
        }
    }
}
