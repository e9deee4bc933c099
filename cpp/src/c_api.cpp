// c_api.cpp: the C API of mixrt.h over the C++ core. Every entry point catches C++ exceptions and
// turns them into a status code plus the thread's last-error message; nothing throws across it.
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "backend.h"
#include "engine.h"
#include "error.h"
#include "generation.h"
#include "llama_model.h"
#include "mixrt/mixrt.h"
#include "sampler.h"
#include "text_stream.h"

struct mixrt_model {
    mixrt::LlamaModel model;
    std::string backend_note;  // why AUTO fell back to the CPU
    std::unique_ptr<mixrt::PreparedModel> prepared;  // the model on its backend
    mixrt_model(const std::string &path, mixrt_backend requested)
        : model(path), prepared(mixrt::prepare_model(model, requested, backend_note)) {}
};

struct mixrt_context {
    std::unique_ptr<mixrt::Engine> engine;
};
struct mixrt_sampler {
    mixrt::Sampler sampler;
    explicit mixrt_sampler(const mixrt_sampler_params &p) : sampler(p) {}
};
struct mixrt_text_stream {
    mixrt::TextStream stream;
    std::string piece;
    template <typename... A>
    explicit mixrt_text_stream(A &&...a) : stream(std::forward<A>(a)...) {}
};
struct mixrt_generation {
    mixrt::Generation gen;
    std::string piece;
    template <typename... A>
    explicit mixrt_generation(A &&...a) : gen(std::forward<A>(a)...) {}
};

