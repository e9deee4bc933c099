// _core.cpp: the nanobind module mixrt._core, a one-to-one binding of the C API (mixrt.h), so
// Python can do exactly what an embedding application can. Long calls release the GIL; a failing
// status raises mixrt.MixrtError with the core's message. It includes mixrt.h only; the project's
// test and benchmark hooks into the core live in mixrt._internal (_internal.cpp).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <string>
#include <vector>

#include "mixrt/mixrt.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

nb::object mixrt_error_type;

void check(mixrt_status status) {
    if (status == MIXRT_OK) return;
    PyErr_SetString(mixrt_error_type.ptr(), mixrt_last_error());
    throw nb::python_error();
}

struct Model {
    mixrt_model *ptr = nullptr;
    // backend: "auto", "cpu" or "cuda" (mixrt_backend).
    Model(const std::string &path, const std::string &backend) {
        mixrt_backend b;
        if (backend == "auto") b = MIXRT_BACKEND_AUTO;
        else if (backend == "cpu") b = MIXRT_BACKEND_CPU;
        else if (backend == "cuda") b = MIXRT_BACKEND_CUDA;
        else throw nb::value_error(("backend: expected 'auto', 'cpu' or 'cuda', found '" + backend + "'").c_str());
        mixrt_status st;
        {
            nb::gil_scoped_release release;
            st = mixrt_model_load_ex(path.c_str(), b, &ptr);
        }
        check(st);
    }
    ~Model() { mixrt_model_free(ptr); }

    nb::object meta(const std::string &key) const {
        int64_t i;
        double f;
        const char *s;
        size_t n;
        if (mixrt_model_meta_int(ptr, key.c_str(), &i) == MIXRT_OK) return nb::int_(i);
        if (mixrt_model_meta_float(ptr, key.c_str(), &f) == MIXRT_OK) return nb::float_(f);
        if (mixrt_model_meta_string(ptr, key.c_str(), &s, &n) == MIXRT_OK) return nb::str(s, n);
        return nb::none();  // absent, or an array (arrays are not exposed)
    }
    std::vector<std::string> meta_keys() const {
        std::vector<std::string> keys;
        for (size_t i = 0; i < mixrt_model_meta_count(ptr); ++i) keys.emplace_back(mixrt_model_meta_key(ptr, i));
        return keys;
    }
    nb::list tensors() const {
        nb::list out;
        for (size_t i = 0; i < mixrt_model_tensor_count(ptr); ++i) {
            mixrt_tensor_info t;
            check(mixrt_model_tensor_info(ptr, i, &t));
            nb::list dims;
            for (uint32_t d = 0; d < t.ndim; ++d) dims.append(t.dims[d]);
            nb::dict e;
            e["name"] = t.name;
            e["dtype"] = t.dtype;
            e["dims"] = dims;
            e["n_elements"] = t.n_elements;
            e["n_bytes"] = t.n_bytes;
            e["n_cols_4bit"] = t.n_cols_4bit;
            e["n_outliers"] = t.n_outliers;
            out.append(e);
        }
        return out;
    }
    std::vector<int32_t> tokenize(const nb::bytes &text, int add_bos, bool special) const {
        const char *data = text.c_str();
        const size_t len = text.size();
        // Usually enough (tokens are rarely shorter than 2 bytes on average); else a second call.
        std::vector<int32_t> ids(len / 2 + 16);
        size_t n = 0;
        nb::gil_scoped_release release;
        mixrt_status st = mixrt_tokenize(ptr, data, len, add_bos, special, ids.data(), ids.size(), &n);
        if (st == MIXRT_ERR_BUFFER_TOO_SMALL) {
            ids.resize(n);
            st = mixrt_tokenize(ptr, data, len, add_bos, special, ids.data(), ids.size(), &n);
        }
        ids.resize(st == MIXRT_OK ? n : 0);
        nb::gil_scoped_acquire acquire;
        check(st);
        return ids;
    }
    nb::bytes detokenize(const std::vector<int32_t> &ids, bool special) const {
        size_t n = 0;
        mixrt_status st = mixrt_detokenize(ptr, ids.data(), ids.size(), special, nullptr, 0, &n);
        std::string out;
        if (st == MIXRT_ERR_BUFFER_TOO_SMALL) {
            out.resize(n);
            st = mixrt_detokenize(ptr, ids.data(), ids.size(), special, out.data(), out.size(), &n);
        }
        check(st);
        return nb::bytes(out.data(), out.size());
    }
};

