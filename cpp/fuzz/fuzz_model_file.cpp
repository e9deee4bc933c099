// fuzz_model_file.cpp: libFuzzer target of the file reader. Each input is a whole .mixrt file,
// handed to the C API through a memory file; a file that loads is then used as an application
// would: its metadata and tensor table read, a short text tokenized, a context made, the tokens
// fed, the next token sampled (greedy and at a temperature) and decoded. Every call must end in a
// status, and every failure must carry a message; the sanitizers report anything else.
// Built by MIXRT_FUZZ=ON (CMakeLists.txt), run by tools/check_sanitizers.sh.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "mixrt/mixrt.h"

namespace {

// A failure without a message is a defect of its own.
bool ok(mixrt_status status) {
    if (status == MIXRT_OK) return true;
    if (mixrt_last_error()[0] == '\0') {
        std::fprintf(stderr, "status %d without a message\n", int(status));
        std::abort();
    }
    return false;
}

void write_all(int fd, const uint8_t *data, size_t size) {
    while (size > 0) {
        const ssize_t n = write(fd, data, size);
        if (n <= 0) std::abort();
        data += n;
        size -= size_t(n);
    }
}

void use_model(mixrt_model *model) {
    for (size_t i = 0; i < mixrt_model_meta_count(model); ++i) {
        const char *key = mixrt_model_meta_key(model, i);
        const char *s;
        size_t len;
        int64_t v;
        double f;
        (void)(mixrt_model_meta_string(model, key, &s, &len) == MIXRT_OK ||
               mixrt_model_meta_int(model, key, &v) == MIXRT_OK || mixrt_model_meta_float(model, key, &f) == MIXRT_OK);
    }
    const int32_t vocab = mixrt_model_n_vocab(model);
    const char text[] = "Hi, wor\xc3\xa9ld <|im_start|> 12";
    int32_t ids[sizeof text + 1];  // at most one id per byte, and BOS
    size_t n = 0;
    if (!ok(mixrt_tokenize(model, text, sizeof text - 1, -1, 1, ids, sizeof text + 1, &n))) return;
    if (n == 0) ids[n++] = 0;
    for (size_t i = 0; i < n; ++i)
        if (ids[i] < 0 || ids[i] >= vocab) std::abort();  // the tokenizer must stay in the vocabulary

    mixrt_context_params params = mixrt_context_default_params();
    params.n_ctx = 32;
    params.n_threads = 1;
    mixrt_context *ctx = nullptr;
    if (!ok(mixrt_context_create(model, &params, &ctx))) return;
    mixrt_sampler_params sp = mixrt_sampler_default_params();
    for (float temperature : {0.0f, 0.8f}) {
        sp.temperature = temperature;
        mixrt_sampler *sampler = nullptr;
        if (!ok(mixrt_sampler_create(&sp, &sampler))) std::abort();
        int32_t next = -1;
        mixrt_context_reset(ctx);
        if (ok(mixrt_context_feed(ctx, ids, n, 0)) && ok(mixrt_sampler_sample(sampler, ctx, &next))) {
            if (next < 0 || next >= vocab) std::abort();
            char out[256];
            size_t len = 0;
            ok(mixrt_detokenize(model, &next, 1, 1, out, sizeof out, &len));
        }
        mixrt_sampler_free(sampler);
    }
    mixrt_context_free(ctx);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const int fd = memfd_create("fuzz.mixrt", 0);
    if (fd < 0) std::abort();
    write_all(fd, data, size);
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    mixrt_model *model = nullptr;
    if (ok(mixrt_model_load(path, &model))) {
        use_model(model);
        mixrt_model_free(model);
    }
    close(fd);
    return 0;
}
