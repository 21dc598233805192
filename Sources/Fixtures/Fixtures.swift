// Fixtures: synthetic Stable Diffusion models with real key names, at any width.
//
// - `SDXLArchitecture` / `SD15Architecture`: checkpoint tensor lists generated from the
//   architecture (full size reproduces a real SDXL checkpoint's 2514 tensors exactly).
// - `KohyaLoRA`: kohya LoRA / LoCon tensor lists and metadata derived from a checkpoint
//   list; `LoRATarget` ties each module to the checkpoint tensor it modifies.
// - `LyCORISAdapter`: LoHa, LoKr (LyCORIS's factorization) and DoRA (`dora_scale`) tensor
//   lists and metadata for the same targets.
// - `writeSynthetic(tensors:metadata:to:seed:dtype:overwrite:)`: streams any such list to
//   a file with bounded memory (see `SyntheticWriter` for how values are made).
// - `SplitMix64`: the seeded generator behind every value.
//
// Used by the tests, by `graft-samplegen` (Samples/ and the benchmark inputs) and nowhere
// in the shipped tool.
