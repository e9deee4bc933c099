// fuzz_tokenizer.cpp: libFuzzer target of the tokenizers. The models named by the environment
// variable MIXRT_FUZZ_TOKENIZER_MODELS (.mixrt files separated by ':', one per tokenizer kind:
// sentencepiece BPE, byte-level BPE with the GPT-2, Llama 3 and Qwen2 pre-tokenizers) are loaded
// once. An input's first byte picks the model and the flags (BOS, control tokens in the text), the
// rest is the text: it is encoded, every id must be in the vocabulary, and the ids are decoded;
// byte-level BPE without a normalizer must give valid UTF-8 text back exactly. The same bytes are
// also read as token ids (in range or not) and decoded. Built by MIXRT_FUZZ=ON, run by
// tools/check_sanitizers.sh.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "mixrt/mixrt.h"

namespace {

struct FuzzModel {
    mixrt_model *model;
    bool exact_round_trip;  // byte_bpe without a normalizer
};
std::vector<FuzzModel> models;

[[noreturn]] void defect(const char *what) {
    std::fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    std::abort();
}

bool meta_string_is(mixrt_model *model, const char *key, std::string_view value) {
    const char *s;
    size_t len;
    return mixrt_model_meta_string(model, key, &s, &len) == MIXRT_OK && std::string_view(s, len) == value;
}

// Well-formed UTF-8 (no surrogates, no overlong forms, at most U+10FFFF). Written here rather than
// taken from text/unicode.h: the oracle must not share the code it checks.
bool valid_utf8(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n;) {
        const uint8_t c = p[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) { ++i; continue; }
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

std::vector<int32_t> encode(mixrt_model *model, const uint8_t *text, size_t n, int add_bos, int special) {
    std::vector<int32_t> ids(n + 2);
    size_t count = 0;
    mixrt_status st = mixrt_tokenize(model, reinterpret_cast<const char *>(text), n, add_bos, special, ids.data(),
                                     ids.size(), &count);
    if (st == MIXRT_ERR_BUFFER_TOO_SMALL) {
        ids.resize(count);
        st = mixrt_tokenize(model, reinterpret_cast<const char *>(text), n, add_bos, special, ids.data(), ids.size(),
                            &count);
    }
    if (st != MIXRT_OK) defect(mixrt_last_error());  // any bytes are text: encoding never fails
    ids.resize(count);
    const int32_t vocab = mixrt_model_n_vocab(model);
    for (int32_t id : ids)
        if (id < 0 || id >= vocab) defect("an id outside the vocabulary");
    return ids;
}

// The decoded bytes, or nothing with a message if an id is out of range.
bool decode(mixrt_model *model, const std::vector<int32_t> &ids, int render_special, std::string &out) {
    size_t len = 0;
    mixrt_status st = mixrt_detokenize(model, ids.data(), ids.size(), render_special, nullptr, 0, &len);
    if (st == MIXRT_ERR_BUFFER_TOO_SMALL || (st == MIXRT_OK && len > 0)) {
        out.assign(len, '\0');
        st = mixrt_detokenize(model, ids.data(), ids.size(), render_special, out.data(), out.size(), &len);
        out.resize(len);
    } else {
        out.clear();
    }
    if (st != MIXRT_OK && mixrt_last_error()[0] == '\0') defect("a failure without a message");
    return st == MIXRT_OK;
}

void free_models() {
    for (FuzzModel &m : models) mixrt_model_free(m.model);
    models.clear();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *list = std::getenv("MIXRT_FUZZ_TOKENIZER_MODELS");
    if (!list || !*list) defect("set MIXRT_FUZZ_TOKENIZER_MODELS to the .mixrt files to fuzz (':'-separated)");
    std::string paths(list);
    for (size_t start = 0; start <= paths.size();) {
        size_t end = paths.find(':', start);
        if (end == std::string::npos) end = paths.size();
        const std::string path = paths.substr(start, end - start);
        start = end + 1;
        if (path.empty()) continue;
        mixrt_model *model = nullptr;
        if (mixrt_model_load(path.c_str(), &model) != MIXRT_OK) {
            std::fprintf(stderr, "fuzz_tokenizer: %s\n", mixrt_last_error());
            std::exit(1);
        }
        const bool exact = meta_string_is(model, "tokenizer.model", "byte_bpe") &&
                           !meta_string_is(model, "tokenizer.normalizer", "nfc");
        models.push_back({model, exact});
    }
    if (models.empty()) defect("MIXRT_FUZZ_TOKENIZER_MODELS names no file");
    std::atexit(free_models);  // before the leak check at exit, which would report them
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const uint8_t flags = data[0];
    const FuzzModel &m = models[(flags & 0x0F) % models.size()];
    const int add_bos = (flags >> 4) & 1, special = (flags >> 5) & 1, render_special = (flags >> 6) & 1;
    const uint8_t *text = data + 1;
    const size_t n = size - 1;

    const std::vector<int32_t> ids = encode(m.model, text, n, add_bos, special);
    std::string back;
    if (!decode(m.model, ids, render_special, back)) defect(mixrt_last_error());  // its own ids decode
    if (m.exact_round_trip && !add_bos && !special && valid_utf8(text, n) &&
        back != std::string_view(reinterpret_cast<const char *>(text), n))
        defect("byte-level BPE did not give the text back");

    // The bytes as token ids: ids out of range must be refused with a message, never read.
    std::vector<int32_t> raw(n / 4);
    if (!raw.empty()) std::memcpy(raw.data(), text, raw.size() * 4);
    decode(m.model, raw, render_special, back);
    return 0;
}
