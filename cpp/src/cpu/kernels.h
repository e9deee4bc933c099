// kernels.h: the CPU kernel table. Every entry has a scalar reference (kernels_ref.cpp) and an
// AVX2/FMA/F16C twin (kernels_avx2.cpp); tests/test_kernels.py compares them on the same data.
// The table is picked once, at first use, from the CPU's features.
#pragma once

#include <cstdint>

#include "format/quant_layout.h"
#include "cpu/quantized_input.h"

namespace mixrt {

struct CpuKernels {
    const char *name;
    // Rows [r0, r1) of out = x W^T: out[t*M + r] = sum_k x[t*K + k] * W[r*K + k] for t < n.
    // W is [M, K] row-major; x is [n, K]; out is [n, M].
    void (*matmul_f32)(const float *W, const float *x, float *out, int64_t n, int64_t M, int64_t K,
                       int64_t r0, int64_t r1);
    void (*matmul_f16)(const uint16_t *W, const float *x, float *out, int64_t n, int64_t M, int64_t K,
                       int64_t r0, int64_t r1);
    // The quantized dtypes (FORMAT.md 5.3-5.5): rows [r0, r1) of out = x^ W^T, out is [n, W.rows],
    // with x^ the input rounded to 8-bit groups (quantized_input.h) in the layout of W's dtype.
    void (*matmul_q8)(const Weight &W, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1);
    void (*matmul_q4)(const Weight &W, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1);
    void (*matmul_mix)(const Weight &W, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1);
    // Attention of nq queries (the query heads that share one KV head, rows `q_stride` floats
    // apart) over len cached positions of that head (rows of width hd, `stride` floats apart), so
    // each cached row is read once for all of them: scores[h * len + j] = q_h . K[j];
    // out[h * out_stride + i] = sum_j p[h * len + j] V[j][i] (out is overwritten).
    void (*attn_scores)(const float *q, int64_t nq, int64_t q_stride, const float *K, int64_t stride, int64_t len,
                        int64_t hd, float *scores);
    void (*attn_values)(const float *p, int64_t nq, const float *V, int64_t stride, int64_t len, int64_t hd, float *out,
                        int64_t out_stride);
};

// Exported (though not part of the public C API) so that the kernel tests can reach both tables.
const CpuKernels &scalar_kernels();
// nullptr when the library was built without AVX2 support or the CPU lacks AVX2/FMA/F16C.
const CpuKernels *avx2_kernels();
const CpuKernels &best_kernels();

}  // namespace mixrt
