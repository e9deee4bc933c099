// tokenizer.cpp: Tokenizer::create, the checks every tokenizer spec must pass and the choice of
// implementation by tokenizer.model. Tested by tests/test_tokenizer.py.
#include "text/tokenizer.h"

#include "text/byte_bpe_tokenizer.h"
#include "error.h"
#include "text/sentencepiece_tokenizer.h"

namespace mixrt {

namespace {

void check_special_id(const char *key, int32_t id, size_t vocab_size) {
    if (id < -1 || id >= static_cast<int64_t>(vocab_size)) {
        fail(MIXRT_ERR_FORMAT, std::string(key) + " is " + std::to_string(id) +
                                   ", expected -1 or an id below " + std::to_string(vocab_size));
    }
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::create(const TokenizerSpec &spec) {
    const size_t n = spec.tokens.size();
    if (n == 0) fail(MIXRT_ERR_FORMAT, "tokenizer.tokens is empty");
    if (spec.token_types.size() != n) {
        fail(MIXRT_ERR_FORMAT, "tokenizer.token_types has " +
                                   std::to_string(spec.token_types.size()) +
                                   " entries, expected one per token (" + std::to_string(n) + ")");
    }
    for (size_t i = 0; i < n; ++i) {
        const int32_t type = spec.token_types[i];
        if (type < static_cast<int32_t>(TokenType::normal) ||
            type > static_cast<int32_t>(TokenType::byte)) {
            fail(MIXRT_ERR_FORMAT, "tokenizer.token_types entry " + std::to_string(i) + " is " +
                                       std::to_string(type) + ", expected 1..6");
        }
    }
    check_special_id("tokenizer.bos_id", spec.bos_id, n);
    check_special_id("tokenizer.eos_id", spec.eos_id, n);
    check_special_id("tokenizer.unk_id", spec.unk_id, n);

    if (spec.model == "byte_bpe") return std::make_unique<ByteBpeTokenizer>(spec);
    if (spec.model == "sentencepiece_bpe") return std::make_unique<SentencepieceTokenizer>(spec);
    fail(MIXRT_ERR_FORMAT, "tokenizer.model '" + spec.model +
                               "' is not supported: expected byte_bpe or sentencepiece_bpe");
}

}  // namespace mixrt
