// activation_rounding.h: the runtime option that rounds every matmul input (the activations) to
// block floating point before the product, as arXiv 2310.05079 quantizes activations: blocks of 16
// consecutive values along K share one exponent, each value a w-bit two's complement element
// (FORMAT.md 5.6's bfp rule: E = floor(log2 max|x|) clamped to the E8M0 range, elements m / 2^(w-2)
// rounded to nearest even and saturated). The numpy twin is quant/blockfp.py (encode + decode);
// tests/test_blockfp.py checks the two bit for bit.
//
// How it relates to the kernels' own input rounding (quantized_input.h): that one is also a block
// format, 8-bit elements in blocks of 32 with a free f32 scale (max|x| / 127) instead of a power of
// two; with this option on, quantized weights see the input rounded twice (here, then to the
// kernels' 8-bit grid, whose step is at most a quarter of bfp6's).
#pragma once

#include <cstdint>

namespace mixrt {

// out[t, k] = x[t, k] rounded to bfp<bits> (bits 3..8), blocks of 16 along each row of K values
// (a last partial block as if zero padded). x must be finite; out may be x.
void round_rows_to_bfp(const float *x, int64_t rows, int64_t K, int bits, float *out);

}  // namespace mixrt
