// vec512.h: the vector operations of the row-tile kernels (tile_kernels.h) on 512-bit registers
// with AVX-512 VNNI, for kernels_avx512.cpp and kernels_amx.cpp: one register holds a 64-byte chunk
// of a row tile (16 rows, one 32-bit lane each), and vpdpbusd multiplies its unsigned codes by 4
// input bytes and adds them to the row's int32 sum in one instruction. Internal linkage: each file
// compiles its own copy for its instruction set.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace mixrt {
namespace {

// q8 codes are signed and vpdpbusd wants the unsigned operand on the weight side: w XOR 0x80 is
// w + 128, so the sums carry 128 x (the group's input code sum), which the kernel subtracts.
struct Avx512 {
    static constexpr int kTokens = 4;
    static constexpr int32_t kQ8Offset = 128;
    using I = __m512i;
    using F = __m512;
    using X = __m512i;
    using Acc = __m512i;

    static I load(const uint8_t *p) { return _mm512_loadu_si512(p); }
    template <int N>
    static I shr(I v) { return _mm512_srli_epi16(v, N); }
    template <int N>
    static I shr32(I v) { return _mm512_srli_epi32(v, N); }
    static I mask(I v, char m) { return _mm512_and_si512(v, _mm512_set1_epi8(m)); }
    template <int N>
    static I shl(I v) { return _mm512_slli_epi16(v, N); }
    // a | (b & m) in one ternary-logic instruction.
    static I or_masked(I a, I b, char m) { return _mm512_ternarylogic_epi32(a, b, _mm512_set1_epi8(m), 0xF8); }
    static I lut(I v, const int8_t *table) {
        return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(table))), v);
    }
    static F exp_scale(I e) {
        const __mmask16 zero = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
        return _mm512_castsi512_ps(_mm512_mask_mov_epi32(_mm512_slli_epi32(e, 23), zero, _mm512_set1_epi32(0x00400000)));
    }
    static X bcast(const int8_t *p) {
        int32_t v;
        std::memcpy(&v, p, 4);
        return _mm512_set1_epi32(v);
    }
    static Acc acc_zero() { return _mm512_setzero_si512(); }
    static Acc acc_add(Acc a, I u, X x) { return _mm512_dpbusd_epi32(a, u, x); }
    static I acc_sum(Acc a) { return a; }
    static I dot_u8(I acc, I u, X x) { return _mm512_dpbusd_epi32(acc, u, x); }
    static I dot_xu8(I acc, I w, X u) { return _mm512_dpbusd_epi32(acc, u, w); }
    static I dot_q8(I acc, I w, X x) { return _mm512_dpbusd_epi32(acc, _mm512_xor_si512(w, _mm512_set1_epi8(char(0x80))), x); }
    static I bytes(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
    static I set1(int32_t v) { return _mm512_set1_epi32(v); }
    static I and32(I a, int32_t m) { return _mm512_and_si512(a, _mm512_set1_epi32(m)); }
    static I add(I a, I b) { return _mm512_add_epi32(a, b); }
    static I sub(I a, I b) { return _mm512_sub_epi32(a, b); }
    static I madd(I a, I b) { return _mm512_madd_epi16(a, b); }
    static F zerof() { return _mm512_setzero_ps(); }
    static F set1f(float v) { return _mm512_set1_ps(v); }
    static F to_float(I a) { return _mm512_cvtepi32_ps(a); }
    static F f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))); }
    static F loadf(const float *p) { return _mm512_loadu_ps(p); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F addf(F a, F b) { return _mm512_add_ps(a, b); }
    static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static void store(float *p, F v) { _mm512_storeu_ps(p, v); }
};

}  // namespace
}  // namespace mixrt
