/// Dataset preparation for masked-loss LoRA training with kohya sd-scripts
/// (`../shared/docs/dataset-tools.md`): loss masks from the images' transparency,
/// sd-scripts' buckets, and checks of a dataset config. No dependency on the
/// safetensors stack; images go through libvips.
public enum DatasetTools {}
