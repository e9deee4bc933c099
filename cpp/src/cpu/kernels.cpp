// kernels.cpp: picks the kernel table once from the CPU's features (AVX2, FMA and F16C all
// required for the fast table; the scalar table works everywhere).
#include "kernels.h"

namespace mixrt {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
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