// "" (the kernels' own rounding), "bfp<w>" or "token4" as a mixrt_activations.
int32_t activation_code(const std::string &name) {
    if (name.empty()) return MIXRT_ACT_DEFAULT;
    if (name == "token4") return MIXRT_ACT_TOKEN4;
    for (int32_t w : {3, 4, 5, 6, 8})
        if (name == "bfp" + std::to_string(w)) return w;
    throw nb::value_error(
        ("activations: expected '', 'bfp8', 'bfp6', 'bfp5', 'bfp4', 'bfp3' or 'token4', found '" + name + "'").c_str());
}

struct Context {
    mixrt_context *ptr = nullptr;
    int32_t n_vocab;
    nb::object capture_fn;      // Python callable(layer, site, x: ndarray (rows, width) float32)
    std::string capture_error;  // the first exception it raised during a feed
    Context(const Model &model, int32_t n_ctx, int32_t n_threads, const std::string &kv_cache,
            const std::string &activations, int32_t n_seq)
        : n_vocab(mixrt_model_n_vocab(model.ptr)) {
        mixrt_context_params p = mixrt_context_default_params();
        p.n_ctx = n_ctx;
        p.n_threads = n_threads;
        p.n_seq = n_seq;
        if (kv_cache != "f16" && kv_cache != "f32")
            throw nb::value_error(("kv_cache: expected 'f16' or 'f32', found '" + kv_cache + "'").c_str());
        p.kv_type = kv_cache == "f32" ? MIXRT_KV_F32 : MIXRT_KV_F16;
        p.activations = activation_code(activations);
        check(mixrt_context_create(model.ptr, &p, &ptr));
    }
    ~Context() { mixrt_context_free(ptr); }
    // Calls fn(layer, site, x) during feeds with a read-only view valid only during the call.
    void set_capture(nb::object fn) {
        capture_fn = fn;
        if (fn.is_none()) {
            mixrt_context_set_capture(ptr, nullptr, nullptr);
            return;
        }
        mixrt_context_set_capture(ptr, [](void *user, int32_t layer, int32_t site, const float *x, int32_t rows,
                                          int32_t width) {
            nb::gil_scoped_acquire acquire;
            auto *self = static_cast<Context *>(user);
            if (!self->capture_error.empty()) return;
            nb::ndarray<nb::numpy, const float, nb::ndim<2>> view(x, {size_t(rows), size_t(width)}, nb::handle());
            try {
                self->capture_fn(layer, site, view);
            } catch (nb::python_error &e) {
                self->capture_error = e.what();
            }
        }, this);
    }
    // Batched decoding: entries int32 [n, 4] of (seq, token, pos, logits flag).
    void decode(nb::ndarray<const int32_t, nb::ndim<2>, nb::shape<-1, 4>, nb::c_contig, nb::device::cpu> entries) {
        static_assert(sizeof(mixrt_batch_entry) == 4 * sizeof(int32_t));
        const auto *e = reinterpret_cast<const mixrt_batch_entry *>(entries.data());
        const size_t n = entries.shape(0);
        mixrt_status st;
        {
            nb::gil_scoped_release release;
            st = mixrt_context_decode(ptr, e, n);
        }
        check(st);
    }
    void feed(const std::vector<int32_t> &tokens, bool all_logits) {
        mixrt_status st;
        {
            nb::gil_scoped_release release;
            st = mixrt_context_feed(ptr, tokens.data(), tokens.size(), all_logits);
        }
        if (!capture_error.empty()) {
            std::string message = "the capture function raised: " + capture_error;
            capture_error.clear();
            throw std::runtime_error(message);
        }
        check(st);
    }
    // A copy of the last feed's logits, (rows, n_vocab) float32.
    nb::ndarray<nb::numpy, float, nb::ndim<2>> logits() const {
        size_t rows = 0;
        const float *src = mixrt_context_logits(ptr, &rows);
        float *copy = new float[rows * size_t(n_vocab)];
        if (rows) std::memcpy(copy, src, rows * size_t(n_vocab) * sizeof(float));
        nb::capsule owner(copy, [](void *p) noexcept { delete[] static_cast<float *>(p); });
        return nb::ndarray<nb::numpy, float, nb::ndim<2>>(copy, {rows, size_t(n_vocab)}, owner);
    }
};

