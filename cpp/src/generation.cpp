// generation.cpp: see generation.h.
#include "generation.h"

#include "error.h"

namespace mixrt {

Generation::Generation(Engine &ctx, Sampler &sampler, const int32_t *prompt, size_t n_prompt, int32_t max_tokens,
                       std::vector<std::string> stop)
    : ctx_(ctx),
      sampler_(sampler),
      text_(ctx.model().tokenizer(), ctx.model().eos_id(), max_tokens, std::move(stop)) {
    if (n_prompt == 0 && ctx.n_past() == 0)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "the prompt is empty and the context holds no tokens: nothing to continue");
    const size_t needed = size_t(ctx.n_past()) + n_prompt + size_t(max_tokens);
    if (needed > size_t(ctx.n_ctx()))
        fail(MIXRT_ERR_CONTEXT_FULL, "the prompt (" + std::to_string(n_prompt) + " tokens) plus max_tokens (" +
                                         std::to_string(max_tokens) + ")" +
                                         (ctx.n_past() ? " after " + std::to_string(ctx.n_past()) + " tokens" : std::string()) +
                                         " need " + std::to_string(needed) + " positions, the context holds " +
                                         std::to_string(ctx.n_ctx()));
    if (n_prompt > 0) ctx_.feed(prompt, n_prompt, false);
}

mixrt_stop_reason Generation::next(std::string &piece) {
    piece.clear();
    while (text_.reason() == MIXRT_STOP_NONE) {
        const int32_t token = sample_next(sampler_, ctx_);
        if (text_.push(token, piece) != MIXRT_STOP_NONE) break;
        ctx_.feed(&token, 1, false);
        if (!piece.empty()) break;
    }
    return text_.reason();
}

}  // namespace mixrt
