// kernels_avx2.cpp: AVX2/FMA/F16C twins of kernels_ref.cpp. This file alone is compiled with
// -mavx2 -mfma -mf16c and is only called after the run-time check in kernels.cpp.
// matmul: a register tile of 4 weight rows x T tokens (T <= 3) keeps 12 accumulators, so each
// weight vector loaded (and converted from f16) is used for T tokens; prefill reuses weights
// across tokens, decode (T = 1) streams them once. Quantized dtypes unpack each group's codes into
// registers (never into memory), a pair of groups at a time, multiply them with the 8-bit input
// codes in integers and use them for up to 4 tokens (prefill, in token blocks that stay in L1);
// decode (one token) interleaves 4 rows instead, so that their dependency chains overlap, and
// prefetches the next 4 rows chunk by chunk.
#include <immintrin.h>

#include <algorithm>

#include "format/half.h"
#include "cpu/kernels.h"

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
// The input is x^ (quantized_input.h): 8-bit codes with one scale per block (one group of 32, or 8
// groups over the mix 2-bit columns). Per group,
// codes . x-codes is an exact integer product (maddubs/madd); it is scaled by the weight scale
// times the input scale and accumulated in fp32. Zeros and mins act on the group's sum of x^:
// sum_k (q_k s + m) x^_k = s d (q . xq) + m sum(x^). The mix 2-bit part keeps even the group
// scales in integers (see q2_part).

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// 32 unsigned weight codes (<= 127) times 32 signed input codes: 8 int32 partial sums, as floats.
inline __m256 dot_u8_i8(__m256i w, __m256i x) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)));
}

inline __m256i load_codes(const int8_t *p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)); }

// count <= 8 consecutive values of a part as 8 floats (bytes), zero past count. `avail` values
// are readable from p on: a whole vector is loaded and masked when it stays inside the part, the
// tail of the part's last row is assembled element by element.
inline __m256 load_f16(const uint16_t *p, int count, int64_t avail) {
    if (count == 8 || avail >= 8) {
        const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
        if (count == 8) return v;
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        return _mm256_and_ps(v, _mm256_castsi256_ps(keep));
    }
    auto at = [&](int i) { return i < count ? static_cast<short>(p[i]) : short(0); };
    return _mm256_cvtph_ps(_mm_setr_epi16(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7)));
}
inline __m128i load_u8x8(const uint8_t *p, int count, int64_t avail) {
    if (count == 8 || avail >= 8) {
        const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p));
        if (count == 8) return v;
        return _mm_and_si128(v, _mm_cmpgt_epi8(_mm_set1_epi8(char(count)), _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)));
    }
    auto at = [&](int i) { return i < count ? static_cast<char>(p[i]) : char(0); };
    return _mm_setr_epi8(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7), 0, 0, 0, 0, 0, 0, 0, 0);
}

// Asks for the cache lines of `bytes` from p on (addresses past the weight are harmless). The
// decode kernels fetch each chunk of the next tile's rows while they compute the same chunk of
// this tile's: a steady stream of requests, one tile ahead, that the hardware prefetchers (which
// follow each row's stream only after a few misses) do not give.
inline void prefetch(const void *p, int64_t bytes) {
    const char *c = static_cast<const char *>(p);
    for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(c + o, _MM_HINT_T0);
}

// The input of token t (rows of x^ are independent).
inline QuantizedInput token(const QuantizedInput &in, int64_t t) {
    QuantizedInput r = in;
    r.q += t * in.stride;
    r.d += t * in.groups;
    r.sum += t * in.groups;
    r.qsum += t * in.groups;
    r.xhat += t * in.K;
    r.pairs += t * in.pair_stride;
    return r;
}

// sd[t] lane i = s[i] * d[t, g + i]: the fp32 factor of group g + i for token t.
template <int T>
inline void group_factors(__m256 s, const QuantizedInput &in, int64_t g, __m256 sd[T]) {
    for (int t = 0; t < T; ++t) sd[t] = _mm256_mul_ps(s, _mm256_loadu_ps(in.d + t * in.groups + g));
}

// Lane i of v in every lane (a register shuffle: no round trip through memory).
inline __m256 lane(__m256 v, int i) { return _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(i)); }

