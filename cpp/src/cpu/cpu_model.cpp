// cpu_model.cpp: see cpu_model.h.
#include "cpu/cpu_model.h"

#include <cstdint>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace mixrt {

namespace {

// Drops the whole pages inside [p, p + bytes) of the read-only file mapping from memory; a later
// read maps them again from the file.
void release_pages(const void *p, uint64_t bytes) {
#if defined(MADV_DONTNEED)
    static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (uintptr_t(p) + page - 1) / page * page, end = (uintptr_t(p) + bytes) / page * page;
    if (begin < end) madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
#else
    (void)p;
    (void)bytes;
#endif
}

// The parts of w that its row tiles replace (the mix permutation and outliers are still read).
void release_repacked_parts(const Weight &w) {
    const uint64_t M = uint64_t(w.rows), G = uint64_t(w.G);
    switch (w.dtype) {
        case DType::q8:
            release_pages(w.q8.codes, M * w.Kp);
            release_pages(w.q8.scales, 2 * M * G);
            break;
        case DType::q4:
            release_pages(w.q4.codes, M * w.Kp / 2);
            release_pages(w.q4.scales, 2 * M * G);
            release_pages(w.q4.mins, 2 * M * G);
            break;
        case DType::mix: {
            const MixView &m = w.mix;
            release_pages(m.q2, M * m.K2p / 4);
            release_pages(m.meta2, M * m.G2);
            release_pages(m.super2, 2 * M * m.B2);
            release_pages(m.w4.codes, M * m.K4 / 2);
            release_pages(m.w4.scales, 2 * M * (m.K4 / kGroup));
            release_pages(m.w4.mins, 2 * M * (m.K4 / kGroup));
            break;
        }
        default: break;
    }
}

TiledMatrix tile(const Weight &w) {
    TiledMatrix t(w);
    release_repacked_parts(w);
    return t;
}

}  // namespace

CpuWeights::CpuWeights(const LlamaModel &model) : output(tile(model.output())) {
    layers.reserve(model.layers().size());
    for (const LayerWeights &l : model.layers()) layers.push_back(map_layer(l, tile));
}

}  // namespace mixrt
