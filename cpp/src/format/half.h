// half.h: portable IEEE binary16 <-> binary32 conversion for the scalar paths (the AVX2 kernels
// use F16C). Exact for every half value, round-to-nearest-even the other way (overflow to
// infinity, subnormals kept); tested against numpy and F16C in tests/test_kernels.py.
#pragma once

#include <cstdint>
#include <cstring>

namespace mixrt {

inline float half_to_float(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while ((mant & 0x400) == 0) {
                mant <<= 1;
                --exp;
            }
            bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000 | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline uint16_t float_to_half(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
    const uint32_t a = x & 0x7FFFFFFF;
    if (a > 0x7F800000) return sign | 0x7E00;        // NaN (quiet)
    if (a >= 0x477FF000) return sign | 0x7C00;       // >= 65520 rounds to infinity
    uint32_t h, rest, half;
    if (a >= 0x38800000) {  // normal half: drop 13 mantissa bits, rebias the exponent
        h = (a >> 13) - ((127 - 15) << 10);
        rest = a & 0x1FFF;
        half = 0x1000;
    } else {  // subnormal half (or zero): units of 2^-24
        const uint32_t e = a >> 23;
        if (e < 102) return sign;  // below 2^-25: rounds to zero
        const uint32_t m = (a & 0x7FFFFF) | 0x800000, shift = 126 - e;
        h = m >> shift;
        rest = m & ((1u << shift) - 1);
        half = 1u << (shift - 1);
    }
    if (rest > half || (rest == half && (h & 1))) ++h;  // a carry into the exponent is right
    return static_cast<uint16_t>(sign | h);
}

}  // namespace mixrt
