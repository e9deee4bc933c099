// kernels.cpp: the ladder of kernel tables (kernels.h) and the run-time choice among them. A table
// is available when it is compiled in (the x86 kernel files are left out of a portable build,
// cmake -DMIXRT_AVX2=OFF) and the CPU has every feature its file was compiled for (AMX: and the
// operating system grants the tile registers).
#include "cpu/kernels.h"

#include <cstdlib>

#if defined(MIXRT_AVX2)
#include <cpuid.h>
#endif

#include "error.h"

namespace mixrt {

#if defined(MIXRT_AVX2)  // CMake option: the x86 kernel files (kernels_avx2/avxvnni/avx512.cpp) are built
const CpuKernels &avx2_kernel_table();
CpuKernels avxvnni_kernel_table(const CpuKernels &avx2);
CpuKernels avx512_kernel_table(const CpuKernels &avx2);
CpuKernels amx_kernel_table(const CpuKernels &avx512);
bool amx_usable();

namespace {
// The CPU's features from CPUID, each only if the operating system saves its registers (XCR0).
// Read directly: compilers' __builtin_cpu_supports does not know every name (clang 14: no "f16c",
// no "avxvnni").
struct X86Features {
    bool avx2 = false, fma = false, f16c = false, avx_vnni = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false;
};

X86Features read_x86_features() {
    X86Features f;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)) || !(c & (1u << 28))) return f;  // OSXSAVE, AVX
    const bool fma = c & (1u << 12), f16c = c & (1u << 29);
    unsigned xcr0_lo, xcr0_hi;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    const bool os_avx = (xcr0_lo & 0x06) == 0x06, os_avx512 = (xcr0_lo & 0xE6) == 0xE6;
    if (!os_avx || __get_cpuid_max(0, nullptr) < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_subleaf = a;
    f.avx2 = b & (1u << 5);
    f.fma = fma;
    f.f16c = f16c;
    if (os_avx512) {
        f.avx512f = b & (1u << 16);
        f.avx512bw = b & (1u << 30);
        f.avx512vl = b & (1u << 31);
        f.avx512vnni = c & (1u << 11);
    }
    if (max_subleaf >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        f.avx_vnni = a & (1u << 4);
    }
    return f;
}

const X86Features &x86_features() {
    static const X86Features f = read_x86_features();
    return f;
}

bool has_avx2() { return x86_features().avx2 && x86_features().fma && x86_features().f16c; }
bool has_avx_vnni() { return has_avx2() && x86_features().avx_vnni; }
bool has_avx512_vnni() {
    const X86Features &f = x86_features();
    return has_avx2() && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
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