// The input codes of groups g, g+1 of T tokens in the column order of a group pair's registers:
// xa[t] = [x_g[0..15] | x_g+1[0..15]], xb[t] = [x_g[16..31] | x_g+1[16..31]].
// (g even: in.pairs holds them in this order.)
template <int T>
inline void input_pair(const QuantizedInput &in, int64_t g, __m256i xa[T], __m256i xb[T]) {
    for (int t = 0; t < T; ++t) {
        const int8_t *xp = in.pairs + t * in.pair_stride + g * kGroup;
        xa[t] = load_codes(xp);
        xb[t] = load_codes(xp + kGroup);
    }
}

// Lane indices [i x4 | i+1 x4]: a group pair's two per-group values, each across its half.
inline __m256i pair_lanes(int i) { return _mm256_setr_epi32(i, i, i, i, i + 1, i + 1, i + 1, i + 1); }

// The q4 parts of R rows (codes, scales, mins of G groups each; row rr's start at +rr * the row
// strides) against the input groups g0 .. g0 + G of T tokens: acc[rr * T + t] += the code
// products, bias[rr * T + t] += the min terms. `avail` scales (and mins) are readable from the
// first row's scales on (the rest of the part).
template <int R, int T>
inline void q4_part(const uint8_t *codes, int64_t code_stride, const uint16_t *scales, const uint16_t *mins,
                    int64_t G, int64_t avail, const QuantizedInput &in, int64_t g0, __m256 acc[R * T],
                    __m256 bias[R * T]) {
    const __m256i mask = _mm256_set1_epi8(0x0F);
    __m256 sd[R * T];
    for (int64_t c = 0; c < G; c += 8) {
        const int count = G - c < 8 ? int(G - c) : 8;
        for (int rr = R; rr < 2 * R; ++rr) {  // this chunk of the next R rows
            prefetch(codes + rr * code_stride + c * 16, 128);
            prefetch(scales + rr * G + c, 16);
            prefetch(mins + rr * G + c, 16);
        }
        for (int rr = 0; rr < R; ++rr) {
            group_factors<T>(load_f16(scales + rr * G + c, count, avail - rr * G - c), in, g0 + c, sd + rr * T);
            const __m256 mn = load_f16(mins + rr * G + c, count, avail - rr * G - c);
            for (int t = 0; t < T; ++t)
                bias[rr * T + t] = _mm256_fmadd_ps(mn, _mm256_loadu_ps(in.sum + t * in.groups + g0 + c), bias[rr * T + t]);
        }
        // Group pairs (g, g+1): their 32 code bytes hold [g: columns 0..15 | g+1: 0..15] in the low
        // nibbles and [g: 16..31 | g+1: 16..31] in the high ones (FORMAT.md 5.4); the byte products
        // of both are added in int16 (|sum| <= 2 * 2 * 15 * 127) and scaled by [f_g | f_g+1].
        int i = 0;
        for (; i + 2 <= count; i += 2) {
            const int64_t g = c + i;
            __m256i xa[T], xb[T];
            input_pair<T>(in, g0 + g, xa, xb);
            const __m256i pair = pair_lanes(i);
            for (int rr = 0; rr < R; ++rr) {
                const __m256i v = load_codes(reinterpret_cast<const int8_t *>(codes + rr * code_stride + g * 16));
                const __m256i lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                for (int t = 0; t < T; ++t) {
                    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa[t]), _mm256_maddubs_epi16(hi, xb[t]));
                    acc[rr * T + t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1))),
                                                      _mm256_permutevar8x32_ps(sd[rr * T + t], pair), acc[rr * T + t]);
                }
            }
        }
        if (i < count) {  // an odd last group alone: low nibbles columns 0..15, high 16..31
            const int64_t g = c + i;
            for (int rr = 0; rr < R; ++rr) {
                const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(codes + rr * code_stride + g * 16));
                const __m256i w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), mask);
                for (int t = 0; t < T; ++t) {
                    const __m256 p = dot_u8_i8(w, load_codes(in.q + t * in.stride + (g0 + g) * kGroup));
                    acc[rr * T + t] = _mm256_fmadd_ps(p, lane(sd[rr * T + t], i), acc[rr * T + t]);
                }
            }
        }
    }
}

