// rope.h: the rotary position embedding's angles (FORMAT.md 3.1 and 3.3): each pair i of a head
// turns by pos * inv_freq[i], with inv_freq from the RoPE base and, for the models that extend
// their context, one of the scaling variants of transformers / llama.cpp (linear, dynamic NTK,
// YaRN, Llama 3) and per-pair frequency divisors (GGUF's rope_freqs). Every backend reads the same
// tables. Tested against the float64 reference by tests/test_model_variants.py.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mixrt {

enum class RopeScalingType { none, linear, dynamic, yarn, llama3 };

// llama.rope.* of FORMAT.md 3.3; the parameters a type does not use keep their defaults.
struct RopeScaling {
    RopeScalingType type = RopeScalingType::none;
    double factor = 1.0;
    int64_t original_context_length = 0;                 // dynamic, yarn, llama3
    double low_freq_factor = 0.0, high_freq_factor = 0.0;  // llama3
    double beta_fast = 0.0, beta_slow = 0.0;             // yarn
    double attention_factor = 1.0;                       // yarn: cos and sin are scaled by it
    std::vector<float> freq_factors;                     // empty, or head_dim/2 divisors of inv_freq
};

const char *rope_scaling_name(RopeScalingType type);

// The tables [n_ctx, head_dim/2]: attention_factor x cos and sin of pos * inv_freq(pos)[i],
// computed in double and rounded to float. inv_freq depends on pos only for dynamic scaling.
void rope_tables(int32_t n_ctx, int32_t head_dim, double theta, std::vector<float> &cos_table,
                 std::vector<float> &sin_table, const RopeScaling &scaling = {});

}  // namespace mixrt
