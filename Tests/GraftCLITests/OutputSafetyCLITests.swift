import FileIO
import Fixtures
import Foundation
import SafeTensors
import Testing

#if canImport(Glibc)
import Glibc
#endif

// Output safety through the built binary: results on a full stdout, `-o -`, destinations
// that are not regular files, standard input named twice.

/// Opens a pseudo-terminal and returns (controller, path of its terminal side).
/// (posix_openpt/grantpt/ptsname need _XOPEN_SOURCE, which Swift's Glibc does not show:
/// open /dev/ptmx and use the Linux ioctls TIOCSPTLCK and TIOCGPTN directly.)
private func openPseudoTerminal() throws -> (Int32, String) {
    let controller = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
    guard controller >= 0 else { throw POSIXError(.ENODEV) }
    var unlock: Int32 = 0
    var number: UInt32 = 0
    let TIOCSPTLCK: UInt = 0x4004_5431, TIOCGPTN: UInt = 0x8004_5430
    guard ioctl(controller, TIOCSPTLCK, &unlock) == 0, ioctl(controller, TIOCGPTN, &number) == 0 else {
        close(controller)
        throw POSIXError(.ENODEV)
    }
    return (controller, "/dev/pts/\(number)")
}

private let fullStdoutLine = "graft: error: <stdout>: write failed: no space left on device\n"

