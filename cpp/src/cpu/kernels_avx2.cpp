// kernels_avx2.cpp: AVX2/FMA/F16C twins of kernels_ref.cpp. This file alone is compiled with
// -mavx2 -mfma -mf16c and is only called after the run-time check in kernels.cpp.
// matmul: a register tile of 4 weight rows x T tokens (T <= 3) keeps 12 accumulators, so each
// weight vector loaded (and converted from f16) is used for T tokens; prefill reuses weights
// across tokens, decode (T = 1) streams them once. Quantized dtypes decode each group into
// registers (never into memory) and use it for up to 4 tokens.
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

// ---- quantized dtypes ----------------------------------------------------------------------------

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// 8 unsigned bytes -> 8 floats.
inline __m256 u8_to_ps(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }

// The 32 codes of a q4 group (16 bytes, FORMAT.md 5.4) as 4 vectors of w = q * scale + min.
inline void decode_q4_group(const uint8_t *bytes, float scale, float min, __m256 w[4]) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(bytes));
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(v, mask), hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
    const __m256 s = _mm256_set1_ps(scale), m = _mm256_set1_ps(min);
    w[0] = _mm256_fmadd_ps(u8_to_ps(lo), s, m);
    w[1] = _mm256_fmadd_ps(u8_to_ps(_mm_srli_si128(lo, 8)), s, m);
    w[2] = _mm256_fmadd_ps(u8_to_ps(hi), s, m);
    w[3] = _mm256_fmadd_ps(u8_to_ps(_mm_srli_si128(hi, 8)), s, m);
}

// acc[t] += w . x[t, 0..32) for the 4 vectors of one decoded group.
template <int T>
inline void fma_group(const __m256 w[4], const float *x, int64_t x_stride, __m256 acc[T]) {
    for (int t = 0; t < T; ++t)
        for (int v = 0; v < 4; ++v) acc[t] = _mm256_fmadd_ps(w[v], _mm256_loadu_ps(x + t * x_stride + 8 * v), acc[t]);
}

template <int T>
void q8_row(const Weight &W, int64_t r, const float *x, float *out) {
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    const int8_t *codes = W.q8.codes + r * W.Kp;
    for (int64_t g = 0; g < W.G; ++g) {
        const __m256 s = _mm256_set1_ps(f16(W.q8.scales[r * W.G + g]));
        __m256 w[4];
        for (int v = 0; v < 4; ++v) {
            const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(codes + g * 32 + 8 * v));
            w[v] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), s);
        }
        fma_group<T>(w, x + g * 32, W.Kp, acc);
    }
    for (int t = 0; t < T; ++t) out[t * W.rows + r] = hsum(acc[t]);
}

template <int T>
void q4_row(const Weight &W, int64_t r, const float *x, float *out) {
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < W.G; ++g) {
        __m256 w[4];
        decode_q4_group(W.q4.codes + r * W.Kp / 2 + g * 16, f16(W.q4.scales[r * W.G + g]), f16(W.q4.mins[r * W.G + g]), w);
        fma_group<T>(w, x + g * 32, W.Kp, acc);
    }
    for (int t = 0; t < T; ++t) out[t * W.rows + r] = hsum(acc[t]);
}

