// text_stream.h: sampled tokens -> streamed text. Stops on EOS, a stop string or max_tokens, and
// hands out only complete UTF-8 that can no longer become part of a stop string. Generation
// (generation.h) runs one over a context it feeds; callers that sample themselves (batched
// decoding, mixrt_text_stream_*) push tokens into one per sequence. Tested by
// tests/test_generation.py and tests/test_batched_decode.py.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mixrt/mixrt.h"
#include "text/tokenizer.h"

namespace mixrt {

class TextStream {
public:
    // tokenizer must outlive the stream; empty stop strings are ignored.
    TextStream(const Tokenizer &tokenizer, int32_t eos_id, int32_t max_tokens, std::vector<std::string> stop);

    // Takes the next token: the reason the stream stopped (MIXRT_STOP_NONE while it goes on), and
    // in piece the text that can be handed out now (possibly empty). After a stop it takes nothing.
    mixrt_stop_reason push(int32_t token, std::string &piece);
    mixrt_stop_reason reason() const { return reason_; }
    int32_t n_generated() const { return n_generated_; }

private:
    void finish(mixrt_stop_reason reason, size_t end, std::string &piece);

    const Tokenizer &tokenizer_;
    int32_t eos_id_, max_tokens_;
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
