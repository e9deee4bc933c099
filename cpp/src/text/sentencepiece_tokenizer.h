// sentencepiece_tokenizer.h: sentencepiece BPE with byte fallback (tokenizer.model
// "sentencepiece_bpe"), matching the `sentencepiece` library token for token for models with the
// identity normalizer (Llama-2 and its kin). Tested by tests/test_tokenizer.py.
//
// Encoding follows the library: invalid UTF-8 bytes each become U+FFFD; spaces become U+2581
// ("▁"), one more in front if add_space_prefix; user-defined pieces are cut out first and never
// merged; then adjacent symbols are merged, highest score first (leftmost on ties); a symbol that
// is no piece becomes byte tokens <0xXX> (or, if the vocabulary has no bytes, the unknown token,
// once per run of such symbols).
// With parse_special, control tokens written in the text are cut out before all this, and each
// text segment between them is encoded on its own (with its own space prefix, like llama.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "text/literal_matcher.h"
#include "text/tokenizer.h"

namespace mixrt {

class SentencepieceTokenizer final : public Tokenizer {
public:
    // Throws mixrt::Error(MIXRT_ERR_FORMAT) if scores are missing or a byte token is malformed.
    explicit SentencepieceTokenizer(const TokenizerSpec &spec);
    SentencepieceTokenizer(const SentencepieceTokenizer &) = delete;  // piece_ids_ views pieces_
    SentencepieceTokenizer &operator=(const SentencepieceTokenizer &) = delete;

    std::vector<int32_t> encode(std::string_view text, bool add_bos,
                                bool parse_special) const override;
    std::string token_bytes(int32_t id, bool render_special) const override;
    std::string decode(const std::vector<int32_t> &ids, bool render_special) const override;
    int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }

private:
    // How the merge loop remembers what an unused piece was made of.
    using Unmerges =
        std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>;

    void encode_segment(std::string_view text, std::vector<int32_t> &out) const;
    std::vector<int32_t> encode_word(std::string_view word) const;
    void emit_symbol(std::string_view symbol, const Unmerges &unmerges,
                     std::vector<int32_t> &out) const;
    int32_t find(std::string_view piece) const;  // -1 if not a piece
    bool mergeable(int32_t id) const;

    std::vector<std::string> pieces_;
    std::vector<TokenType> types_;
    std::vector<float> scores_;
    std::unordered_map<std::string_view, int32_t> piece_ids_;  // views into pieces_
    std::array<int32_t, 256> byte_ids_;  // <0xXX> tokens, -1 where missing
    bool has_byte_tokens_ = false;
    // Characters some piece holds right before a "▁". Elsewhere no piece spans the boundary in
    // front of a "▁", so the text is cut there into words that are merged independently.
    std::unordered_set<uint32_t> chars_before_space_;
    LiteralMatcher user_defined_;  // matched in the normalized text, always
    LiteralMatcher control_;       // matched in the raw text with parse_special
    int32_t bos_id_;
    int32_t unk_id_;
    bool add_space_prefix_;
};

}  // namespace mixrt
