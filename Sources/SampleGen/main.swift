// graft-samplegen: writes graft's sample and benchmark inputs (synthetic values, real
// Stable Diffusion key names) with the Fixtures library.
//
//   graft-samplegen samples DIR        the three tiny files committed in Samples/
//   graft-samplegen bench DIR [--fp32] full-size SDXL benchmark inputs (~8 GB; 14 GB more with --fp32)
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Fixtures
import SafeTensors

/// One file to produce.
struct Job {
    let name: String
    let tensors: [SyntheticTensor]
    let metadata: [String: String]?
    let seed: UInt64
    var dtype: DType? = nil
}

func fail(_ message: String, code: Int32 = 2) -> Never {
    let text = "graft-samplegen: \(message)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(code)
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func fileSize(_ path: String) -> Int? {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : nil
}

func megabytes(_ n: Int) -> String {
    let v = Double(n) / 1e6
    return v >= 100 ? String(Int(v.rounded())) : String(Double(Int(v * 100)) / 100)
}

/// Writes each job into `dir`; with `skipExisting`, a file already there with the
/// expected size is kept.
func run(_ jobs: [Job], in dir: String, skipExisting: Bool) {
    if mkdir(dir, 0o755) != 0 && errno != EEXIST { fail("cannot create directory \(dir)") }
    for job in jobs {
        let path = dir + "/" + job.name
        do {
            let expected = try SyntheticWriter.fileByteCount(
                tensors: job.tensors, metadata: job.metadata, dtype: job.dtype)
            if skipExisting, fileSize(path) == expected {
                print("kept    \(path) (\(megabytes(expected)) MB, already complete)")
                continue
            }
            let start = now()
            let n = try writeSynthetic(
                tensors: job.tensors, metadata: job.metadata, to: path,
                seed: job.seed, dtype: job.dtype)
            let seconds = now() - start
            let rate = seconds > 0 ? Int((Double(n) / 1e6 / seconds).rounded()) : 0
            print(
                "wrote   \(path) (\(megabytes(n)) MB, \(job.tensors.count) tensors, "
                    + "\(format2(seconds)) s, \(rate) MB/s)")
        } catch {
            fail("\(path): \(error)")
        }
    }
}

func format2(_ x: Double) -> String { String(Double(Int(x * 100)) / 100) }

let checkpointMetadata = { (title: String, comment: String) -> [String: String] in
    [
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": "stable-diffusion-xl-v1-base",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": title,
        "modelspec.resolution": "1024x1024",
        "modelspec.date": "2024-06-01T00:00:00",
        "graft.synthetic": comment,
    ]
}

/// The committed samples: SDXL at 1/64 width (2514 tensors, ~2 MB), a rank-4 LoRA, a LoCon and a
/// LyCORIS LoHa (dim 4, UNet attention and feed-forward) for it.
func sampleJobs() -> [Job] {
    let sdxl = SDXLArchitecture(widthDivisor: 64)
    let checkpoint = sdxl.checkpointTensors(dtype: .F16)
    let lora = KohyaLoRAOptions(rank: 4, alpha: 2)
    let locon = KohyaLoRAOptions(rank: 4, alpha: 2, convRank: 2, convAlpha: 1)
    let loha = LoHaOptions(dim: 4, alpha: 2)
    let note = "synthetic values from graft-samplegen (Fixtures), SDXL layout at 1/64 width"
    return [
        Job(
            name: "sdxl-tiny.safetensors", tensors: checkpoint,
            metadata: checkpointMetadata("sdxl-tiny", note), seed: 1),
        Job(
            name: "lora-tiny.safetensors", tensors: KohyaLoRA.sdxl(checkpoint: checkpoint, options: lora),
            metadata: KohyaLoRA.metadata(.sdxl, options: lora, title: "lora-tiny", comment: note + ", seed=2"), seed: 2),
        Job(
            name: "locon-tiny.safetensors", tensors: KohyaLoRA.sdxl(checkpoint: checkpoint, options: locon),
            metadata: KohyaLoRA.metadata(.sdxl, options: locon, title: "locon-tiny", comment: note + ", seed=3"),
            seed: 3),
        Job(
            name: "loha-tiny.safetensors",
            tensors: LyCORISAdapter.loha(
                targets: LyCORISAdapter.sdxlUNetTargets(checkpoint: checkpoint), options: loha),
            metadata: LyCORISAdapter.metadata(
                .sdxl, algo: .loha, dim: loha.dim, alpha: loha.alpha, title: "loha-tiny", comment: note + ", seed=4"),
            seed: 4),
    ]
}

/// The full-size benchmark inputs.
func benchJobs(fp32: Bool) -> [Job] {
    let checkpoint = SDXLArchitecture(widthDivisor: 1).checkpointTensors(dtype: .F16)
    let lora = KohyaLoRAOptions(rank: 32, alpha: 16)
    let locon = KohyaLoRAOptions(rank: 16, alpha: 8, convRank: 8, convAlpha: 4)
    let note = "synthetic values from graft-samplegen (Fixtures); values repeat (pooled)"
    var jobs = [
        Job(
            name: "sdxl-full-fp16.safetensors", tensors: checkpoint,
            metadata: checkpointMetadata("sdxl-full-fp16", note), seed: 11),
        Job(
            name: "lora-r32.safetensors", tensors: KohyaLoRA.sdxl(checkpoint: checkpoint, options: lora),
            metadata: KohyaLoRA.metadata(.sdxl, options: lora, title: "lora-r32", comment: note + ", seed=12"), seed: 12
        ),
        Job(
            name: "locon-r16.safetensors", tensors: KohyaLoRA.sdxl(checkpoint: checkpoint, options: locon),
            metadata: KohyaLoRA.metadata(.sdxl, options: locon, title: "locon-r16", comment: note + ", seed=13"),
            seed: 13),
    ]
    // LyCORIS rows: LoHa and LoKr on the UNet attention and feed-forward modules, and the
    // r32 LoRA above with DoRA magnitudes on the output axis (same seed: its LoRA tensors
    // hold the same bytes as lora-r32's).
    let unet = LyCORISAdapter.sdxlUNetTargets(checkpoint: checkpoint)
    let loha = LoHaOptions(dim: 16, alpha: 8)
    let lokr = LoKrOptions(factor: 8)
    let loraTargets = KohyaLoRA.sdxlTargets(checkpoint: checkpoint, includeConv: false)
    jobs += [
        Job(
            name: "loha-d16.safetensors", tensors: LyCORISAdapter.loha(targets: unet, options: loha),
            metadata: LyCORISAdapter.metadata(
                .sdxl, algo: .loha, dim: loha.dim, alpha: loha.alpha, title: "loha-d16", comment: note + ", seed=14"),
            seed: 14),
        Job(
            name: "lokr-f8.safetensors", tensors: LyCORISAdapter.lokr(targets: unet, options: lokr),
            metadata: LyCORISAdapter.metadata(
                .sdxl, algo: .lokr(factor: lokr.factor), dim: 100_000, alpha: lokr.alpha, title: "lokr-f8",
                comment: note + ", seed=15"),
            seed: 15),
        Job(
            name: "dora-r32.safetensors",
            tensors: LyCORISAdapter.dora(targets: loraTargets, lora: lora, dora: DoRAOptions(axis: .output)),
            metadata: LyCORISAdapter.metadata(
                .sdxl, algo: .dora(axis: .output), dim: lora.rank, alpha: lora.alpha, title: "dora-r32",
                comment: note + ", seed=12", includeTextEncoders: true),
            seed: 12),
    ]
    if fp32 {
        // Same seed and pools as the fp16 file, so the two hold the same values up to rounding.
        jobs.append(
            Job(
                name: "sdxl-full-fp32.safetensors", tensors: checkpoint,
                metadata: checkpointMetadata("sdxl-full-fp32", note), seed: 11, dtype: .F32))
    }
    return jobs
}

let usage = """
    usage: graft-samplegen samples DIR         write the tiny samples (sdxl-tiny, lora-tiny, locon-tiny, loha-tiny)
           graft-samplegen bench DIR [--fp32]  write the full-size benchmark inputs, keeping complete ones
    """

let args = Array(CommandLine.arguments.dropFirst())
switch (args.first, args.count) {
case ("samples", 2):
    run(sampleJobs(), in: args[1], skipExisting: false)
case ("bench", 2), ("bench", 3):
    let fp32 = args.count == 3
    if fp32 && args[2] != "--fp32" { fail("unknown option '\(args[2])'\n" + usage, code: 64) }
    run(benchJobs(fp32: fp32), in: args[1], skipExisting: true)
case ("help", _), ("--help", _), ("-h", _):
    print(usage)
default:
    fail("expected 'samples DIR' or 'bench DIR [--fp32]'\n" + usage, code: 64)
}
