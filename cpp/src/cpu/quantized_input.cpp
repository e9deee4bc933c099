// quantized_input.cpp: see quantized_input.h. Plain loops (the compiler vectorises them); the cost
// is O(n K) against the matmul's O(n M K).
#include "cpu/quantized_input.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "cpu/kernels.h"
#include "error.h"

namespace mixrt {

namespace {

// Round to nearest, ties to even, for |v| <= 2^22: adding and removing 1.5 * 2^23 leaves the
// integer part (pure fp32 arithmetic: the same result on every path, no libm call).
inline float round_even(float v) {
    const float magic = 12582912.0f;
    return (v + magic) - magic;
}

// The 8-bit code of v = x / d in a block whose max is not finite, or so small (below about 4e-37)
// that 127 / max overflows: NaN or infinite values of v are code 0, so the integer conversion stays
// defined; the block's scale d (NaN or inf) carries a non-finite input into the outputs, and a tiny
// block rounds to zero (an error below 1e-36 per value). Other blocks (|v| <= 127 by construction)
// take the plain conversion.
inline int32_t non_finite_block_code(float v) {
    return static_cast<int32_t>(round_even(v >= -127.0f && v <= 127.0f ? v : 0.0f));
}

// One group's codes q = code(x * inv) and the sums of its two halves.
template <typename Code>
inline void round_group(const float *x, float inv, int8_t *q, int32_t half[2], Code code) {
    for (int i = 0; i < kGroup; ++i) {
        const int32_t c = code(x[i] * inv);
        q[i] = static_cast<int8_t>(c);
        half[i / 16] += c;
    }
}

}  // namespace

QuantizedInputBuffer::QuantizedInputBuffer(int64_t max_rows, int64_t max_K, int quik_bits)
    : max_rows_(max_rows),
      max_K_(max_K),
      quik_bits_(quik_bits),
      q_(size_t(max_rows) * (max_K + 64)),
      d_(size_t(max_rows) * (max_K + 64) / kGroup + kGroupSlack),
      sum_(d_.size()),
      qsum_(d_.size()),
      qsum16_(2 * d_.size()),
      xhat_(size_t(max_rows) * max_K),
      row_(size_t(max_rows) * (max_K + 64)),
      xout_(size_t(max_rows) * max_K) {
    if (quik_bits != 8 && quik_bits != 4)
        fail(MIXRT_ERR_INTERNAL, "quik input width " + std::to_string(quik_bits) + ", expected 8 or 4");
}

QuantizedInput QuantizedInputBuffer::quantize(const Weight &w, const float *x, int64_t n, ThreadPool *pool,
                                              QuikRowRounding round_quik_row, bool quik_xhat) {
    const int64_t K = w.cols;
    const bool mix = w.dtype == DType::mix;
    const MixView &m = w.mix;
    QuantizedInput in;
    in.K = K;
    const bool quik = w.dtype == DType::quik;
    in.stride = mix ? m.K2p + m.K4 : quik ? (w.Kp + 63) / 64 * 64 : w.Kp;
    in.groups = quik ? 1 : in.stride / kGroup;
    in.n_out = quik ? w.quik.n_out : 0;
    if (n > max_rows_ || K > max_K_)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "quantized input of " + std::to_string(n) + " rows of " + std::to_string(K) +
                                             " columns exceeds the buffer of " + std::to_string(max_rows_) + " rows of " +
                                             std::to_string(max_K_));
    if (quik) {
        quik_column_.assign(size_t(in.stride), 0);
        for (int64_t j = 0; j < w.quik.Kin; ++j) quik_column_[w.quik.perm[j]] = 1;
    }
    // Token rows are independent: several tokens are split across the pool's threads.
    auto rows = [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            if (quik) quantize_quik_row(w, x + t * K, t, in, round_quik_row, quik_xhat);
            else quantize_row(w, x + t * K, t, in);
        }
    };
    if (pool && n > 1) pool->parallel_for(n, rows);
    else rows(0, n);
    in.q = q_.data();
    in.d = d_.data();
    in.sum = sum_.data();
    in.qsum = qsum_.data();
    in.qsum16 = qsum16_.data();
    in.xhat = xhat_.data();
    in.xout = xout_.data();
    return in;
}