namespace {

thread_local std::string last_error;

mixrt_status set_error(mixrt_status status, const std::string &message) {
    last_error = message;
    return status;
}

// Runs body, mapping exceptions to status codes.
template <typename Body>
mixrt_status guarded(Body &&body) {
    try {
        last_error.clear();
        body();
        return MIXRT_OK;
    } catch (const mixrt::Error &e) {
        return set_error(e.status(), e.what());
    } catch (const std::bad_alloc &) {
        return set_error(MIXRT_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception &e) {
        return set_error(MIXRT_ERR_INTERNAL, std::string("internal error: ") + e.what());
    }
}

#define MIXRT_REQUIRE(cond, what) \
    if (!(cond)) return set_error(MIXRT_ERR_INVALID_ARGUMENT, what)

mixrt_status copy_out(const void *src, size_t n, size_t elem, void *dst, size_t cap, size_t *out_n) {
    if (out_n) *out_n = n;
    if (n > cap) return set_error(MIXRT_ERR_BUFFER_TOO_SMALL, "buffer holds " + std::to_string(cap) + ", needed " + std::to_string(n));
    if (n) std::memcpy(dst, src, n * elem);
    return MIXRT_OK;
}

}  // namespace

extern "C" {

const char *mixrt_last_error(void) { return last_error.c_str(); }
const char *mixrt_version(void) { return MIXRT_VERSION; }  // defined by CMake from the project version

mixrt_status mixrt_model_load(const char *path, mixrt_model **out_model) {
    return mixrt_model_load_ex(path, MIXRT_BACKEND_CPU, out_model);
}

mixrt_status mixrt_model_load_ex(const char *path, mixrt_backend backend, mixrt_model **out_model) {
    MIXRT_REQUIRE(path && out_model, "mixrt_model_load: null argument");
    *out_model = nullptr;
    MIXRT_REQUIRE(backend == MIXRT_BACKEND_AUTO || backend == MIXRT_BACKEND_CPU || backend == MIXRT_BACKEND_CUDA,
                  "mixrt_model_load_ex: backend is " + std::to_string(int(backend)) +
                      ", expected MIXRT_BACKEND_AUTO (0), MIXRT_BACKEND_CPU (1) or MIXRT_BACKEND_CUDA (2)");
    return guarded([&] { *out_model = new mixrt_model(path, backend); });
}

void mixrt_model_free(mixrt_model *model) { delete model; }

mixrt_backend mixrt_model_backend(const mixrt_model *model) {
    return model ? model->prepared->backend() : MIXRT_BACKEND_CPU;
}
const char *mixrt_model_backend_note(const mixrt_model *model) { return model ? model->backend_note.c_str() : ""; }

const char *mixrt_cuda_unavailable_reason(void) {
    static const std::string reason = mixrt::cuda_unavailable_reason();
    return reason.c_str();
}

namespace {
const mixrt::MetaValue *meta_of(const mixrt_model *model, const char *key, mixrt::MetaType type, mixrt_status &st) {
    st = MIXRT_OK;
    if (!model || !key) {
        st = set_error(MIXRT_ERR_INVALID_ARGUMENT, "null argument");
        return nullptr;
    }
    const mixrt::MetaValue *v = model->model.file().find_meta(key);
    if (!v || v->type != type) {
        st = set_error(MIXRT_ERR_INVALID_ARGUMENT, std::string("metadata '") + key + "' " +
                                                       (v ? std::string("is a ") + mixrt::meta_type_name(v->type) + ", not a " + mixrt::meta_type_name(type)
                                                          : std::string("is absent")));
        return nullptr;
    }
    return v;
}
}  // namespace

mixrt_status mixrt_model_meta_int(const mixrt_model *model, const char *key, int64_t *out) {
    mixrt_status st;
    const mixrt::MetaValue *v = meta_of(model, key, mixrt::MetaType::i64, st);
    if (v && out) *out = v->i64;
    return st;
}

mixrt_status mixrt_model_meta_float(const mixrt_model *model, const char *key, double *out) {
    mixrt_status st;
    const mixrt::MetaValue *v = meta_of(model, key, mixrt::MetaType::f64, st);
    if (v && out) *out = v->f64;
    return st;
}

mixrt_status mixrt_model_meta_string(const mixrt_model *model, const char *key, const char **out, size_t *out_len) {
    mixrt_status st;
    const mixrt::MetaValue *v = meta_of(model, key, mixrt::MetaType::string, st);
    if (v) {
        if (out) *out = v->str.data();
        if (out_len) *out_len = v->str.size();
    }
    return st;
}

size_t mixrt_model_meta_count(const mixrt_model *model) { return model ? model->model.file().meta_keys().size() : 0; }

const char *mixrt_model_meta_key(const mixrt_model *model, size_t index) {
    if (!model || index >= model->model.file().meta_keys().size()) return nullptr;
    return model->model.file().meta_keys()[index].c_str();
}

size_t mixrt_model_tensor_count(const mixrt_model *model) { return model ? model->model.file().tensors().size() : 0; }

mixrt_status mixrt_model_tensor_info(const mixrt_model *model, size_t index, mixrt_tensor_info *out) {
    MIXRT_REQUIRE(model && out, "mixrt_model_tensor_info: null argument");
    const auto &tensors = model->model.file().tensors();
    MIXRT_REQUIRE(index < tensors.size(), "tensor index " + std::to_string(index) + " out of range");
    const mixrt::TensorEntry &t = tensors[index];
    out->name = t.name.c_str();
    out->dtype = mixrt::dtype_name(t.dtype);
    out->ndim = static_cast<uint32_t>(t.dims.size());
    for (size_t i = 0; i < 4; ++i) out->dims[i] = i < t.dims.size() ? t.dims[i] : 0;
    out->n_elements = t.n_elements;
    out->n_bytes = 0;
    for (const auto &p : t.parts) out->n_bytes += p.size;
    out->n_cols_4bit = out->n_outliers = 0;
    if (t.dtype == mixrt::DType::mix) {
        std::vector<uint64_t> part_bytes;
        for (const auto &p : t.parts) part_bytes.push_back(p.size);
        const mixrt::MixCounts counts = mixrt::mix_counts(t.dims[0], part_bytes);
        out->n_cols_4bit = counts.k4;
        out->n_outliers = counts.nnz;
    }
    if (t.dtype == mixrt::DType::quik && t.parts.size() == 4 && t.dims.size() == 2) {
        out->n_outliers = t.parts[3].size / 2;  // the weights of the fp16 columns
        out->n_cols_4bit = t.dims[1] - out->n_outliers / t.dims[0];
    }
    return MIXRT_OK;
}

int32_t mixrt_model_n_vocab(const mixrt_model *model) { return model ? model->model.params().vocab_size : 0; }
int32_t mixrt_model_context_length(const mixrt_model *model) { return model ? model->model.params().context_length : 0; }
int32_t mixrt_model_bos(const mixrt_model *model) { return model ? model->model.bos_id() : -1; }
int32_t mixrt_model_eos(const mixrt_model *model) { return model ? model->model.eos_id() : -1; }

mixrt_status mixrt_tokenize(const mixrt_model *model, const char *text, size_t text_len, int add_bos,
                            int parse_special, int32_t *out_ids, size_t cap, size_t *out_n) {
    MIXRT_REQUIRE(model && (text || text_len == 0) && (out_ids || cap == 0), "mixrt_tokenize: null argument");
    mixrt_status st = MIXRT_OK;
    mixrt_status g = guarded([&] {
        const mixrt::Tokenizer &tok = model->model.tokenizer();
        bool bos = add_bos < 0 ? static_cast<bool>(model->model.file().meta_i64("tokenizer.add_bos")) : add_bos != 0;
        std::vector<int32_t> ids = tok.encode(std::string_view(text ? text : "", text_len), bos, parse_special != 0);
        st = copy_out(ids.data(), ids.size(), sizeof(int32_t), out_ids, cap, out_n);
    });
    return g != MIXRT_OK ? g : st;
}

mixrt_status mixrt_detokenize(const mixrt_model *model, const int32_t *ids, size_t n_ids, int render_special, char *out,
                              size_t cap, size_t *out_len) {
    MIXRT_REQUIRE(model && (ids || n_ids == 0) && (out || cap == 0), "mixrt_detokenize: null argument");
    const int32_t V = model->model.params().vocab_size;
    for (size_t i = 0; i < n_ids; ++i)
        MIXRT_REQUIRE(ids[i] >= 0 && ids[i] < V, "token " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                                                     " is outside the vocabulary of " + std::to_string(V));
    mixrt_status st = MIXRT_OK;
    mixrt_status g = guarded([&] {
        std::string text = model->model.tokenizer().decode(std::vector<int32_t>(ids, ids + n_ids), render_special != 0);
        st = copy_out(text.data(), text.size(), 1, out, cap, out_len);
    });
    return g != MIXRT_OK ? g : st;
}

mixrt_context_params mixrt_context_default_params(void) {
    return mixrt_context_params{0, 0, MIXRT_KV_F16, MIXRT_ACT_DEFAULT, 1};
}

mixrt_status mixrt_context_create(const mixrt_model *model, const mixrt_context_params *params, mixrt_context **out_ctx) {
    MIXRT_REQUIRE(model && out_ctx, "mixrt_context_create: null argument");
    *out_ctx = nullptr;
    mixrt_context_params p = params ? *params : mixrt_context_default_params();
    MIXRT_REQUIRE(p.kv_type == MIXRT_KV_F16 || p.kv_type == MIXRT_KV_F32,
                  "mixrt_context_create: kv_type is " + std::to_string(p.kv_type) +
                      ", expected MIXRT_KV_F16 (0) or MIXRT_KV_F32 (1)");
    MIXRT_REQUIRE(p.activations == MIXRT_ACT_DEFAULT || p.activations == MIXRT_ACT_TOKEN4 ||
                      (p.activations >= 3 && p.activations <= 8 && p.activations != 7),
                  "mixrt_context_create: activations is " + std::to_string(p.activations) +
                      ", expected MIXRT_ACT_DEFAULT (0), a bfp width (3, 4, 5, 6 or 8) or MIXRT_ACT_TOKEN4 (20)");
    MIXRT_REQUIRE(p.n_seq >= 0 && p.n_seq <= 4096,
                  "mixrt_context_create: n_seq is " + std::to_string(p.n_seq) + ", expected 0..4096");
    return guarded([&] {
        const auto kv = static_cast<mixrt_kv_type>(p.kv_type);
        const auto activations = static_cast<mixrt_activations>(p.activations);
        auto engine = p.n_seq > 1 ? model->prepared->make_batch_engine(p.n_ctx, p.n_seq, p.n_threads, kv, activations)
                                  : model->prepared->make_engine(p.n_ctx, p.n_threads, kv, activations);
        *out_ctx = new mixrt_context{std::move(engine)};
    });
}

void mixrt_context_free(mixrt_context *ctx) { delete ctx; }
void mixrt_context_reset(mixrt_context *ctx) {
    if (ctx) ctx->engine->reset();
}
int32_t mixrt_context_n_past(const mixrt_context *ctx) { return ctx ? ctx->engine->n_past() : 0; }
int32_t mixrt_context_n_ctx(const mixrt_context *ctx) { return ctx ? ctx->engine->n_ctx() : 0; }
const char *mixrt_context_backend(const mixrt_context *ctx) { return ctx ? ctx->engine->backend_name() : ""; }

mixrt_status mixrt_context_feed(mixrt_context *ctx, const int32_t *tokens, size_t n_tokens, int all_logits) {
    MIXRT_REQUIRE(ctx && tokens, "mixrt_context_feed: null argument");
    return guarded([&] { ctx->engine->feed(tokens, n_tokens, all_logits != 0); });
}

mixrt_status mixrt_context_decode(mixrt_context *ctx, const mixrt_batch_entry *entries, size_t n_entries) {
    MIXRT_REQUIRE(ctx && (entries || n_entries == 0), "mixrt_context_decode: null argument");
    return guarded([&] { ctx->engine->decode(entries, n_entries); });
}

int32_t mixrt_context_n_seq(const mixrt_context *ctx) { return ctx ? ctx->engine->n_seq() : 0; }

int32_t mixrt_context_seq_len(const mixrt_context *ctx, int32_t seq) {
    return ctx && seq >= 0 && seq < ctx->engine->n_seq() ? ctx->engine->seq_len(seq) : -1;
}

mixrt_status mixrt_context_seq_clear(mixrt_context *ctx, int32_t seq) {
    MIXRT_REQUIRE(ctx, "mixrt_context_seq_clear: null argument");
    return guarded([&] { ctx->engine->seq_clear(seq); });
}

const float *mixrt_context_logits(const mixrt_context *ctx, size_t *out_rows) {
    if (!ctx) return nullptr;
    if (out_rows) *out_rows = ctx->engine->logits_rows();
    if (!ctx->engine->logits_rows()) return nullptr;
    try {
        return ctx->engine->logits();
    } catch (const std::exception &e) {
        set_error(MIXRT_ERR_INTERNAL, e.what());
        if (out_rows) *out_rows = 0;
        return nullptr;
    }
}

void mixrt_context_set_capture(mixrt_context *ctx, mixrt_capture_fn fn, void *user) {
    if (ctx) ctx->engine->set_capture(fn, user);
}

mixrt_sampler_params mixrt_sampler_default_params(void) {
    return mixrt_sampler_params{0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0};
}

mixrt_status mixrt_sampler_create(const mixrt_sampler_params *params, mixrt_sampler **out_sampler) {
    MIXRT_REQUIRE(out_sampler, "mixrt_sampler_create: null argument");
    *out_sampler = nullptr;
    mixrt_sampler_params p = params ? *params : mixrt_sampler_default_params();
    return guarded([&] { *out_sampler = new mixrt_sampler(p); });
}

void mixrt_sampler_free(mixrt_sampler *sampler) { delete sampler; }

mixrt_status mixrt_sampler_sample(mixrt_sampler *sampler, const mixrt_context *ctx, int32_t *out_token) {
    MIXRT_REQUIRE(sampler && ctx && out_token, "mixrt_sampler_sample: null argument");
    MIXRT_REQUIRE(ctx->engine->logits_rows() > 0, "mixrt_sampler_sample: the context has no logits yet (feed tokens first)");
    return guarded([&] { *out_token = mixrt::sample_next(sampler->sampler, *ctx->engine); });
}

mixrt_status mixrt_sampler_sample_logits(mixrt_sampler *sampler, const float *logits, int32_t n_vocab,
                                         const int32_t *history, size_t n_history, int32_t *out_token) {
    MIXRT_REQUIRE(sampler && logits && out_token && (history || n_history == 0), "mixrt_sampler_sample_logits: null argument");
    MIXRT_REQUIRE(n_vocab > 0, "mixrt_sampler_sample_logits: n_vocab is " + std::to_string(n_vocab) + ", expected > 0");
    return guarded([&] {
        *out_token = sampler->sampler.sample(logits, n_vocab, std::vector<int32_t>(history, history + n_history));
    });
}

namespace {
// The stop strings of generation params (null entries refused).
std::vector<std::string> stop_strings(const mixrt_generation_params &params) {
    std::vector<std::string> stop;
    for (size_t i = 0; i < params.n_stop; ++i) {
        if (!params.stop[i]) mixrt::fail(MIXRT_ERR_INVALID_ARGUMENT, "stop string " + std::to_string(i) + " is null");
        stop.emplace_back(params.stop[i]);
    }
    return stop;
}
}  // namespace

mixrt_status mixrt_generation_start(mixrt_context *ctx, mixrt_sampler *sampler, const int32_t *prompt, size_t n_prompt,
                                    const mixrt_generation_params *params, mixrt_generation **out_gen) {
    MIXRT_REQUIRE(ctx && sampler && params && out_gen && (prompt || n_prompt == 0), "mixrt_generation_start: null argument");
    MIXRT_REQUIRE(params->stop || params->n_stop == 0, "mixrt_generation_start: stop is null but n_stop > 0");
    *out_gen = nullptr;
    return guarded([&] {
        *out_gen = new mixrt_generation(*ctx->engine, sampler->sampler, prompt, n_prompt, params->max_tokens,
                                        stop_strings(*params));
    });
}

mixrt_status mixrt_generation_next(mixrt_generation *gen, const char **out_text, size_t *out_len,
                                   mixrt_stop_reason *out_reason) {
    MIXRT_REQUIRE(gen && out_text && out_len && out_reason, "mixrt_generation_next: null argument");
    return guarded([&] {
        *out_reason = gen->gen.next(gen->piece);
        *out_text = gen->piece.data();
        *out_len = gen->piece.size();
    });
}

int32_t mixrt_generation_n_generated(const mixrt_generation *gen) { return gen ? gen->gen.n_generated() : 0; }
void mixrt_generation_free(mixrt_generation *gen) { delete gen; }

mixrt_status mixrt_text_stream_create(const mixrt_model *model, const mixrt_generation_params *params,
                                      mixrt_text_stream **out_stream) {
    MIXRT_REQUIRE(model && params && out_stream, "mixrt_text_stream_create: null argument");
    MIXRT_REQUIRE(params->stop || params->n_stop == 0, "mixrt_text_stream_create: stop is null but n_stop > 0");
    *out_stream = nullptr;
    return guarded([&] {
        *out_stream = new mixrt_text_stream(model->model.tokenizer(), model->model.eos_id(), params->max_tokens,
                                            stop_strings(*params));
    });
}

mixrt_status mixrt_text_stream_push(mixrt_text_stream *stream, int32_t token, const char **out_text, size_t *out_len,
                                    mixrt_stop_reason *out_reason) {
    MIXRT_REQUIRE(stream && out_text && out_len && out_reason, "mixrt_text_stream_push: null argument");
    return guarded([&] {
        *out_reason = stream->stream.push(token, stream->piece);
        *out_text = stream->piece.data();
        *out_len = stream->piece.size();
    });
}

int32_t mixrt_text_stream_n_generated(const mixrt_text_stream *stream) {
    return stream ? stream->stream.n_generated() : 0;
}
void mixrt_text_stream_free(mixrt_text_stream *stream) { delete stream; }

}  // extern "C"
