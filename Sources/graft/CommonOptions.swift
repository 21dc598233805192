import ArgumentParser
import GraftEngine
import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

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
    @Option(name: [.customShort("o"), .customLong("output")],
            help: "Output file (.safetensors, or .safetensors.zst for zstd).")
    var outputPath: String?

    /// The output path; commands that write check in validate() that it was given.
    var output: String { outputPath ?? "" }

    @Flag(name: .shortAndLong, help: "Overwrite the output if it exists.")
    var force = false

    @Option(help: ArgumentHelp("zstd level for a .zst output (default 3; negative = faster, up to 19+ = smaller).",
                               valueName: "n"))
    var zstdLevel: Int?

    /// Whether the output is written zstd-compressed (its name ends in .zst).
    var isCompressed: Bool { output.hasSuffix(".zst") }

    /// Throws unless -o was given (every writing command except `merge --dry-run`).
    func requireOutput() throws {
        if outputPath == nil || outputPath!.isEmpty { throw ValidationError("Missing expected argument '--output <output>' (-o).") }
    }

    func validate() throws {
        if let zstdLevel {
            guard isCompressed else {
                throw ValidationError("--zstd-level applies only to an output whose name ends in .zst.")
            }
            guard ZstdEncoder.levelRange.contains(zstdLevel) else {
                throw ValidationError("--zstd-level must be between \(ZstdEncoder.levelRange.lowerBound) and \(ZstdEncoder.levelRange.upperBound) (got \(zstdLevel)).")
            }
        }
    }

    /// How the executor should encode the output (zstd with all cores for `.zst`).
    /// - Parameter threads: the command's --threads; caps zstd's own workers too.
    func encoding(threads: Int?) -> OutputEncoding {
        OutputEncoding.forPath(output, zstdLevel: zstdLevel ?? 3, workers: threads ?? defaultThreadCount())
    }
}

enum Terminal {
    static func isInteractive(_ fd: Int32) -> Bool {
        guard isatty(fd) == 1 else { return false }
        if let term = getenv("TERM"), String(cString: term) == "dumb" { return false }
        return true
    }

    /// Writes a line to stderr.
    static func warn(_ message: String) {
        writeStderr(message + "\n")
    }
}

/// Runs a command body, turning library errors into one stderr line and exit code 2.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
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
        throw ExitCode(2)
    } catch let error as SafeTensorsError {
        // Names and details come from the file: one line, control characters escaped.
        Terminal.warn("graft: error: " + displayable("\(error)"))
        throw ExitCode(2)
    } catch {
        // Our own multi-line messages (lists of modules) keep their line breaks.
        let lines = "\(error)".split(separator: "\n", omittingEmptySubsequences: false).map { displayable(String($0)) }
        Terminal.warn("graft: error: " + lines.joined(separator: "\n"))
        throw ExitCode(2)
    }
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
func writeStderr(_ s: String) {
    var s = s
    s.withUTF8 { buf in
        var done = 0
        while done < buf.count {
            let n = write(2, buf.baseAddress! + done, buf.count - done)
            if n <= 0 { break }
            done += n
        }
    }
}
