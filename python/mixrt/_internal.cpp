// _internal.cpp: the nanobind module mixrt._internal, the project's own view into the core for tests
// and benchmarks (never needed to run a model): the CPU kernel tables on caller data
// (tests/test_kernels.py, tests/test_quant_kernels.py), the RoPE tables (for the numpy decoder of
// calibration, quant/calibration.py), the reference decode of packed parts, the
// speed probes and per-matrix timing of `mixrt bench`, and with the CUDA backend its weight
// kernels and forward-pass ops on host arrays (tests/test_cuda*.py, tools/bench_cuda_gemv.py). It is
// built from the core's objects, not linked to libmixrt, which exports the C API only; errors of
// the core raise mixrt.MixrtError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "cpu/activation_rounding.h"
#include "cpu/cpu_model.h"
#include "cpu/kernels.h"
#include "cpu/quantized_input.h"
#include "cpu/speed_probe.h"
#include "error.h"
#include "llama_model.h"
#include "format/quant_layout.h"
#include "rope.h"
#ifdef MIXRT_WITH_CUDA
#include "device_info.h"
#include "gemv_host_io.h"
#include "layer_ops_host.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace {

nb::object mixrt_error_type;  // mixrt._core.MixrtError

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

const mixrt::CpuKernels &kernel_table(const std::string &impl) {
    if (const mixrt::CpuKernels *k = mixrt::kernels_named(impl)) return *k;
    throw nb::value_error(("kernel table '" + impl + "' is unknown or not available on this CPU/build").c_str());
}

using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using AnyMatrix = nb::ndarray<nb::ndim<2>, nb::c_contig, nb::device::cpu>;

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

