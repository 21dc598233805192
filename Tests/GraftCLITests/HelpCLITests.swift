import Foundation
import Testing

// `graft --help` and subcommand help: the promises the README also makes.

@Suite("graft --help")
struct HelpCLITests {
    @Test("EXIT STATUS lists every status the README lists, including refused overwrite")
    func exitStatus() throws {
        let r = try CLI.run(["--help"])
        #expect(r.status == 0)
        let lines = r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.contains { $0.hasPrefix("2   bad input file, format error, I/O error") }, "\(r.stdout)")
        #expect(lines.contains { $0.hasPrefix("refused output (exists without --force") }, "\(r.stdout)")
        for code in ["0   success", "1   diff found differences", "64  usage error"] {
            #expect(lines.contains { $0.hasPrefix(code) }, "\(code)")
        }
    }

    @Test("diff --help says what a --filter that matches nothing does")
    func diffFilter() throws {
        let r = try CLI.run(["diff", "--help"])
        #expect(r.status == 0)
        // Compared with the line wrapping undone (it follows the terminal width).
        let text = r.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.contains("a glob that matches nothing is an error (exit 2)"), "\(r.stdout)")
    }
}
