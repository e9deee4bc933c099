// kernels_avx512.cpp: the quantized matmuls (q8, q4, mix, block formats, quik) of tile_kernels.h on
// 512-bit vectors with AVX-512 VNNI (vec512.h). This file alone is compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512vnni (plus AVX2/FMA/F16C) and is only called after the run-time
// check in kernels.cpp; the other kernels of its table (f32, f16, attention) are the AVX2 ones.
#include "cpu/kernels.h"
#include "cpu/tile_kernels.h"
#include "cpu/vec512.h"

namespace mixrt {

// The AVX2 table with its quantized matmuls replaced by these.
CpuKernels avx512_kernel_table(const CpuKernels &avx2) { return with_tile_kernels<Avx512>(avx2, "avx512"); }

}  // namespace mixrt
