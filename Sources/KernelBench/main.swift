// graft-kbench: throughput of graft's kernels on this machine (used by `make bench`).
// Prints one line per kernel: median of several runs, GB/s (bytes read + written) or GFLOP/s.
import CKernels
import Foundation
import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

func time(runs: Int = 5, _ body: () -> Void) -> Double {
    body()  // warm-up (page faults, caches)
    return median(
        (0..<runs).map { _ in
            let t = now(); body(); return now() - t
        })
}

func runBench() {
    let elements = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 50_000_000 : 50_000_000
    let src = UnsafeMutableRawPointer.allocate(byteCount: elements * 4, alignment: 64)
    let dst = UnsafeMutableRawPointer.allocate(byteCount: elements * 4, alignment: 64)
    // Weight-like values: small normals as fp32, and their fp16/bf16 images.
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    let f = src.bindMemory(to: Float.self, capacity: elements)
    for i in 0..<elements {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        f[i] = (Float(Int64(bitPattern: state >> 11) % 2_000_001) / 1_000_000 - 1) * 0.05
    }

    print("cpu level: \(Conversion.cpuLevelName) (detected \(Conversion.detectedCPULevel)), \(elements) elements")
    func conversion(_ name: String, _ from: DType, _ to: DType) {
        if from != .F32 {
            Conversion.convert(f, from: .F32, to: dst, from, count: elements);
            src.copyMemory(from: dst, byteCount: elements * from.bitCount / 8)
        }
        let t = time { Conversion.convert(src, from: from, to: dst, to, count: elements) }
        let bytes = Double(elements * (from.bitCount + to.bitCount) / 8)
        print(
            "convert \(name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(String(format: "%6.1f", bytes / t / 1e9)) GB/s  (\(String(format: "%.2f", Double(elements) / t / 1e9)) Gelem/s, 1 thread)"
        )
    }
    // Keep a pristine fp32 copy for each run.
    let pristine = UnsafeMutableRawPointer.allocate(byteCount: elements * 4, alignment: 64)
    pristine.copyMemory(from: src, byteCount: elements * 4)
    for (name, a, b) in [
        ("f32->f16", DType.F32, DType.F16), ("f16->f32", .F16, .F32),
        ("f32->bf16", .F32, .BF16), ("bf16->f32", .BF16, .F32),
    ] {
        src.copyMemory(from: pristine, byteCount: elements * 4)
        conversion(name, a, b)
    }

    src.copyMemory(from: pristine, byteCount: elements * 4)
    var st = gk_stats()
    let ts = time { gk_stats_f32(f, elements, &st) }
    print("stats        \(String(format: "%6.1f", Double(elements * 4) / ts / 1e9)) GB/s  (1 thread)")

    // LoRA GEMM on SDXL shapes: acc[m x n] += ratio * (U[m x r] @ D[r x n]) * scale.
    for (m, n, r) in [(1280, 1280, 32), (10240, 1280, 32), (640, 5120, 128), (1280, 1280 * 9, 8)] {
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
        let u = UnsafeMutablePointer<Float>.allocate(capacity: m * r)
        let d = UnsafeMutablePointer<Float>.allocate(capacity: r * n)
        acc.initialize(repeating: 0.01, count: m * n)
        u.initialize(repeating: 0.02, count: m * r)
        d.initialize(repeating: 0.03, count: r * n)
        let t = time { gk_lora_gemm_f32(m, n, r, acc, n, u, r, d, n, 1, 0.5) }
        print(
            "lora gemm \(m)x\(n) r\(r)".padding(toLength: 28, withPad: " ", startingAt: 0)
                + "\(String(format: "%6.1f", 2 * Double(m * n * r) / t / 1e9)) GFLOP/s (1 thread)")
        acc.deallocate(); u.deallocate(); d.deallocate()
    }
}

runBench()
