// engine.cpp: the backend-independent parts of Engine (context size, feed checks, host argmax,
// sampling, activation sizes, the refusal of batched decoding by single-sequence engines).
#include "engine.h"

#include <algorithm>
#include <string>

#include "error.h"

namespace mixrt {

Engine::Engine(const LlamaModel &model, int32_t n_ctx)
    : model_(model), n_ctx_(n_ctx <= 0 ? std::min(model.params().context_length, MIXRT_DEFAULT_N_CTX) : n_ctx) {
    if (n_ctx_ > model.params().context_length)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "n_ctx " + std::to_string(n_ctx_) + " exceeds the model's context length " +
                                             std::to_string(model.params().context_length));
}

ActivationSizes activation_sizes(const LlamaParams &p, size_t batch) {
    const size_t q_width = size_t(p.n_heads) * p.head_dim;
    return {batch * p.hidden_size, batch * std::max<size_t>(p.hidden_size, q_width), batch * q_width,
            batch * size_t(p.n_kv_heads) * p.head_dim, batch * p.ffn_size};
}

void Engine::check_feed(const int32_t *tokens, size_t n) const {
    if (n == 0) fail(MIXRT_ERR_INVALID_ARGUMENT, "feed: no tokens given");
    if (tokens_.size() + n > size_t(n_ctx()))
        fail(MIXRT_ERR_CONTEXT_FULL, "feeding " + std::to_string(n) + " tokens after " + std::to_string(tokens_.size()) +
                                         " would exceed the context of " + std::to_string(n_ctx()) + " tokens");
    const int32_t vocab = model_.params().vocab_size;
    for (size_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            fail(MIXRT_ERR_INVALID_ARGUMENT, "token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                                 " is outside the vocabulary of " + std::to_string(vocab));
}

void Engine::decode(const mixrt_batch_entry *, size_t) {
    fail(MIXRT_ERR_INVALID_ARGUMENT, std::string("decode: batches of sequences run on the CPU backend only; the ") +
                                         backend_name() + " engine serves one sequence at a time (use feed)");
}

void Engine::seq_clear(int32_t seq) {
    if (seq != 0) fail(MIXRT_ERR_INVALID_ARGUMENT, "seq_clear: sequence " + std::to_string(seq) + " is not in this "
                                                   "context (it holds sequence 0 only)");
    reset();
}

int32_t Engine::argmax_last() const {
    const size_t vocab = size_t(model_.params().vocab_size);
    const float *last = logits() + (logits_rows() - 1) * vocab;
    check_logits_finite(last, int32_t(vocab));
    return static_cast<int32_t>(std::max_element(last, last + vocab) - last);
}

int32_t sample_next(Sampler &sampler, const Engine &engine) {
    if (engine.logits_rows() == 0)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "sampling: the context has no logits yet (feed tokens first)");
    if (sampler.is_plain_greedy()) return engine.argmax_last();
    const int32_t vocab = engine.model().params().vocab_size;
    const float *last = engine.logits() + (engine.logits_rows() - 1) * size_t(vocab);
    return sampler.sample(last, vocab, engine.tokens());
}

}  // namespace mixrt
