// byte_bpe_tokenizer.h: GPT-2 style byte-level BPE (tokenizer.model "byte_bpe") with the GPT-2,
// Llama 3 or Qwen2 pre-tokenizer (tokenizer.pre), matching the `tokenizers` library token for
// token. Tested by tests/test_tokenizer.py.
//
// Encoding: invalid UTF-8 is first replaced by U+FFFD (as Python's bytes.decode(errors="replace")
// does), so the result equals the reference on the repaired text. Literal tokens are cut out (all
// user-defined ones; control ones too with parse_special); each remaining piece is split by the
// pre-tokenizer's pattern (after NFC normalization if the vocabulary asks for it, as Qwen2's does),
// mapped to the byte alphabet and merged by rank (with ignore_merges, a word that is a token of the
// vocabulary is taken whole first, as Llama 3's tokenizer does). A byte whose single-byte token is
// missing from the vocabulary is dropped, as the reference does (SmolLM2 lacks e.g. 0x04, 0xC0).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/literal_matcher.h"
#include "text/pretokenizer.h"
#include "text/tokenizer.h"

namespace mixrt {

class ByteBpeTokenizer final : public Tokenizer {
public:
    // Throws mixrt::Error(MIXRT_ERR_FORMAT) for a merge that is malformed or names unknown tokens.
    explicit ByteBpeTokenizer(const TokenizerSpec &spec);

    std::vector<int32_t> encode(std::string_view text, bool add_bos,
                                bool parse_special) const override;
    std::string token_bytes(int32_t id, bool render_special) const override;
    std::string decode(const std::vector<int32_t> &ids, bool render_special) const override;
    int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }

private:
    struct Merge {
        int32_t rank;
        int32_t result;
    };
    using WordCache = std::unordered_map<std::string_view, std::vector<int32_t>>;

    void encode_plain(std::string_view text, WordCache &cache, std::vector<int32_t> &out) const;
    std::vector<int32_t> encode_word(std::string_view word) const;
    const Merge *find_merge(int32_t left, int32_t right) const;

    std::vector<std::string> bytes_;  // per token: the bytes it stands for
    std::vector<TokenType> types_;
    std::array<int32_t, 256> byte_token_;  // the token of each single byte, -1 if none
    std::unordered_map<uint64_t, Merge> merges_;  // key: left id << 32 | right id
    PreTokenizer pre_tokenizer_;
    bool nfc_;
    std::unordered_map<std::string_view, int32_t> whole_words_;  // ignore_merges: normal tokens by their text
    LiteralMatcher user_defined_;  // always matched
    LiteralMatcher all_literals_;  // control and user-defined: matched with parse_special
    int32_t bos_id_;
};

}  // namespace mixrt
