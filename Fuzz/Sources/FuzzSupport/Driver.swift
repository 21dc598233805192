#if canImport(Glibc)
import Glibc
#endif
import CFuzzShims

/// Runs libFuzzer (all its command-line flags apply) on `callback`, which gets each
/// input and returns 0. Never returns: exits with libFuzzer's status.
public func runLibFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    let status = withUnsafeMutablePointer(to: &argv) { pArgv in
        pArgv.withMemoryRebound(to: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?.self, capacity: 1) {
            LLVMFuzzerRunDriver(&argc, $0, callback)
        }
    }
    exit(status)
}
