// kernels.cpp: the ladder of kernel tables (kernels.h) and the run-time choice among them. A table
// is available when it is compiled in (the x86 kernel files are left out of a portable build,
// cmake -DMIXRT_AVX2=OFF) and the CPU has every feature its file was compiled for (AMX: and the
// operating system grants the tile registers).
#include "cpu/kernels.h"

#include <cstdlib>

#include "error.h"

namespace mixrt {

#if defined(MIXRT_AVX2)  // CMake option: the x86 kernel files (kernels_avx2/avxvnni/avx512.cpp) are built
const CpuKernels &avx2_kernel_table();
CpuKernels avxvnni_kernel_table(const CpuKernels &avx2);
CpuKernels avx512_kernel_table(const CpuKernels &avx2);
CpuKernels amx_kernel_table(const CpuKernels &avx512);
bool amx_usable();

namespace {
bool has_avx2() {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
bool has_avx_vnni() { return has_avx2() && __builtin_cpu_supports("avxvnni"); }
bool has_avx512_vnni() {
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
}  // namespace

const CpuKernels *kernels_named(const std::string &name) {
    if (name == "scalar") return &scalar_kernels();
    if (name == "avx2") return has_avx2() ? &avx2_kernel_table() : nullptr;
    if (name == "avxvnni") {
        static const CpuKernels table = avxvnni_kernel_table(avx2_kernel_table());
        return has_avx_vnni() ? &table : nullptr;
    }
    if (name == "avx512") {
        static const CpuKernels table = avx512_kernel_table(avx2_kernel_table());
        return has_avx512_vnni() ? &table : nullptr;
    }
    if (name == "amx") {
        const CpuKernels *avx512 = kernels_named("avx512");
        if (!avx512 || !amx_usable()) return nullptr;
        static const CpuKernels table = amx_kernel_table(*avx512);
        return &table;
    }
    return nullptr;
}
#else
const CpuKernels *kernels_named(const std::string &name) { return name == "scalar" ? &scalar_kernels() : nullptr; }
#endif

std::vector<std::string> available_kernels() {
    std::vector<std::string> names;
    for (const char *name : {"scalar", "avx2", "avxvnni", "avx512", "amx"})
        if (kernels_named(name)) names.push_back(name);
    return names;
}

namespace {
const CpuKernels &choose_kernels() {
    const std::vector<std::string> names = available_kernels();
    const char *forced = std::getenv("MIXRT_CPU_KERNELS");
    if (!forced || !*forced) return *kernels_named(names.back());
    if (const CpuKernels *k = kernels_named(forced)) return *k;
    std::string list;
    for (const std::string &n : names) list += (list.empty() ? "" : ", ") + n;
    fail(MIXRT_ERR_INVALID_ARGUMENT, std::string("MIXRT_CPU_KERNELS is '") + forced +
                                         "', expected one of the kernel tables this build and CPU can run: " + list);
}
}  // namespace

const CpuKernels &best_kernels() {
    static const CpuKernels &chosen = choose_kernels();  // a throwing initialiser is retried next call
    return chosen;
}

}  // namespace mixrt
