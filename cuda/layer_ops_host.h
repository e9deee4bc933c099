// layer_ops_host.h: host-array wrappers of the forward-pass kernels (layer_ops.h, attention.h,
// gemm.h) for tests/test_cuda.py: each copies its inputs to the device, fills the outputs with NaN
// (so an unwritten element shows), runs the kernel, synchronizes and copies the result back.
// Plain C++: no CUDA headers.
#pragma once

#include <cstdint>
#include <vector>


namespace mixrt::cuda {

// [n, d] -> [n, d]
std::vector<float> rmsnorm_host(const std::vector<float> &x, const std::vector<float> &gain, int n,
                                          double eps);

// RoPE of q [n, n_heads*hd] (returned rotated) and k at positions pos0 .. pos0+n-1 with tables
// for n_ctx positions of base theta; k_rows / v_rows receive cache rows pos0.. as f16 bit patterns.
std::vector<float> rope_store_kv_host(const std::vector<float> &q, const std::vector<float> &k,
                                                const std::vector<float> &v, int n, int n_heads, int n_kv_heads,
                                                int head_dim, int pos0, int n_ctx, double theta,
                                                std::vector<uint16_t> &k_rows, std::vector<uint16_t> &v_rows);

// Attention of q [n, n_heads*hd] at positions pos0 + t over caches [n_ctx, n_kv*hd] (f16 bits;
// rows past pos0 + n - 1 are never read).
std::vector<float> attention_host(const std::vector<float> &q, const std::vector<uint16_t> &k_cache,
                                            const std::vector<uint16_t> &v_cache, int n, int n_heads, int n_kv_heads,
                                            int head_dim, int n_ctx, int pos0);

// silu(gate) * up
std::vector<float> swiglu_host(const std::vector<float> &gate, const std::vector<float> &up);
// add_rmsnorm with out aliasing y, as the forward pass runs it: returns rmsnorm(x + y) * gain and
// sets x to x + y ([n, d] each).
std::vector<float> add_rmsnorm_host(std::vector<float> &x, const std::vector<float> &y,
                                              const std::vector<float> &gain, int n, double eps);
int32_t argmax_host(const std::vector<float> &x);

// Y [n, rows] = X [n, cols] W^T for W [rows, cols] given as f16 bit patterns.
std::vector<float> gemm_f16w_host(const std::vector<uint16_t> &W, const std::vector<float> &X, int n,
                                            int64_t rows, int64_t cols);

}  // namespace mixrt::cuda
