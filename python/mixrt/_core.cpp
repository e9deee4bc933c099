// _core.cpp: the nanobind module mixrt._core, a one-to-one binding of the C API (mixrt.h), so
// Python can do exactly what an embedding application can. Long calls release the GIL; a failing
// status raises mixrt.MixrtError with the core's message. Also exposes the CPU kernel tables
// (kernel_matmul, kernel_matmul_quant, kernel_attention) for tests/test_kernels.py and
// tests/test_quant_kernels.py, and the speed probes (read_bandwidth, time_gemv) of `mixrt bench`.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <string>
#include <vector>

#include "c_api_handles.h"
#include "cpu/kernels.h"
#include "cpu/speed_probe.h"
#include "error.h"
#include "quant_layout.h"
#include "mixrt/mixrt.h"
#ifdef MIXRT_WITH_CUDA
#include "gemv_host_io.h"  // GEMV hooks
#include "device_info.h"
#include "layer_ops_host.h"
#endif

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

struct Context {
    mixrt_context *ptr = nullptr;
    int32_t n_vocab;
    nb::object capture_fn;      // Python callable(layer, site, x: ndarray (rows, width) float32)
    std::string capture_error;  // the first exception it raised during a feed
    Context(const Model &model, int32_t n_ctx, int32_t n_threads) : n_vocab(mixrt_model_n_vocab(model.ptr)) {
        mixrt_context_params p = mixrt_context_default_params();
        p.n_ctx = n_ctx;
        p.n_threads = n_threads;
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
};

struct Generation {
    mixrt_generation *ptr = nullptr;
    Generation(Context &ctx, Sampler &sampler, const std::vector<int32_t> &prompt, int32_t max_tokens,
               const std::vector<std::string> &stop) {
        std::vector<const char *> stops;
        for (const auto &s : stop) stops.push_back(s.c_str());
        mixrt_generation_params p{max_tokens, stops.data(), stops.size()};
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

const mixrt::CpuKernels &kernel_table(const std::string &impl) {
    if (impl == "scalar") return mixrt::scalar_kernels();
    if (impl == "avx2") {
        if (!mixrt::avx2_kernels()) throw nb::value_error("the avx2 kernels are not available on this CPU/build");
        return *mixrt::avx2_kernels();
    }
    throw nb::value_error(("unknown kernel table '" + impl + "', expected scalar or avx2").c_str());
}

using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// out = x W^T with W given as f32 or as raw f16 bits (uint16).
nb::ndarray<nb::numpy, float, nb::ndim<2>> kernel_matmul(const std::string &impl, nb::ndarray<nb::ndim<2>, nb::c_contig, nb::device::cpu> W,
                                                          FloatMatrix x) {
    const mixrt::CpuKernels &k = kernel_table(impl);
    const int64_t M = W.shape(0), K = W.shape(1), n = x.shape(0);
    if (int64_t(x.shape(1)) != K) throw nb::value_error("x has a different K than W");
    float *out = new float[size_t(n) * M];
    nb::capsule owner(out, [](void *p) noexcept { delete[] static_cast<float *>(p); });
    if (W.dtype() == nb::dtype<float>())
        k.matmul_f32(static_cast<const float *>(W.data()), x.data(), out, n, M, K, 0, M);
    else if (W.dtype() == nb::dtype<uint16_t>())
        k.matmul_f16(static_cast<const uint16_t *>(W.data()), x.data(), out, n, M, K, 0, M);
    else
        throw nb::value_error("W must be float32 or uint16 (f16 bits)");
    return nb::ndarray<nb::numpy, float, nb::ndim<2>>(out, {size_t(n), size_t(M)}, owner);
}

// Packed parts from Python, copied into 64-byte aligned storage (as in a mapped file).
struct OwnedParts {
    std::vector<std::vector<uint8_t>> storage;
    std::vector<mixrt::PartSpan> spans;
    explicit OwnedParts(const nb::list &parts) {
        for (nb::handle h : parts) {
            auto a = nb::cast<nb::ndarray<nb::c_contig, nb::device::cpu>>(h);
            const size_t n = a.nbytes();
            storage.emplace_back(n + 64);
            uint8_t *base = storage.back().data();
            uint8_t *aligned = base + (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
            if (n) std::memcpy(aligned, a.data(), n);
            spans.push_back({aligned, n});
        }
    }
};

mixrt::DType dtype_from_name(const std::string &name) {
    for (uint32_t c = 0; c < mixrt::kDTypeCount; ++c)
        if (name == mixrt::dtype_name(static_cast<mixrt::DType>(c))) return static_cast<mixrt::DType>(c);
    throw nb::value_error(("unknown dtype '" + name + "'").c_str());
}

nb::ndarray<nb::numpy, float, nb::ndim<2>> new_matrix(size_t rows, size_t cols, float **data) {
    *data = new float[rows * cols];
    nb::capsule owner(*data, [](void *p) noexcept { delete[] static_cast<float *>(p); });
    return nb::ndarray<nb::numpy, float, nb::ndim<2>>(*data, {rows, cols}, owner);
}

// The reference decode (dequantize_row) of every row of a packed tensor [M, K].
nb::ndarray<nb::numpy, float, nb::ndim<2>> dequantize(const std::string &dtype, const nb::list &parts, int64_t M, int64_t K) {
    OwnedParts owned(parts);
    const mixrt::Weight w = mixrt::make_weight(dtype_from_name(dtype), M, K, owned.spans, "tensor");
    float *out;
    auto result = new_matrix(M, K, &out);
    for (int64_t r = 0; r < M; ++r) mixrt::dequantize_row(w, r, out + r * K);
    return result;
}

// (out, xhat): out = x^ W^T with a packed quantized W [M, K] through the named kernel table, and
// x^, the input rounded to 8-bit groups as the kernels see it (original column order).
nb::tuple kernel_matmul_quant(const std::string &impl, const std::string &dtype, const nb::list &parts, int64_t M,
                              int64_t K, FloatMatrix x) {
    const mixrt::CpuKernels &k = kernel_table(impl);
    OwnedParts owned(parts);
    const mixrt::Weight w = mixrt::make_weight(dtype_from_name(dtype), M, K, owned.spans, "tensor");
    if (!mixrt::is_quantized(w.dtype)) throw nb::value_error("kernel_matmul_quant takes q8, q4 or mix");
    if (int64_t(x.shape(1)) != K) throw nb::value_error("x has a different K than W");
    const int64_t n = x.shape(0);
    mixrt::QuantizedInputBuffer buffer(n, K);
    const mixrt::QuantizedInput xq = buffer.quantize(w, x.data(), n);
    float *out, *xhat;
    auto result = new_matrix(n, M, &out);
    auto rounded = new_matrix(n, K, &xhat);
    std::memcpy(xhat, xq.xhat, sizeof(float) * n * K);
    if (w.dtype == mixrt::DType::q8) k.matmul_q8(w, xq, out, n, 0, M);
    else if (w.dtype == mixrt::DType::q4) k.matmul_q4(w, xq, out, n, 0, M);
    else k.matmul_mix(w, xq, out, n, 0, M);
    return nb::make_tuple(result, rounded);
}

// The weight called `name` (FORMAT.md 4.1) of a loaded model.
const mixrt::Weight &weight_by_name(const mixrt::LlamaModel &m, const std::string &name) {
    if (name == "token_embd.weight") return m.token_embd();
    if (name == "output.weight") return m.output();
    const std::string prefix = "blk.";
    if (name.compare(0, prefix.size(), prefix) == 0) {
        const size_t dot = name.find('.', prefix.size());
        const int layer = std::stoi(name.substr(prefix.size(), dot - prefix.size()));
        const std::string role = name.substr(dot + 1);
        if (layer >= 0 && size_t(layer) < m.layers().size()) {
            const mixrt::LayerWeights &l = m.layers()[layer];
            for (const auto &[n, w] : {std::pair{"attn_q.weight", &l.attn_q}, {"attn_k.weight", &l.attn_k},
                                      {"attn_v.weight", &l.attn_v}, {"attn_output.weight", &l.attn_output},
                                      {"ffn_gate.weight", &l.ffn_gate}, {"ffn_up.weight", &l.ffn_up},
                                      {"ffn_down.weight", &l.ffn_down}})
                if (role == n) return *w;
        }
    }
    throw nb::value_error(("no matrix named '" + name + "' in the model").c_str());
}

// Seconds per pass of matmuls over the named weights of a model (mixrt bench --gemv).
std::vector<double> time_gemv(const Model &model, const std::vector<std::string> &names, int threads, int n, int reps) {
    std::vector<const mixrt::Weight *> weights;
    for (const std::string &name : names) weights.push_back(&weight_by_name(model.ptr->model, name));
    nb::gil_scoped_release release;
    return mixrt::time_matmuls(weights, threads, n, reps);
}

// ---- GEMV hooks: the weight kernels of cuda/device_weight.h on host arrays (tests/test_cuda_gemv.py)
// and on device pointers owned by the caller (tools/bench_cuda_gemv.py) ----------------------------
#ifdef MIXRT_WITH_CUDA
using CudaWeight = mixrt::cuda::DeviceWeight;

// Runs f, turning mixrt::Error into mixrt.MixrtError.
template <typename F>
auto raising_mixrt_error(F &&f) -> decltype(f()) {
    try {
        return f();
    } catch (const mixrt::Error &e) {
        PyErr_SetString(mixrt_error_type.ptr(), e.what());
        throw nb::python_error();
    }
}

mixrt::cuda::MixSchedule schedule_from_name(const std::string &name) {
    if (name == "overlapped") return mixrt::cuda::MixSchedule::overlapped;
    if (name == "synchronous") return mixrt::cuda::MixSchedule::synchronous;
    throw nb::value_error(("schedule: expected 'overlapped' or 'synchronous', found '" + name + "'").c_str());
}

void register_gemv_hooks(nb::module_ &m) {
    nb::class_<CudaWeight>(m, "CudaWeight")
        .def("__init__",
             [](CudaWeight *self, const std::string &dtype, const nb::list &parts, int64_t M, int64_t K) {
                 OwnedParts owned(parts);
                 raising_mixrt_error([&] {
                     const mixrt::Weight w = mixrt::make_weight(dtype_from_name(dtype), M, K, owned.spans, "tensor");
                     new (self) CudaWeight(CudaWeight::upload(w));
                 });
             },
             "dtype"_a, "parts"_a, "M"_a, "K"_a)
        .def_prop_ro("dtype", [](const CudaWeight &w) { return std::string(mixrt::dtype_name(w.dtype())); })
        .def_prop_ro("rows", &CudaWeight::rows)
        .def_prop_ro("cols", &CudaWeight::cols)
        .def_prop_ro("device_bytes", &CudaWeight::device_bytes)
        // y [n, rows] = x [n, cols] W^T through matvec (matvec_mix with `schedule` for mix).
        .def("matvec",
             [](const CudaWeight &w, FloatMatrix x, const std::string &schedule) {
                 if (int64_t(x.shape(1)) != w.cols()) throw nb::value_error("x has a different K than W");
                 const auto sched = schedule_from_name(schedule);
                 std::vector<float> y = raising_mixrt_error(
                     [&] { return mixrt::cuda::matvec_host(w, x.data(), int(x.shape(0)), sched); });
                 float *out;
                 auto result = new_matrix(x.shape(0), w.rows(), &out);
                 std::memcpy(out, y.data(), y.size() * sizeof(float));
                 return result;
             },
             "x"_a, "schedule"_a = "overlapped")
        .def("gather_rows",
             [](const CudaWeight &w, nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> ids) {
                 std::vector<float> rows = raising_mixrt_error(
                     [&] { return mixrt::cuda::gather_rows_host(w, ids.data(), int(ids.shape(0))); });
                 float *out;
                 auto result = new_matrix(ids.shape(0), w.cols(), &out);
                 std::memcpy(out, rows.data(), rows.size() * sizeof(float));
                 return result;
             },
             "ids"_a)
        // [rows, cols] uint16: the f16 bit patterns of dequantize_f16.
        .def("dequantize_f16",
             [](const CudaWeight &w) {
                 std::vector<uint16_t> h = raising_mixrt_error([&] { return mixrt::cuda::dequantize_f16_host(w); });
                 uint16_t *data = new uint16_t[h.size()];
                 std::memcpy(data, h.data(), h.size() * sizeof(uint16_t));
                 nb::capsule owner(data, [](void *p) noexcept { delete[] static_cast<uint16_t *>(p); });
                 return nb::ndarray<nb::numpy, uint16_t, nb::ndim<2>>(data, {size_t(w.rows()), size_t(w.cols())}, owner);
             })
        // Asynchronous launch on caller-owned device memory and stream (raw addresses, e.g. from torch).
        .def("matvec_ptr",
             [](const CudaWeight &w, uintptr_t x, uintptr_t y, int n, uintptr_t stream, const std::string &schedule) {
                 const auto sched = schedule_from_name(schedule);
                 raising_mixrt_error([&] {
                     auto *xp = reinterpret_cast<const float *>(x);
                     auto *yp = reinterpret_cast<float *>(y);
                     auto *st = reinterpret_cast<cudaStream_t>(stream);
                     if (w.dtype() == mixrt::DType::mix) mixrt::cuda::matvec_mix(w, xp, yp, n, sched, st);
                     else mixrt::cuda::matvec(w, xp, yp, n, st);
                 });
             },
             "x"_a, "y"_a, "n"_a, "stream"_a, "schedule"_a = "overlapped");
}
#endif  // MIXRT_WITH_CUDA
// ---- end of the GEMV hooks ------------------------------------------------------------------------

// ---- CUDA backend op hooks: the forward-pass kernels (cuda/layer_ops_host.h) on host arrays, for
// tests/test_cuda.py. Arrays go in and come out flat (1-D). ------------------------------------------
#ifdef MIXRT_WITH_CUDA
using FlatFloats = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using FlatHalves = nb::ndarray<const uint16_t, nb::c_contig, nb::device::cpu>;

template <typename T>
std::vector<T> flat(const nb::ndarray<const T, nb::c_contig, nb::device::cpu> &a) {
    return std::vector<T>(a.data(), a.data() + a.size());
}

template <typename T>
nb::ndarray<nb::numpy, T, nb::ndim<1>> to_numpy(const std::vector<T> &v) {
    T *data = new T[v.size() ? v.size() : 1];
    if (!v.empty()) std::memcpy(data, v.data(), v.size() * sizeof(T));
    nb::capsule owner(data, [](void *p) noexcept { delete[] static_cast<T *>(p); });
    return nb::ndarray<nb::numpy, T, nb::ndim<1>>(data, {v.size()}, owner);
}

void register_cuda_op_hooks(nb::module_ &m) {
    namespace mc = mixrt::cuda;
    m.def("cuda_rmsnorm", [](FlatFloats x, FlatFloats gain, int n, double eps) {
        return to_numpy(raising_mixrt_error([&] { return mc::rmsnorm_host(flat(x), flat(gain), n, eps); }));
    }, "x"_a, "gain"_a, "n"_a, "eps"_a);
    // -> (rotated q, k cache rows as f16 bits, v cache rows as f16 bits)
    m.def("cuda_rope_store_kv", [](FlatFloats q, FlatFloats k, FlatFloats v, int n, int n_heads, int n_kv_heads,
                                   int head_dim, int pos0, int n_ctx, double theta) {
        std::vector<uint16_t> k_rows, v_rows;
        std::vector<float> qr = raising_mixrt_error([&] {
            return mc::rope_store_kv_host(flat(q), flat(k), flat(v), n, n_heads, n_kv_heads, head_dim, pos0, n_ctx,
                                          theta, k_rows, v_rows);
        });
        return nb::make_tuple(to_numpy(qr), to_numpy(k_rows), to_numpy(v_rows));
    }, "q"_a, "k"_a, "v"_a, "n"_a, "n_heads"_a, "n_kv_heads"_a, "head_dim"_a, "pos0"_a, "n_ctx"_a, "theta"_a);
    m.def("cuda_attention", [](FlatFloats q, FlatHalves k_cache, FlatHalves v_cache, int n, int n_heads,
                               int n_kv_heads, int head_dim, int n_ctx, int pos0) {
        return to_numpy(raising_mixrt_error([&] {
            return mc::attention_host(flat(q), flat(k_cache), flat(v_cache), n, n_heads, n_kv_heads, head_dim, n_ctx,
                                      pos0);
        }));
    }, "q"_a, "k_cache"_a, "v_cache"_a, "n"_a, "n_heads"_a, "n_kv_heads"_a, "head_dim"_a, "n_ctx"_a, "pos0"_a);
    m.def("cuda_swiglu", [](FlatFloats gate, FlatFloats up) {
        return to_numpy(raising_mixrt_error([&] { return mc::swiglu_host(flat(gate), flat(up)); }));
    }, "gate"_a, "up"_a);
    // -> (x + y, rmsnorm(x + y) * gain)
    m.def("cuda_add_rmsnorm", [](FlatFloats x, FlatFloats y, FlatFloats gain, int n, double eps) {
        std::vector<float> sum = flat(x);
        std::vector<float> normed =
            raising_mixrt_error([&] { return mc::add_rmsnorm_host(sum, flat(y), flat(gain), n, eps); });
        return nb::make_tuple(to_numpy(sum), to_numpy(normed));
    }, "x"_a, "y"_a, "gain"_a, "n"_a, "eps"_a);
    m.def("cuda_argmax", [](FlatFloats x) { return raising_mixrt_error([&] { return mc::argmax_host(flat(x)); }); },
          "x"_a);
    m.def("cuda_gemm_f16w", [](FlatHalves W, FlatFloats X, int n, int64_t rows, int64_t cols) {
        return to_numpy(raising_mixrt_error([&] { return mc::gemm_f16w_host(flat(W), flat(X), n, rows, cols); }));
    }, "W"_a, "X"_a, "n"_a, "rows"_a, "cols"_a);
}
#endif  // MIXRT_WITH_CUDA

}  // namespace

NB_MODULE(_core, m) {
    m.doc() = "mixrt C API binding";
    mixrt_error_type = nb::borrow(PyErr_NewExceptionWithDoc("mixrt.MixrtError", "An error reported by the mixrt core.",
                                                            PyExc_RuntimeError, nullptr));
    m.attr("MixrtError") = mixrt_error_type;
    m.def("version", [] { return std::string(mixrt_version()); });
    // "" when the CUDA backend is built and a device can be used, else why not (tests skip on it).
    m.def("cuda_unavailable_reason", [] { return std::string(mixrt_cuda_unavailable_reason()); });
    // The CUDA device's name and architecture ("" without one or without the CUDA backend).
    m.def("cuda_device", [] {
#ifdef MIXRT_WITH_CUDA
        return mixrt::cuda::device_description();
#else
        return std::string();
#endif
    });
#ifdef MIXRT_WITH_CUDA
    register_gemv_hooks(m);  // GEMV hooks, see above
    register_cuda_op_hooks(m);
#endif
    m.def("best_kernels", [] { return std::string(mixrt::best_kernels().name); });
    m.def("kernel_matmul", &kernel_matmul, "impl"_a, "W"_a, "x"_a);
    m.def("dequantize", &dequantize, "dtype"_a, "parts"_a, "M"_a, "K"_a);
    m.def("kernel_matmul_quant", &kernel_matmul_quant, "impl"_a, "dtype"_a, "parts"_a, "M"_a, "K"_a, "x"_a);
    m.def("read_bandwidth", [](int threads, size_t bytes, int reps) {
        nb::gil_scoped_release release;
        return mixrt::read_bandwidth(threads, bytes, reps);
    }, "threads"_a, "bytes"_a, "reps"_a);
    m.def("time_gemv", &time_gemv, "model"_a, "names"_a, "threads"_a, "n"_a, "reps"_a);
    m.def("kernel_attention", [](const std::string &impl, FloatMatrix q, FloatMatrix K, FloatMatrix V) {
        // (scores [n, len], out [n, hd]): scores = q K^T, out = scores V, with the n query rows
        // passed to the kernels together (as the heads that share a KV head).
        const mixrt::CpuKernels &k = kernel_table(impl);
        const int64_t n = q.shape(0), hd = q.shape(1), len = K.shape(0);
        if (int64_t(K.shape(1)) != hd || V.shape(0) != K.shape(0) || int64_t(V.shape(1)) != hd)
            throw nb::value_error("q, K and V need the same width and K, V the same length");
        float *scores, *out;
        auto s = new_matrix(n, len, &scores);
        auto o = new_matrix(n, hd, &out);
        k.attn_scores(q.data(), n, hd, K.data(), hd, len, hd, scores);
        k.attn_values(scores, n, V.data(), hd, len, hd, out, hd);
        return nb::make_tuple(s, o);
    }, "impl"_a, "q"_a, "K"_a, "V"_a);

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
        .def(nb::init<const Model &, int32_t, int32_t>(), "model"_a, "n_ctx"_a, "n_threads"_a, nb::keep_alive<1, 2>())
        .def("feed", &Context::feed, "tokens"_a, "all_logits"_a)
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
        .def("sample", &Sampler::sample, "ctx"_a);

    nb::class_<Generation>(m, "Generation")
        .def(nb::init<Context &, Sampler &, const std::vector<int32_t> &, int32_t, const std::vector<std::string> &>(),
             "ctx"_a, "sampler"_a, "prompt"_a, "max_tokens"_a, "stop"_a, nb::keep_alive<1, 2>(), nb::keep_alive<1, 3>())
        .def("next", &Generation::next)
        .def_prop_ro("n_generated", &Generation::n_generated);
}