// Groups g0 .. g0 + count (count even) of one 8-group chunk of the 2-bit parts of R rows:
// isum[rr * T + t] += sum over the groups of (c + 1) (q . xq), with code16[rr] lane i holding row
// rr's scale code (c + 1) of group g0 + i in both 16-bit halves. A 16-byte block holds a group pair
// (byte j: bits 1..0 column j, 3..2 column j+16, 5..4 column j+32, 7..6 column j+48, columns 0..31
// group g, 32..63 group g+1); one shift gives [g: 0..15 | g+1: 0..15] in the low 2 bits of each
// byte and [g: 16..31 | g+1: 16..31] in bits 3..2, so both registers take the same scale vector
// [c_g | c_g+1] and their byte products are added in int16 (|sum| <= 4 * 3 * 127) before it is applied.
// Always inlined, so the common count of 8 unrolls completely.
template <int R, int T>
__attribute__((always_inline)) inline void q2_groups(const uint8_t *q2, int64_t q2_stride, int64_t g0, int count,
                                                     const __m256i code16[R], const QuantizedInput &in,
                                                     __m256i isum[R * T]) {
    const __m256i three = _mm256_set1_epi8(3), shift = _mm256_set_epi64x(4, 4, 0, 0);
    for (int i = 0; i < count; i += 2) {
        const int64_t g = g0 + i;
        __m256i xa[T], xb[T];
        input_pair<T>(in, g, xa, xb);
        const __m256i pair = pair_lanes(i);
        for (int rr = 0; rr < R; ++rr) {
            const __m256i v = _mm256_srlv_epi64(
                _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(q2 + rr * q2_stride + g * 8))),
                shift);
            const __m256i wa = _mm256_and_si256(v, three), wb = _mm256_and_si256(_mm256_srli_epi16(v, 2), three);
            const __m256i c = _mm256_permutevar8x32_epi32(code16[rr], pair);
            for (int t = 0; t < T; ++t) {
                const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(wa, xa[t]), _mm256_maddubs_epi16(wb, xb[t]));
                isum[rr * T + t] = _mm256_add_epi32(isum[rr * T + t], _mm256_madd_epi16(p, c));
            }
        }
    }
}

// The 2-bit parts of mix rows r .. r + R (input groups 0 .. G2). A chunk of 8 groups is one input
// block (one input scale d) and shares one super-scale S, so everything but S d is an integer: per
// group, (c + 1) (q . xq - z sum(xq)), summed over the chunk in int32 (|sum| < 2^21), then scaled
// once. acc[rr * T + t] as in q4_part.
template <int R, int T>
inline void q2_part(const Weight &W, int64_t r, const QuantizedInput &in, __m256 acc[R * T]) {
    const MixView &m = W.mix;
    const int64_t q2_stride = m.K2p / 4;
    const uint8_t *q2 = m.q2 + r * q2_stride;
    const uint8_t *meta = m.meta2 + r * m.G2;
    const uint16_t *super = m.super2 + r * m.B2;
    for (int64_t c = 0; c < m.G2; c += kMixBlockGroups) {  // 8 groups: one input block, half a super-block
        const int count = m.G2 - c < 8 ? int(m.G2 - c) : 8;  // even: G2 = K2p / 32
        __m256i code16[R], isum[R * T];
        for (int rr = R; rr < 2 * R; ++rr) {  // this chunk of the next R rows
            prefetch(q2 + rr * q2_stride + c * 8, 64);
            prefetch(meta + rr * m.G2 + c, 8);
        }
        for (int rr = 0; rr < R; ++rr) {
            const __m256i mi =
                _mm256_cvtepu8_epi32(load_u8x8(meta + rr * m.G2 + c, count, (W.rows - r - rr) * m.G2 - c));
            const __m256i code = _mm256_add_epi32(_mm256_and_si256(mi, _mm256_set1_epi32(63)), _mm256_set1_epi32(1));
            code16[rr] = _mm256_or_si256(code, _mm256_slli_epi32(code, 16));
            const __m256i zero = _mm256_srli_epi32(mi, 6);  // 0 past count
            // -(c + 1) z qsum: every factor (|qsum| <= 32 * 127, z qsum) fits in the low 16 bits of
            // its int32 lane with the zero or sign extension above it, and z and c + 1 have zero
            // high halves, so madd (lo * lo + hi * hi) multiplies them in one instruction.
            for (int t = 0; t < T; ++t) {
                const __m256i qsum = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(in.qsum + t * in.groups + c));
                isum[rr * T + t] =
                    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(code, _mm256_madd_epi16(zero, qsum)));
            }
        }
        if (count == 8) q2_groups<R, T>(q2, q2_stride, c, 8, code16, in, isum);
        else q2_groups<R, T>(q2, q2_stride, c, count, code16, in, isum);
        for (int rr = 0; rr < R; ++rr) {
            const float S = f16(super[rr * m.B2 + c / 16]);
            for (int t = 0; t < T; ++t)
                acc[rr * T + t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[rr * T + t]),
                                                  _mm256_set1_ps(S * in.d[t * in.groups + c]), acc[rr * T + t]);
        }
    }
}

