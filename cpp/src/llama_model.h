// llama_model.h: a Llama model bound to a validated ModelFile: hyperparameters with the variants of
// FORMAT.md 3.3 (RoPE scaling, biases, sliding window), per-layer weight views and the tokenizer
// (FORMAT.md 3.1 and 4.1). Loading errors name the key or tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/model_file.h"
#include "rope.h"
#include "text/tokenizer.h"

namespace mixrt {

struct LlamaParams {
    int32_t vocab_size, hidden_size, n_layers, n_heads, n_kv_heads, head_dim, ffn_size, context_length;
    double rope_theta, rms_norm_eps;
    bool tie_word_embeddings;
    RopeScaling rope_scaling;
    int32_t sliding_window;  // 0: every earlier position is visible; else the last sliding_window ones
    bool bias_qkv, bias_attn_output, bias_mlp;  // llama.bias.*: which matrices add a bias
};

// The weights of one decoder layer, held as W: views into the file (Weight) here, copies on a
// device in a backend (cuda/device_model.h).
template <typename W>
struct LayerOf {
    W attn_norm, attn_q, attn_k, attn_v, attn_output;
    W ffn_norm, ffn_gate, ffn_up, ffn_down;
};
using LayerWeights = LayerOf<Weight>;

// The f32 biases of one layer's matrices (FORMAT.md 3.3), nullptr where the model has none.
struct LayerBiases {
    const float *attn_q = nullptr, *attn_k = nullptr, *attn_v = nullptr, *attn_output = nullptr;
    const float *ffn_gate = nullptr, *ffn_up = nullptr, *ffn_down = nullptr;
};

// The layer with every weight passed through f (in the order above), e.g. uploaded.
template <typename W, typename F>
auto map_layer(const LayerOf<W> &l, F &&f) -> LayerOf<decltype(f(l.attn_q))> {
    return {f(l.attn_norm), f(l.attn_q), f(l.attn_k), f(l.attn_v), f(l.attn_output),
            f(l.ffn_norm),  f(l.ffn_gate), f(l.ffn_up), f(l.ffn_down)};
}

class LlamaModel {
public:
    explicit LlamaModel(const std::string &path);  // throws mixrt::Error

    const ModelFile &file() const { return file_; }
    const LlamaParams &params() const { return params_; }
    const Tokenizer &tokenizer() const { return *tokenizer_; }
    int32_t bos_id() const { return bos_id_; }
    int32_t eos_id() const { return eos_id_; }

    const Weight &token_embd() const { return token_embd_; }
    const Weight &output_norm() const { return output_norm_; }
    const Weight &output() const { return output_; }  // token_embd when tied
    const std::vector<LayerWeights> &layers() const { return layers_; }
    const std::vector<LayerBiases> &biases() const { return biases_; }
    bool has_biases() const { return params_.bias_qkv || params_.bias_attn_output || params_.bias_mlp; }

private:
    void read_params();
    void read_variants();
    void read_tokenizer();
    void bind_weights();
    enum class Role { norm, embedding, linear };  // which dtypes a tensor may have (FORMAT.md 5.8)
    Weight weight(const std::string &name, int64_t rows, int64_t cols, Role role) const;

    ModelFile file_;
    LlamaParams params_{};
    std::unique_ptr<Tokenizer> tokenizer_;
    int32_t bos_id_ = -1, eos_id_ = -1;
    Weight token_embd_{}, output_norm_{}, output_{};
    std::vector<LayerWeights> layers_;
    std::vector<LayerBiases> biases_;
};

}  // namespace mixrt
