// activation_rounding.cpp: see activation_rounding.h. Powers of two scale exactly (ldexp), so the
// only rounding is the element's own.
#include "cpu/activation_rounding.h"

#include <algorithm>
#include <cmath>

#include "format/quant_element.h"

namespace mixrt {

void round_rows_to_bfp(const float *x, int64_t rows, int64_t K, int bits, float *out) {
    constexpr int64_t kBlock = 16;
    const float top = float((1 << (bits - 1)) - 1);
    for (int64_t t = 0; t < rows; ++t)
        for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
            const float *v = x + t * K + k0;
            float *o = out + t * K + k0;
            const int64_t len = std::min(kBlock, K - k0);
            float amax = 0.0f;
            for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(v[i]));
            if (amax == 0.0f) {
                std::fill(o, o + len, 0.0f);
                continue;
            }
            const int e = std::clamp(std::ilogb(amax), -kBlockExpBias, kBlockExpMax - kBlockExpBias);
            const int shift = e - (bits - 2);  // value = m x 2^shift
            for (int64_t i = 0; i < len; ++i) {
                // + 0.0f: an element that rounds to zero is +0, as an integer code decodes
                const float m = std::clamp(std::nearbyint(std::ldexp(v[i], -shift)), -top, top) + 0.0f;
                o[i] = std::ldexp(m, shift);
            }
        }
}

}  // namespace mixrt
