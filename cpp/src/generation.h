// generation.h: prompt -> streamed text. Samples token after token from one context and feeds it
// back, turning the tokens into text with a TextStream (EOS, stop strings, max_tokens, complete
// UTF-8 only). Used by the C API (mixrt_generation_*), hence by Python and the C example.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine.h"
#include "mixrt/mixrt.h"
#include "sampler.h"
#include "text_stream.h"

namespace mixrt {

class Generation {
public:
    Generation(Engine &ctx, Sampler &sampler, const int32_t *prompt, size_t n_prompt, int32_t max_tokens,
               std::vector<std::string> stop);  // feeds the prompt; throws mixrt::Error

    // The next piece of text (possibly empty when stopping) and why it stopped, if it did.
    mixrt_stop_reason next(std::string &piece);
    int32_t n_generated() const { return text_.n_generated(); }

private:
    Engine &ctx_;
    Sampler &sampler_;
    TextStream text_;
};

}  // namespace mixrt