struct Sampler {
    mixrt_sampler *ptr = nullptr;
    Sampler(float temperature, int32_t top_k, float top_p, float min_p, float repeat_penalty, int32_t repeat_last_n,
            uint64_t seed) {
        mixrt_sampler_params p{temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed};
        check(mixrt_sampler_create(&p, &ptr));
    }
    ~Sampler() { mixrt_sampler_free(ptr); }
    int32_t sample(const Context &ctx) {
        int32_t token;
        check(mixrt_sampler_sample(ptr, ctx.ptr, &token));
        return token;
    }
    // From one row of logits and the sequence's token history.
    int32_t sample_logits(nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu> logits,
                          const std::vector<int32_t> &history) {
        int32_t token;
        check(mixrt_sampler_sample_logits(ptr, logits.data(), int32_t(logits.shape(0)), history.data(), history.size(),
                                          &token));
        return token;
    }
};

// The stop strings of generation params, and the params pointing at them.
struct StopStrings {
    std::vector<const char *> ptrs;
    mixrt_generation_params params(int32_t max_tokens) { return {max_tokens, ptrs.data(), ptrs.size()}; }
    explicit StopStrings(const std::vector<std::string> &stop) {
        for (const auto &s : stop) ptrs.push_back(s.c_str());
    }
};

struct TextStream {
    mixrt_text_stream *ptr = nullptr;
    TextStream(const Model &model, int32_t max_tokens, const std::vector<std::string> &stop) {
        StopStrings stops(stop);
        const mixrt_generation_params p = stops.params(max_tokens);
        check(mixrt_text_stream_create(model.ptr, &p, &ptr));
    }
    ~TextStream() { mixrt_text_stream_free(ptr); }
    // (text piece, stop reason: 0 running, 1 eos, 2 stop string, 3 max tokens)
    std::tuple<nb::str, int> push(int32_t token) {
        const char *text;
        size_t len;
        mixrt_stop_reason reason;
        check(mixrt_text_stream_push(ptr, token, &text, &len, &reason));
        return {nb::str(text, len), static_cast<int>(reason)};
    }
    int32_t n_generated() const { return mixrt_text_stream_n_generated(ptr); }
};

struct Generation {
    mixrt_generation *ptr = nullptr;
    Generation(Context &ctx, Sampler &sampler, const std::vector<int32_t> &prompt, int32_t max_tokens,
               const std::vector<std::string> &stop) {
        StopStrings stops(stop);
        const mixrt_generation_params p = stops.params(max_tokens);
        mixrt_status st;
        {
            nb::gil_scoped_release release;
            st = mixrt_generation_start(ctx.ptr, sampler.ptr, prompt.data(), prompt.size(), &p, &ptr);
        }
        check(st);
    }
    ~Generation() { mixrt_generation_free(ptr); }
    // (text piece, stop reason: 0 running, 1 eos, 2 stop string, 3 max tokens)
    std::tuple<nb::str, int> next() {
        const char *text;
        size_t len;
        mixrt_stop_reason reason;
        mixrt_status st;
        {
            nb::gil_scoped_release release;
            st = mixrt_generation_next(ptr, &text, &len, &reason);
        }
        check(st);
        return {nb::str(text, len), static_cast<int>(reason)};
    }
    int32_t n_generated() const { return mixrt_generation_n_generated(ptr); }
};

}  // namespace

