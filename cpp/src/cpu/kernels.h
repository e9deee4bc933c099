// kernels.h: the CPU kernel table. Every entry has a scalar reference (kernels_ref.cpp) and an
// AVX2/FMA/F16C twin (kernels_avx2.cpp); tests/test_kernels.py compares them on the same data.
// The table is picked once, at first use, from the CPU's features.
#pragma once

#include <cstdint>

#include "../quant_layout.h"
#include "mixrt/mixrt.h"

namespace mixrt {

struct CpuKernels {
    const char *name;
    // Rows [r0, r1) of out = x W^T: out[t*M + r] = sum_k x[t*K + k] * W[r*K + k] for t < n.
    // W is [M, K] row-major; x is [n, K]; out is [n, M].
    void (*matmul_f32)(const float *W, const float *x, float *out, int64_t n, int64_t M, int64_t K,
                       int64_t r0, int64_t r1);
    void (*matmul_f16)(const uint16_t *W, const float *x, float *out, int64_t n, int64_t M, int64_t K,
                       int64_t r0, int64_t r1);
    // The quantized dtypes (FORMAT.md 5.3-5.5), rows [r0, r1) of out = x W^T, out is [n, W.rows].
    // q8/q4: x is [n, W.Kp] with zero padding after W.cols. mix: x2 is [n, K2p] (permuted 2-bit
    // columns, zero padded), x4 is [n, K4] (permuted 4-bit columns), x is [n, W.cols] (outliers).
    void (*matmul_q8)(const Weight &W, const float *x, float *out, int64_t n, int64_t r0, int64_t r1);
    void (*matmul_q4)(const Weight &W, const float *x, float *out, int64_t n, int64_t r0, int64_t r1);
    void (*matmul_mix)(const Weight &W, const float *x2, const float *x4, const float *x, float *out, int64_t n,
                       int64_t r0, int64_t r1);
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float a, const float *x, float *y, int64_t n);  // y += a * x
};

// Exported (though not part of the public C API) so that the kernel tests can reach both tables.
MIXRT_API const CpuKernels &scalar_kernels();
// nullptr when the library was built without AVX2 support or the CPU lacks AVX2/FMA/F16C.
MIXRT_API const CpuKernels *avx2_kernels();
MIXRT_API const CpuKernels &best_kernels();

}  // namespace mixrt
