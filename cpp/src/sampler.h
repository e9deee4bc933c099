// sampler.h: picks the next token from logits: repetition penalty, then greedy (temperature <= 0)
// or top-k -> temperature -> softmax -> top-p -> min-p -> a draw from a seeded xoshiro256**
// generator. Deterministic for a given seed. NaN or +inf logits are refused (MIXRT_ERR_NOT_FINITE)
// before anything is sampled. Tested in tests/test_generation.py.
#pragma once

#include <cstdint>
#include <vector>

#include "mixrt/mixrt.h"

namespace mixrt {

// Throws Error(MIXRT_ERR_NOT_FINITE) naming the first NaN or +inf logit (-inf, a token ruled out,
// is allowed).
void check_logits_finite(const float *logits, int32_t n_vocab);

class Sampler {
public:
    explicit Sampler(const mixrt_sampler_params &params);  // throws on out-of-range parameters
    // Throws Error(MIXRT_ERR_NOT_FINITE) if a logit is NaN or +inf.
    int32_t sample(const float *logits, int32_t n_vocab, const std::vector<int32_t> &history);
    // Greedy without a repetition penalty: the result is the argmax of the logits alone.
    bool is_plain_greedy() const {
        return params_.temperature <= 0.0f && (params_.repeat_penalty == 1.0f || params_.repeat_last_n == 0);
    }

private:
    double uniform();  // [0, 1)

    mixrt_sampler_params params_;
    uint64_t state_[4];
    struct Candidate {
        int32_t id;
        float logit;
        float p;
    };
    std::vector<Candidate> candidates_;
    std::vector<float> penalised_;
};

}  // namespace mixrt
