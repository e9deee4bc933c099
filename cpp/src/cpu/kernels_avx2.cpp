// kernels_avx2.cpp: AVX2/FMA/F16C twins of kernels_ref.cpp. This file alone is compiled with
// -mavx2 -mfma -mf16c and is only called after the run-time check in kernels.cpp.
// f32/f16 matmul: a register tile of 4 weight rows x T tokens (T <= 3) keeps 12 accumulators, so
// each weight vector loaded (and converted from f16) is used for T tokens; prefill reuses weights
// across tokens, decode (T = 1) streams them once. Quantized dtypes: the row-tile kernels of
// tile_kernels.h on 256-bit vectors (vec256.h). Attention: see below.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/kernels.h"
#include "cpu/tile_kernels.h"
#include "cpu/vec256.h"
#include "format/half.h"

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
inline float load1(const uint16_t *p) { return _cvtsh_ss(*p); }

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

// ---- quantized dtypes: the row-tile kernels of tile_kernels.h on 256-bit vectors (vec256.h) -----
using Avx2 = Vec256<false>;

// ---- attention ----------------------------------------------------------------------------------
// Cached keys and values are f16 (widened by F16C as they are loaded) or f32. Blocks of up to 3
// queries (the heads that share a KV head) against blocks of 4 cached keys: 12 accumulators, every
// key row loaded once per query block, and a transposing reduction that turns a query's 4
// accumulators into its 4 scores (no horizontal sum per score).
template <int QB, typename KV>
void scores_block(const float *q, int64_t q_stride, const KV *K, int64_t stride, int64_t len, int64_t hd,
                  float *scores) {
    const int64_t hd8 = hd & ~int64_t(7);
    auto tail_dot = [&](int h, int64_t j) {  // the columns past the last full vector
        float s = 0.0f;
        for (int64_t i = hd8; i < hd; ++i) s += q[h * q_stride + i] * load1(K + j * stride + i);
        return s;
    };
    int64_t j = 0;
    for (; j + 4 <= len; j += 4) {
        __m256 acc[QB][4];
        for (int h = 0; h < QB; ++h)
            for (int c = 0; c < 4; ++c) acc[h][c] = _mm256_setzero_ps();
        for (int64_t i = 0; i < hd8; i += 8) {
            __m256 k[4];
            for (int c = 0; c < 4; ++c) k[c] = load8(K + (j + c) * stride + i);
            for (int h = 0; h < QB; ++h) {
                const __m256 qv = _mm256_loadu_ps(q + h * q_stride + i);
                for (int c = 0; c < 4; ++c) acc[h][c] = _mm256_fmadd_ps(qv, k[c], acc[h][c]);
            }
        }
        for (int h = 0; h < QB; ++h) {
            const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(acc[h][0], acc[h][1]), _mm256_hadd_ps(acc[h][2], acc[h][3]));
            __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
            if (hd8 < hd) s4 = _mm_add_ps(s4, _mm_setr_ps(tail_dot(h, j), tail_dot(h, j + 1), tail_dot(h, j + 2), tail_dot(h, j + 3)));
            _mm_storeu_ps(scores + h * len + j, s4);
        }
    }
    for (; j < len; ++j)
        for (int h = 0; h < QB; ++h) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t i = 0; i < hd8; i += 8)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * q_stride + i), load8(K + j * stride + i), acc);
            scores[h * len + j] = hsum(acc) + tail_dot(h, j);
        }
}

// Blocks of up to 3 queries, columns in blocks of 32 (then 8, then single columns) kept in
// registers across all positions; every value row is read once per query block.
template <int QB, typename KV>
void values_block(const float *p, const KV *V, int64_t stride, int64_t len, int64_t hd, float *out,
                  int64_t out_stride) {
    int64_t i = 0;
    for (; i + 32 <= hd; i += 32) {
        __m256 acc[QB][4];
        for (int h = 0; h < QB; ++h)
            for (int c = 0; c < 4; ++c) acc[h][c] = _mm256_setzero_ps();
        for (int64_t j = 0; j < len; ++j)
            for (int h = 0; h < QB; ++h) {
                const __m256 pj = _mm256_set1_ps(p[h * len + j]);
                for (int c = 0; c < 4; ++c) acc[h][c] = _mm256_fmadd_ps(pj, load8(V + j * stride + i + 8 * c), acc[h][c]);
            }
        for (int h = 0; h < QB; ++h)
            for (int c = 0; c < 4; ++c) _mm256_storeu_ps(out + h * out_stride + i + 8 * c, acc[h][c]);
    }
    for (; i + 8 <= hd; i += 8) {
        __m256 acc[QB];
        for (int h = 0; h < QB; ++h) acc[h] = _mm256_setzero_ps();
        for (int64_t j = 0; j < len; ++j) {
            const __m256 v = load8(V + j * stride + i);
            for (int h = 0; h < QB; ++h) acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(p[h * len + j]), v, acc[h]);
        }
        for (int h = 0; h < QB; ++h) _mm256_storeu_ps(out + h * out_stride + i, acc[h]);
    }
    for (; i < hd; ++i)
        for (int h = 0; h < QB; ++h) {
            float acc = 0.0f;
            for (int64_t j = 0; j < len; ++j) acc += p[h * len + j] * load1(V + j * stride + i);
            out[h * out_stride + i] = acc;
        }
}

