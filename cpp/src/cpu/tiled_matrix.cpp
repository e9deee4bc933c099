// tiled_matrix.cpp: see tiled_matrix.h. The repack reads each row's canonical codes once
// (decoded to one byte per code), then writes them to their tile positions.
#include "cpu/tiled_matrix.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "error.h"

namespace mixrt {

namespace {

int64_t round64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

// Codes of row r in column order, one byte each, from the canonical 2-bit blocks (FORMAT.md 5.5).
void unpack_q2_row(const MixView &m, int64_t r, uint8_t *codes) {
    const uint8_t *row = m.q2 + r * (m.K2p / 4);
    for (int64_t b = 0; b < m.K2p / kMixBlock; ++b)
        for (int i = 0; i < 16; ++i) {
            const uint8_t byte = row[b * 16 + i];
            for (int p = 0; p < 4; ++p) codes[b * kMixBlock + 16 * p + i] = (byte >> (2 * p)) & 3;
        }
}

// Codes of row r of a q4 layout of `groups` groups (FORMAT.md 5.4).
void unpack_q4_row(const Q4View &v, int64_t groups, int64_t r, uint8_t *codes) {
    const uint8_t *row = v.codes + r * groups * 16;
    for (int64_t g = 0; g < groups; ++g)
        for (int i = 0; i < 16; ++i) {
            codes[g * kGroup + i] = row[g * 16 + i] & 0x0F;
            codes[g * kGroup + 16 + i] = row[g * 16 + i] >> 4;
        }
}

// The byte of row `lane_row` (0..15) inside a 64-byte chunk that holds 4 of its columns.
inline int64_t lane_byte(int64_t lane_row) { return 32 * (lane_row / 8) + 4 * (lane_row % 8); }

// One row's byte codes (n columns) into a tile's 4-columns-per-chunk layout (q8's): chunk c holds
// columns 4c..4c+3 at the row's lane bytes lb..lb+3.
void place_bytes(const uint8_t *codes, int64_t n, int64_t lb, uint8_t *dst) {
    for (int64_t c = 0; c < n / 4; ++c) std::memcpy(dst + 64 * c + lb, codes + 4 * c, 4);
}

// One row's 4-bit codes (n columns, one per byte) into the q4 tile layout: chunk c holds columns
// 8c..8c+3 in the low nibbles and 8c+4..8c+7 in the high nibbles of the row's lane bytes.
void place_nibbles(const uint8_t *codes, int64_t n, int64_t lb, uint8_t *dst) {
    for (int64_t c = 0; c < n / 8; ++c)
        for (int b = 0; b < 4; ++b)
            dst[64 * c + lb + b] = uint8_t((codes[8 * c + b] & 15) | (codes[8 * c + 4 + b] & 15) << 4);
}

// Row r of a block-format matrix into its tile record `tile` at lane row lr.
void repack_block_row(const BlockView &b, const BlockTiles &bt, const RowTiles &t, int64_t Kp, int64_t r,
                      uint8_t *tile, int64_t lr) {
    const int64_t lb = lane_byte(lr);
    std::vector<uint8_t> u(Kp);  // the stored value of each column: m, or m + offset, or the E2M1 code
    for (int64_t k = 0; k < Kp; ++k) {
        const unsigned q = block_code(b.spec, b.codes, b.row_bytes, r, k);
        const int m = int(block_element_value(b.spec, q) * float(1 << bt.fraction_bits));  // exact
        u[k] = uint8_t(bt.e2m1 ? q : unsigned(m + bt.offset));
    }
    if (bt.kind == BlockTiles::Kind::int8) place_bytes(u.data(), Kp, lb, tile + t.q8);
    if (bt.kind == BlockTiles::Kind::nibble) place_nibbles(u.data(), Kp, lb, tile + t.q4);
    if (bt.kind == BlockTiles::Kind::nibble_crumb)
        for (int64_t h = 0; h < Kp / 16; ++h) {
            uint8_t *chunk = tile + t.q6 + 192 * h;
            place_nibbles(&u[16 * h], 16, lb, chunk);
            for (int i = 0; i < 4; ++i) {
                const uint8_t *v = &u[16 * h + i];
                chunk[128 + lb + i] = uint8_t((v[0] >> 4) << 4 | (v[4] >> 4) << 6 | (v[8] >> 4) | (v[12] >> 4) << 2);
            }
        }
    for (int64_t h = 0; h < Kp / 16; ++h) tile[t.exp16 + h * kTileRows + lr] = b.exps[r * b.blocks + h * 16 / b.spec.block];
}

// Row r of a quik matrix into its tile record `tile` at lane row lr.
void repack_quik_row(const QuikView &q, const RowTiles &t, int64_t Kp, int64_t r, uint8_t *tile, int64_t lr) {
    std::vector<uint8_t> u(Kp, uint8_t(8));  // code 0: the fp16 columns and the padding
    int32_t sum = 0;
    for (int64_t j = 0; j < q.Kin; ++j) {
        const int c = quik_code(q, r, j);
        u[q.perm[j]] = uint8_t(c + 8);
        sum += c;
    }
    place_nibbles(u.data(), Kp, lane_byte(lr), tile + t.q4);
    for (int64_t j = 0; j < q.n_out; ++j)
        reinterpret_cast<uint16_t *>(tile + t.out16)[j * kTileRows + lr] = q.out_w[r * q.n_out + j];
    reinterpret_cast<float *>(tile + t.srow)[lr] = f16_value(q.scales[r]);
    reinterpret_cast<int32_t *>(tile + t.rowsum)[lr] = sum;
}

// Per-row values of `per_row` entries each (bytes of `size`), side by side: dst[e][lane_row].
template <typename T>
void interleave(const T *src_row, int64_t per_row, int64_t lane_row, T *dst) {
    for (int64_t e = 0; e < per_row; ++e) dst[e * kTileRows + lane_row] = src_row[e];
}

}  // namespace

BlockTiles block_tiles(const BlockSpec &spec) {
    BlockTiles bt;
    bt.e2m1 = spec.e2m1;
    bt.fraction_bits = spec.e2m1 ? 1 : spec.bits - 2;
    if (spec.bits == 8) bt.kind = BlockTiles::Kind::int8;
    else if (spec.bits <= 4) bt.kind = BlockTiles::Kind::nibble;
    else bt.kind = BlockTiles::Kind::nibble_crumb;
    bt.offset = spec.e2m1 ? kE2M1Offset : spec.bits == 8 ? 0 : spec.bits <= 4 ? 8 : 1 << (spec.bits - 1);
    return bt;
}

void TiledMatrix::Free::operator()(uint8_t *p) const { std::free(p); }

TiledMatrix::TiledMatrix(const Weight &w, bool repack) : w_(w) {
    if (!repack || !is_quantized(w.dtype)) return;
    RowTiles &t = tiles_;
    t.count = (w.rows + kTileRows - 1) / kTileRows;
    const MixView &m = w.mix;
    const int64_t G4 = w.dtype == DType::mix ? m.K4 / kGroup : w.G;
    int64_t at = 0;
    auto part = [&](int64_t &offset, int64_t bytes) {
        offset = at;
        at += round64(bytes);
    };
    if (w.dtype == DType::mix) {
        part(t.q2, m.K2p / 16 * 64);
        part(t.meta2, m.G2 * kTileRows);
        part(t.super2, m.B2 * kTileRows * 2);
    }
    if (w.dtype == DType::mix || w.dtype == DType::q4) {
        part(t.q4, G4 * kGroup / 8 * 64);
        part(t.scale4, G4 * kTileRows * 2);
        part(t.min4, G4 * kTileRows * 2);
    }
    if (is_block_format(w.dtype)) {
        t.block = block_tiles(w.block.spec);
        if (t.block.kind == BlockTiles::Kind::int8) part(t.q8, w.Kp / 4 * 64);
        if (t.block.kind == BlockTiles::Kind::nibble) part(t.q4, w.Kp / 8 * 64);
        if (t.block.kind == BlockTiles::Kind::nibble_crumb) part(t.q6, w.Kp / 16 * 192);
        part(t.exp16, w.Kp / 16 * kTileRows);
    }
    if (w.dtype == DType::quik) {
        part(t.q4, w.Kp / 8 * 64);
        part(t.out16, w.quik.n_out * kTileRows * 2);
        part(t.srow, kTileRows * 4);
        part(t.rowsum, kTileRows * 4);
    }
    if (w.dtype == DType::q8) {
        part(t.q8, w.Kp / 4 * 64);
        part(t.scale8, w.G * kTileRows * 2);
    }
    t.record = at;
    const size_t total = size_t(t.count) * size_t(t.record);
    uint8_t *p = static_cast<uint8_t *>(std::aligned_alloc(64, total));
    if (!p)
        fail(MIXRT_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(total >> 20) + " MiB for the CPU layout of a " +
                                          dtype_name(w.dtype) + " matrix");
    storage_.reset(p);
    std::memset(p, 0, total);
    t.data = p;

    if (w.dtype == DType::mix) {
        outlier_row_.resize(m.nnz);
        for (int64_t r = 0; r < w.rows; ++r)
            for (uint32_t o = m.row_ptr[r]; o < m.row_ptr[r + 1]; ++o) outlier_row_[o] = uint8_t(r % kTileRows);
        t.outlier_row = outlier_row_.data();
    }
    const Q4View q4 = w.dtype == DType::mix ? m.w4 : w.q4;
    std::vector<uint8_t> codes(size_t(w.dtype == DType::mix ? m.K2p : 0) + size_t(G4) * kGroup);
    for (int64_t r = 0; r < w.rows; ++r) {
        uint8_t *tile = p + (r / kTileRows) * t.record;
        const int64_t lr = r % kTileRows, lb = lane_byte(lr);
        if (w.dtype == DType::mix) {
            unpack_q2_row(m, r, codes.data());
            for (int64_t c = 0; c < m.K2p / 16; ++c)
                for (int b = 0; b < 4; ++b) {
                    uint8_t byte = 0;
                    for (int pl = 0; pl < 4; ++pl) byte |= codes[16 * c + 4 * pl + b] << (2 * pl);
                    tile[t.q2 + 64 * c + lb + b] = byte;
                }
            interleave(m.meta2 + r * m.G2, m.G2, lr, tile + t.meta2);
            interleave(m.super2 + r * m.B2, m.B2, lr, reinterpret_cast<uint16_t *>(tile + t.super2));
        }
        if (w.dtype == DType::mix || w.dtype == DType::q4) {
            unpack_q4_row(q4, G4, r, codes.data());
            place_nibbles(codes.data(), G4 * kGroup, lb, tile + t.q4);
            interleave(q4.scales + r * G4, G4, lr, reinterpret_cast<uint16_t *>(tile + t.scale4));
            interleave(q4.mins + r * G4, G4, lr, reinterpret_cast<uint16_t *>(tile + t.min4));
        }
        if (is_block_format(w.dtype)) repack_block_row(w.block, t.block, t, w.Kp, r, tile, lr);
        if (w.dtype == DType::quik) repack_quik_row(w.quik, t, w.Kp, r, tile, lr);
        if (w.dtype == DType::q8) {
            place_bytes(reinterpret_cast<const uint8_t *>(w.q8.codes + r * w.Kp), w.Kp, lb, tile + t.q8);
            interleave(w.q8.scales + r * w.G, w.G, lr, reinterpret_cast<uint16_t *>(tile + t.scale8));
        }
    }
}

}  // namespace mixrt
