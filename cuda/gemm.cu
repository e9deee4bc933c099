// gemm.cu: see gemm.h. A shared-memory tiled SIMT kernel: a block computes a 64 (weight rows) x
// 64 (tokens) tile of Y, stepping through K 16 columns at a time; each of its 256 threads holds a
// 4 x 4 register tile. Loads are bounds-checked (any rows, cols, n).
#include "gemm.h"

#include "cuda_check.h"

namespace mixrt::cuda {

namespace {

constexpr int kTileRows = 64, kTileTokens = 64, kTileK = 16, kThreads = 256;

__global__ void __launch_bounds__(kThreads)
gemm_f16w_kernel(const __half *__restrict__ W, const float *__restrict__ X, float *__restrict__ Y, int n,
                 int64_t rows, int64_t cols) {
    __shared__ float ws[kTileK][kTileRows + 4];
    __shared__ __align__(16) float xs[kTileK][kTileTokens + 4];
    const int64_t r0 = int64_t(blockIdx.x) * kTileRows;
    const int t0 = blockIdx.y * kTileTokens;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // tokens tx*4.., rows ty*4..
    // Tile loading: thread -> (row or token lr = tid / 4, columns lk = (tid % 4) * 4 .. + 4).
    const int lr = threadIdx.x / 4, lk = (threadIdx.x % 4) * 4;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < cols; k0 += kTileK) {
        const int64_t wr = r0 + lr;
        const int xt = t0 + lr;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int64_t k = k0 + lk + e;
            ws[lk + e][lr] = (wr < rows && k < cols) ? __half2float(W[wr * cols + k]) : 0.0f;
            xs[lk + e][lr] = (xt < n && k < cols) ? X[int64_t(xt) * cols + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kTileK; ++kk) {
            const float4 xv = *reinterpret_cast<const float4 *>(&xs[kk][tx * 4]);
            const float xa[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float w = ws[kk][ty * 4 + i];
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += w * xa[j];
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int64_t r = r0 + ty * 4 + i;
        if (r >= rows) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int t = t0 + tx * 4 + j;
            if (t < n) Y[int64_t(t) * rows + r] = acc[i][j];
        }
    }
}

}  // namespace

void gemm_f16w(const __half *W, const float *X, float *Y, int n, int64_t rows, int64_t cols, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>((rows + kTileRows - 1) / kTileRows), (n + kTileTokens - 1) / kTileTokens);
    gemm_f16w_kernel<<<grid, kThreads, 0, stream>>>(W, X, Y, n, rows, cols);
    MIXRT_CUDA_CHECK_LAUNCH("gemm_f16w_kernel");
}

}  // namespace mixrt::cuda
