// sampler.cpp: see sampler.h. The order of the filters follows common practice (llama.cpp,
// Hugging Face): penalties act on logits, top-k on logits, top-p and min-p on probabilities.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "error.h"

namespace mixrt {

namespace {
uint64_t splitmix64(uint64_t &x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Sampler::Sampler(const mixrt_sampler_params &params) : params_(params) {
    auto bad = [](const std::string &what) { fail(MIXRT_ERR_INVALID_ARGUMENT, "sampler: " + what); };
    if (!std::isfinite(params.temperature)) bad("temperature must be finite");
    if (!(params.top_p > 0.0f)) bad("top_p is " + std::to_string(params.top_p) + ", expected > 0");
    if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) bad("min_p is " + std::to_string(params.min_p) + ", expected 0..1");
    if (!(params.repeat_penalty > 0.0f)) bad("repeat_penalty is " + std::to_string(params.repeat_penalty) + ", expected > 0");
    if (params.repeat_last_n < 0) bad("repeat_last_n is negative");
    uint64_t s = params.seed;
    for (auto &word : state_) word = splitmix64(s);
}

void check_logits_finite(const float *logits, int32_t n_vocab) {
    // NaN or +inf would make any choice meaningless (and NaN breaks the ordering sorts rely on).
    // One branch-free pass over the bit patterns (it vectorises; it runs once per sampled token):
    // exponent all ones is NaN or an infinity, of which only -inf is allowed.
    uint32_t bad = 0;
    for (int32_t i = 0; i < n_vocab; ++i) {
        uint32_t bits;
        std::memcpy(&bits, logits + i, 4);
        bad |= uint32_t((bits & 0x7F800000u) == 0x7F800000u) & uint32_t(bits != 0xFF800000u);
    }
    if (!bad) return;
    for (int32_t i = 0; i < n_vocab; ++i) {
        if (logits[i] < std::numeric_limits<float>::infinity()) continue;
        fail(MIXRT_ERR_NOT_FINITE, std::string("the model computed a logit of ") + (std::isnan(logits[i]) ? "NaN" : "+inf") +
             " (token " + std::to_string(i) + "): its weights or activations overflow float32 (a damaged or "
             "badly converted file?); nothing was sampled");
    }
}

double Sampler::uniform() {
    // xoshiro256**
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return (result >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(const float *logits, int32_t n_vocab, const std::vector<int32_t> &history) {
    check_logits_finite(logits, n_vocab);
    const float *l = logits;
    if (params_.repeat_penalty != 1.0f && params_.repeat_last_n > 0) {
        penalised_.assign(logits, logits + n_vocab);
        const size_t from = history.size() > size_t(params_.repeat_last_n) ? history.size() - params_.repeat_last_n : 0;
        std::vector<bool> seen(n_vocab, false);
        for (size_t i = from; i < history.size(); ++i) {
            const int32_t id = history[i];
            if (id < 0 || id >= n_vocab || seen[id]) continue;
            seen[id] = true;
            float &v = penalised_[id];
            v = v > 0 ? v / params_.repeat_penalty : v * params_.repeat_penalty;
        }
        l = penalised_.data();
    }
    if (params_.temperature <= 0.0f) return static_cast<int32_t>(std::max_element(l, l + n_vocab) - l);

    candidates_.resize(n_vocab);
    for (int32_t i = 0; i < n_vocab; ++i) candidates_[i] = {i, l[i], 0.0f};
    auto by_logit = [](const Candidate &a, const Candidate &b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); };
    size_t keep = candidates_.size();
    if (params_.top_k > 0 && size_t(params_.top_k) < keep) {
        keep = params_.top_k;
        std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
        candidates_.resize(keep);
    } else {
        std::sort(candidates_.begin(), candidates_.end(), by_logit);
    }
    // Softmax at the temperature (candidates are sorted, the first is the largest).
    double sum = 0;
    const double max_logit = candidates_[0].logit;
    for (auto &c : candidates_) {
        c.p = static_cast<float>(std::exp((c.logit - max_logit) / params_.temperature));
        sum += c.p;
    }
    for (auto &c : candidates_) c.p = static_cast<float>(c.p / sum);
    if (params_.top_p < 1.0f) {
        double cumulative = 0;
        size_t n = 0;
        while (n < candidates_.size()) {
            cumulative += candidates_[n++].p;
            if (cumulative >= params_.top_p) break;
        }
        candidates_.resize(n);
    }
    if (params_.min_p > 0.0f) {
        const float floor = params_.min_p * candidates_[0].p;
        size_t n = 1;
        while (n < candidates_.size() && candidates_[n].p >= floor) ++n;
        candidates_.resize(n);
    }
    double total = 0;
    for (const auto &c : candidates_) total += c.p;
    double r = uniform() * total;
    for (const auto &c : candidates_) {
        r -= c.p;
        if (r < 0) return c.id;
    }
    return candidates_.back().id;
}

}  // namespace mixrt
