// swift-tools-version: 6.0
import PackageDescription

// libFuzzer harnesses for graft. Built only by `make fuzz` (see Fuzz/README.md), with
//   -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address
// so that `swift build` / `swift test` of the root package never need the fuzzer runtime.
// The fuzz-* executables have no main of their own: libFuzzer's runtime provides it and
// calls their `LLVMFuzzerTestOneInput`.
let package = Package(
    name: "graft-fuzz",
    dependencies: [
        .package(name: "graft", path: ".."),
    ],
    targets: [
        // memfd_create (not exported by Swift's Glibc module) and the libzstd compressor.
        .target(name: "CFuzzShims", linkerSettings: [.linkedLibrary("zstd")]),
        .target(name: "FuzzSupport", dependencies: [
            "CFuzzShims",
            .product(name: "SafeTensors", package: "graft"),
            .product(name: "Adapters", package: "graft"),
            .product(name: "GraftEngine", package: "graft"),
            .product(name: "Fixtures", package: "graft"),
        ]),
        .executableTarget(name: "fuzz-header", dependencies: ["FuzzSupport"]),
        .executableTarget(name: "fuzz-adapter", dependencies: ["FuzzSupport"]),
        .executableTarget(name: "fuzz-adapter-structured", dependencies: ["FuzzSupport"]),
        .executableTarget(name: "fuzz-zstd", dependencies: ["FuzzSupport"]),
        // Writes the seed corpora (run by `make fuzz` before the fuzzers).
        .executableTarget(name: "fuzz-seeds", dependencies: ["FuzzSupport"]),
    ]
)
