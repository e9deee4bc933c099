// nfc.cpp: see nfc.h. The composition loop follows the reference algorithm of UAX #15.
#include "text/nfc.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <tuple>
#include <utility>
#include <vector>

#include "text/unicode.h"

namespace mixrt::unicode {

namespace {

struct CombiningClass {
    uint32_t codepoint;
    uint8_t ccc;
};
struct Decomposition {
    uint32_t codepoint;
    uint16_t offset, length;  // into kDecompositionData
};
struct Composition {
    uint32_t first, second, composite;
};

#include "text/nfc_tables.inc"

// Hangul syllables: S = SBase + (L * VCount + V) * TCount + T.
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

int combining_class(uint32_t cp) {
    const auto *it = std::lower_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                                      [](const CombiningClass &c, uint32_t v) { return c.codepoint < v; });
    return it != std::end(kCombiningClasses) && it->codepoint == cp ? it->ccc : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t> &out) {
    if (cp - kSBase < kSCount) {
        const uint32_t s = cp - kSBase;
        out.push_back(kLBase + s / kNCount);
        out.push_back(kVBase + (s % kNCount) / kTCount);
        if (s % kTCount) out.push_back(kTBase + s % kTCount);
        return;
    }
    const auto *it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                                      [](const Decomposition &d, uint32_t v) { return d.codepoint < v; });
    if (it == std::end(kDecompositions) || it->codepoint != cp) {
        out.push_back(cp);
        return;
    }
    out.insert(out.end(), kDecompositionData + it->offset, kDecompositionData + it->offset + it->length);
}

// The primary composite of a + b, or 0.
uint32_t compose(uint32_t a, uint32_t b) {
    if (a - kLBase < kLCount && b - kVBase < kVCount) return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    if (a - kSBase < kSCount && (a - kSBase) % kTCount == 0 && b - kTBase - 1 < kTCount - 1) return a + (b - kTBase);
    const auto *it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), Composition{a, b, 0},
                                      [](const Composition &x, const Composition &y) {
                                          return x.first != y.first ? x.first < y.first : x.second < y.second;
                                      });
    return it != std::end(kCompositions) && it->first == a && it->second == b ? it->composite : 0;
}

}  // namespace

std::string nfc(std::string_view text) {
    if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
        return std::string(text);
    std::vector<uint32_t> cps;
    cps.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
        const Utf8Char ch = decode_utf8(text, pos);
        decompose(ch.codepoint, cps);
        pos += ch.length;
    }
    // Canonical ordering: each run of non-starters sorted stably by combining class.
    std::vector<int> classes(cps.size());
    for (size_t i = 0; i < cps.size(); ++i) classes[i] = combining_class(cps[i]);
    for (size_t i = 0; i < cps.size();) {
        if (classes[i] == 0) {
            ++i;
            continue;
        }
        size_t end = i;
        while (end < cps.size() && classes[end] != 0) ++end;
        std::vector<std::pair<int, uint32_t>> run;
        for (size_t k = i; k < end; ++k) run.emplace_back(classes[k], cps[k]);
        std::stable_sort(run.begin(), run.end(), [](const auto &x, const auto &y) { return x.first < y.first; });
        for (size_t k = i; k < end; ++k) std::tie(classes[k], cps[k]) = run[k - i];
        i = end;
    }
    // Canonical composition: each character joins the last starter unless blocked (a character
    // between them of class 0 or of a class not below its own).
    if (!cps.empty()) {
        size_t starter = 0, kept = 1;
        int last_class = classes[0] == 0 ? 0 : 256;
        for (size_t i = 1; i < cps.size(); ++i) {
            const uint32_t composite = compose(cps[starter], cps[i]);
            if (composite && (last_class < classes[i] || last_class == 0)) {
                cps[starter] = composite;
                continue;
            }
            if (classes[i] == 0) starter = kept;
            last_class = classes[i];
            cps[kept++] = cps[i];
        }
        cps.resize(kept);
    }
    std::string out;
    out.reserve(text.size());
    for (const uint32_t cp : cps) append_utf8(out, cp);
    return out;
}

}  // namespace mixrt::unicode