@Suite("output safety (CLI)")
struct OutputSafetyCLITests {
    @Test("results on a full stdout: exit 2 with one error line (list, list --json, diff, merge --dry-run)")
    func fullStdout() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let commands: [[String]] = [
            ["list", fx.checkpoint],
            ["list", fx.checkpoint, "--json"],
            ["diff", fx.checkpoint, fx.lora],
            ["diff", fx.checkpoint, fx.lora, "--json"],
            ["merge", fx.checkpoint, fx.lora, "--dry-run"],
            ["merge", fx.checkpoint, fx.lora, "--dry-run", "--json"],
            ["convert", fx.checkpoint, "--dtype", "fp16", "-o", fx.path("c.safetensors")],
        ]
        for args in commands {
            let r = try CLI.run(args, stdoutPath: "/dev/full")
            #expect(r.status == 2, "\(args): exit \(r.status), stderr \(r.stderr)")
            #expect(r.stderr == fullStdoutLine, "\(args): \(r.stderr)")
        }
        // The same commands succeed on a working stdout (the check is not a false alarm).
        #expect(try CLI.run(["list", fx.checkpoint], stdoutPath: "/dev/null").status == 0)
    }

    @Test("-o - streams the same bytes as a file output (merge, convert), summary on stderr")
    func standardOutput() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let merged = fx.path("merged.safetensors")
        let toFile = try CLI.run(["merge", fx.checkpoint, fx.lora + ":0.7", "-o", merged, "--save-precision", "fp16"])
        #expect(toFile.status == 0, "\(toFile.stderr)")
        let toPipe = try CLI.run([
            "merge", fx.checkpoint, fx.lora + ":0.7", "-o", "-", "--save-precision", "fp16", "--force",
        ])
        #expect(toPipe.status == 0, "\(toPipe.stderr)")
        #expect(
            toPipe.stdoutData == (try Data(contentsOf: URL(fileURLWithPath: merged))), "stdout differs from the file")
        #expect(toPipe.stderr.contains("merged 5 modules") && toPipe.stderr.contains("<stdout>"), "\(toPipe.stderr)")

        let converted = fx.path("c.safetensors")
        #expect(try CLI.run(["convert", fx.checkpoint, "--dtype", "bf16", "-o", converted]).status == 0)
        for threads in ["1", "3"] {
            let r = try CLI.run(["convert", fx.checkpoint, "--dtype", "bf16", "-o", "-", "--threads", threads])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdoutData == (try Data(contentsOf: URL(fileURLWithPath: converted))), "\(threads) threads")
        }
        // Standard input to standard output.
        let piped = try CLI.run(
            ["convert", "-", "--dtype", "bf16", "-o", "-"],
            stdin: try Data(contentsOf: URL(fileURLWithPath: fx.checkpoint)))
        let expected = try Data(contentsOf: URL(fileURLWithPath: converted))
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(piped.stdoutData == expected)
        // Nothing but the inputs and the two file outputs in the directory.
        #expect(
            fx.entries().sorted() == ["base.safetensors", "c.safetensors", "merged.safetensors", "style.safetensors"])
    }

    @Test("-o - with a full stdout fails with exit 2")
    func standardOutputFull() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let r = try CLI.run(["convert", fx.checkpoint, "--dtype", "fp16", "-o", "-"], stdoutPath: "/dev/full")
        #expect(r.status == 2)
        #expect(r.stderr == fullStdoutLine, "\(r.stderr)")
    }

    @Test("-o - refuses a terminal: exit 2, nothing written to it")
    func standardOutputTerminal() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let (controller, terminal) = try openPseudoTerminal()
        defer { close(controller) }
        for args in [
            ["convert", fx.checkpoint, "--dtype", "fp16", "-o", "-"], ["merge", fx.checkpoint, fx.lora, "-o", "-"],
        ] {
            let r = try CLI.run(args, stdoutPath: terminal)
            #expect(r.status == 2, "\(args): \(r.stderr)")
            #expect(
                r.stderr == "graft: error: <stdout>: stdout is a terminal; refusing to write binary data\n",
                "\(r.stderr)")
        }
        // Nothing reached the terminal.
        var pending: Int32 = 0
        _ = ioctl(controller, UInt(FIONREAD), &pending)
        #expect(pending == 0)
    }

    @Test(
        "-o - combinations that make no sense are usage errors",
        arguments: [
            ["convert", "CKPT", "--dtype", "fp16", "-o", "-", "--json"],
            ["convert", "CKPT", "--dtype", "fp16", "-o", "-", "--zstd-level", "3"],
            ["merge", "CKPT", "LORA", "-o", "-", "--json"],
        ])
    func standardOutputUsage(args: [String]) throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let r = try CLI.run(args.map { $0 == "CKPT" ? fx.checkpoint : $0 == "LORA" ? fx.lora : $0 })
        #expect(r.status == 64, "\(args): \(r.stderr)")
        #expect(r.stdoutData.isEmpty)
    }

    @Test("a FIFO, a symlink to one, a directory or /dev/null as -o is refused even with --force")
    func nonRegularDestinations() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let fifo = fx.path("fifo")
        #expect(mkfifo(fifo, 0o644) == 0)
        let link = fx.path("fifo-link")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: fifo)
        let sub = fx.path("sub")
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        for target in [fifo, link, sub, "/dev/null"] {
            for command in [["merge", fx.checkpoint, fx.lora], ["convert", fx.checkpoint, "--dtype", "fp16"]] {
                let r = try CLI.run(command + ["-o", target, "--force"])
                #expect(r.status == 2, "\(target): \(r.stderr)")
                #expect(r.stderr.hasPrefix("graft: error: \(target): the output path is "), "\(r.stderr)")
                #expect(r.stderr.split(separator: "\n").count == 1)
            }
        }
        var st = stat()
        #expect(lstat(fifo, &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO, "the FIFO was replaced")
        #expect(lstat(link, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK, "the symlink was replaced")
        #expect(stat("/dev/null", &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR)
    }

    @Test("an existing output without --force: exit 2, the --force hint, file untouched")
    func existingOutput() throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("out.safetensors")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: out))
        let r = try CLI.run(["convert", fx.checkpoint, "--dtype", "fp16", "-o", out])
        #expect(r.status == 2)
        #expect(
            r.stderr == "graft: error: \(out): the output already exists; use --force to overwrite it\n", "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data("keep".utf8))
    }

    @Test(
        "standard input named twice is a usage error",
        arguments: [
            ["merge", "-", "-", "-o", "OUT"],
            ["merge", "-", "-", "--dry-run"],
            ["merge", "CKPT", "-", "--dry-run", "--", "-:0.5"],
            ["diff", "-", "-"],
            ["diff", "-", "CKPT", "--lora", "-"],
        ])
    func standardInputTwice(args: [String]) throws {
        let fx = try MergeInputs()
        defer { fx.cleanup() }
        let out = fx.path("out.safetensors")
        // (No data on stdin: the check comes before anything is read, and a pipe nobody reads
        // would send SIGPIPE to this test process.)
        let r = try CLI.run(args.map { $0 == "CKPT" ? fx.checkpoint : $0 == "OUT" ? out : $0 })
        #expect(r.status == 64, "\(args): \(r.stderr)")
        #expect(r.stderr.contains("Standard input ('-') can be read only once"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}
