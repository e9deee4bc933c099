// generation.h: prompt -> streamed text. Samples token after token, stops on EOS, a stop string
// or max_tokens, and hands out only complete UTF-8 that can no longer become part of a stop
// string. Used by the C API (mixrt_generation_*), hence by Python and the C example.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine.h"
#include "mixrt/mixrt.h"
#include "sampler.h"

namespace mixrt {

class Generation {
public:
    Generation(Engine &ctx, Sampler &sampler, const int32_t *prompt, size_t n_prompt, int32_t max_tokens,
               std::vector<std::string> stop);  // feeds the prompt; throws mixrt::Error

    // The next piece of text (possibly empty when stopping) and why it stopped, if it did.
    mixrt_stop_reason next(std::string &piece);
    int32_t n_generated() const { return n_generated_; }

private:
    void finish(mixrt_stop_reason reason, size_t end, std::string &piece);

    Engine &ctx_;
    Sampler &sampler_;
    int32_t max_tokens_;
    std::vector<std::string> stop_;
    std::string text_;    // bytes generated so far
    size_t emitted_ = 0;  // bytes of text_ handed out
    int32_t n_generated_ = 0;
    mixrt_stop_reason reason_ = MIXRT_STOP_NONE;
};

// Length of the longest prefix of s[0, n) that ends on a UTF-8 character boundary, keeping an
// incomplete multibyte sequence at the end back for more bytes.
size_t complete_utf8_prefix(const std::string &s, size_t n);
// s with every ill-formed UTF-8 sequence replaced by U+FFFD, as Python's errors="replace" does.
std::string repair_utf8(const std::string &s);

}  // namespace mixrt
