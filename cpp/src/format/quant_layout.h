// quant_layout.h: the C++ definition of the stored dtypes of FORMAT.md 5 (f32, f16, q8, q4, mix,
// the block formats bfp3..bfp8, mxint8, mxfp4, and quik):
// part sizes, validated views over the parts, and the scalar reference decode of a row. The
// numpy twins are python/mixrt/quant/layouts.py and quant/blockfp.py; tests/test_quant_kernels.py
// and tests/test_blockfp.py check that both decode the same packed bytes bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "format/quant_element.h"

namespace mixrt {

enum class DType : uint32_t {
    f32 = 0, f16 = 1, q8 = 2, q4 = 3, mix = 4,
    bfp8 = 5, bfp6 = 6, bfp5 = 7, bfp4 = 8, bfp3 = 9, mxint8 = 10, mxfp4 = 11, quik = 12
};
constexpr uint32_t kDTypeCount = 13;
const char *dtype_name(DType dtype);
bool is_quantized(DType dtype);
bool is_block_format(DType dtype);  // bfp*, mx*: FORMAT.md 5.6
BlockSpec block_spec(DType dtype);  // of a block format

struct PartSpan {
    const uint8_t *data;
    uint64_t size;
};

struct Q8View {
    const int8_t *codes;     // [M, Kp]
    const uint16_t *scales;  // f16 [M, G]
};

struct Q4View {
    const uint8_t *codes;    // [M, Kp/2], nibble order of FORMAT.md 5.4
    const uint16_t *scales;  // f16 [M, G]
    const uint16_t *mins;    // f16 [M, G]
};

struct BlockView {
    BlockSpec spec;
    const uint8_t *codes;  // [M, row_bytes]: LSB-first bit stream of Kp codes per row
    const uint8_t *exps;   // [M, blocks]: biased shared exponents
    int64_t row_bytes, blocks;
};

// quik (FORMAT.md 5.7): Kin 4-bit columns with one scale per row, then n_out fp16 columns.
struct QuikView {
    int64_t Kin, Kinp, n_out;  // Kin + n_out = K; Kinp = Kin padded to whole groups of 32
    const uint32_t *perm;      // [K]: the 4-bit columns, then the fp16 columns
    const uint8_t *codes;      // [M, Kinp/2]: q + 8, nibble order of FORMAT.md 5.4
    const uint16_t *scales;    // f16 [M]
    const uint16_t *out_w;     // f16 [M, n_out]: the weights of the fp16 columns
};

struct MixView {
    int64_t K2, K2p, G2, B2, K4, nnz;  // mix_shape(K, K4) and the outlier count
    MixShape shape() const { return {K2, K2p, G2, B2, K4 / kGroup}; }
    const uint32_t *perm;     // [K]: 2-bit columns, then 4-bit columns
    const uint8_t *q2;        // [M, K2p/4], blocks of 64 columns
    const uint8_t *meta2;     // [M, G2]: scale code (bits 5..0) | zero << 6
    const uint16_t *super2;   // f16 [M, B2]
    Q4View w4;                // q4 layout over [M, K4]
    const uint32_t *row_ptr;  // [M+1]
    const uint16_t *cols;     // [nnz]
    const uint16_t *vals;     // f16 [nnz]
};

// A weight matrix [rows, cols] (a vector when rows == 1) of any dtype, in place in the mapping.
struct Weight {
    DType dtype = DType::f32;
    int64_t rows = 0, cols = 0;
    int64_t Kp = 0, G = 0;       // cols padded to whole groups, group count (quantized dtypes)
    const void *data = nullptr;  // f32 / f16 values
    Q8View q8{};
    Q4View q4{};
    MixView mix{};
    BlockView block{};
    QuikView quik{};
};

// The exact part sizes of a dtype for [M, K]; for mix, k4 and nnz are the derived values, for
// quik out_cols (its fp16 columns).
std::vector<uint64_t> part_sizes(DType dtype, uint64_t M, uint64_t K, uint64_t k4 = 0, uint64_t nnz = 0,
                                 uint64_t out_cols = 0);

// What a mix tensor of M rows derives from the byte sizes of its parts 4 and 8 (FORMAT.md 5.5),
// and a quik tensor from its part 3 (5.7).
struct MixCounts {
    uint64_t k4;   // columns in 4-bit strips
    uint64_t nnz;  // fp16 outliers
    uint64_t out_cols = 0;  // quik: fp16 columns
};
MixCounts mix_counts(uint64_t M, const std::vector<uint64_t> &part_bytes);

// Checks the part count and byte sizes of a tensor [M, K] of dtype (for mix, first that the
// derived K4 is a multiple of 32 no larger than K; for quik, that its fp16 columns are at most K)
// and returns the derived counts (zero for other dtypes). Throws mixrt::Error(MIXRT_ERR_FORMAT) with a message starting with `what`.
MixCounts check_part_sizes(DType dtype, uint64_t M, uint64_t K, const std::vector<uint64_t> &part_bytes,
                           const std::string &what);

// Builds the view of a tensor [M, K] (M = 1 for a vector) from its parts, checking the part count
// and sizes, and for quantized dtypes their content (FORMAT.md 6 items 10 and 12). Throws
// mixrt::Error(MIXRT_ERR_FORMAT) with a message starting with `what`.
Weight make_weight(DType dtype, int64_t M, int64_t K, const std::vector<PartSpan> &parts, const std::string &what);

// The signed 4-bit code q (-8..7) of row r, column j < Kinp of a quik matrix's 4-bit part.
inline int quik_code(const QuikView &q, int64_t r, int64_t j) {
    const uint8_t byte = q.codes[r * (q.Kinp / 2) + (j / kGroup) * 16 + j % 16];
    return int((j % kGroup < 16 ? byte : byte >> 4) & 15) - 8;
}

// Reference decode of row r into out[0..K), original column order (FORMAT.md formulas, fp32).
void dequantize_row(const Weight &w, int64_t r, float *out);

}  // namespace mixrt
