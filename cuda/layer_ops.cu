// layer_ops.cu: see layer_ops.h. Row reductions use one block of 1024 threads per row (decode has
// one row: the block's loads must all be in flight at once, not one after another); RMSNorm sums
// squares in double like the CPU (cpp/src/cpu/context.cpp); RoPE reads the tables of engine.h.
#include "layer_ops.h"

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "cuda_check.h"

namespace mixrt::cuda {

namespace {

constexpr int kThreads = 256;         // elementwise kernels
constexpr int kReduceThreads = 1024;  // one-block row reductions: many loads in flight at once

__device__ inline double dot_self(float v) { return double(v) * v; }
__device__ inline double dot_self(float4 v) {
    return double(v.x) * v.x + double(v.y) * v.y + double(v.z) * v.z + double(v.w) * v.w;
}
__device__ inline float4 operator+(float4 a, float4 b) { return {a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w}; }
__device__ inline float4 operator*(float4 a, float s) { return {a.x * s, a.y * s, a.z * s, a.w * s}; }
__device__ inline float4 operator*(float4 a, float4 b) { return {a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w}; }

// Sum over the block (blockDim.x == kReduceThreads) of a double, returned to every thread.
__device__ inline double block_sum(double v) {
    __shared__ double partial[kReduceThreads / 32];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = partial[threadIdx.x];
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (threadIdx.x == 0) partial[0] = v;
    }
    __syncthreads();
    return partial[0];
}

// One block per row, kVec: float4 accesses (d % 4 == 0, rows 16-byte aligned). With a residual
// y (kAdd), x += y first. Each thread reads back only the elements it wrote, so out may alias y
// (or x).
template <typename T, bool kAdd>
__global__ void __launch_bounds__(kReduceThreads)
rmsnorm_kernel(float *x, const float *y, const float *gain, float *out, int d, double eps) {
    const int m = d / int(sizeof(T) / sizeof(float));  // elements of type T per row
    T *xr = reinterpret_cast<T *>(x + size_t(blockIdx.x) * d);
    const T *yr = reinterpret_cast<const T *>(y + size_t(blockIdx.x) * d);
    const T *g = reinterpret_cast<const T *>(gain);
    T *outr = reinterpret_cast<T *>(out + size_t(blockIdx.x) * d);
    double ss = 0;
#pragma unroll 4
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        T v = xr[i];
        if constexpr (kAdd) {
            v = v + yr[i];
            xr[i] = v;
        }
        ss += dot_self(v);
    }
    const float scale = static_cast<float>(1.0 / sqrt(block_sum(ss) / d + eps));
#pragma unroll 4
    for (int i = threadIdx.x; i < m; i += blockDim.x) outr[i] = xr[i] * scale * g[i];
}

// One thread per item of a token (grid.y): a (head, i) pair of q or k to rotate (dims i and
// i + head_dim/2), or one value of v to store.
__global__ void rope_store_kv_kernel(float *__restrict__ q, const float *__restrict__ k,
                                     const float *__restrict__ v, int n_heads, int n_kv_heads, int head_dim,
                                     const float *__restrict__ rope_cos, const float *__restrict__ rope_sin,
                                     const int32_t *__restrict__ pos0, __half *__restrict__ k_cache,
                                     __half *__restrict__ v_cache) {
    const int t = blockIdx.y, half = head_dim / 2;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int pairs = (n_heads + n_kv_heads) * half, kv_width = n_kv_heads * head_dim;
    if (idx >= pairs + kv_width) return;
    const int pos = *pos0 + t;
    if (idx >= pairs) {
        const int i = idx - pairs;
        v_cache[size_t(pos) * kv_width + i] = __float2half_rn(v[size_t(t) * kv_width + i]);
        return;
    }
    const int h = idx / half, i = idx % half;
    const float c = rope_cos[size_t(pos) * half + i], s = rope_sin[size_t(pos) * half + i];
    if (h < n_heads) {
        float *x = q + (size_t(t) * n_heads + h) * head_dim;
        const float a = x[i], b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = a * s + b * c;
    } else {
        const int off = (h - n_heads) * head_dim;
        const float *x = k + size_t(t) * kv_width + off;
        const float a = x[i], b = x[i + half];
        __half *kc = k_cache + size_t(pos) * kv_width + off;
        kc[i] = __float2half_rn(a * c - b * s);
        kc[i + half] = __float2half_rn(a * s + b * c);
    }
}

