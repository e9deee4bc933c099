// attention.h: causal grouped-query attention over the f16 KV cache, for prefill (n queries) and
// decode (n = 1) alike, split along the keys (flash-decoding): each block scores one chunk of keys
// for one (query, head) with an exact softmax over its chunk, and a second kernel merges the chunks.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mixrt::cuda {

constexpr int kAttentionChunk = 128;  // keys per block (one per thread)

struct AttentionShape {
    int n_heads, n_kv_heads, head_dim;  // head_dim a multiple of 8, at most 256
    int n_ctx;                          // rows of the cache
    // Chunks of kAttentionChunk keys: ceil(n_ctx / kAttentionChunk).
    int chunks() const { return (n_ctx + kAttentionChunk - 1) / kAttentionChunk; }
    // Floats of the scratch `partial` for n queries.
    size_t partial_floats(int n) const { return size_t(n) * n_heads * chunks() * (head_dim + 2); }
};

// Throws mixrt::Error unless head_dim is a multiple of 8 up to 256 and n_kv_heads divides n_heads.
void check_attention_shape(const AttentionShape &shape);

// out[t, h*head_dim + d] = softmax_j(q[t, h] . K[j, h/group] / sqrt(head_dim)) V[j, h/group] over
// cache rows j <= *pos0 + t, for t < n; q [n, n_heads*head_dim] fp32, caches [n_ctx, n_kv*head_dim].
// The grid covers every chunk of the cache (blocks past the causal end exit at once), so one launch
// configuration serves every position (graph replay).
void attention(const float *q, const __half *k_cache, const __half *v_cache, const int32_t *pos0, int n,
               const AttentionShape &shape, float *partial, float *out, cudaStream_t stream);

}  // namespace mixrt::cuda
