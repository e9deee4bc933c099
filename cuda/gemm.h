// gemm.h: the prefill matrix product over f16 weights (dequantize_f16 scratch) and fp32
// activations: Y[t, r] = sum_k X[t, k] * W[r, k], fp32 accumulation. Used when a feed has more
// tokens than matvec takes (kMaxMatvecInputs).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mixrt::cuda {

// W [rows, cols] f16, X [n, cols] fp32, Y [n, rows] fp32, all row-major on the device.
void gemm_f16w(const __half *W, const float *X, float *Y, int n, int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace mixrt::cuda
