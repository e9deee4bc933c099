// kernels_avx2.cpp: AVX2/FMA/F16C twins of kernels_ref.cpp. This file alone is compiled with
// -mavx2 -mfma -mf16c and is only called after the run-time check in kernels.cpp.
// matmul: a register tile of 4 weight rows x T tokens (T <= 3) keeps 12 accumulators, so each
// weight vector loaded (and converted from f16) is used for T tokens; prefill reuses weights
// across tokens, decode (T = 1) streams them once.
#include <immintrin.h>

#include "../half.h"
#include "kernels.h"

namespace mixrt {

namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline __m256 load8(const float *p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
inline float load1(const float *p) { return *p; }
inline float load1(const uint16_t *p) { return half_to_float(*p); }

// out[t, r] for R rows starting at r and T tokens starting at t.
template <int R, int T, typename W_T>
inline void tile(const W_T *W, const float *x, float *out, int64_t M, int64_t K, int64_t r, int64_t t) {
    __m256 acc[R][T];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < T; ++j) acc[i][j] = _mm256_setzero_ps();
    const int64_t K8 = K & ~int64_t(7);
    for (int64_t k = 0; k < K8; k += 8) {
        __m256 xv[T];
        for (int j = 0; j < T; ++j) xv[j] = _mm256_loadu_ps(x + (t + j) * K + k);
        for (int i = 0; i < R; ++i) {
            __m256 w = load8(W + (r + i) * K + k);
            for (int j = 0; j < T; ++j) acc[i][j] = _mm256_fmadd_ps(w, xv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < T; ++j) {
            float s = hsum(acc[i][j]);
            for (int64_t k = K8; k < K; ++k) s += load1(W + (r + i) * K + k) * x[(t + j) * K + k];
            out[(t + j) * M + r + i] = s;
        }
}

template <int R, typename W_T>
inline void row_block(const W_T *W, const float *x, float *out, int64_t n, int64_t M, int64_t K, int64_t r) {
    int64_t t = 0;
    for (; t + 3 <= n; t += 3) tile<R, 3>(W, x, out, M, K, r, t);
    if (n - t == 2) tile<R, 2>(W, x, out, M, K, r, t);
    if (n - t == 1) tile<R, 1>(W, x, out, M, K, r, t);
}

template <typename W_T>
void matmul_avx2(const W_T *W, const float *x, float *out, int64_t n, int64_t M, int64_t K, int64_t r0, int64_t r1) {
    // Token blocks of 64 keep the activations being reused in cache while rows stream past.
    for (int64_t t0 = 0; t0 < n; t0 += 64) {
        const int64_t nt = n - t0 < 64 ? n - t0 : 64;
        const float *xt = x + t0 * K;
        float *ot = out + t0 * M;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) row_block<4>(W, xt, ot, nt, M, K, r);
        for (; r < r1; ++r) row_block<1>(W, xt, ot, nt, M, K, r);
    }
}

float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float s = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

void axpy_avx2(float a, const float *x, float *y, int64_t n) {
    const __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

const CpuKernels &avx2_kernel_table() {
    static const CpuKernels k{"avx2", matmul_avx2<float>, matmul_avx2<uint16_t>, dot_avx2, axpy_avx2};
    return k;
}

}  // namespace mixrt
