// tile_kernels.h: the quantized matmuls (q8, q4, mix, block formats, quik) over row tiles (tiled_matrix.h), written once
// for every vector instruction set. A kernel file includes this header after defining a struct V
// of the few vector operations the kernels use on 16 int32 / float lanes (one per row of a tile):
// kernels_avx2.cpp (two 256-bit halves, maddubs, vec256.h), kernels_avx512.cpp (512-bit, vpdpbusd,
// vec512.h). Everything here has internal linkage, so each file gets its own copy compiled for its
// instruction set.
//
// Per tile of 16 rows and up to V::kTokens tokens (prefill decodes each 64-byte chunk once for all
// of them): codes times input codes are summed in integers per group (exact); the mix 2-bit part
// then applies its integer group scales and zeros in integers too, and floats appear once per
// input block of 8 groups (one input scale, one super-scale); q4 and the 4-bit strip scale each
// group's sum in fp32 and add mins times the input's group sums; q8 scales each group, the block
// formats each 16 columns by a power of two; quik sums whole rows in integers. The results equal
// the scalar reference (kernels_ref.cpp) on the same rounded input up to fp32 rounding.
//
// Measured and not kept (SmolLM2 mix unless stated, 2 threads, 2-core Xeon with AVX-512 VNNI):
// four vpdpbusd accumulators taking turns within a group (no change: consecutive groups already
// overlap); outliers added into their row's lane by masked vector adds (matmuls ~10% slower) or
// reordered so that consecutive entries hit different rows (no change); prefetching one tile
// ahead into L1 only (TinyLlama-shaped decode at 75% of the read bandwidth instead of 86%) or two
// ahead into L2 only (SmolLM2 decode ~320 instead of ~350 tok/s); 8 tokens per tile on AVX-512
// (prompt 790 instead of 838 tok/s); 1 or 2 on AVX2 (495, 522 instead of 572).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/kernels.h"
#include "cpu/tiled_matrix.h"

