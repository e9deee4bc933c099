// tiled_matrix.h: a weight matrix as the CPU kernels read it. Quantized q8, q4 and mix matrices
// are repacked once, at load, from the file's canonical layout (FORMAT.md 5.3-5.5, which stays
// backend-neutral) into row tiles: 16 consecutive rows whose codes are interleaved so that one
// 64-byte load holds the same few columns of all 16 rows. After a shift and a mask, every 32-bit
// lane of that vector holds 4 codes of one row, and the 4 matching input codes are one broadcast
// 32-bit value: a single multiply-add of unsigned codes by signed input bytes (vpdpbusd, or
// maddubs on AVX2) advances all 16 rows, and each lane ends the row's integer sum with no
// horizontal reduction. Per-group scales of the 16 rows sit side by side, so one vector op
// applies them.
//
// A tile is one contiguous record (the kernels stream tile after tile), for mix:
//   q2     [K2p/16][64]  2-bit codes, columns 16c..16c+15 of x2 per 64 bytes: byte 32h + 4l + b
//                        holds, in bits 2p+1..2p, the code of row 8h + l, column 16c + 4p + b
//   meta2  [G2][16]      the 2-bit groups' scale code | zero << 6 (FORMAT.md 5.5), one per row
//   super2 [B2][16]      f16 super-scales, one per row
//   q4     [K4/8][64]    4-bit codes, columns 8c..8c+7 of x4 per 64 bytes: byte 32h + 4l + b
//                        holds column 8c + b in its low nibble and 8c + 4 + b in its high nibble
//   scale4 [G4][16]      f16 4-bit group scales, one per row
//   min4   [G4][16]      f16 4-bit group mins, one per row
// q4 is the 4-bit part alone over [M, Kp]; q8 is
//   q8     [Kp/4][64]    signed codes, columns 4c..4c+3 per 64 bytes: byte 32h + 4l + b is
//                        column 4c + b of row 8h + l
//   scale8 [G][16]       f16 group scales, one per row
// The block formats (FORMAT.md 5.6) keep their element codes at their width, by BlockTiles::kind:
//   int8    (bfp8, mxint8): q8's codes part, each element m a signed byte
//   nibble  (bfp4, bfp3, mxfp4): q4's codes part, each nibble u = m + 8, or mxfp4's E2M1 code
//   nibble_crumb (bfp6, bfp5): u = m + 2^(bits-1) in 192 bytes per 16 columns 16h..16h+15, one
//   q6     [Kp/16][192]  stream: q4's two chunks of those columns with the low 4 bits of u, then
//                        64 bytes of their high 2 bits: byte 128 + 32h' + 4l + b of row 8h' + l
//                        holds column 16h + b in bits 5..4, 16h + 4 + b in bits 7..6, 16h + 8 + b
//                        in bits 1..0 and 16h + 12 + b in bits 3..2 (so that a mask and at most
//                        one shift put each beside its nibble)
// with, for all of them,
//   exp16  [Kp/16][16]   the biased shared exponent E of each 16 columns, one per row
// Element m (as an integer: twice the value for E2M1) times 2^(E - 127 - fraction_bits) is the
// weight.
// quik (FORMAT.md 5.7): q4's codes part over all Kp columns in their original order, each nibble
// u = q + 8 with code 0 (u = 8) for the fp16 columns (so that the input needs no permutation), then
//   out16  [n_out][16]   f16 weights of the fp16 columns, one per row
//   srow   [16]          f32 row scales
//   rowsum [16]          i32 sum of each row's codes q
// Parts start at 64-byte boundaries; rows past M (the last tile) are zero. Outliers and the
// permutation stay in the canonical views (w.mix); the outliers of a tile (CSR entries
// row_ptr[16t] .. row_ptr[16t + 16]) are added in one flat loop over those entries, each knowing
// its row in the tile from outlier_row (no per-row loop, whose varying trip counts the branch
// predictor cannot follow).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "format/quant_layout.h"

namespace mixrt {

constexpr int64_t kTileRows = 16;

// How a block-format matrix's tiles hold its elements (see above).
struct BlockTiles {
    enum class Kind { none, int8, nibble, nibble_crumb } kind = Kind::none;
    // nibble and nibble_crumb: the kernels multiply an unsigned u = m + offset (the stored value,
    // or for E2M1 codes kE2M1Unsigned[code]) and subtract offset x the input code sum.
    int offset = 0;
    bool e2m1 = false;      // nibbles are E2M1 codes (mxfp4)
    int fraction_bits = 0;  // the element is m x 2^-fraction_bits
};

// E2M1 codes 0..15 as u = twice their value + 12: +-{0, 0.5, 1, 1.5, 2, 3, 4, 6} x 2 + 12.
constexpr int kE2M1Offset = 12;
alignas(16) constexpr int8_t kE2M1Unsigned[16] = {12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0};

// The tile layout of a block format.
BlockTiles block_tiles(const BlockSpec &spec);

struct RowTiles {
    int64_t count = 0;        // tiles: ceil(M / 16); 0 for f32 / f16
    int64_t record = 0;       // bytes per tile
    const uint8_t *data = nullptr;
    // Byte offsets of the parts inside a tile record (those of absent parts are 0).
    int64_t q2 = 0, meta2 = 0, super2 = 0, q4 = 0, scale4 = 0, min4 = 0, q8 = 0, scale8 = 0, q6 = 0, exp16 = 0;
    int64_t out16 = 0, srow = 0, rowsum = 0;
    const uint8_t *outlier_row = nullptr;  // mix: [nnz] the row of each outlier within its tile
    BlockTiles block;                      // block formats
    const uint8_t *tile(int64_t t) const { return data + t * record; }
};

class TiledMatrix {
public:
    // Repacks w (q8, q4, mix; f32 and f16 are used in place) unless repack is false (the scalar
    // kernels read the canonical parts only). w's parts must outlive this.
    explicit TiledMatrix(const Weight &w, bool repack = true);
    TiledMatrix() = default;

    const Weight &weight() const { return w_; }
    const RowTiles &tiles() const { return tiles_; }
    int64_t bytes() const { return tiles_.count * tiles_.record; }

private:
    struct Free {
        void operator()(uint8_t *p) const;
    };
    Weight w_{};
    RowTiles tiles_{};
    std::unique_ptr<uint8_t, Free> storage_;
    std::vector<uint8_t> outlier_row_;
};

}  // namespace mixrt
