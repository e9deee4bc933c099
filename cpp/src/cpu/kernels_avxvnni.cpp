// kernels_avxvnni.cpp: the quantized matmuls (q8, q4, mix) of tile_kernels.h on 256-bit vectors with
// AVX-VNNI (vpdpbusd on ymm registers, for CPUs that have it without AVX-512). This file alone is
// compiled with -mavxvnni (plus AVX2/FMA/F16C) and is only called after the run-time check in
// kernels.cpp; the other kernels of its table (f32, f16, attention) are the AVX2 ones.
#include "cpu/kernels.h"
#include "cpu/tile_kernels.h"
#include "cpu/vec256.h"

namespace mixrt {

// The AVX2 table with its quantized matmuls replaced by these.
CpuKernels avxvnni_kernel_table(const CpuKernels &avx2) { return with_tile_kernels<Vec256<true>>(avx2, "avxvnni"); }

}  // namespace mixrt
