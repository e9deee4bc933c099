// engine.h: what an inference context does, whatever runs it: the CPU Context (cpu/context.h) and
// the CUDA backend's CudaContext (cuda/cuda_context.h) implement it; the C API, the sampler calls
// and the generation loop see only this interface. What every backend does the same way lives
// here once: the context size and its check, the feed checks, the chunking of a feed and which
// logits each chunk keeps, the RoPE tables and the sizes of the activation buffers.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "llama_model.h"
#include "mixrt/mixrt.h"
#include "rope.h"
#include "sampler.h"

namespace mixrt {

// Which logits the forward pass over one chunk of a feed keeps.
struct ChunkLogits {
    enum Rows { none, last, all } rows;  // none: a chunk before the last of a feed without all_logits
    size_t row0;                         // all: the logits row of the chunk's first token; else 0
};

// The activation buffers of a forward pass over up to `batch` tokens, in floats each.
struct ActivationSizes {
    size_t x;     // the residual stream [batch, hidden]
    size_t xb;    // normed inputs and block outputs [batch, max(hidden, heads * head_dim)]
    size_t q;     // queries, and the attention outputs [batch, heads * head_dim]
    size_t kv;    // keys, values [batch, kv_heads * head_dim]
    size_t ffn;   // gate, up [batch, ffn]
};
ActivationSizes activation_sizes(const LlamaParams &p, size_t batch);

class Engine {
public:
    // n_ctx: tokens the context holds, 0 for min(the model's context length, MIXRT_DEFAULT_N_CTX);
    // more than the model's context length is refused.
    Engine(const LlamaModel &model, int32_t n_ctx);
    virtual ~Engine() = default;
    Engine(const Engine &) = delete;
    Engine &operator=(const Engine &) = delete;

    const LlamaModel &model() const { return model_; }
    int32_t n_past() const { return static_cast<int32_t>(tokens_.size()); }
    const std::vector<int32_t> &tokens() const { return tokens_; }

    virtual const char *backend_name() const = 0;  // "cpu" or "cuda"
    int32_t n_ctx() const { return n_ctx_; }
    // Forget all tokens of every sequence (the KV cache is reused).
    virtual void reset() { tokens_.clear(); }
    // Batched decoding of several sequences (mixrt_context_decode); sequence 0 is the one feed()
    // and n_past() see. Engines that hold one sequence only refuse it.
    virtual int32_t n_seq() const { return 1; }
    virtual int32_t seq_len(int32_t seq) const { return seq == 0 ? n_past() : -1; }
    virtual void decode(const mixrt_batch_entry *entries, size_t n);
    virtual void seq_clear(int32_t seq);
    // Runs the model over tokens; keeps the logits of every token if all_logits, else the last.
    // Throws mixrt::Error (MIXRT_ERR_CONTEXT_FULL, MIXRT_ERR_INVALID_ARGUMENT, ...).
    virtual void feed(const int32_t *tokens, size_t n, bool all_logits) = 0;
    // The last feed's logits on the host, logits_rows() rows of vocab_size floats.
    virtual const float *logits() const = 0;
    virtual size_t logits_rows() const = 0;
    // The argmax of the last logits row (lowest id among equal maxima); the host version refuses
    // NaN or +inf logits (check_logits_finite).
    virtual int32_t argmax_last() const;
    // Calibration hook (see mixrt_context_set_capture); nullptr disables it.
    virtual void set_capture(mixrt_capture_fn fn, void *user) = 0;

protected:
    // Checks a feed before it runs: tokens given, in the vocabulary, room in the context.
    void check_feed(const int32_t *tokens, size_t n) const;

    // Runs a feed of n tokens in chunks of at most max_batch: forward(offset, count, logits) for
    // each chunk in order (logits: the rows it keeps), appending the chunk to tokens() after it.
    template <typename Forward>
    void run_chunks(const int32_t *tokens, size_t n, bool all_logits, int32_t max_batch, Forward &&forward) {
        for (size_t done = 0; done < n;) {
            const int32_t count = static_cast<int32_t>(std::min<size_t>(size_t(max_batch), n - done));
            const bool last = done + count == n;
            const ChunkLogits logits = all_logits ? ChunkLogits{ChunkLogits::all, done}
                                                  : ChunkLogits{last ? ChunkLogits::last : ChunkLogits::none, 0};
            forward(done, count, logits);
            tokens_.insert(tokens_.end(), tokens + done, tokens + done + count);
            done += count;
        }
    }

    const LlamaModel &model_;
    const int32_t n_ctx_;
    std::vector<int32_t> tokens_;  // fed so far
};

// The next token from the engine's last logits: plain greedy (no penalty) asks the engine for its
// argmax, so a GPU backend hands over one token instead of the logits; anything else samples the
// logits on the host.
int32_t sample_next(Sampler &sampler, const Engine &engine);

}  // namespace mixrt