// Rows r .. r + R of q8 for T tokens.
template <int R, int T>
void q8_rows(const Weight &W, int64_t r, const QuantizedInput &in, float *out) {
    __m256 acc[R * T], acc_odd[R * T], sd[R * T];
    for (int j = 0; j < R * T; ++j) acc[j] = acc_odd[j] = _mm256_setzero_ps();
    const int8_t *codes = W.q8.codes + r * W.Kp;
    const uint16_t *scales = W.q8.scales + r * W.G;
    for (int64_t c = 0; c < W.G; c += 8) {
        const int count = W.G - c < 8 ? int(W.G - c) : 8;
        for (int rr = R; rr < 2 * R; ++rr) {  // this chunk of the next R rows
            prefetch(codes + rr * W.Kp + c * kGroup, 8 * kGroup);
            prefetch(scales + rr * W.G + c, 16);
        }
        for (int rr = 0; rr < R; ++rr)
            group_factors<T>(load_f16(scales + rr * W.G + c, count, (W.rows - r - rr) * W.G - c), in, c, sd + rr * T);
        auto group = [&](int i, __m256 *a) {
            const int64_t g = c + i;
            for (int rr = 0; rr < R; ++rr) {
                // maddubs takes one unsigned operand: |w| times x with w's sign.
                const __m256i w = load_codes(codes + rr * W.Kp + g * kGroup), aw = _mm256_abs_epi8(w);
                for (int t = 0; t < T; ++t) {
                    const __m256i x = _mm256_sign_epi8(load_codes(in.q + t * in.stride + g * kGroup), w);
                    a[rr * T + t] = _mm256_fmadd_ps(dot_u8_i8(aw, x), lane(sd[rr * T + t], i), a[rr * T + t]);
                }
            }
        };
        // Even and odd groups go to separate accumulators: two independent FMA chains.
        int i = 0;
        for (; i + 2 <= count; i += 2) {
            group(i, acc);
            group(i + 1, acc_odd);
        }
        if (i < count) group(i, acc);
    }
    for (int rr = 0; rr < R; ++rr)
        for (int t = 0; t < T; ++t) out[t * W.rows + r + rr] = hsum(_mm256_add_ps(acc[rr * T + t], acc_odd[rr * T + t]));
}

// Rows r .. r + R of q4 for T tokens.
template <int R, int T>
void q4_rows(const Weight &W, int64_t r, const QuantizedInput &in, float *out) {
    __m256 acc[R * T], bias[R * T];
    for (int j = 0; j < R * T; ++j) acc[j] = bias[j] = _mm256_setzero_ps();
    q4_part<R, T>(W.q4.codes + r * W.Kp / 2, W.Kp / 2, W.q4.scales + r * W.G, W.q4.mins + r * W.G, W.G,
                  (W.rows - r) * W.G, in, 0, acc, bias);
    for (int rr = 0; rr < R; ++rr)
        for (int t = 0; t < T; ++t) out[t * W.rows + r + rr] = hsum(_mm256_add_ps(acc[rr * T + t], bias[rr * T + t]));
}

