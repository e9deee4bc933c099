// layer_ops_host.cu: see layer_ops_host.h.
#include "layer_ops_host.h"

#include <cuda_fp16.h>

#include <cmath>
#include <string>

#include "attention.h"
#include "cuda_check.h"
#include "device_array.h"
#include "engine.h"
#include "error.h"
#include "gemm.h"
#include "layer_ops.h"

namespace mixrt::cuda {

namespace {

template <typename T>
DeviceArray<T> to_device(const std::vector<T> &host, const char *what) {
    DeviceArray<T> d(host.size() ? host.size() : 1, what);
    if (!host.empty())
        MIXRT_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

// A device array of count elements filled with NaN bytes (0xff).
template <typename T>
DeviceArray<T> nan_filled(size_t count, const char *what) {
    DeviceArray<T> d(count ? count : 1, what);
    MIXRT_CUDA_CHECK(cudaMemset(d.get(), 0xff, (count ? count : 1) * sizeof(T)));
    return d;
}

template <typename T>
std::vector<T> to_host(const DeviceArray<T> &d, size_t count) {
    MIXRT_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> host(count);
    if (count) MIXRT_CUDA_CHECK(cudaMemcpy(host.data(), d.get(), count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}

void require(bool ok, const std::string &what) {
    if (!ok) fail(MIXRT_ERR_INVALID_ARGUMENT, what);
}

}  // namespace

std::vector<float> rmsnorm_host(const std::vector<float> &x, const std::vector<float> &gain, int n, double eps) {
    const int d = static_cast<int>(gain.size());
    require(x.size() == size_t(n) * d, "rmsnorm: x has " + std::to_string(x.size()) + " values, expected n * d = " +
                                           std::to_string(size_t(n) * d));
    auto dx = to_device(x, "x");
    auto dg = to_device(gain, "gain");
    auto out = nan_filled<float>(x.size(), "out");
    rmsnorm(dx.get(), dg.get(), out.get(), n, d, eps, nullptr);
    return to_host(out, x.size());
}

std::vector<float> rope_store_kv_host(const std::vector<float> &q, const std::vector<float> &k,
                                      const std::vector<float> &v, int n, int n_heads, int n_kv_heads, int head_dim,
                                      int pos0, int n_ctx, double theta, std::vector<uint16_t> &k_rows,
                                      std::vector<uint16_t> &v_rows) {
    const size_t kv_width = size_t(n_kv_heads) * head_dim;
    require(q.size() == size_t(n) * n_heads * head_dim, "rope: q has " + std::to_string(q.size()) + " values, expected " +
                                                            std::to_string(size_t(n) * n_heads * head_dim));
    require(k.size() == n * kv_width && v.size() == n * kv_width,
            "rope: k and v need " + std::to_string(n * kv_width) + " values each");
    require(pos0 >= 0 && pos0 + n <= n_ctx, "rope: positions " + std::to_string(pos0) + ".." +
                                                std::to_string(pos0 + n - 1) + " outside the context of " +
                                                std::to_string(n_ctx));
    std::vector<float> cos_table, sin_table;
    rope_tables(n_ctx, head_dim, theta, cos_table, sin_table);
    auto dq = to_device(q, "q");
    auto dk = to_device(k, "k");
    auto dv = to_device(v, "v");
    auto dcos = to_device(cos_table, "cos");
    auto dsin = to_device(sin_table, "sin");
    auto dpos = to_device(std::vector<int32_t>{pos0}, "pos0");
    auto kc = nan_filled<__half>(size_t(n_ctx) * kv_width, "k cache");
    auto vc = nan_filled<__half>(size_t(n_ctx) * kv_width, "v cache");
    rope_store_kv(dq.get(), dk.get(), dv.get(), n, n_heads, n_kv_heads, head_dim, dcos.get(), dsin.get(), dpos.get(),
                  kc.get(), vc.get(), nullptr);
    MIXRT_CUDA_CHECK(cudaDeviceSynchronize());
    k_rows.resize(n * kv_width);
    v_rows.resize(n * kv_width);
    MIXRT_CUDA_CHECK(cudaMemcpy(k_rows.data(), kc.get() + size_t(pos0) * kv_width, k_rows.size() * 2, cudaMemcpyDeviceToHost));
    MIXRT_CUDA_CHECK(cudaMemcpy(v_rows.data(), vc.get() + size_t(pos0) * kv_width, v_rows.size() * 2, cudaMemcpyDeviceToHost));
    return to_host(dq, q.size());
}

std::vector<float> attention_host(const std::vector<float> &q, const std::vector<uint16_t> &k_cache,
                                  const std::vector<uint16_t> &v_cache, int n, int n_heads, int n_kv_heads,
                                  int head_dim, int n_ctx, int pos0) {
    const AttentionShape shape{n_heads, n_kv_heads, head_dim, n_ctx};
    check_attention_shape(shape);
    const size_t cache = size_t(n_ctx) * n_kv_heads * head_dim;
    require(q.size() == size_t(n) * n_heads * head_dim, "attention: q has " + std::to_string(q.size()) +
                                                            " values, expected " +
                                                            std::to_string(size_t(n) * n_heads * head_dim));
    require(k_cache.size() == cache && v_cache.size() == cache,
            "attention: the caches need n_ctx * n_kv_heads * head_dim = " + std::to_string(cache) + " values each");
    require(pos0 >= 0 && pos0 + n <= n_ctx, "attention: positions outside the context");
    auto dq = to_device(q, "q");
    DeviceArray<__half> kc(cache, "k cache"), vc(cache, "v cache");
    MIXRT_CUDA_CHECK(cudaMemcpy(kc.get(), k_cache.data(), cache * 2, cudaMemcpyHostToDevice));
    MIXRT_CUDA_CHECK(cudaMemcpy(vc.get(), v_cache.data(), cache * 2, cudaMemcpyHostToDevice));
    auto dpos = to_device(std::vector<int32_t>{pos0}, "pos0");
    auto partial = nan_filled<float>(shape.partial_floats(n), "partial");
    auto out = nan_filled<float>(q.size(), "out");
    attention(dq.get(), kc.get(), vc.get(), dpos.get(), n, shape, partial.get(), out.get(), nullptr);
    return to_host(out, q.size());
}

std::vector<float> swiglu_host(const std::vector<float> &gate, const std::vector<float> &up) {
    require(gate.size() == up.size(), "swiglu: gate and up differ in length");
    auto dg = to_device(gate, "gate");
    auto du = to_device(up, "up");
    swiglu(dg.get(), du.get(), int64_t(gate.size()), nullptr);
    return to_host(dg, gate.size());
}

std::vector<float> add_rmsnorm_host(std::vector<float> &x, const std::vector<float> &y,
                                    const std::vector<float> &gain, int n, double eps) {
    const int d = static_cast<int>(gain.size());
    require(x.size() == size_t(n) * d && y.size() == x.size(),
            "add_rmsnorm: x and y need n * d = " + std::to_string(size_t(n) * d) + " values each, found " +
                std::to_string(x.size()) + " and " + std::to_string(y.size()));
    auto dx = to_device(x, "x");
    auto dy = to_device(y, "y");
    auto dg = to_device(gain, "gain");
    add_rmsnorm(dx.get(), dy.get(), dg.get(), dy.get(), n, d, eps, nullptr);
    x = to_host(dx, x.size());
    return to_host(dy, y.size());
}

int32_t argmax_host(const std::vector<float> &x) {
    require(!x.empty(), "argmax: x is empty");
    auto dx = to_device(x, "x");
    auto out = nan_filled<int32_t>(1, "out");
    argmax(dx.get(), static_cast<int>(x.size()), out.get(), nullptr);
    return to_host(out, 1)[0];
}

std::vector<float> gemm_f16w_host(const std::vector<uint16_t> &W, const std::vector<float> &X, int n, int64_t rows,
                                  int64_t cols) {
    require(W.size() == size_t(rows * cols), "gemm: W has " + std::to_string(W.size()) + " values, expected " +
                                                 std::to_string(rows * cols));
    require(X.size() == size_t(n) * cols, "gemm: X has " + std::to_string(X.size()) + " values, expected " +
                                              std::to_string(size_t(n) * cols));
    DeviceArray<__half> dw(W.size(), "W");
    MIXRT_CUDA_CHECK(cudaMemcpy(dw.get(), W.data(), W.size() * 2, cudaMemcpyHostToDevice));
    auto dx = to_device(X, "X");
    auto out = nan_filled<float>(size_t(n) * rows, "Y");
    gemm_f16w(dw.get(), dx.get(), out.get(), n, rows, cols, nullptr);
    return to_host(out, size_t(n) * rows);
}

}  // namespace mixrt::cuda
