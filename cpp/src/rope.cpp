// rope.cpp: see rope.h. The formulas follow the published definitions (transformers'
// modeling_rope_utils, the YaRN paper, Meta's Llama 3.1 reference code).
#include "rope.h"

#include <algorithm>
#include <cmath>

namespace mixrt {

namespace {

constexpr double kPi = 3.14159265358979323846;

// theta^(-2i/head_dim) divided by the pair's frequency divisor, if any.
std::vector<double> base_inv_freq(int32_t head_dim, double theta, const RopeScaling &s) {
    std::vector<double> inv(head_dim / 2);
    for (size_t i = 0; i < inv.size(); ++i) {
        inv[i] = std::pow(theta, -2.0 * double(i) / head_dim);
        if (!s.freq_factors.empty()) inv[i] /= s.freq_factors[i];
    }
    return inv;
}

// Llama 3.1: long wavelengths (beyond original / low_freq_factor) slowed by factor, short ones
// (below original / high_freq_factor) kept, those between blended smoothly.
void llama3(std::vector<double> &inv, const RopeScaling &s) {
    const double old = double(s.original_context_length);
    const double low_wavelen = old / s.low_freq_factor, high_wavelen = old / s.high_freq_factor;
    for (double &f : inv) {
        const double wavelen = 2 * kPi / f;
        if (wavelen > low_wavelen) {
            f /= s.factor;
        } else if (!(wavelen < high_wavelen)) {
            const double smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
            f = (1 - smooth) * f / s.factor + smooth * f;
        }
    }
}

// YaRN: pairs that turn fewer than beta_slow times over the original context are interpolated
// (divided by factor), those that turn more than beta_fast times are kept, with a linear ramp
// between the two pair indices.
void yarn(std::vector<double> &inv, int32_t head_dim, double theta, const RopeScaling &s) {
    auto correction_dim = [&](double rotations) {
        return head_dim * std::log(double(s.original_context_length) / (rotations * 2 * kPi)) / (2 * std::log(theta));
    };
    const double low = std::max(std::floor(correction_dim(s.beta_fast)), 0.0);
    double high = std::min(std::ceil(correction_dim(s.beta_slow)), double(head_dim - 1));
    if (low == high) high += 0.001;
    for (size_t i = 0; i < inv.size(); ++i) {
        const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
        inv[i] = inv[i] / s.factor * ramp + inv[i] * (1 - ramp);
    }
}

}  // namespace

const char *rope_scaling_name(RopeScalingType type) {
    switch (type) {
    case RopeScalingType::none: return "none";
    case RopeScalingType::linear: return "linear";
    case RopeScalingType::dynamic: return "dynamic";
    case RopeScalingType::yarn: return "yarn";
    case RopeScalingType::llama3: return "llama3";
    }
    return "?";
}

void rope_tables(int32_t n_ctx, int32_t head_dim, double theta, std::vector<float> &cos_table,
                 std::vector<float> &sin_table, const RopeScaling &scaling) {
    const int32_t half = head_dim / 2;
    cos_table.resize(size_t(n_ctx) * half);
    sin_table.resize(size_t(n_ctx) * half);
    std::vector<double> inv = base_inv_freq(head_dim, theta, scaling);
    double magnitude = 1.0;
    switch (scaling.type) {
    case RopeScalingType::linear:
        for (double &f : inv) f /= scaling.factor;
        break;
    case RopeScalingType::llama3: llama3(inv, scaling); break;
    case RopeScalingType::yarn:
        yarn(inv, head_dim, theta, scaling);
        magnitude = scaling.attention_factor;
        break;
    case RopeScalingType::none:
    case RopeScalingType::dynamic: break;
    }
    const double original = double(scaling.original_context_length);
    for (int32_t pos = 0; pos < n_ctx; ++pos) {
        // Dynamic NTK: past the original context, the base grows with the sequence (pos + 1 tokens)
        // so that the slowest pair still turns less than once over it.
        if (scaling.type == RopeScalingType::dynamic && pos + 1 > original) {
            const double f = scaling.factor;
            const double grown = theta * std::pow(f * (pos + 1) / original - (f - 1), double(head_dim) / (head_dim - 2));
            inv = base_inv_freq(head_dim, grown, scaling);
        }
        for (int32_t i = 0; i < half; ++i) {
            const double angle = pos * inv[i];
            cos_table[size_t(pos) * half + i] = static_cast<float>(magnitude * std::cos(angle));
            sin_table[size_t(pos) * half + i] = static_cast<float>(magnitude * std::sin(angle));
        }
    }
}

}  // namespace mixrt
