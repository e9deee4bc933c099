// quant_element.h: the decode of one stored weight of each quantized dtype (FORMAT.md 5.3-5.6) and
// the counts a mix tensor derives from its K and K4, written once for both compilers: the CPU
// reference decode (quant_layout.cpp: dequantize_row) and the CUDA backend's element decode
// (cuda/gemv_decode.cu) call these functions, nvcc compiling them for the device too. The fast
// kernels (cpu/tile_kernels.h, cuda/gemv_matvec.cu) are tested against them.
//
// f16 values come as raw IEEE binary16 bits (uint16_t) or, in device code, as __half.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define MIXRT_HOST_DEVICE __host__ __device__
#else
#define MIXRT_HOST_DEVICE
#endif

#include "format/half.h"

namespace mixrt {

constexpr int64_t kGroup = 32;        // values per quantization group along K
constexpr int64_t kMixBlock = 64;     // 2-bit columns per block of 16 code bytes (FORMAT.md 5.5)
constexpr int64_t kMixSuperGroups = 16;  // 2-bit groups per super-scale

// The f32 value of an f16 (exact).
MIXRT_HOST_DEVICE inline float f16_value(uint16_t bits) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(bits));
#else
    return half_to_float(bits);
#endif
}
#if defined(__CUDACC__)
__device__ inline float f16_value(__half value) { return __half2float(value); }
#endif

// The shape a mix tensor of K columns, K4 of them in 4-bit strips, derives (FORMAT.md 5.5).
struct MixShape {
    int64_t K2;   // 2-bit columns
    int64_t K2p;  // K2 padded to whole blocks of 64
    int64_t G2;   // 2-bit groups per row (K2p / 32)
    int64_t B2;   // super-scales per row (G2 / 16 rounded up)
    int64_t G4;   // 4-bit groups per row (K4 / 32)
};

MIXRT_HOST_DEVICE constexpr MixShape mix_shape(int64_t K, int64_t K4) {
    const int64_t K2 = K - K4, K2p = kMixBlock * ((K2 + kMixBlock - 1) / kMixBlock), G2 = K2p / kGroup;
    return {K2, K2p, G2, (G2 + kMixSuperGroups - 1) / kMixSuperGroups, K4 / kGroup};
}

// q8 weight (r, k): its code times its group's scale. codes [rows, Kp], scales [rows, G].
template <typename Half>
MIXRT_HOST_DEVICE inline float q8_element(const int8_t *codes, const Half *scales, int64_t Kp, int64_t G, int64_t r,
                                          int64_t k) {
    return float(codes[r * Kp + k]) * f16_value(scales[r * G + k / kGroup]);
}

// q4 weight (r, k): its nibble (the low nibbles of a group's 16 bytes hold its first 16 values)
// times the group's scale plus its min. codes [rows, row_bytes], scales and mins [rows, groups].
template <typename Half>
MIXRT_HOST_DEVICE inline float q4_element(const uint8_t *codes, const Half *scales, const Half *mins,
                                          int64_t row_bytes, int64_t groups, int64_t r, int64_t k) {
    const int64_t g = k / kGroup, i = k % kGroup;
    const uint8_t byte = codes[r * row_bytes + g * 16 + i % 16];
    const int q = i < 16 ? (byte & 0x0F) : (byte >> 4);
    return float(q) * f16_value(scales[r * groups + g]) + f16_value(mins[r * groups + g]);
}

// The weight at 2-bit position j (< K2, in the permuted order) of row r of a mix tensor: its code
// (2 bits of a block's byte j % 16, plane (j % 64) / 16) minus the group's zero, times the
// group's scale code + 1 times the super-scale of its 16 groups.
template <typename Half>
MIXRT_HOST_DEVICE inline float mix2_element(const uint8_t *q2, const uint8_t *meta2, const Half *super2,
                                            const MixShape &s, int64_t r, int64_t j) {
    const int q = (q2[r * (s.K2p / 4) + (j / kMixBlock) * 16 + j % 16] >> (2 * ((j % kMixBlock) / 16))) & 3;
    const int64_t g = j / kGroup;
    const uint8_t meta = meta2[r * s.G2 + g];
    const float scale = float((meta & 63) + 1) * f16_value(super2[r * s.B2 + g / kMixSuperGroups]);
    return float(q - (meta >> 6)) * scale;
}

// The block formats with a shared exponent (FORMAT.md 5.6): bfp3..bfp8 and mxint8 (two's
// complement elements m of `bits` bits, value m / 2^(bits-2)) and mxfp4 (E2M1 elements), each block
// of `block` values along K scaled by 2^(E - 127), E one stored byte (0..254). The codes of a row are
// one LSB-first bit stream, padded to Kp = 32 ceil(K / 32) columns.
struct BlockSpec {
    int block;  // values per shared exponent
    int bits;   // bits per element code
    bool e2m1;  // E2M1 elements (else two's complement integers)
};

constexpr int kBlockExpBias = 127;
constexpr int kBlockExpMax = 254;  // 255 is the NaN scale of OCP's E8M0: refused

// The value of element code q (< 2^bits).
MIXRT_HOST_DEVICE inline float block_element_value(const BlockSpec &s, unsigned q) {
    if (s.e2m1) {
        const float magnitude = (q & 6) == 0 ? 0.5f * float(q & 1)  // 0, 0.5 (subnormal)
                                             : float(2 + (q & 1)) * float(1 << ((q >> 1) & 3)) * 0.25f;
        return (q & 8) ? -magnitude : magnitude;
    }
    const int m = int(q) - ((q >> (s.bits - 1)) ? (1 << s.bits) : 0);
    return float(m) / float(1 << (s.bits - 2));
}

// The code of column k of row r in a block-format codes part [rows, row_bytes] (LSB-first stream).
MIXRT_HOST_DEVICE inline unsigned block_code(const BlockSpec &s, const uint8_t *codes, int64_t row_bytes, int64_t r,
                                             int64_t k) {
    const uint8_t *row = codes + r * row_bytes;
    const int64_t bit = k * s.bits;
    // a code spans at most two bytes (bits <= 8)
    const unsigned two = unsigned(row[bit / 8]) | (bit / 8 + 1 < row_bytes ? unsigned(row[bit / 8 + 1]) << 8 : 0u);
    return (two >> (bit % 8)) & ((1u << s.bits) - 1);
}

// Weight k of row r of a block-format tensor: codes [rows, row_bytes], exponents [rows, blocks].
MIXRT_HOST_DEVICE inline float block_element(const BlockSpec &s, const uint8_t *codes, const uint8_t *exps,
                                             int64_t row_bytes, int64_t blocks, int64_t r, int64_t k) {
    const unsigned q = block_code(s, codes, row_bytes, r, k);
    const int e = int(exps[r * blocks + k / s.block]) - kBlockExpBias;
#if defined(__CUDA_ARCH__)
    return ldexpf(block_element_value(s, q), e);
#else
    return std::ldexp(block_element_value(s, q), e);
#endif
}

}  // namespace mixrt
