// swift-tools-version: 6.0
import PackageDescription

// Layering (each target depends only on those above it):
//   CKernels (C, vector kernels with run-time CPU dispatch), CZstd (system libzstd),
//   CVips (system libvips, fixed-argument wrappers), CFileIO (C, the few calls that need _GNU_SOURCE: O_DIRECT, O_TMPFILE, linkat)
//   FileIO        the only module that talks to libc for files, processes and threads:
//                 MappedFile, InputSpool, AtomicOutput, StandardOutput, Lock, FileIOError
//   SafeTensors   the file format only: header parsing/validation, mmap reading,
//                 streaming atomic writing, dtypes and dtype conversion
//   Adapters      adapter recognition, key-naming schemes, architectures, key mapping
//   GraftEngine   merge / convert / diff planned and run as parallel per-tensor jobs
//   DatasetTools  masks, buckets and dataset-config checks for sd-scripts training (no
//                 safetensors dependency; images through libvips)
//   graft         the command-line interface
let package = Package(
    name: "graft",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "graft", targets: ["graft"]),
        .library(name: "FileIO", targets: ["FileIO"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "Adapters", targets: ["Adapters"]),
        .library(name: "GraftEngine", targets: ["GraftEngine"]),
        // Synthetic models for tests and the fuzz package in Fuzz/ (not a public API).
        .library(name: "Fixtures", targets: ["Fixtures"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        .target(
            name: "CKernels",
            // The kernels pick AVX-512 / AVX2+F16C / portable code at run time;
            // -O3 lets clang vectorize the portable bodies inside each variant.
            cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])]
        ),
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .systemLibrary(
            name: "CVips",
            pkgConfig: "vips",
            providers: [.apt(["libvips-dev"])]
        ),
        .target(name: "CFileIO"),
        .target(name: "FileIO", dependencies: ["CFileIO", "CZstd"]),
        .target(name: "SafeTensors", dependencies: ["FileIO", "CKernels"]),
        .target(name: "Adapters", dependencies: ["SafeTensors"]),
        .target(name: "GraftEngine", dependencies: ["FileIO", "SafeTensors", "Adapters", "CKernels", "CZstd"]),
        .target(
            name: "DatasetTools",
            dependencies: ["FileIO", "CVips", .product(name: "TOMLKit", package: "TOMLKit")]),
        .executableTarget(
            name: "graft",
            dependencies: [
                "FileIO", "SafeTensors", "Adapters", "GraftEngine", "DatasetTools",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Synthetic models with real SD key names (any width), for samples, tests and benchmarks.
        .target(name: "Fixtures", dependencies: ["FileIO", "SafeTensors"]),
        .executableTarget(
            name: "graft-samplegen", dependencies: ["Fixtures", "SafeTensors"], path: "Sources/SampleGen"),
        .executableTarget(
            name: "graft-kbench", dependencies: ["SafeTensors", "CKernels"], path: "Sources/KernelBench"),
        .testTarget(name: "FileIOTests", dependencies: ["FileIO"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["FileIO", "SafeTensors", "Fixtures"]),
        .testTarget(name: "AdaptersTests", dependencies: ["Adapters", "Fixtures"]),
        .testTarget(
            name: "GraftEngineTests", dependencies: ["FileIO", "GraftEngine", "Adapters", "SafeTensors", "Fixtures"]),
        .testTarget(name: "DatasetToolsTests", dependencies: ["DatasetTools", "CVips"]),
        .testTarget(
            name: "GraftCLITests",
            dependencies: ["graft", "FileIO", "SafeTensors", "Fixtures", "DatasetTools", "CVips"]),
    ]
)
