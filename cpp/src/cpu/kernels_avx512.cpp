// kernels_avx512.cpp: the quantized matmuls (q8, q4, mix, block formats, quik) of tile_kernels.h on
// 512-bit vectors with AVX-512 VNNI (vec512.h), and the rounding of quik inputs. This file alone is compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512vnni (plus AVX2/FMA/F16C) and is only called after the run-time
// check in kernels.cpp; the other kernels of its table (f32, f16, attention) are the AVX2 ones.
#include <cmath>

#include "cpu/kernels.h"
#include "cpu/tile_kernels.h"
#include "cpu/vec512.h"

namespace mixrt {

namespace {

// round_quik_row (kernels.h) 16 columns at a time: masked min/max, then codes by the same
// arithmetic as the scalar twin (min/max with std::min/max's operand order, so NaN inputs are
// skipped alike; one subtraction, one multiplication and a round-to-nearest-even per code; NaN
// codes clamp to 0), so the results are the same bits.
int32_t round_quik_row_avx512(const float *x, const uint8_t *column, int64_t K, int bits, uint8_t *u, float *lo_out,
                              float *d_out) {
    __m512 vlo = _mm512_set1_ps(INFINITY), vhi = _mm512_set1_ps(-INFINITY);
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 tail = __mmask16(K - k >= 16 ? 0xFFFF : (1u << (K - k)) - 1);
        const __mmask16 m = _mm_mask_test_epi8_mask(tail, _mm_maskz_loadu_epi8(tail, column + k), _mm_set1_epi8(-1));
        const __m512 v = _mm512_maskz_loadu_ps(tail, x + k);
        vlo = _mm512_mask_min_ps(vlo, m, v, vlo);  // v < lo ? v : lo, as std::min(lo, v): NaN skipped
        vhi = _mm512_mask_max_ps(vhi, m, v, vhi);
    }
    float lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi);
    if (lo > hi) lo = hi = 0.0f;  // no 4-bit column
    const float top = float((1 << bits) - 1);
    const float d = (hi - lo) / top, inv = hi > lo ? top / (hi - lo) : 0.0f;
    const __m512 vl = _mm512_set1_ps(lo), vi = _mm512_set1_ps(inv), vt = _mm512_set1_ps(top);
    __m512i total = _mm512_setzero_si512();
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 tail = __mmask16(K - k >= 16 ? 0xFFFF : (1u << (K - k)) - 1);
        const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + k), vl), vi),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512i c = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(r, _mm512_setzero_ps()), vt));
        _mm_mask_storeu_epi8(u + k, tail, _mm512_cvtepi32_epi8(c));
        total = _mm512_mask_add_epi32(total, tail, total, c);
    }
    *lo_out = lo;
    *d_out = d;
    return _mm512_reduce_add_epi32(total);
}

}  // namespace

// The AVX2 table with its quantized matmuls replaced by these.
CpuKernels avx512_kernel_table(const CpuKernels &avx2) {
    CpuKernels k = with_tile_kernels<Avx512>(avx2, "avx512");
    k.round_quik_row = round_quik_row_avx512;
    return k;
}

}  // namespace mixrt
