// tokenizer.h: native tokenizers over the vocabulary stored in a .mixrt file (FORMAT.md 3.2):
// GPT-2 style byte-level BPE and sentencepiece BPE with byte fallback. Tested token for token
// against the `tokenizers` and `sentencepiece` libraries by tests/test_tokenizer.py.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mixrt {

enum class TokenType : int32_t {
    normal = 1,
    unknown = 2,
    control = 3,
    user_defined = 4,
    unused = 5,
    byte = 6,
};

// What the file says about the tokenizer; the views point into the mapped file.
struct TokenizerSpec {
    std::string model;  // "byte_bpe" or "sentencepiece_bpe"
    std::vector<std::string_view> tokens;
    std::vector<int32_t> token_types;
    std::vector<float> scores;             // sentencepiece_bpe only
    std::vector<std::string_view> merges;  // byte_bpe only, "left right" in rank order
    std::string pre_tokenizer = "gpt2";    // byte_bpe only: gpt2, llama3 or qwen2 (pretokenizer.h)
    bool ignore_merges = false;            // byte_bpe only: words in the vocabulary are taken whole
    bool nfc = false;                      // byte_bpe only: text is NFC-normalized before splitting
    int32_t bos_id = -1;
    int32_t eos_id = -1;
    int32_t unk_id = -1;
    bool add_bos = false;
    bool add_space_prefix = true;  // sentencepiece_bpe only
};

class Tokenizer {
public:
    // Throws mixrt::Error(MIXRT_ERR_FORMAT) naming the problem if the spec is inconsistent.
    static std::unique_ptr<Tokenizer> create(const TokenizerSpec &spec);
    virtual ~Tokenizer() = default;

    // Encodes text (arbitrary bytes; invalid UTF-8 is handled, never a crash). parse_special:
    // control tokens written literally in the text become their ids.
    virtual std::vector<int32_t> encode(std::string_view text, bool add_bos,
                                        bool parse_special) const = 0;
    // The bytes one token stands for inside running text (no leading-space stripping); control
    // tokens give their text only if render_special.
    virtual std::string token_bytes(int32_t id, bool render_special) const = 0;
    // The text of a whole sequence, as the reference library's decode gives it.
    virtual std::string decode(const std::vector<int32_t> &ids, bool render_special) const = 0;
    virtual int32_t vocab_size() const = 0;
};

}  // namespace mixrt
