// matmul.h: out = x W^T for a weight of any dtype through a kernel table, with the output rows
// split across a thread pool. Threads split rows, never the reduction, so every output is the same
// whatever the thread count. Quantized weights first get their input rounded (quantized_input.h).
// Matmuls that read the same activations run in one parallel region (one wake-up and one wait
// instead of one per matrix, which decode pays hundreds of times per token): Q/K/V together, and
// the SwiGLU gate and up projections together with silu(gate) * up on each thread's rows.
#pragma once

#include <cstdint>

#include "cpu/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/quantized_input.h"
#include "cpu/tiled_matrix.h"

namespace mixrt {

// x is [n, w.cols], out is [n, w.rows]; xq is the scratch of the rounded input (n rows).
void parallel_matmul(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer &xq, const TiledMatrix &w,
                     const float *x, float *out, int64_t n);

// out[i] = x w[i]^T for i < count (<= 3), all reading x [n, K]; xq[i] rounds the input of w[i].
void parallel_matmuls(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer *const xq[],
                      const TiledMatrix *const w[], float *const out[], int count, const float *x, int64_t n);

// gate = silu(x gate_w^T) * (x up_w^T), [n, gate_w.rows]; up is scratch of the same size.
void parallel_swiglu(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer &xq_gate,
                     QuantizedInputBuffer &xq_up, const TiledMatrix &gate_w, const TiledMatrix &up_w, const float *x,
                     float *gate, float *up, int64_t n);

}  // namespace mixrt
