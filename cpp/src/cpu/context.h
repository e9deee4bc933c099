// context.h: the CPU inference context (an Engine): the KV cache of one or several sequences,
// scratch buffers, the thread pool. feed() runs the Llama forward pass (context.cpp) over a batch
// of tokens of sequence 0; decode() over a batch of (sequence, token, position) entries.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/cpu_model.h"
#include "cpu/kernels.h"
#include "cpu/quantized_input.h"
#include "engine.h"
#include "llama_model.h"
#include "cpu/thread_pool.h"

namespace mixrt {

// Frees with std::free; calloc'ed so untouched KV cache pages cost no memory.
struct FreeDeleter {
    void operator()(void *p) const;
};
using CacheBuffer = std::unique_ptr<void, FreeDeleter>;

class Context : public Engine {
public:
    // Tokens per forward pass; longer feeds are processed in chunks of this size.
    static constexpr int32_t kMaxBatch = 512;

    // weights: the model's weights as the CPU reads them (cpu_model.h); both must outlive this.
    // n_seq: sequences of n_ctx positions each (batched decoding).
    Context(const LlamaModel &model, const CpuWeights &weights, int32_t n_ctx, int32_t n_threads,
            mixrt_kv_type kv, mixrt_activations activations = MIXRT_ACT_DEFAULT,
            int32_t n_seq = 1);  // throws mixrt::Error

    const char *backend_name() const override { return "cpu"; }
    int32_t n_threads() const { return pool_.size(); }

    void feed(const int32_t *tokens, size_t n, bool all_logits) override;
    void decode(const mixrt_batch_entry *entries, size_t n) override;
    int32_t n_seq() const override { return n_seq_; }
    int32_t seq_len(int32_t seq) const override;
    void seq_clear(int32_t seq) override;
    void reset() override;
    const float *logits() const override { return logits_.data(); }
    size_t logits_rows() const override { return logits_rows_; }
    void set_capture(mixrt_capture_fn fn, void *user) override {
        capture_ = fn;
        capture_user_ = user;
    }

private:
    // The rows of one forward pass: token, sequence and position of each, and which rows' logits
    // to keep (logit_rows, ascending) at logits_ rows out_row0 onwards.
    struct Rows {
        const int32_t *tokens, *seq, *pos;
        int32_t n;
        const int32_t *logit_rows;
        int32_t n_logit_rows;
        size_t out_row0;
    };
    void forward(const Rows &rows);

    // Kernel helpers, parallel over output rows.
    void matmul(const TiledMatrix &w, const float *x, float *out, int32_t n);
    // x [n, K] as every matmul reads it: x itself, or rounded by the activations option into xa_.
    const float *activations(const float *x, int32_t n, int64_t K);
    void rmsnorm(const float *x, const Weight &gain, float *out, int32_t n) const;
    void rope(float *x, const Rows &rows, int32_t n_heads) const;
    void attention(int layer, const Rows &rows);
    template <typename KV>
    void attention(const KV *K, const KV *V, const Rows &rows);
    void store_kv(int layer, const Rows &rows);
    size_t kv_offset(int layer, int32_t seq, int32_t pos) const;  // in values, into k_cache_ / v_cache_
    void swiglu_with_biases(const LayerOf<TiledMatrix> &w, const LayerBiases &b, int32_t n);
    void capture(int32_t layer, int32_t site, const float *x, int32_t n, int64_t width) const {
        if (capture_) capture_(capture_user_, layer, site, x, n, static_cast<int32_t>(width));
    }

    const LlamaParams &p_;
    const CpuWeights &weights_;
    const CpuKernels &kernels_;
    ThreadPool pool_;

    // RoPE tables (rope.h), (n_ctx, head_dim/2).
    std::vector<float> rope_cos_, rope_sin_;
    // KV cache: (layer, sequence, n_ctx, n_kv_heads * head_dim) each, keys after RoPE, f16 or f32 (kv_).
    int32_t n_seq_;
    std::vector<int32_t> seq_len_;  // tokens each sequence holds (sequence 0: Engine::tokens_)
    mixrt_kv_type kv_;
    CacheBuffer k_cache_, v_cache_;
    // Activations of one batch (activation_sizes(kMaxBatch)).
    std::vector<float> x_, xb_, q_, k_, v_, att_, gate_, up_;
    mixrt_activations activations_;
    std::vector<float> xa_;  // matmul inputs rounded by the activations option (empty without it)
    // Inputs of quantized matmuls, rounded to 8-bit groups: [0] of any width; [1] and [2] (hidden
    // size) for the matmuls that share a parallel region with [0]'s (K and V with Q, up with gate).
    QuantizedInputBuffer xq_[3];
    std::vector<float> scores_;  // (n_threads, n_ctx): attention probabilities per thread
    std::vector<float> logits_;  // (rows, vocab)
    size_t logits_rows_ = 0;
    mixrt_capture_fn capture_ = nullptr;
    void *capture_user_ = nullptr;
};

}  // namespace mixrt
