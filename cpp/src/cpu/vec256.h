// vec256.h: the vector operations of the row-tile kernels (tile_kernels.h) on 256-bit registers,
// for kernels_avx2.cpp (kVnni false) and kernels_avxvnni.cpp (kVnni true). 16 rows are two halves
// of 8 lanes. Without VNNI, unsigned codes times input bytes go through maddubs (pairs summed in
// int16) and madd by ones (int32): the small codes of q4 and mix keep a group's 8 maddubs results
// in int16 (|sum| <= 8 * 2 * 15 * 127 < 2^15) and widen once per group, and q8's signed codes
// multiply as |w| times x with w's sign. With AVX-VNNI, vpdpbusd adds 4 products to each int32
// lane in one instruction, and q8 codes take the unsigned side as w XOR 0x80 = w + 128 (the
// kernel subtracts 128 x the group's input code sum). Internal linkage: each file compiles its
// own copy for its instruction set.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace mixrt {
namespace {

template <bool kVnni>
struct Vec256 {
    static constexpr int kTokens = 4;
    static constexpr int32_t kQ8Offset = kVnni ? 128 : 0;
    struct I {
        __m256i lo, hi;
    };
    struct F {
        __m256 lo, hi;
    };
    using X = __m256i;
    using Acc = I;

    static I load(const uint8_t *p) {
        return {_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)),
                _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + 32))};
    }
    template <int N>
    static I shr(I v) { return {_mm256_srli_epi16(v.lo, N), _mm256_srli_epi16(v.hi, N)}; }
    template <int N>
    static I shr32(I v) { return {_mm256_srli_epi32(v.lo, N), _mm256_srli_epi32(v.hi, N)}; }
    template <int N>
    static I shl(I v) { return {_mm256_slli_epi16(v.lo, N), _mm256_slli_epi16(v.hi, N)}; }
    static I or_masked(I a, I b, char m) {
        const __m256i k = _mm256_set1_epi8(m);
        return {_mm256_or_si256(a.lo, _mm256_and_si256(b.lo, k)), _mm256_or_si256(a.hi, _mm256_and_si256(b.hi, k))};
    }
    // Bytes 0..15 of v replaced by table[v] (a 16-entry table of signed bytes).
    static I lut(I v, const int8_t *table) {
        const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(table)));
        return {_mm256_shuffle_epi8(t, v.lo), _mm256_shuffle_epi8(t, v.hi)};
    }
    // 2^(e - 127) of biased exponents e in 0..254 (0: 2^-127, a subnormal).
    static F exp_scale(I e) {
        auto half = [](__m256i v) {
            const __m256i bits = _mm256_or_si256(_mm256_slli_epi32(v, 23),
                                                 _mm256_and_si256(_mm256_cmpeq_epi32(v, _mm256_setzero_si256()),
                                                                  _mm256_set1_epi32(0x00400000)));
            return _mm256_castsi256_ps(bits);
        };
        return {half(e.lo), half(e.hi)};
    }
    static I mask(I v, char m) {
        const __m256i k = _mm256_set1_epi8(m);
        return {_mm256_and_si256(v.lo, k), _mm256_and_si256(v.hi, k)};
    }
    static X bcast(const int8_t *p) {
        int32_t v;
        std::memcpy(&v, p, 4);
        return _mm256_set1_epi32(v);
    }
    static Acc acc_zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
    static Acc acc_add(Acc a, I u, X x) {
        if constexpr (kVnni) return {_mm256_dpbusd_avx_epi32(a.lo, u.lo, x), _mm256_dpbusd_avx_epi32(a.hi, u.hi, x)};
        else
            return {_mm256_add_epi16(a.lo, _mm256_maddubs_epi16(u.lo, x)),
                    _mm256_add_epi16(a.hi, _mm256_maddubs_epi16(u.hi, x))};
    }
    static I acc_sum(Acc a) {
        if constexpr (kVnni) return a;
        const __m256i ones = _mm256_set1_epi16(1);
        return {_mm256_madd_epi16(a.lo, ones), _mm256_madd_epi16(a.hi, ones)};
    }
    static __m256i dot_q8_half(__m256i acc, __m256i w, __m256i x) {
        if constexpr (kVnni) return _mm256_dpbusd_avx_epi32(acc, _mm256_xor_si256(w, _mm256_set1_epi8(char(0x80))), x);
        const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
        return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    }
    // acc + the sums of 4 products of unsigned codes u <= 63 by input bytes (maddubs pairs stay
    // below 2 x 63 x 128 < 2^15).
    static __m256i dot_u8_half(__m256i acc, __m256i u, __m256i x) {
        if constexpr (kVnni) return _mm256_dpbusd_avx_epi32(acc, u, x);
        return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)));
    }
    static I dot_u8(I acc, I u, X x) { return {dot_u8_half(acc.lo, u.lo, x), dot_u8_half(acc.hi, u.hi, x)}; }
    // acc + the sums of 4 products of small codes w <= 15 by unsigned input bytes u (the operands
    // of dot_u8 swapped; maddubs pairs stay below 2 x 15 x 255 < 2^15).
    static I dot_xu8(I acc, I w, X u) { return {dot_u8_half(acc.lo, u, w.lo), dot_u8_half(acc.hi, u, w.hi)}; }
    static I dot_q8(I acc, I w, X x) { return {dot_q8_half(acc.lo, w.lo, x), dot_q8_half(acc.hi, w.hi, x)}; }
    static I bytes(const uint8_t *p) {
        return {_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))),
                _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p + 8)))};
    }
    static I set1(int32_t v) { return {_mm256_set1_epi32(v), _mm256_set1_epi32(v)}; }
    static I and32(I a, int32_t m) { return {_mm256_and_si256(a.lo, _mm256_set1_epi32(m)), _mm256_and_si256(a.hi, _mm256_set1_epi32(m))}; }
    static I add(I a, I b) { return {_mm256_add_epi32(a.lo, b.lo), _mm256_add_epi32(a.hi, b.hi)}; }
    static I sub(I a, I b) { return {_mm256_sub_epi32(a.lo, b.lo), _mm256_sub_epi32(a.hi, b.hi)}; }
    static I madd(I a, I b) { return {_mm256_madd_epi16(a.lo, b.lo), _mm256_madd_epi16(a.hi, b.hi)}; }
    static F zerof() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
    static F set1f(float v) { return {_mm256_set1_ps(v), _mm256_set1_ps(v)}; }
    static F to_float(I a) { return {_mm256_cvtepi32_ps(a.lo), _mm256_cvtepi32_ps(a.hi)}; }
    static F f16(const uint16_t *p) {
        return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))),
                _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 8)))};
    }
    static F loadf(const float *p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
    static F mul(F a, F b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
    static F addf(F a, F b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
    static F fmadd(F a, F b, F c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
    static void store(float *p, F v) {
        _mm256_storeu_ps(p, v.lo);
        _mm256_storeu_ps(p + 8, v.hi);
    }
};

}  // namespace
}  // namespace mixrt
