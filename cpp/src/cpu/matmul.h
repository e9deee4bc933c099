// matmul.h: out = x W^T for a weight of any dtype through a kernel table, with the output rows
// split across a thread pool. Threads split rows, never the reduction, so every output is the same
// whatever the thread count. Quantized weights first get their input rounded (quantized_input.h).
#pragma once

#include <cstdint>

#include "../thread_pool.h"
#include "kernels.h"
#include "quantized_input.h"

namespace mixrt {

// x is [n, w.cols], out is [n, w.rows]; xq is the scratch of the rounded input (n rows).
MIXRT_API void parallel_matmul(const CpuKernels &kernels, ThreadPool &pool, QuantizedInputBuffer &xq, const Weight &w,
                               const float *x, float *out, int64_t n);

}  // namespace mixrt
