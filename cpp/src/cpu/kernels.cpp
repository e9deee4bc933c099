// kernels.cpp: picks the kernel table once from the CPU's features (AVX2, FMA and F16C all
// required for the fast table; the scalar table works everywhere, and is the only one in a
// portable build, cmake -DMIXRT_AVX2=OFF).
#include "cpu/kernels.h"

namespace mixrt {

#if defined(MIXRT_AVX2)  // CMake option: kernels_avx2.cpp is part of the build
const CpuKernels &avx2_kernel_table();

const CpuKernels *avx2_kernels() {
    static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                  __builtin_cpu_supports("f16c");
    return supported ? &avx2_kernel_table() : nullptr;
}
#else
const CpuKernels *avx2_kernels() { return nullptr; }
#endif

const CpuKernels &best_kernels() {
    static const CpuKernels &best = avx2_kernels() ? *avx2_kernels() : scalar_kernels();
    return best;
}

}  // namespace mixrt
