// matmul.cpp: see matmul.h.
#include "matmul.h"

#include <algorithm>

namespace mixrt {

void parallel_matmul(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer &xq_buffer, const Weight &w,
                     const float *x, float *out, int64_t n) {
    const int64_t M = w.rows, K = w.cols;
    QuantizedInput xq;
    if (is_quantized(w.dtype)) xq = xq_buffer.quantize(w, x, n, &pool);
    // Chunks of 16 rows keep the 4-row tiles whole and balance the threads.
    const int64_t blocks = (M + 15) / 16;
    pool.parallel_for(blocks, [&](int64_t b0, int64_t b1) {
        const int64_t r0 = b0 * 16, r1 = std::min(M, b1 * 16);
        switch (w.dtype) {
            case DType::f32: kernels.matmul_f32(static_cast<const float *>(w.data), x, out, n, M, K, r0, r1); break;
            case DType::f16: kernels.matmul_f16(static_cast<const uint16_t *>(w.data), x, out, n, M, K, r0, r1); break;
            case DType::q8: kernels.matmul_q8(w, xq, out, n, r0, r1); break;
            case DType::q4: kernels.matmul_q4(w, xq, out, n, r0, r1); break;
            case DType::mix: kernels.matmul_mix(w, xq, out, n, r0, r1); break;
        }
    });
}

}  // namespace mixrt