NB_MODULE(_core, m) {
    m.doc() = "mixrt C API binding";
    mixrt_error_type = nb::borrow(PyErr_NewExceptionWithDoc("mixrt.MixrtError", "An error reported by the mixrt core.",
                                                            PyExc_RuntimeError, nullptr));
    m.attr("MixrtError") = mixrt_error_type;
    m.def("version", [] { return std::string(mixrt_version()); });
    m.attr("DEFAULT_N_CTX") = MIXRT_DEFAULT_N_CTX;
    // "" when the CUDA backend is built and a device can be used, else why not (tests skip on it).
    m.def("cuda_unavailable_reason", [] { return std::string(mixrt_cuda_unavailable_reason()); });

    nb::class_<Model>(m, "Model")
        .def(nb::init<const std::string &, const std::string &>(), "path"_a, "backend"_a = "cpu")
        .def_prop_ro("backend", [](const Model &s) {
            return std::string(mixrt_model_backend(s.ptr) == MIXRT_BACKEND_CUDA ? "cuda" : "cpu");
        })
        .def_prop_ro("backend_note", [](const Model &s) { return std::string(mixrt_model_backend_note(s.ptr)); })
        .def_prop_ro("n_vocab", [](const Model &s) { return mixrt_model_n_vocab(s.ptr); })
        .def_prop_ro("context_length", [](const Model &s) { return mixrt_model_context_length(s.ptr); })
        .def_prop_ro("bos", [](const Model &s) { return mixrt_model_bos(s.ptr); })
        .def_prop_ro("eos", [](const Model &s) { return mixrt_model_eos(s.ptr); })
        .def("meta", &Model::meta, "key"_a)
        .def("meta_keys", &Model::meta_keys)
        .def("tensors", &Model::tensors)
        .def("tokenize", &Model::tokenize, "text"_a, "add_bos"_a, "special"_a)
        .def("detokenize", &Model::detokenize, "ids"_a, "special"_a);

    nb::class_<Context>(m, "Context")
        .def(nb::init<const Model &, int32_t, int32_t, const std::string &, const std::string &, int32_t>(), "model"_a,
             "n_ctx"_a, "n_threads"_a,
             "kv_cache"_a = "f16", "activations"_a = "", "n_seq"_a = 1, nb::keep_alive<1, 2>())
        .def("feed", &Context::feed, "tokens"_a, "all_logits"_a)
        .def("decode", &Context::decode, "entries"_a)
        .def("seq_len", [](const Context &s, int32_t seq) { return mixrt_context_seq_len(s.ptr, seq); }, "seq"_a)
        .def("seq_clear", [](Context &s, int32_t seq) { check(mixrt_context_seq_clear(s.ptr, seq)); }, "seq"_a)
        .def_prop_ro("n_seq", [](const Context &s) { return mixrt_context_n_seq(s.ptr); })
        .def("logits", &Context::logits)
        .def("reset", [](Context &s) { mixrt_context_reset(s.ptr); })
        .def("set_capture", &Context::set_capture, "fn"_a.none())
        .def_prop_ro("n_past", [](const Context &s) { return mixrt_context_n_past(s.ptr); })
        .def_prop_ro("n_ctx", [](const Context &s) { return mixrt_context_n_ctx(s.ptr); })
        .def_prop_ro("backend", [](const Context &s) { return std::string(mixrt_context_backend(s.ptr)); });

    // The C API's sampler defaults (mixrt_sampler_default_params): the Python API and the CLI
    // take theirs from here.
    m.def("sampler_default_params", [] {
        const mixrt_sampler_params p = mixrt_sampler_default_params();
        nb::dict d;
        d["temperature"] = p.temperature;
        d["top_k"] = p.top_k;
        d["top_p"] = p.top_p;
        d["min_p"] = p.min_p;
        d["repeat_penalty"] = p.repeat_penalty;
        d["repeat_last_n"] = p.repeat_last_n;
        d["seed"] = p.seed;
        return d;
    });
    nb::class_<Sampler>(m, "Sampler")
        .def(nb::init<float, int32_t, float, float, float, int32_t, uint64_t>(), "temperature"_a, "top_k"_a, "top_p"_a,
             "min_p"_a, "repeat_penalty"_a, "repeat_last_n"_a, "seed"_a)
        .def("sample", &Sampler::sample, "ctx"_a)
        .def("sample_logits", &Sampler::sample_logits, "logits"_a, "history"_a);

    nb::class_<TextStream>(m, "TextStream")
        .def(nb::init<const Model &, int32_t, const std::vector<std::string> &>(), "model"_a, "max_tokens"_a, "stop"_a,
             nb::keep_alive<1, 2>())
        .def("push", &TextStream::push, "token"_a)
        .def_prop_ro("n_generated", &TextStream::n_generated);

    nb::class_<Generation>(m, "Generation")
        .def(nb::init<Context &, Sampler &, const std::vector<int32_t> &, int32_t, const std::vector<std::string> &>(),
             "ctx"_a, "sampler"_a, "prompt"_a, "max_tokens"_a, "stop"_a, nb::keep_alive<1, 2>(), nb::keep_alive<1, 3>())
        .def("next", &Generation::next)
        .def_prop_ro("n_generated", &Generation::n_generated);
}
