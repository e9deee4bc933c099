// attention.cu: see attention.h. Chunk kernel: thread i scores key j0 + i (q in shared memory,
// the key row read as 16-byte vectors), block max and sum give the chunk's softmax, then the
// threads sum p_j V[j] over the chunk, 8 dims and a slice of the keys each (16-byte reads; loops
// unrolled so several loads are in flight per thread). Merge kernel: rescales the chunks
// by exp(m_c - max m) (the usual log-sum-exp merge) and divides by the total.
#include "attention.h"

#include <cmath>
#include <string>

#include "cuda_check.h"
#include "error.h"

namespace mixrt::cuda {

namespace {

constexpr int kThreads = kAttentionChunk;
constexpr int kMaxHeadDim = 256;

__device__ inline float block_reduce(float v, float *scratch, bool take_max) {
    for (int off = 16; off > 0; off >>= 1) {
        const float o = __shfl_xor_sync(0xffffffffu, v, off);
        v = take_max ? fmaxf(v, o) : v + o;
    }
    __syncthreads();  // scratch may still be read from a previous reduction
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    v = scratch[0];
    for (int w = 1; w < kThreads / 32; ++w) v = take_max ? fmaxf(v, scratch[w]) : v + scratch[w];
    return v;
}

// grid (chunks, n_heads, n). partial[((t * n_heads + h) * chunks + c) * (head_dim + 2)] =
// {chunk max score m, sum of exp(s - m), sum of exp(s - m) V[j] (head_dim floats)}.
__global__ void __launch_bounds__(kThreads)
attention_chunk_kernel(const float *__restrict__ q, const __half *__restrict__ k_cache,
                       const __half *__restrict__ v_cache, const int32_t *__restrict__ pos0, int n_heads,
                       int n_kv_heads, int head_dim, float scale, float *__restrict__ partial) {
    const int c = blockIdx.x, h = blockIdx.y, t = blockIdx.z, chunks = gridDim.x;
    const int len = *pos0 + t + 1;  // keys 0 .. pos0 + t
    const int j0 = c * kThreads;
    const int count = min(kThreads, len - j0);
    float *out = partial + ((size_t(t) * n_heads + h) * chunks + c) * (head_dim + 2);
    if (count <= 0) {  // the whole chunk lies after the causal end
        if (threadIdx.x == 0) {
            out[0] = -INFINITY;
            out[1] = 0.0f;
        }
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) out[2 + d] = 0.0f;
        return;
    }
    const int kv_width = n_kv_heads * head_dim, kvh = h / (n_heads / n_kv_heads);
    __shared__ float qs[kMaxHeadDim];
    __shared__ float p[kThreads];
    __shared__ float red[kThreads * 8];  // slices * head_dim <= kThreads * 8
    __shared__ float scratch[kThreads / 32];
    const float *qt = q + (size_t(t) * n_heads + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = qt[d] * scale;
    __syncthreads();

    float s = -INFINITY;
    if (int(threadIdx.x) < count) {
        const uint4 *krow = reinterpret_cast<const uint4 *>(k_cache + size_t(j0 + threadIdx.x) * kv_width + size_t(kvh) * head_dim);
        float acc = 0.0f;
#pragma unroll 4
        for (int v8 = 0; v8 < head_dim / 8; ++v8) {
            const uint4 raw = krow[v8];
            const __half2 *h2 = reinterpret_cast<const __half2 *>(&raw);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 kf = __half22float2(h2[e]);
                acc += qs[v8 * 8 + 2 * e] * kf.x + qs[v8 * 8 + 2 * e + 1] * kf.y;
            }
        }
        s = acc;
    }
    const float m = block_reduce(s, scratch, true);
    const float e = int(threadIdx.x) < count ? expf(s - m) : 0.0f;
    p[threadIdx.x] = e;
    const float l = block_reduce(e, scratch, false);  // its barriers also publish p[]

    // Sum of p_j V[j]: each thread owns 8 dims (one 16-byte load per key) and one of `slices`
    // interleaved subsets of the keys; the slices are added up in shared memory.
    const int groups = head_dim / 8, slices = kThreads / groups;
    const int g = threadIdx.x % groups, slice = threadIdx.x / groups;
    if (slice < slices) {
        float acc[8] = {};
        const __half *vbase = v_cache + size_t(j0) * kv_width + size_t(kvh) * head_dim + g * 8;
#pragma unroll 4
        for (int i = slice; i < count; i += slices) {
            const uint4 raw = *reinterpret_cast<const uint4 *>(vbase + size_t(i) * kv_width);
            const __half2 *h2 = reinterpret_cast<const __half2 *>(&raw);
            const float pi = p[i];
#pragma unroll
            for (int e2 = 0; e2 < 4; ++e2) {
                const float2 vf = __half22float2(h2[e2]);
                acc[2 * e2] += pi * vf.x;
                acc[2 * e2 + 1] += pi * vf.y;
            }
        }
#pragma unroll
        for (int e2 = 0; e2 < 8; ++e2) red[slice * head_dim + g * 8 + e2] = acc[e2];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        out[0] = m;
        out[1] = l;
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int sl = 0; sl < slices; ++sl) a += red[sl * head_dim + d];
        out[2 + d] = a;
    }
}

// grid (n_heads, n), one thread per output dim.
__global__ void attention_merge_kernel(const float *__restrict__ partial, int n_heads, int head_dim, int chunks,
                                       float *__restrict__ out) {
    const int h = blockIdx.x, t = blockIdx.y;
    const float *base = partial + (size_t(t) * n_heads + h) * chunks * (head_dim + 2);
    float m = -INFINITY;
    for (int c = 0; c < chunks; ++c) m = fmaxf(m, base[size_t(c) * (head_dim + 2)]);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float l = 0.0f, a = 0.0f;
        for (int c = 0; c < chunks; ++c) {
            const float *pc = base + size_t(c) * (head_dim + 2);
            if (pc[0] == -INFINITY) continue;
            const float f = expf(pc[0] - m);
            l += pc[1] * f;
            a += pc[2 + d] * f;
        }
        out[(size_t(t) * n_heads + h) * head_dim + d] = a / l;
    }
}

}  // namespace

void check_attention_shape(const AttentionShape &shape) {
    if (shape.head_dim % 8 != 0 || shape.head_dim > kMaxHeadDim)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "CUDA attention: head_dim is " + std::to_string(shape.head_dim) +
                                             ", expected a multiple of 8 up to " + std::to_string(kMaxHeadDim));
    if (shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0)
        fail(MIXRT_ERR_INVALID_ARGUMENT, "CUDA attention: n_heads " + std::to_string(shape.n_heads) +
                                             " is not a multiple of n_kv_heads " + std::to_string(shape.n_kv_heads));
}

void attention(const float *q, const __half *k_cache, const __half *v_cache, const int32_t *pos0, int n,
               const AttentionShape &shape, float *partial, float *out, cudaStream_t stream) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
    const dim3 grid(shape.chunks(), shape.n_heads, n);
    attention_chunk_kernel<<<grid, kThreads, 0, stream>>>(q, k_cache, v_cache, pos0, shape.n_heads, shape.n_kv_heads,
                                                          shape.head_dim, scale, partial);
    MIXRT_CUDA_CHECK_LAUNCH("attention_chunk_kernel");
    attention_merge_kernel<<<dim3(shape.n_heads, n), shape.head_dim, 0, stream>>>(partial, shape.n_heads,
                                                                                  shape.head_dim, shape.chunks(), out);
    MIXRT_CUDA_CHECK_LAUNCH("attention_merge_kernel");
}

}  // namespace mixrt::cuda