// (cos, sin) [n_ctx, head_dim/2] as every backend computes them (rope.h), from the llama.rope.*
// values of FORMAT.md 3.3 (scaling_type "none" for plain RoPE).
std::tuple<nb::ndarray<nb::numpy, float, nb::ndim<2>>, nb::ndarray<nb::numpy, float, nb::ndim<2>>> rope_tables(
    int32_t n_ctx, int32_t head_dim, double theta, const std::string &scaling_type, double factor,
    int64_t original_context_length, double low_freq_factor, double high_freq_factor, double beta_fast,
    double beta_slow, double attention_factor, const std::vector<float> &freq_factors) {
    mixrt::RopeScaling s;
    const mixrt::RopeScalingType types[] = {mixrt::RopeScalingType::none, mixrt::RopeScalingType::linear,
                                            mixrt::RopeScalingType::dynamic, mixrt::RopeScalingType::yarn,
                                            mixrt::RopeScalingType::llama3};
    const auto *type = std::find_if(std::begin(types), std::end(types),
                                    [&](auto t) { return scaling_type == mixrt::rope_scaling_name(t); });
    if (type == std::end(types)) throw nb::value_error(("unknown RoPE scaling type " + scaling_type).c_str());
    if (n_ctx < 1 || head_dim < 2 || head_dim % 2) throw nb::value_error("n_ctx >= 1 and an even head_dim >= 2 expected");
    if (!freq_factors.empty() && freq_factors.size() != size_t(head_dim / 2))
        throw nb::value_error("freq_factors: head_dim/2 values expected");
    s = {*type, factor, original_context_length, low_freq_factor, high_freq_factor, beta_fast, beta_slow,
         attention_factor, freq_factors};
    std::vector<float> cos_table, sin_table;
    mixrt::rope_tables(n_ctx, head_dim, theta, cos_table, sin_table, s);
    auto to_array = [&](std::vector<float> &v) {
        float *data = new float[v.size()];
        std::memcpy(data, v.data(), v.size() * sizeof(float));
        nb::capsule owner(data, [](void *p) noexcept { delete[] static_cast<float *>(p); });
        return nb::ndarray<nb::numpy, float, nb::ndim<2>>(data, {size_t(n_ctx), size_t(head_dim / 2)}, owner);
    };
    return {to_array(cos_table), to_array(sin_table)};
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

// x [n, K] rounded to bfp<bits> in blocks of 16 along K (the runtime's activations option).
nb::ndarray<nb::numpy, float, nb::ndim<2>> round_to_bfp(FloatMatrix x, int bits) {
    if (bits < 3 || bits > 8) throw nb::value_error("bits: expected 3..8");
    float *out;
    auto result = new_matrix(x.shape(0), x.shape(1), &out);
    mixrt::round_rows_to_bfp(x.data(), int64_t(x.shape(0)), int64_t(x.shape(1)), bits, out);
    return result;
}

// (out, xhat): out = x^ W^T with a packed quantized W [M, K] through the named kernel table, and
// x^, the input rounded to 8-bit groups as the kernels see it (original column order).
nb::tuple kernel_matmul_quant(const std::string &impl, const std::string &dtype, const nb::list &parts, int64_t M,
                              int64_t K, FloatMatrix x, int quik_bits) {
    const mixrt::CpuKernels &k = kernel_table(impl);
    OwnedParts owned(parts);
    const mixrt::Weight w = mixrt::make_weight(dtype_from_name(dtype), M, K, owned.spans, "tensor");
    if (!mixrt::is_quantized(w.dtype)) throw nb::value_error("kernel_matmul_quant takes a quantized dtype");
    if (int64_t(x.shape(1)) != K) throw nb::value_error("x has a different K than W");
    const int64_t n = x.shape(0);
    if (quik_bits != 8 && quik_bits != 4) throw nb::value_error("quik_bits: expected 8 or 4");
    mixrt::QuantizedInputBuffer buffer(n, K, quik_bits);
    const mixrt::QuantizedInput xq = buffer.quantize(w, x.data(), n, nullptr, k.round_quik_row, true);
    float *out, *xhat;
    auto result = new_matrix(n, M, &out);
    auto rounded = new_matrix(n, K, &xhat);
    std::memcpy(xhat, xq.xhat, sizeof(float) * n * K);
    const mixrt::TiledMatrix tiled(w);
    if (w.dtype == mixrt::DType::q8) k.matmul_q8(tiled, xq, out, n, 0, M);
    else if (w.dtype == mixrt::DType::q4) k.matmul_q4(tiled, xq, out, n, 0, M);
    else if (w.dtype == mixrt::DType::mix) k.matmul_mix(tiled, xq, out, n, 0, M);
    else if (w.dtype == mixrt::DType::quik) k.matmul_quik(tiled, xq, out, n, 0, M);
    else k.matmul_block(tiled, xq, out, n, 0, M);
    return nb::make_tuple(result, rounded);
}

// The matrix called `name` (FORMAT.md 4.1) of a model prepared for the CPU.
const mixrt::TiledMatrix &weight_by_name(const mixrt::CpuWeights &m, const std::string &name) {
    if (name == "output.weight") return m.output;  // the tied token embedding too
    const std::string prefix = "blk.";
    if (name.compare(0, prefix.size(), prefix) == 0) {
        const size_t dot = name.find('.', prefix.size());
        const int layer = std::stoi(name.substr(prefix.size(), dot - prefix.size()));
        const std::string role = name.substr(dot + 1);
        if (layer >= 0 && size_t(layer) < m.layers.size()) {
            const mixrt::LayerOf<mixrt::TiledMatrix> &l = m.layers[layer];
            for (const auto &[n, w] : {std::pair{"attn_q.weight", &l.attn_q}, {"attn_k.weight", &l.attn_k},
                                      {"attn_v.weight", &l.attn_v}, {"attn_output.weight", &l.attn_output},
                                      {"ffn_gate.weight", &l.ffn_gate}, {"ffn_up.weight", &l.ffn_up},
                                      {"ffn_down.weight", &l.ffn_down}})
                if (role == n) return *w;
        }
    }
    throw nb::value_error(("no matrix named '" + name + "' in the model").c_str());
}

// For each group of weight names of the model at path, the seconds of each of `reps` passes of
// matmuls over that group's weights in turn (mixrt bench --gemv).
std::vector<std::vector<double>> time_gemv(const std::string &path, const std::vector<std::vector<std::string>> &groups,
                                           int threads, int n, int reps) {
    const mixrt::LlamaModel model = raising_mixrt_error([&] { return mixrt::LlamaModel(path); });
    const mixrt::CpuWeights cpu =
        raising_mixrt_error([&] { return mixrt::CpuWeights(model, mixrt::best_kernels().reads_tiles); });
    std::vector<std::vector<const mixrt::TiledMatrix *>> weights(groups.size());
    for (size_t g = 0; g < groups.size(); ++g)
        for (const std::string &name : groups[g]) weights[g].push_back(&weight_by_name(cpu, name));
    nb::gil_scoped_release release;
    std::vector<std::vector<double>> seconds;
    for (const auto &group : weights) seconds.push_back(mixrt::time_matmuls(group, threads, n, reps));
    return seconds;
}

// ---- GEMV hooks: the weight kernels of cuda/device_weight.h on host arrays (tests/test_cuda_gemv.py)
// and on device pointers owned by the caller (tools/bench_cuda_gemv.py) ----------------------------
#ifdef MIXRT_WITH_CUDA
using CudaWeight = mixrt::cuda::DeviceWeight;


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

NB_MODULE(_internal, m) {
    m.doc() = "mixrt internals for tests and benchmarks";
    mixrt_error_type = nb::module_::import_("mixrt._core").attr("MixrtError");
    // The CUDA device's name and architecture ("" without one or without the CUDA backend).
    m.def("cuda_device", [] {
#ifdef MIXRT_WITH_CUDA
        return mixrt::cuda::device_description();
#else
        return std::string();
#endif
    });
#ifdef MIXRT_WITH_CUDA
    register_gemv_hooks(m);
    register_cuda_op_hooks(m);
#endif
    m.def("best_kernels", [] { return raising_mixrt_error([] { return std::string(mixrt::best_kernels().name); }); });
    m.def("available_kernels", &mixrt::available_kernels);
    m.def("kernel_matmul", &kernel_matmul, "impl"_a, "W"_a, "x"_a);
    m.def("dequantize", &dequantize, "dtype"_a, "parts"_a, "M"_a, "K"_a);
    m.def("round_to_bfp", &round_to_bfp, "x"_a, "bits"_a);
    m.def("rope_tables", &rope_tables, "n_ctx"_a, "head_dim"_a, "theta"_a, "scaling_type"_a, "factor"_a,
          "original_context_length"_a, "low_freq_factor"_a, "high_freq_factor"_a, "beta_fast"_a, "beta_slow"_a,
          "attention_factor"_a, "freq_factors"_a);
    m.def("kernel_matmul_quant", &kernel_matmul_quant, "impl"_a, "dtype"_a, "parts"_a, "M"_a, "K"_a, "x"_a,
          "quik_bits"_a = 8);
    m.def("read_bandwidth", [](int threads, size_t bytes, int reps) {
        nb::gil_scoped_release release;
        return mixrt::read_bandwidth(threads, bytes, reps);
    }, "threads"_a, "bytes"_a, "reps"_a);
    m.def("time_gemv", &time_gemv, "path"_a, "groups"_a, "threads"_a, "n"_a, "reps"_a);
    m.def("kernel_attention", [](const std::string &impl, FloatMatrix q, AnyMatrix K, AnyMatrix V) {
        // (scores [n, len], out [n, hd]): scores = q K^T, out = scores V, with the n query rows
        // passed to the kernels together (as the heads that share a KV head); K and V as a KV cache
        // stores them: f16 bits (uint16) or float32.
        const mixrt::CpuKernels &k = kernel_table(impl);
        const int64_t n = q.shape(0), hd = q.shape(1), len = K.shape(0);
        if (int64_t(K.shape(1)) != hd || V.shape(0) != K.shape(0) || int64_t(V.shape(1)) != hd)
            throw nb::value_error("q, K and V need the same width and K, V the same length");
        if (K.dtype() != V.dtype()) throw nb::value_error("K and V need the same dtype");
        float *scores, *out;
        auto s = new_matrix(n, len, &scores);
        auto o = new_matrix(n, hd, &out);
        if (K.dtype() == nb::dtype<uint16_t>()) {
            k.attn_scores_f16(q.data(), n, hd, static_cast<const uint16_t *>(K.data()), hd, len, hd, scores);
            k.attn_values_f16(scores, n, static_cast<const uint16_t *>(V.data()), hd, len, hd, out, hd);
        } else if (K.dtype() == nb::dtype<float>()) {
            k.attn_scores_f32(q.data(), n, hd, static_cast<const float *>(K.data()), hd, len, hd, scores);
            k.attn_values_f32(scores, n, static_cast<const float *>(V.data()), hd, len, hd, out, hd);
        } else {
            throw nb::value_error("K and V must be uint16 (f16 bits) or float32");
        }
        return nb::make_tuple(s, o);
    }, "impl"_a, "q"_a, "K"_a, "V"_a);
    m.def("kernel_to_f16", [](const std::string &impl, nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu> x) {
        // x rounded to f16 bits by the named table's to_f16 (the KV cache store).
        const mixrt::CpuKernels &k = kernel_table(impl);
        uint16_t *out = new uint16_t[x.shape(0) + 1];
        nb::capsule owner(out, [](void *p) noexcept { delete[] static_cast<uint16_t *>(p); });
        k.to_f16(x.data(), out, int64_t(x.shape(0)));
        return nb::ndarray<nb::numpy, uint16_t, nb::ndim<1>>(out, {x.shape(0)}, owner);
    }, "impl"_a, "x"_a);
    m.def("kernel_softmax", [](const std::string &impl, FloatMatrix s, float scale) {
        // softmax(scale s) of each row of s by the named table's softmax_rows (attention).
        const mixrt::CpuKernels &k = kernel_table(impl);
        float *out;
        auto result = new_matrix(s.shape(0), s.shape(1), &out);
        std::memcpy(out, s.data(), sizeof(float) * s.shape(0) * s.shape(1));
        k.softmax_rows(out, int64_t(s.shape(0)), int64_t(s.shape(1)), scale);
        return result;
    }, "impl"_a, "s"_a, "scale"_a);
}