__global__ void swiglu_kernel(float *__restrict__ gate, const float *__restrict__ up, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// (value, index) with the larger value, the lower index on ties; NaN never wins.
__device__ inline void better(float &v, int &i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

__global__ void __launch_bounds__(kReduceThreads) argmax_kernel(const float *__restrict__ x, int n, int32_t *__restrict__ out) {
    float best = -FLT_MAX;
    int best_i = n;
#pragma unroll 8
    for (int i = threadIdx.x; i < n; i += blockDim.x) better(best, best_i, x[i], i);
    for (int off = 16; off > 0; off >>= 1)
        better(best, best_i, __shfl_xor_sync(0xffffffffu, best, off), __shfl_xor_sync(0xffffffffu, best_i, off));
    __shared__ float vals[kReduceThreads / 32];
    __shared__ int idxs[kReduceThreads / 32];
    if ((threadIdx.x & 31) == 0) {
        vals[threadIdx.x >> 5] = best;
        idxs[threadIdx.x >> 5] = best_i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < kReduceThreads / 32; ++w) better(best, best_i, vals[w], idxs[w]);
        *out = best_i < n ? best_i : 0;
    }
}

int elementwise_blocks(int64_t count) {
    const int64_t blocks = (count + kThreads - 1) / kThreads;
    return static_cast<int>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

}  // namespace


namespace {

bool aligned16(const void *p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <bool kAdd>
void launch_rmsnorm(float *x, const float *y, const float *gain, float *out, int n, int d, double eps,
                    cudaStream_t stream) {
    const bool vec = d % 4 == 0 && aligned16(x) && aligned16(gain) && aligned16(out) && (!kAdd || aligned16(y));
    if (vec) rmsnorm_kernel<float4, kAdd><<<n, kReduceThreads, 0, stream>>>(x, y, gain, out, d, eps);
    else rmsnorm_kernel<float, kAdd><<<n, kReduceThreads, 0, stream>>>(x, y, gain, out, d, eps);
    MIXRT_CUDA_CHECK_LAUNCH(kAdd ? "add_rmsnorm_kernel" : "rmsnorm_kernel");
}

}  // namespace

void rmsnorm(const float *x, const float *gain, float *out, int n, int d, double eps, cudaStream_t stream) {
    // Without a residual the kernel only reads x.
    launch_rmsnorm<false>(const_cast<float *>(x), x, gain, out, n, d, eps, stream);
}

void add_rmsnorm(float *x, const float *y, const float *gain, float *out, int n, int d, double eps,
                 cudaStream_t stream) {
    launch_rmsnorm<true>(x, y, gain, out, n, d, eps, stream);
}

void rope_store_kv(float *q, const float *k, const float *v, int n, int n_heads, int n_kv_heads, int head_dim,
                   const float *rope_cos, const float *rope_sin, const int32_t *pos0, __half *k_cache,
                   __half *v_cache, cudaStream_t stream) {
    const int items = (n_heads + n_kv_heads) * (head_dim / 2) + n_kv_heads * head_dim;
    rope_store_kv_kernel<<<dim3((items + kThreads - 1) / kThreads, n), kThreads, 0, stream>>>(
        q, k, v, n_heads, n_kv_heads, head_dim, rope_cos, rope_sin, pos0, k_cache, v_cache);
    MIXRT_CUDA_CHECK_LAUNCH("rope_store_kv_kernel");
}

void swiglu(float *gate, const float *up, int64_t count, cudaStream_t stream) {
    swiglu_kernel<<<elementwise_blocks(count), kThreads, 0, stream>>>(gate, up, count);
    MIXRT_CUDA_CHECK_LAUNCH("swiglu_kernel");
}

void argmax(const float *x, int n, int32_t *out, cudaStream_t stream) {
    argmax_kernel<<<1, kReduceThreads, 0, stream>>>(x, n, out);
    MIXRT_CUDA_CHECK_LAUNCH("argmax_kernel");
}

}  // namespace mixrt::cuda