// Rows r .. r + R of the mix format for T tokens: the 2-bit groups, the 4-bit strip (input groups
// after the 2-bit ones), then the fp16 outliers against x^ in the original column order.
template <int R, int T>
void mix_rows(const Weight &W, int64_t r, const QuantizedInput &in, float *out) {
    const MixView &m = W.mix;
    const int64_t G4 = m.K4 / kGroup;
    __m256 acc[R * T], bias[R * T];
    for (int j = 0; j < R * T; ++j) acc[j] = bias[j] = _mm256_setzero_ps();
    q2_part<R, T>(W, r, in, acc);
    q4_part<R, T>(m.w4.codes + r * m.K4 / 2, m.K4 / 2, m.w4.scales + r * G4, m.w4.mins + r * G4, G4, (W.rows - r) * G4,
                  in, m.G2, acc, bias);
    for (int rr = 0; rr < R; ++rr)
        for (int t = 0; t < T; ++t) {
            const float *xhat = in.xhat + t * in.K;
            float outliers = 0.0f;  // from zero: independent of the reduction, so the two overlap
            for (uint32_t o = m.row_ptr[r + rr]; o < m.row_ptr[r + rr + 1]; ++o) outliers += f16(m.vals[o]) * xhat[m.cols[o]];
            out[t * W.rows + r + rr] = hsum(_mm256_add_ps(acc[rr * T + t], bias[rr * T + t])) + outliers;
        }
}

// Row functions as class templates over the token tile, for matmul_q_avx2.
template <int T>
struct Q8 {
    static void run(const Weight &W, int64_t r, const QuantizedInput &in, float *out) { q8_rows<1, T>(W, r, in, out); }
};
template <int T>
struct Q4 {
    static void run(const Weight &W, int64_t r, const QuantizedInput &in, float *out) { q4_rows<1, T>(W, r, in, out); }
};
template <int T>
struct Mix {
    static void run(const Weight &W, int64_t r, const QuantizedInput &in, float *out) { mix_rows<1, T>(W, r, in, out); }
};

// Each row's codes are decoded once per tile of up to 4 tokens. Token blocks of kTokenBlock keep
// their input codes in L1 while the rows pass over them (the rows of a thread's share stay in L2).
constexpr int64_t kTokenBlock = 16;

template <template <int> class Row>
void matmul_q_avx2(const Weight &W, const QuantizedInput &in, float *out, int64_t n, int64_t r0, int64_t r1) {
    for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
        const int64_t t1 = std::min(n, t0 + kTokenBlock);
        for (int64_t r = r0; r < r1; ++r) {
            int64_t t = t0;
            for (; t + 4 <= t1; t += 4) Row<4>::run(W, r, token(in, t), out + t * W.rows);
            for (; t + 2 <= t1; t += 2) Row<2>::run(W, r, token(in, t), out + t * W.rows);
            for (; t < t1; ++t) Row<1>::run(W, r, token(in, t), out + t * W.rows);
        }
    }
}

// Decode (one token) interleaves R rows: independent dependency chains side by side.
template <template <int> class Row, int R, void (*rowsR)(const Weight &, int64_t, const QuantizedInput &, float *)>
void matmul_q_decode_avx2(const Weight &W, const QuantizedInput &in, float *out, int64_t n, int64_t r0, int64_t r1) {
    if (n != 1) return matmul_q_avx2<Row>(W, in, out, n, r0, r1);
    int64_t r = r0;
    for (; r + R <= r1; r += R) rowsR(W, r, in, out);
    for (; r < r1; ++r) Row<1>::run(W, r, in, out);
}

// ---- attention ----------------------------------------------------------------------------------
// Blocks of up to 3 queries (the heads that share a KV head) against blocks of 4 cached keys: 12
// accumulators, every key row loaded once per query block, and a transposing reduction that turns
// a query's 4 accumulators into its 4 scores (no horizontal sum per score).
template <int QB>
void scores_block(const float *q, int64_t q_stride, const float *K, int64_t stride, int64_t len, int64_t hd,
                  float *scores) {
    const int64_t hd8 = hd & ~int64_t(7);
    auto tail_dot = [&](int h, int64_t j) {  // the columns past the last full vector
        float s = 0.0f;
        for (int64_t i = hd8; i < hd; ++i) s += q[h * q_stride + i] * K[j * stride + i];
        return s;
    };
    int64_t j = 0;
    for (; j + 4 <= len; j += 4) {
        __m256 acc[QB][4];
        for (int h = 0; h < QB; ++h)
            for (int c = 0; c < 4; ++c) acc[h][c] = _mm256_setzero_ps();
        for (int64_t i = 0; i < hd8; i += 8) {
            __m256 k[4];
            for (int c = 0; c < 4; ++c) k[c] = _mm256_loadu_ps(K + (j + c) * stride + i);
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
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * q_stride + i), _mm256_loadu_ps(K + j * stride + i), acc);
            scores[h * len + j] = hsum(acc) + tail_dot(h, j);
        }
}