namespace mixrt {
namespace {

// The input of token t (rows of x^ are independent).
inline QuantizedInput token(const QuantizedInput &in, int64_t t) {
    QuantizedInput r = in;
    r.q += t * in.stride;
    r.d += t * in.groups;
    r.sum += t * in.groups;
    r.qsum += t * in.groups;
    r.qsum16 += 2 * t * in.groups;
    r.xhat += t * in.K;
    r.xout += t * in.n_out;
    return r;
}

template <int T>
struct Tokens {  // T consecutive tokens' inputs
    const int8_t *q[T];
    const float *d[T], *sum[T];
    const int32_t *qsum[T], *qsum16[T];
    const float *xout[T];
    explicit Tokens(const QuantizedInput &in) {
        for (int t = 0; t < T; ++t) {
            xout[t] = in.xout + t * in.n_out;
            q[t] = in.q + t * in.stride;
            d[t] = in.d + t * in.groups;
            sum[t] = in.sum + t * in.groups;
            qsum[t] = in.qsum + t * in.groups;
            qsum16[t] = in.qsum16 + 2 * t * in.groups;
        }
    }
};

// Walks the records of the next tiles while this one is computed: each `step()` asks for the next
// few cache lines of the tile after next into L2 (from memory: many requests in flight) and of the
// next tile into L1 (from L2 or the L3 by then), so both arrive over the course of this tile. The
// records of a matrix are contiguous, so this continues the stream the hardware prefetchers start;
// they alone leave the first lines of every record late.
class Prefetcher {
public:
    Prefetcher(const RowTiles &rt, int64_t tile, int64_t steps)  // past the last tile: the last again
        : l1_(rt.tile(std::min(tile + 1, rt.count - 1))), l2_(rt.tile(std::min(tile + 2, rt.count - 1))),
          end_(rt.record), lines_((rt.record / 64 + steps - 1) / steps) {}
    void step() {
        for (int64_t i = 0; i < lines_ && done_ < end_; ++i, done_ += 64) {
            _mm_prefetch(reinterpret_cast<const char *>(l2_ + done_), _MM_HINT_T1);
            _mm_prefetch(reinterpret_cast<const char *>(l1_ + done_), _MM_HINT_T0);
        }
    }

private:
    const uint8_t *l1_, *l2_;
    int64_t done_ = 0, end_;
    int64_t lines_;
};

template <typename P>
inline const uint16_t *halves(const uint8_t *record, P offset) {
    return reinterpret_cast<const uint16_t *>(record + offset);
}

// The 4-bit groups of a tile (q4 or the mix strip): groups 0 .. G4 of the tile's q4 part against
// input groups g_in .. g_in + G4. acc += code sums x scale x input scale; bias += min x input sum.
template <class V, int T>
inline void q4_groups(const uint8_t *rec, const RowTiles &rt, int64_t G4, int64_t g_in, const Tokens<T> &x,
                      Prefetcher &next, typename V::F acc[T], typename V::F bias[T]) {
    const uint8_t *codes = rec + rt.q4;
    const uint16_t *scales = halves(rec, rt.scale4), *mins = halves(rec, rt.min4);
    for (int64_t g = 0; g < G4; ++g) {
        next.step();
        typename V::Acc a[T];
        for (int t = 0; t < T; ++t) a[t] = V::acc_zero();
        for (int c = 0; c < 4; ++c) {  // 8 columns per chunk: low nibbles 0..3, high nibbles 4..7
            const typename V::I v = V::load(codes + (4 * g + c) * 64);
            const typename V::I lo = V::mask(v, 0x0F), hi = V::mask(V::template shr<4>(v), 0x0F);
            for (int t = 0; t < T; ++t) {
                const int8_t *xc = x.q[t] + (g_in + g) * kGroup + 8 * c;
                a[t] = V::acc_add(V::acc_add(a[t], lo, V::bcast(xc)), hi, V::bcast(xc + 4));
            }
        }
        const typename V::F s = V::f16(scales + g * kTileRows), mn = V::f16(mins + g * kTileRows);
        for (int t = 0; t < T; ++t) {
            acc[t] = V::fmadd(V::to_float(V::acc_sum(a[t])), V::mul(s, V::set1f(x.d[t][g_in + g])), acc[t]);
            bias[t] = V::fmadd(mn, V::set1f(x.sum[t][g_in + g]), bias[t]);
        }
    }
}

// Mix rows of one tile, T tokens: out[t][i] for row 16 tile + i, outliers not included.
template <class V, int T>
inline void mix_tile(const Weight &W, const RowTiles &rt, int64_t tile, const Tokens<T> &x, float out[T][kTileRows]) {
    const MixView &m = W.mix;
    const uint8_t *rec = rt.tile(tile);
    const uint8_t *q2 = rec + rt.q2, *meta = rec + rt.meta2;
    Prefetcher next(rt, tile, m.G2 + m.K4 / kGroup);
    const uint16_t *super = halves(rec, rt.super2);
    typename V::F acc[T], bias[T];
    for (int t = 0; t < T; ++t) acc[t] = bias[t] = V::zerof();
    for (int64_t g0 = 0; g0 < m.G2; g0 += kMixBlockGroups) {  // one input block: 8 groups, one input scale
        const int64_t g1 = std::min(g0 + kMixBlockGroups, m.G2);
        typename V::I block[T];
        for (int t = 0; t < T; ++t) block[t] = V::set1(0);
        for (int64_t g = g0; g < g1; ++g) {
            next.step();
            typename V::Acc a[T];
            for (int t = 0; t < T; ++t) a[t] = V::acc_zero();
            for (int c = 0; c < 2; ++c) {  // 16 columns per chunk, 4 per plane
                const typename V::I v = V::load(q2 + (2 * g + c) * 64);
                const typename V::I p0 = V::mask(v, 3), p1 = V::mask(V::template shr<2>(v), 3),
                                    p2 = V::mask(V::template shr<4>(v), 3), p3 = V::mask(V::template shr<6>(v), 3);
                for (int t = 0; t < T; ++t) {
                    const int8_t *xc = x.q[t] + g * kGroup + 16 * c;
                    a[t] = V::acc_add(V::acc_add(a[t], p0, V::bcast(xc)), p1, V::bcast(xc + 4));
                    a[t] = V::acc_add(V::acc_add(a[t], p2, V::bcast(xc + 8)), p3, V::bcast(xc + 12));
                }
            }
            // (c + 1) (q . xq - z sum(xq)): |q . xq - z sum(xq)| <= 2 * 3 * 32 * 127 fits the low
            // 16 bits of each lane (sign-extended above), c + 1 and z have zero high halves, so
            // madd (lo * lo + hi * hi) multiplies them exactly; the block sum stays below 2^24.
            const typename V::I mi = V::bytes(meta + g * kTileRows);
            const typename V::I scale = V::add(V::and32(mi, 63), V::set1(1)), zero = V::template shr32<6>(mi);
            for (int t = 0; t < T; ++t) {
                const typename V::I zq = V::madd(zero, V::set1(x.qsum[t][g]));
                block[t] = V::add(block[t], V::madd(V::sub(V::acc_sum(a[t]), zq), scale));
            }
        }
        const typename V::F S = V::f16(super + (g0 / kMixSuperGroups) * kTileRows);
        for (int t = 0; t < T; ++t) acc[t] = V::fmadd(V::to_float(block[t]), V::mul(S, V::set1f(x.d[t][g0])), acc[t]);
    }
    q4_groups<V, T>(rec, rt, m.K4 / kGroup, m.G2, x, next, acc, bias);
    for (int t = 0; t < T; ++t) V::store(out[t], V::addf(acc[t], bias[t]));
}

template <class V, int T>
inline void q4_tile(const Weight &W, const RowTiles &rt, int64_t tile, const Tokens<T> &x, float out[T][kTileRows]) {
    typename V::F acc[T], bias[T];
    for (int t = 0; t < T; ++t) acc[t] = bias[t] = V::zerof();
    Prefetcher next(rt, tile, W.G);
    q4_groups<V, T>(rt.tile(tile), rt, W.G, 0, x, next, acc, bias);
    for (int t = 0; t < T; ++t) V::store(out[t], V::addf(acc[t], bias[t]));
}

// q8: per group, the code products (V::dot_q8 sums (w + V::kQ8Offset) x, corrected with the
// group's input code sum) scaled by the weight and input scales.
template <class V, int T>
inline void q8_tile(const Weight &W, const RowTiles &rt, int64_t tile, const Tokens<T> &x, float out[T][kTileRows]) {
    const uint8_t *rec = rt.tile(tile), *codes = rec + rt.q8;
    const uint16_t *scales = halves(rec, rt.scale8);
    typename V::F acc[T];
    for (int t = 0; t < T; ++t) acc[t] = V::zerof();
    Prefetcher next(rt, tile, W.G);
    for (int64_t g = 0; g < W.G; ++g) {
        next.step();
        typename V::I a[T];
        for (int t = 0; t < T; ++t) a[t] = V::set1(0);
        for (int c = 0; c < 8; ++c) {  // 4 columns per chunk
            const typename V::I v = V::load(codes + (8 * g + c) * 64);
            for (int t = 0; t < T; ++t) a[t] = V::dot_q8(a[t], v, V::bcast(x.q[t] + g * kGroup + 4 * c));
        }
        const typename V::F s = V::f16(scales + g * kTileRows);
        for (int t = 0; t < T; ++t) {
            const typename V::I exact = V::sub(a[t], V::set1(V::kQ8Offset * x.qsum[t][g]));
            acc[t] = V::fmadd(V::to_float(exact), V::mul(s, V::set1f(x.d[t][g])), acc[t]);
        }
    }
    for (int t = 0; t < T; ++t) V::store(out[t], acc[t]);
}

// Block formats (FORMAT.md 5.6), tiles of BlockTiles::kind K: per 16 columns, the elements of the
// 16 rows as bytes (int8: the signed m, loaded; nibble: the stored u = m + offset, or E2M1 codes
// through kE2M1Unsigned; nibble_crumb: the nibbles and the 2 high bits of one q6 chunk joined into
// u), their exact products with the input codes (V::dot_q8 for signed m, V::dot_u8 for u; either
// sum is corrected with the 16 columns' input code sum times its offset), scaled by 2^(E - 127)
// from the 16 exponent bytes and by the input scale x 2^-fraction_bits.
template <class V, BlockTiles::Kind K>
inline void block_elements(const uint8_t *rec, const RowTiles &rt, int64_t h, typename V::I m[4]) {
    using I = typename V::I;
    if constexpr (K == BlockTiles::Kind::int8) {
        for (int c = 0; c < 4; ++c) m[c] = V::load(rec + rt.q8 + (4 * h + c) * 64);
    } else {
        const uint8_t *chunk = K == BlockTiles::Kind::nibble ? rec + rt.q4 + 128 * h : rec + rt.q6 + 192 * h;
        const I v0 = V::load(chunk), v1 = V::load(chunk + 64);
        m[0] = V::mask(v0, 0x0F);
        m[1] = V::mask(V::template shr<4>(v0), 0x0F);
        m[2] = V::mask(v1, 0x0F);
        m[3] = V::mask(V::template shr<4>(v1), 0x0F);
        if constexpr (K == BlockTiles::Kind::nibble_crumb) {
            const I c = V::load(chunk + 128);
            m[0] = V::or_masked(m[0], c, 0x30);
            m[1] = V::or_masked(m[1], V::template shr<2>(c), 0x30);
            m[2] = V::or_masked(m[2], V::template shl<4>(c), 0x30);
            m[3] = V::or_masked(m[3], V::template shl<2>(c), 0x30);
        } else if (rt.block.e2m1) {
            for (int c = 0; c < 4; ++c) m[c] = V::lut(m[c], kE2M1Unsigned);
        }
    }
}

template <class V, int T, BlockTiles::Kind K>
inline void block_tile_of(const Weight &W, const RowTiles &rt, int64_t tile, const Tokens<T> &x, float out[T][kTileRows]) {
    constexpr bool kSigned = K == BlockTiles::Kind::int8;
    const uint8_t *rec = rt.tile(tile);
    const float unit = 1.0f / float(1 << rt.block.fraction_bits);  // exact
    const int32_t offset = kSigned ? V::kQ8Offset : rt.block.offset;
    typename V::F acc[T];
    for (int t = 0; t < T; ++t) acc[t] = V::zerof();
    Prefetcher next(rt, tile, 2 * W.G);
    for (int64_t h = 0; h < 2 * W.G; ++h) {  // 16 columns at a time
        next.step();
        typename V::I m[4];
        block_elements<V, K>(rec, rt, h, m);
        typename V::I a[T];
        for (int t = 0; t < T; ++t) {
            a[t] = V::set1(0);
            for (int c = 0; c < 4; ++c) {
                const typename V::X xc = V::bcast(x.q[t] + h * 16 + 4 * c);
                a[t] = kSigned ? V::dot_q8(a[t], m[c], xc) : V::dot_u8(a[t], m[c], xc);
            }
        }
        const typename V::F s = V::exp_scale(V::bytes(rec + rt.exp16 + h * kTileRows));
        for (int t = 0; t < T; ++t) {
            const typename V::I exact = V::sub(a[t], V::set1(offset * x.qsum16[t][h]));
            acc[t] = V::fmadd(V::to_float(exact), V::mul(s, V::set1f(x.d[t][h / 2] * unit)), acc[t]);
        }
    }
    for (int t = 0; t < T; ++t) V::store(out[t], acc[t]);
}

template <class V, int T>
inline void block_tile(const Weight &W, const RowTiles &rt, int64_t tile, const Tokens<T> &x, float out[T][kTileRows]) {
    switch (rt.block.kind) {
        case BlockTiles::Kind::int8: block_tile_of<V, T, BlockTiles::Kind::int8>(W, rt, tile, x, out); break;
        case BlockTiles::Kind::nibble: block_tile_of<V, T, BlockTiles::Kind::nibble>(W, rt, tile, x, out); break;
        default: block_tile_of<V, T, BlockTiles::Kind::nibble_crumb>(W, rt, tile, x, out); break;
    }
}

// The end of a quik tile for T tokens, from each token's integer sums of (q + 8) u over the 16
// rows: minus 8 x the input code sum that is sum q u, and out = s_row (d sum + lo rowsum) + the
// fp16 columns' products in fp32.
template <class V, int T>
inline void quik_finish(const Weight &W, const RowTiles &rt, int64_t tile, const Tokens<T> &x,
                        const typename V::I sums[T], float out[T][kTileRows]) {
    const uint8_t *rec = rt.tile(tile);
    const typename V::F s = V::loadf(reinterpret_cast<const float *>(rec + rt.srow));
    const typename V::F rowsum = V::to_float(V::load(rec + rt.rowsum));
    const uint16_t *w16 = halves(rec, rt.out16);
    typename V::F r[T];
    for (int t = 0; t < T; ++t) {
        const typename V::I exact = V::sub(sums[t], V::set1(8 * x.qsum[t][0]));
        r[t] = V::mul(s, V::fmadd(V::to_float(exact), V::set1f(x.d[t][0]), V::mul(rowsum, V::set1f(x.sum[t][0]))));
    }
    for (int64_t j = 0; j < W.quik.n_out; ++j) {
        const typename V::F wj = V::f16(w16 + j * kTileRows);
        for (int t = 0; t < T; ++t) r[t] = V::fmadd(wj, V::set1f(x.xout[t][j]), r[t]);
    }
    for (int t = 0; t < T; ++t) V::store(out[t], r[t]);
}

// quik (FORMAT.md 5.7): the 16 rows' 4-bit codes as u = q + 8 times the token's unsigned input
// codes (V::dot_xu8: the input on the unsigned side), summed in int32 over the whole row (one
// scale per row: no float work inside the loop; the fp16 columns' code 0 adds nothing), then
// quik_finish.
template <class V, int T>
inline void quik_tile(const Weight &W, const RowTiles &rt, int64_t tile, const Tokens<T> &x, float out[T][kTileRows]) {
    const uint8_t *codes = rt.tile(tile) + rt.q4;
    // Two sums per token (low and high nibbles): the sums run through the whole row, so each
    // chunk adds to each one once and the vpdpbusd latency stays hidden.
    typename V::I a[T], b[T];
    for (int t = 0; t < T; ++t) a[t] = b[t] = V::set1(0);
    Prefetcher next(rt, tile, W.Kp / 8);
    for (int64_t c = 0; c < W.Kp / 8; ++c) {  // 8 columns per chunk: low nibbles 0..3, high 4..7
        next.step();
        const typename V::I v = V::load(codes + c * 64);
        const typename V::I lo = V::mask(v, 0x0F), hi = V::mask(V::template shr<4>(v), 0x0F);
        for (int t = 0; t < T; ++t) {
            const int8_t *xc = x.q[t] + 8 * c;
            a[t] = V::dot_xu8(a[t], lo, V::bcast(xc));
            b[t] = V::dot_xu8(b[t], hi, V::bcast(xc + 4));
        }
    }
    typename V::I sums[T];
    for (int t = 0; t < T; ++t) sums[t] = V::add(a[t], b[t]);
    quik_finish<V, T>(W, rt, tile, x, sums, out);
}

// result[t][row] += the fp16 outliers of the tile's rows [r0, r1) against x^ of token t in the
// original column order: one loop over the tile's CSR entries. Consecutive entries often share a
// row, so even and odd entries add into separate sums (no chain of dependent stores and loads).
template <int T>
inline void add_outliers(const MixView &m, const uint8_t *outlier_row, int64_t r0, int64_t r1, const QuantizedInput &in,
                         float result[T][kTileRows]) {
    alignas(64) float odd[T][kTileRows] = {};
    auto add = [&](uint32_t o, float sums[T][kTileRows]) {
        const float v = _cvtsh_ss(m.vals[o]);
        const uint16_t c = m.cols[o];
        for (int t = 0; t < T; ++t) sums[t][outlier_row[o]] += v * in.xhat[t * in.K + c];
    };
    uint32_t o = m.row_ptr[r0];
    const uint32_t end = m.row_ptr[r1];
    for (; o + 2 <= end; o += 2) {
        add(o, result);
        add(o + 1, odd);
    }
    if (o < end) add(o, odd);
    for (int t = 0; t < T; ++t)
        for (int i = 0; i < kTileRows; ++i) result[t][i] += odd[t][i];
}

enum class TileKind { q8, q4, mix, block, quik };

template <class V, TileKind kind, int T>
inline void run_tile(const TiledMatrix &W, int64_t tile, const QuantizedInput &in, float *out, int64_t r1) {
    const Weight &w = W.weight();
    const Tokens<T> x(in);
    alignas(64) float result[T][kTileRows];
    if constexpr (kind == TileKind::mix) mix_tile<V, T>(w, W.tiles(), tile, x, result);
    if constexpr (kind == TileKind::q4) q4_tile<V, T>(w, W.tiles(), tile, x, result);
    if constexpr (kind == TileKind::q8) q8_tile<V, T>(w, W.tiles(), tile, x, result);
    if constexpr (kind == TileKind::block) block_tile<V, T>(w, W.tiles(), tile, x, result);
    if constexpr (kind == TileKind::quik) quik_tile<V, T>(w, W.tiles(), tile, x, result);
    const int64_t r0 = tile * kTileRows, rows = std::min(r1 - r0, kTileRows);
    if constexpr (kind == TileKind::mix) add_outliers<T>(w.mix, W.tiles().outlier_row, r0, r0 + rows, in, result);
    for (int t = 0; t < T; ++t)
        for (int64_t i = 0; i < rows; ++i) out[t * w.rows + r0 + i] = result[t][i];
}

// Rows [r0, r1) (r0 a multiple of 16) of out = x^ W^T for n tokens: tiles in order, tokens in
// tiles of V::kTokens, then of 2 (batched decoding of 2, 3, 5... sequences decodes each chunk once
// per pair), then 1; token blocks of 16 keep their input codes in L1 while the tiles pass.
template <class V, TileKind kind>
void matmul_tiled(const TiledMatrix &W, const QuantizedInput &in, float *out, int64_t n, int64_t r0, int64_t r1) {
    constexpr int64_t kTokenBlock = 16;
    for (int64_t t0 = 0; t0 < n; t0 += kTokenBlock) {
        const int64_t t1 = std::min(n, t0 + kTokenBlock);
        for (int64_t tile = r0 / kTileRows; tile * kTileRows < r1; ++tile) {
            int64_t t = t0;
            for (; t + V::kTokens <= t1; t += V::kTokens)
                run_tile<V, kind, V::kTokens>(W, tile, token(in, t), out + t * W.weight().rows, r1);
            for (; t + 2 <= t1; t += 2) run_tile<V, kind, 2>(W, tile, token(in, t), out + t * W.weight().rows, r1);
            for (; t < t1; ++t) run_tile<V, kind, 1>(W, tile, token(in, t), out + t * W.weight().rows, r1);
        }
    }
}

// `base` (a table whose other kernels the instruction set shares) with its quantized matmuls
// replaced by these kernels on V, named `name`.
template <class V>
CpuKernels with_tile_kernels(const CpuKernels &base, const char *name) {
    CpuKernels k = base;
    k.name = name;
    k.matmul_q8 = matmul_tiled<V, TileKind::q8>;
    k.matmul_q4 = matmul_tiled<V, TileKind::q4>;
    k.matmul_mix = matmul_tiled<V, TileKind::mix>;
    k.matmul_block = matmul_tiled<V, TileKind::block>;
    k.matmul_quik = matmul_tiled<V, TileKind::quik>;
    return k;
}

}  // namespace
}  // namespace mixrt
