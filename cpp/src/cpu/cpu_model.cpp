// cpu_model.cpp: see cpu_model.h.
#include "cpu/cpu_model.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace mixrt {

namespace {

using Span = std::pair<uintptr_t, uintptr_t>;  // [begin, end) of bytes in the file mapping

// The parts of w that its row tiles replace (the mix permutation and outliers are still read).
void add_repacked_parts(const Weight &w, std::vector<Span> &spans) {
    const uint64_t M = uint64_t(w.rows), G = uint64_t(w.G);
    auto add = [&](const void *p, uint64_t bytes) { spans.push_back({uintptr_t(p), uintptr_t(p) + bytes}); };
    switch (w.dtype) {
        case DType::q8:
            add(w.q8.codes, M * w.Kp);
            add(w.q8.scales, 2 * M * G);
            break;
        case DType::q4:
            add(w.q4.codes, M * w.Kp / 2);
            add(w.q4.scales, 2 * M * G);
            add(w.q4.mins, 2 * M * G);
            break;
        case DType::mix: {
            const MixView &m = w.mix;
            add(m.q2, M * m.K2p / 4);
            add(m.meta2, M * m.G2);
            add(m.super2, 2 * M * m.B2);
            add(m.w4.codes, M * m.K4 / 2);
            add(m.w4.scales, 2 * M * (m.K4 / kGroup));
            add(m.w4.mins, 2 * M * (m.K4 / kGroup));
            break;
        }
        case DType::quik:
            add(w.quik.codes, M * uint64_t(w.quik.Kinp) / 2);
            add(w.quik.scales, 2 * M);
            add(w.quik.out_w, 2 * M * uint64_t(w.quik.n_out));
            break;
        default:
            if (is_block_format(w.dtype)) {
                add(w.block.codes, M * uint64_t(w.block.row_bytes));
                add(w.block.exps, M * uint64_t(w.block.blocks));
            }
            break;
    }
}

// Drops the whole pages of the spans (merged where only alignment padding, which is never read,
// separates them) from memory; a later read maps them again from the file.
void release_pages(std::vector<Span> spans) {
#if defined(MADV_DONTNEED)
    constexpr uintptr_t kGap = 64;  // parts start at multiples of the file's alignment (>= 64)
    static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    std::sort(spans.begin(), spans.end());
    for (size_t i = 0; i < spans.size();) {
        const uintptr_t begin = spans[i].first;
        uintptr_t end = spans[i].second;
        for (++i; i < spans.size() && spans[i].first <= end + kGap; ++i) end = std::max(end, spans[i].second);
        const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
        if (first < last) madvise(reinterpret_cast<void *>(first), last - first, MADV_DONTNEED);
    }
#else
    (void)spans;
#endif
}

}  // namespace

CpuWeights::CpuWeights(const LlamaModel &model, bool repack) : output(model.output(), repack) {
    std::vector<Span> repacked;
    add_repacked_parts(model.output(), repacked);
    layers.reserve(model.layers().size());
    for (const LayerWeights &l : model.layers())
        layers.push_back(map_layer(l, [&](const Weight &w) {
            add_repacked_parts(w, repacked);
            return TiledMatrix(w, repack);
        }));
    if (repack) release_pages(std::move(repacked));
}

}  // namespace mixrt
