// text_stream.cpp: see text_stream.h. Stop strings are searched only in text not yet handed out,
// which is enough because a suffix that could begin a stop string is always held back.
#include "text_stream.h"

#include <algorithm>

#include "error.h"
#include "text/unicode.h"

namespace mixrt {

size_t complete_utf8_prefix(const std::string &s, size_t n) {
    const std::string_view text(s.data(), n);
    // A character is at most 4 bytes, so an incomplete one starts in the last 3.
    for (size_t start = n > 3 ? n - 3 : 0; start < n; ++start) {
        const unsigned char lead = static_cast<unsigned char>(s[start]);
        if (lead < 0xC2 || lead > 0xF4) continue;  // cannot start a multibyte character
        const unicode::Utf8Char c = unicode::decode_utf8(text, start);
        if (!c.valid && start + c.length == n) return start;  // well-formed so far, cut by the end
    }
    return n;
}

std::string repair_utf8(const std::string &s) { return unicode::repair_utf8(s, unicode::Repair::per_sequence); }

TextStream::TextStream(const Tokenizer &tokenizer, int32_t eos_id, int32_t max_tokens, std::vector<std::string> stop)
    : tokenizer_(tokenizer), eos_id_(eos_id), max_tokens_(max_tokens), stop_(std::move(stop)) {
    if (max_tokens < 0) fail(MIXRT_ERR_INVALID_ARGUMENT, "max_tokens is negative");
    stop_.erase(std::remove(stop_.begin(), stop_.end(), std::string()), stop_.end());
    if (max_tokens == 0) reason_ = MIXRT_STOP_MAX_TOKENS;
}

void TextStream::finish(mixrt_stop_reason reason, size_t end, std::string &piece) {
    piece = repair_utf8(text_.substr(emitted_, end - emitted_));
    emitted_ = end;
    reason_ = reason;
}

mixrt_stop_reason TextStream::push(int32_t token, std::string &piece) {
    piece.clear();
    if (reason_ != MIXRT_STOP_NONE) return reason_;
    if (token == eos_id_) {
        finish(MIXRT_STOP_EOS, text_.size(), piece);
        return reason_;
    }
    ++n_generated_;
    text_ += tokenizer_.token_bytes(token, false);

    // A stop string found in the text not yet handed out ends the stream before it.
    size_t stop_at = std::string::npos;
    for (const auto &s : stop_) stop_at = std::min(stop_at, text_.find(s, emitted_));
    if (stop_at != std::string::npos) {
        finish(MIXRT_STOP_STRING, stop_at, piece);
        return reason_;
    }
    if (n_generated_ >= max_tokens_) {
        finish(MIXRT_STOP_MAX_TOKENS, text_.size(), piece);
        return reason_;
    }
    // Hold back a suffix that may still grow into a stop string, and incomplete UTF-8.
    size_t safe = text_.size();
    for (const auto &s : stop_)
        for (size_t len = std::min(s.size() - 1, text_.size() - emitted_); len > 0; --len)
            if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
                safe = std::min(safe, text_.size() - len);
                break;
            }
    safe = complete_utf8_prefix(text_, safe);
    if (safe > emitted_) {
        piece = repair_utf8(text_.substr(emitted_, safe - emitted_));
        emitted_ = safe;
    }
    return MIXRT_STOP_NONE;
}

}  // namespace mixrt