void QuantizedInputBuffer::quantize_quik_row(const Weight &w, const float *xt, int64_t t, const QuantizedInput &in,
                                             QuikRowRounding round_quik_row, bool with_xhat) {
    const QuikView &q = w.quik;
    const int64_t K = w.cols;
    uint8_t *u = reinterpret_cast<uint8_t *>(q_.data()) + t * in.stride;
    qsum_[t] = (round_quik_row ? round_quik_row : round_quik_row_ref)(xt, quik_column_.data(), K, quik_bits_, u,
                                                                       &sum_[t], &d_[t]);
    std::fill(u + K, u + in.stride, uint8_t(0));
    float *xout = xout_.data() + t * q.n_out;
    for (int64_t j = 0; j < q.n_out; ++j) xout[j] = xt[q.perm[q.Kin + j]];
    if (!with_xhat) return;
    float *xhat = xhat_.data() + t * K;
    const float lo = sum_[t], d = d_[t];
    for (int64_t k = 0; k < K; ++k) xhat[k] = quik_column_[k] ? lo + d * float(u[k]) : xt[k];
}

void QuantizedInputBuffer::quantize_row(const Weight &w, const float *xt, int64_t t, const QuantizedInput &in) {
    const int64_t K = w.cols;
    const bool mix = w.dtype == DType::mix;
    const MixView &m = w.mix;
    float *row = row_.data() + t * (max_K_ + 64);
    // The row in the kernel's column order, zero padded.
    if (mix) {
        for (int64_t j = 0; j < m.K2; ++j) row[j] = xt[m.perm[j]];
        for (int64_t j = m.K2; j < m.K2p; ++j) row[j] = 0.0f;
        for (int64_t j = 0; j < m.K4; ++j) row[m.K2p + j] = xt[m.perm[m.K2 + j]];
    } else {
        for (int64_t k = 0; k < K; ++k) row[k] = xt[k];
        for (int64_t k = K; k < w.Kp; ++k) row[k] = 0.0f;
    }
    int8_t *q = q_.data() + t * in.stride;
    float *d = d_.data() + t * in.groups, *sum = sum_.data() + t * in.groups;
    int32_t *qsum = qsum_.data() + t * in.groups, *qsum16 = qsum16_.data() + 2 * t * in.groups;
    // One scale per block: the mix 2-bit columns in blocks of kMixBlockGroups groups, the rest
    // in single groups.
    const int64_t block_groups_end = mix ? m.G2 : 0;
    for (int64_t g0 = 0; g0 < in.groups;) {
        const int64_t g1 = g0 < block_groups_end ? std::min(g0 + kMixBlockGroups, block_groups_end) : g0 + 1;
        const float *v = row + g0 * kGroup;
        const int64_t len = (g1 - g0) * kGroup;
        // max |v| as the largest magnitude bit pattern (the order of non-negative floats): an
        // integer max, which the compiler vectorises.
        uint32_t amax_bits = 0;
        for (int64_t i = 0; i < len; ++i) {
            uint32_t bits;
            std::memcpy(&bits, v + i, 4);
            amax_bits = std::max(amax_bits, bits & 0x7FFFFFFFu);
        }
        float amax;
        std::memcpy(&amax, &amax_bits, 4);
        const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        const bool plain = amax_bits < 0x7F800000u && inv < std::numeric_limits<float>::infinity();
        for (int64_t g = g0; g < g1; ++g) {
            int32_t half[2] = {0, 0};
            if (plain)
                round_group(row + g * kGroup, inv, q + g * kGroup, half,
                            [](float v) { return static_cast<int32_t>(round_even(v)); });
            else
                round_group(row + g * kGroup, inv, q + g * kGroup, half, non_finite_block_code);
            const int32_t total = half[0] + half[1];
            d[g] = scale;
            sum[g] = scale * static_cast<float>(total);
            qsum[g] = total;
            qsum16[2 * g] = half[0];
            qsum16[2 * g + 1] = half[1];
        }
        g0 = g1;
    }
    // x^ in the original column order.
    float *xhat = xhat_.data() + t * K;
    auto value = [&](int64_t pos) { return d[pos / kGroup] * static_cast<float>(q[pos]); };
    if (mix) {
        for (int64_t j = 0; j < m.K2; ++j) xhat[m.perm[j]] = value(j);
        for (int64_t j = 0; j < m.K4; ++j) xhat[m.perm[m.K2 + j]] = value(m.K2p + j);
    } else {
        for (int64_t k = 0; k < K; ++k) xhat[k] = value(k);
    }
}

}  // namespace mixrt
