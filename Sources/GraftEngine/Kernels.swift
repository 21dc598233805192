import CKernels

/// The fused LoRA update, `acc[i][j] += (ratio * (U @ D)[i][j]) * scale` (see
/// `gk_lora_gemm_f32`): one fixed FMA chain per element, so results do not depend
/// on how rows are split into chunks or on the CPU level.
enum LoRAKernel {
    @inline(__always)
    static func accumulate(
        _ acc: UnsafeMutablePointer<Float>, lda: Int,
        up: UnsafePointer<Float>, ldu: Int,
        down: UnsafePointer<Float>, ldd: Int,
        rows: Int, columns: Int, rank: Int, ratio: Float, scale: Float
    ) {
        gk_lora_gemm_f32(rows, columns, rank, acc, lda, up, ldu, down, ldd, ratio, scale)
    }
}
