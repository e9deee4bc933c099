// engine.h: what an inference context does, whatever runs it: the CPU Context (context.h) and the
// CUDA backend's CudaContext (cuda/cuda_context.h) implement it; the C API, the sampler calls and
// the generation loop see only this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "llama_model.h"
#include "mixrt/mixrt.h"
#include "sampler.h"

namespace mixrt {

class Engine {
public:
    explicit Engine(const LlamaModel &model) : model_(model) {}
    virtual ~Engine() = default;
    Engine(const Engine &) = delete;
    Engine &operator=(const Engine &) = delete;

    const LlamaModel &model() const { return model_; }
    int32_t n_past() const { return static_cast<int32_t>(tokens_.size()); }
    const std::vector<int32_t> &tokens() const { return tokens_; }

    virtual const char *backend_name() const = 0;  // "cpu" or "cuda"
    virtual int32_t n_ctx() const = 0;
    // Forget all tokens (the KV cache is reused).
    virtual void reset() { tokens_.clear(); }
    // Runs the model over tokens; keeps the logits of every token if all_logits, else the last.
    // Throws mixrt::Error (MIXRT_ERR_CONTEXT_FULL, MIXRT_ERR_INVALID_ARGUMENT, ...).
    virtual void feed(const int32_t *tokens, size_t n, bool all_logits) = 0;
    // The last feed's logits on the host, logits_rows() rows of vocab_size floats.
    virtual const float *logits() const = 0;
    virtual size_t logits_rows() const = 0;
    // The argmax of the last logits row (lowest id among equal maxima).
    virtual int32_t argmax_last() const;
    // Calibration hook (see mixrt_context_set_capture); nullptr disables it.
    virtual void set_capture(mixrt_capture_fn fn, void *user) = 0;

protected:
    // Checks a feed before it runs: tokens given, in the vocabulary, room in the context.
    void check_feed(const int32_t *tokens, size_t n) const;

    const LlamaModel &model_;
    std::vector<int32_t> tokens_;  // fed so far
};

// The next token from the engine's last logits: plain greedy (no penalty) asks the engine for its
// argmax, so a GPU backend hands over one token instead of the logits; anything else samples the
// logits on the host.
int32_t sample_next(Sampler &sampler, const Engine &engine);

}  // namespace mixrt