// Blocks of up to 3 queries, columns in blocks of 32 (then 8, then single columns) kept in
// registers across all positions; every value row is read once per query block.
template <int QB>
void values_block(const float *p, const float *V, int64_t stride, int64_t len, int64_t hd, float *out,
                  int64_t out_stride) {
    int64_t i = 0;
    for (; i + 32 <= hd; i += 32) {
        __m256 acc[QB][4];
        for (int h = 0; h < QB; ++h)
            for (int c = 0; c < 4; ++c) acc[h][c] = _mm256_setzero_ps();
        for (int64_t j = 0; j < len; ++j)
            for (int h = 0; h < QB; ++h) {
                const __m256 pj = _mm256_set1_ps(p[h * len + j]);
                for (int c = 0; c < 4; ++c) acc[h][c] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(V + j * stride + i + 8 * c), acc[h][c]);
            }
        for (int h = 0; h < QB; ++h)
            for (int c = 0; c < 4; ++c) _mm256_storeu_ps(out + h * out_stride + i + 8 * c, acc[h][c]);
    }
    for (; i + 8 <= hd; i += 8) {
        __m256 acc[QB];
        for (int h = 0; h < QB; ++h) acc[h] = _mm256_setzero_ps();
        for (int64_t j = 0; j < len; ++j) {
            const __m256 v = _mm256_loadu_ps(V + j * stride + i);
            for (int h = 0; h < QB; ++h) acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(p[h * len + j]), v, acc[h]);
        }
        for (int h = 0; h < QB; ++h) _mm256_storeu_ps(out + h * out_stride + i, acc[h]);
    }
    for (; i < hd; ++i)
        for (int h = 0; h < QB; ++h) {
            float acc = 0.0f;
            for (int64_t j = 0; j < len; ++j) acc += p[h * len + j] * V[j * stride + i];
            out[h * out_stride + i] = acc;
        }
}

void attn_scores_avx2(const float *q, int64_t nq, int64_t q_stride, const float *K, int64_t stride, int64_t len,
                      int64_t hd, float *scores) {
    int64_t h = 0;
    for (; h + 3 <= nq; h += 3) scores_block<3>(q + h * q_stride, q_stride, K, stride, len, hd, scores + h * len);
    if (nq - h == 2) scores_block<2>(q + h * q_stride, q_stride, K, stride, len, hd, scores + h * len);
    if (nq - h == 1) scores_block<1>(q + h * q_stride, q_stride, K, stride, len, hd, scores + h * len);
}

void attn_values_avx2(const float *p, int64_t nq, const float *V, int64_t stride, int64_t len, int64_t hd, float *out,
                      int64_t out_stride) {
    int64_t h = 0;
    for (; h + 3 <= nq; h += 3) values_block<3>(p + h * len, V, stride, len, hd, out + h * out_stride, out_stride);
    if (nq - h == 2) values_block<2>(p + h * len, V, stride, len, hd, out + h * out_stride, out_stride);
    if (nq - h == 1) values_block<1>(p + h * len, V, stride, len, hd, out + h * out_stride, out_stride);
}

}  // namespace

const CpuKernels &avx2_kernel_table() {
    static const CpuKernels k{"avx2",           matmul_avx2<float>, matmul_avx2<uint16_t>,
                              matmul_q_decode_avx2<Q8, 4, q8_rows<4, 1>>,
                              matmul_q_decode_avx2<Q4, 4, q4_rows<4, 1>>,
                              matmul_q_decode_avx2<Mix, 4, mix_rows<4, 1>>,    attn_scores_avx2,      attn_values_avx2};
    return k;
}

}  // namespace mixrt
