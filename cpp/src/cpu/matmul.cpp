// matmul.cpp: see matmul.h.
#include "cpu/matmul.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "error.h"

namespace mixrt {

namespace {

constexpr int64_t kRowBlock = kTileRows;  // rows per unit of work: whole row tiles

int64_t row_blocks(const TiledMatrix &w) { return (w.weight().rows + kRowBlock - 1) / kRowBlock; }

QuantizedInput round_input(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer &xq, const TiledMatrix &w,
                           const float *x, int64_t n) {
    return is_quantized(w.weight().dtype)
               ? xq.quantize(w.weight(), x, n, &pool, kernels.round_quik_row, !kernels.reads_tiles)
               : QuantizedInput{};
}

// Rows [r0, r1) of out = x W^T.
void matmul_rows(const CpuKernels &kernels, const TiledMatrix &tiled, const QuantizedInput &xq, const float *x,
                 float *out, int64_t n, int64_t r0, int64_t r1) {
    const Weight &w = tiled.weight();
    const int64_t M = w.rows, K = w.cols;
    switch (w.dtype) {
        case DType::f32: kernels.matmul_f32(static_cast<const float *>(w.data), x, out, n, M, K, r0, r1); break;
        case DType::f16: kernels.matmul_f16(static_cast<const uint16_t *>(w.data), x, out, n, M, K, r0, r1); break;
        case DType::q8: kernels.matmul_q8(tiled, xq, out, n, r0, r1); break;
        case DType::q4: kernels.matmul_q4(tiled, xq, out, n, r0, r1); break;
        case DType::mix: kernels.matmul_mix(tiled, xq, out, n, r0, r1); break;
        case DType::quik: kernels.matmul_quik(tiled, xq, out, n, r0, r1); break;
        default: kernels.matmul_block(tiled, xq, out, n, r0, r1); break;  // the block formats
    }
}

}  // namespace

void parallel_matmul(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer &xq_buffer, const TiledMatrix &w,
                     const float *x, float *out, int64_t n) {
    QuantizedInputBuffer *const xq[] = {&xq_buffer};
    const TiledMatrix *const ws[] = {&w};
    float *const outs[] = {out};
    parallel_matmuls(kernels, pool, xq, ws, outs, 1, x, n);
}

void parallel_matmuls(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer *const xq[],
                      const TiledMatrix *const w[], float *const out[], int count, const float *x, int64_t n) {
    constexpr int kMaxCount = 3;
    if (count < 1 || count > kMaxCount)
        fail(MIXRT_ERR_INTERNAL, "parallel_matmuls: expected 1 to 3 matmuls, found " + std::to_string(count));
    QuantizedInput in[kMaxCount];
    int64_t first[kMaxCount + 1] = {0};  // the first row block of each matmul in the shared block index
    for (int i = 0; i < count; ++i) {
        in[i] = round_input(kernels, pool, *xq[i], *w[i], x, n);
        first[i + 1] = first[i] + row_blocks(*w[i]);
    }
    pool.parallel_for(first[count], [&](int64_t b0, int64_t b1) {
        for (int i = 0; i < count; ++i) {
            const int64_t lo = std::max(b0, first[i]), hi = std::min(b1, first[i + 1]);
            if (lo < hi)
                matmul_rows(kernels, *w[i], in[i], x, out[i], n, (lo - first[i]) * kRowBlock,
                            std::min(w[i]->weight().rows, (hi - first[i]) * kRowBlock));
        }
    });
}

void parallel_swiglu(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer &xq_gate,
                     QuantizedInputBuffer &xq_up, const TiledMatrix &gate_w, const TiledMatrix &up_w, const float *x,
                     float *gate, float *up, int64_t n) {
    const int64_t f = gate_w.weight().rows;
    const QuantizedInput in_gate = round_input(kernels, pool, xq_gate, gate_w, x, n),
                         in_up = round_input(kernels, pool, xq_up, up_w, x, n);
    pool.parallel_for(row_blocks(gate_w), [&](int64_t b0, int64_t b1) {
        const int64_t r0 = b0 * kRowBlock, r1 = std::min(f, b1 * kRowBlock);
        matmul_rows(kernels, gate_w, in_gate, x, gate, n, r0, r1);
        matmul_rows(kernels, up_w, in_up, x, up, n, r0, r1);
        for (int64_t t = 0; t < n; ++t)
            for (int64_t r = r0; r < r1; ++r) {
                const float g = gate[t * f + r];
                gate[t * f + r] = g / (1.0f + std::exp(-g)) * up[t * f + r];
            }
    });
}

}  // namespace mixrt
