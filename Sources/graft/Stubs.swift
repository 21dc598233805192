import ArgumentParser

extension Graft {
    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Compare two files tensor by tensor.", shouldDisplay: false)
        func run() throws { throw ValidationError("graft diff is not implemented yet.") }
    }
    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change the precision of floating-point tensors.", shouldDisplay: false)
        func run() throws { throw ValidationError("graft convert is not implemented yet.") }
    }
}