// One row of the mix format for T tokens: 2-bit blocks of 64 columns (two groups each), then the
// 4-bit strip, then the outliers.
template <int T>
void mix_row(const Weight &W, int64_t r, const float *x2, const float *x4, const float *x, float *out) {
    const MixView &m = W.mix;
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    const uint8_t *q2 = m.q2 + r * m.K2p / 4;
    const uint8_t *meta = m.meta2 + r * m.G2;
    const uint16_t *super = m.super2 + r * m.B2;
    const __m128i three = _mm_set1_epi8(3);
    for (int64_t b = 0; b < m.K2p / 64; ++b) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(q2 + b * 16));
        // codes[c] holds columns 64b + 16c .. 64b + 16c + 15.
        const __m128i codes[4] = {_mm_and_si128(v, three), _mm_and_si128(_mm_srli_epi16(v, 2), three),
                                  _mm_and_si128(_mm_srli_epi16(v, 4), three), _mm_and_si128(_mm_srli_epi16(v, 6), three)};
        for (int half = 0; half < 2; ++half) {
            const int64_t g = 2 * b + half;
            const uint8_t mg = meta[g];
            const float s = float((mg & 63) + 1) * f16(super[g / 16]);
            const __m256 sv = _mm256_set1_ps(s), bias = _mm256_set1_ps(-float(mg >> 6) * s);
            const __m128i c0 = codes[2 * half], c1 = codes[2 * half + 1];
            const __m256 w[4] = {_mm256_fmadd_ps(u8_to_ps(c0), sv, bias),
                                 _mm256_fmadd_ps(u8_to_ps(_mm_srli_si128(c0, 8)), sv, bias),
                                 _mm256_fmadd_ps(u8_to_ps(c1), sv, bias),
                                 _mm256_fmadd_ps(u8_to_ps(_mm_srli_si128(c1, 8)), sv, bias)};
            fma_group<T>(w, x2 + g * 32, m.K2p, acc);
        }
    }
    const int64_t G4 = m.K4 / 32;
    for (int64_t g = 0; g < G4; ++g) {
        __m256 w[4];
        decode_q4_group(m.w4.codes + r * m.K4 / 2 + g * 16, f16(m.w4.scales[r * G4 + g]), f16(m.w4.mins[r * G4 + g]), w);
        fma_group<T>(w, x4 + g * 32, m.K4, acc);
    }
    for (int t = 0; t < T; ++t) {
        float sum = hsum(acc[t]);
        for (uint32_t o = m.row_ptr[r]; o < m.row_ptr[r + 1]; ++o) sum += f16(m.vals[o]) * x[t * W.cols + m.cols[o]];
        out[t * W.rows + r] = sum;
    }
}

// q8 and q4 rows as class templates over the token tile, for matmul_q_avx2.
template <int T>
struct Q8 {
    static void run(const Weight &W, int64_t r, const float *x, float *out) { q8_row<T>(W, r, x, out); }
};
template <int T>
struct Q4 {
    static void run(const Weight &W, int64_t r, const float *x, float *out) { q4_row<T>(W, r, x, out); }
};

template <template <int> class Row>
void matmul_q_avx2(const Weight &W, const float *x, float *out, int64_t n, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        int64_t t = 0;
        for (; t + 4 <= n; t += 4) Row<4>::run(W, r, x + t * W.Kp, out + t * W.rows);
        for (; t + 2 <= n; t += 2) Row<2>::run(W, r, x + t * W.Kp, out + t * W.rows);
        for (; t < n; ++t) Row<1>::run(W, r, x + t * W.Kp, out + t * W.rows);
    }
}

void matmul_mix_avx2(const Weight &W, const float *x2, const float *x4, const float *x, float *out, int64_t n,
                     int64_t r0, int64_t r1) {
    const MixView &m = W.mix;
    for (int64_t r = r0; r < r1; ++r) {
        int64_t t = 0;
        for (; t + 4 <= n; t += 4)
            mix_row<4>(W, r, x2 + t * m.K2p, x4 + t * m.K4, x + t * W.cols, out + t * W.rows);
        for (; t + 2 <= n; t += 2)
            mix_row<2>(W, r, x2 + t * m.K2p, x4 + t * m.K4, x + t * W.cols, out + t * W.rows);
        for (; t < n; ++t) mix_row<1>(W, r, x2 + t * m.K2p, x4 + t * m.K4, x + t * W.cols, out + t * W.rows);
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
    static const CpuKernels k{"avx2",          matmul_avx2<float>, matmul_avx2<uint16_t>, matmul_q_avx2<Q8>,
                              matmul_q_avx2<Q4>, matmul_mix_avx2,    dot_avx2,              axpy_avx2};
    return k;
}

}  // namespace mixrt
