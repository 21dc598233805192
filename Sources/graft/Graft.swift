import ArgumentParser

/// The `graft` command: safetensors model files and LoRA adapters.
@main
struct Graft: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "graft",
        abstract: "Inspect, merge, compare and convert safetensors models and LoRA adapters.",
        discussion: """
            Inputs are memory-mapped and validated before use; outputs appear under their \
            name only when complete (no partial file survives an interruption), and only \
            regular files are ever replaced. '-o -' writes to standard output (not a \
            terminal). '.safetensors.zst' inputs are read transparently.

            EXIT STATUS
              0   success (for diff: no differences)
              1   diff found differences; masks: some images failed (the others were written);
                  dataset check: an error or silent finding
              2   bad input file, format error, I/O error (also writing stdout),
                  refused output (exists without --force, is an input, is not a regular file)
              64  usage error (bad flags or arguments)
            """,
        version: version,
        subcommands: [List.self, Merge.self, Diff.self, Convert.self, Masks.self, Dataset.self]
    )
}
