// layer_ops.h: the small kernels of the Llama forward pass on the GPU (everything except the
// weight products and attention): RMSNorm, RoPE with the KV-cache write, SwiGLU, the residual add
// and the argmax of a logits row. All fp32 activations, asynchronous on the given stream; the
// token position is read from device memory so a captured graph replays unchanged.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mixrt::cuda {

// out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * gain for t < n (rows of width d).
void rmsnorm(const float *x, const float *gain, float *out, int n, int d, double eps, cudaStream_t stream);

// The residual add fused with the next RMSNorm: x += y, then out = rmsnorm(x) * gain (rows of
// width d, t < n). out may be y.
void add_rmsnorm(float *x, const float *y, const float *gain, float *out, int n, int d, double eps,
                 cudaStream_t stream);

// For the n tokens at positions *pos0 + t: rotates q [n, n_heads, head_dim] in place and k
// [n, n_kv_heads, head_dim] (rotate-half RoPE, cos/sin tables [n_ctx, head_dim/2]), and stores the
// rotated k and v as f16 into rows *pos0 + t of k_cache / v_cache ([n_ctx, n_kv_heads * head_dim]).
void rope_store_kv(float *q, const float *k, const float *v, int n, int n_heads, int n_kv_heads, int head_dim,
                   const float *rope_cos, const float *rope_sin, const int32_t *pos0, __half *k_cache,
                   __half *v_cache, cudaStream_t stream);

// gate[i] = silu(gate[i]) * up[i] for i < count.
void swiglu(float *gate, const float *up, int64_t count, cudaStream_t stream);

// *out = the lowest index of the maximum of x[0, n).
void argmax(const float *x, int n, int32_t *out, cudaStream_t stream);

}  // namespace mixrt::cuda