template <typename KV>
void attn_scores_avx2(const float *q, int64_t nq, int64_t q_stride, const KV *K, int64_t stride, int64_t len,
                      int64_t hd, float *scores) {
    int64_t h = 0;
    for (; h + 3 <= nq; h += 3) scores_block<3>(q + h * q_stride, q_stride, K, stride, len, hd, scores + h * len);
    if (nq - h == 2) scores_block<2>(q + h * q_stride, q_stride, K, stride, len, hd, scores + h * len);
    if (nq - h == 1) scores_block<1>(q + h * q_stride, q_stride, K, stride, len, hd, scores + h * len);
}

template <typename KV>
void attn_values_avx2(const float *p, int64_t nq, const KV *V, int64_t stride, int64_t len, int64_t hd, float *out,
                      int64_t out_stride) {
    int64_t h = 0;
    for (; h + 3 <= nq; h += 3) values_block<3>(p + h * len, V, stride, len, hd, out + h * out_stride, out_stride);
    if (nq - h == 2) values_block<2>(p + h * len, V, stride, len, hd, out + h * out_stride, out_stride);
    if (nq - h == 1) values_block<1>(p + h * len, V, stride, len, hd, out + h * out_stride, out_stride);
}

// exp(x) for x <= 0 (scaled scores minus their maximum), 8 at a time: x = n ln2 + r with |r| <= ln2/2
// (ln2 in two parts, Cody-Waite), exp(r) by the degree-7 polynomial of Cephes' expf (relative error
// below 2^-23 on that interval), times 2^n from the exponent bits. Below -87.3 (2^-126) the result
// is 0.
inline __m256 exp_nonpositive(__m256 x) {
    const __m256 low = _mm256_set1_ps(-87.33654f);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), _mm256_cmp_ps(x, low, _CMP_GE_OQ));
}

// softmax_rows of kernels.h, 8 scores at a time (the tail through a masked load and store).
void softmax_rows_avx2(float *s, int64_t rows, int64_t len, float scale) {
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(len % 8)), lanes);
    const int64_t body = len / 8 * 8;
    for (int64_t i = 0; i < rows; ++i) {
        float *row = s + i * len;
        __m256 top = _mm256_set1_ps(-INFINITY);
        for (int64_t j = 0; j < body; j += 8) {
            const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(row + j), vs);
            _mm256_storeu_ps(row + j, v);
            top = _mm256_max_ps(top, v);
        }
        if (body < len) {
            const __m256 v = _mm256_mul_ps(_mm256_maskload_ps(row + body, tail), vs);
            _mm256_maskstore_ps(row + body, tail, v);
            top = _mm256_max_ps(top, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(tail)));
        }
        __m128 t = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
        t = _mm_max_ps(t, _mm_movehl_ps(t, t));
        const __m256 m = _mm256_set1_ps(_mm_cvtss_f32(_mm_max_ss(t, _mm_movehdup_ps(t))));
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < body; j += 8) {
            const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row + j), m));
            _mm256_storeu_ps(row + j, e);
            sum = _mm256_add_ps(sum, e);
        }
        if (body < len) {
            const __m256 e = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(_mm256_maskload_ps(row + body, tail), m)),
                                           _mm256_castsi256_ps(tail));
            _mm256_maskstore_ps(row + body, tail, e);
            sum = _mm256_add_ps(sum, e);
        }
        const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));
        for (int64_t j = 0; j < body; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), inv));
        if (body < len) _mm256_maskstore_ps(row + body, tail, _mm256_mul_ps(_mm256_maskload_ps(row + body, tail), inv));
    }
}

void to_f16_avx2(const float *x, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; ++i) dst[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

}  // namespace

const CpuKernels &avx2_kernel_table() {
    static const CpuKernels k{"avx2",           true, matmul_avx2<float>, matmul_avx2<uint16_t>,
                              matmul_tiled<Avx2, TileKind::q8>, matmul_tiled<Avx2, TileKind::q4>,
                              matmul_tiled<Avx2, TileKind::mix>, matmul_tiled<Avx2, TileKind::block>,
                              matmul_tiled<Avx2, TileKind::quik>,
                              attn_scores_avx2<uint16_t>, attn_values_avx2<uint16_t>,
                              attn_scores_avx2<float>, attn_values_avx2<float>, to_f16_avx2, softmax_rows_avx2,
                              round_quik_row_ref};
    return k;
}

}  // namespace mixrt
