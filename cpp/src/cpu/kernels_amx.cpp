// kernels_amx.cpp: the quik matmul (FORMAT.md 5.7) of 16 tokens and more on AMX's tile registers,
// the rest of the table being AVX-512's. quik sums each row's products in integers over the whole
// K (one scale per row, per token), which is exactly what TDPBUSD does: it adds a 16-token x
// 64-byte block of unsigned input codes times a 64 x 16 block of signed weight bytes into a 16 x 16
// block of int32 sums (16384 multiply-adds per instruction). The 4-bit codes u = q + 8 of a run of
// row tiles (1 MiB unpacked) are unpacked once into bytes (the tile layout's 64-byte chunks of 4
// columns x 16 rows are the rows of TDPBUSD's weight operand as they are), then up to 4 token
// blocks of 16 at a time pass over them; the sums end as the AVX-512 kernel's do (quik_finish). Token counts below 16, and
// the last n mod 16 tokens, take the AVX-512 kernel. This file alone is compiled with -mamx-tile
// -mamx-int8 (plus AVX-512) and is only called after the run-time check of amx_usable(), which
// also asks Linux for the tile state (arch_prctl ARCH_REQ_XCOMP_PERM).
#include <cpuid.h>
#include <immintrin.h>

#include <cstring>
#include <vector>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "cpu/kernels.h"
#include "cpu/tile_kernels.h"
#include "cpu/vec512.h"

namespace mixrt {

namespace {

// Tile registers: 0..3 the int32 sums of up to kBlocks token blocks of 16 per pass over a row
// tile, 4 a block's input codes, 5 a K step's weight bytes (the tile intrinsics take literals).
constexpr int kBlocks = 4;
constexpr int kTiles = 6;
constexpr int64_t kStepBytes = 64 * kTileRows;  // weight bytes of one K step of 64 columns
constexpr int64_t kStageBytes = 1 << 20;         // unpacked weight bytes per run of row tiles

struct alignas(64) TileConfig {
    uint8_t palette = 1, start_row = 0, reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

// Tiles 0..5 all 16 rows of 64 bytes (int32 sums: 16 x 16; inputs 16 tokens x 64 codes; weights
// 16 x (4 columns x 16 rows)).
TileConfig tile_config() {
    TileConfig c;
    for (int i = 0; i < kTiles; ++i) {
        c.rows[i] = 16;
        c.colsb[i] = 64;
    }
    return c;
}

// The AVX-512 table's quik matmul: below 16 tokens and for the last n mod 16.
void (*g_vector_quik)(const TiledMatrix &, const QuantizedInput &, float *, int64_t, int64_t, int64_t) = nullptr;

// The int32 sums of token blocks 0..B-1 (16 tokens each, from t0) against the unpacked row tile.
template <int B>
void tile_sums(const uint8_t *stage, int64_t steps, const QuantizedInput &in, int64_t t0, int32_t sums[B][16][16]) {
    if constexpr (B > 0) _tile_zero(0);
    if constexpr (B > 1) _tile_zero(1);
    if constexpr (B > 2) _tile_zero(2);
    if constexpr (B > 3) _tile_zero(3);
    const uint8_t *x = reinterpret_cast<const uint8_t *>(in.q) + t0 * in.stride;
    const int64_t block = 16 * in.stride;
    for (int64_t s = 0; s < steps; ++s) {
        _tile_loadd(5, stage + s * kStepBytes, 64);
        const uint8_t *xs = x + 64 * s;
        if constexpr (B > 0) {
            _tile_loadd(4, xs, in.stride);
            _tile_dpbusd(0, 4, 5);
        }
        if constexpr (B > 1) {
            _tile_loadd(4, xs + block, in.stride);
            _tile_dpbusd(1, 4, 5);
        }
        if constexpr (B > 2) {
            _tile_loadd(4, xs + 2 * block, in.stride);
            _tile_dpbusd(2, 4, 5);
        }
        if constexpr (B > 3) {
            _tile_loadd(4, xs + 3 * block, in.stride);
            _tile_dpbusd(3, 4, 5);
        }
    }
    if constexpr (B > 0) _tile_stored(0, sums[0], 64);
    if constexpr (B > 1) _tile_stored(1, sums[1], 64);
    if constexpr (B > 2) _tile_stored(2, sums[2], 64);
    if constexpr (B > 3) _tile_stored(3, sums[3], 64);
}

void matmul_quik_amx(const TiledMatrix &W, const QuantizedInput &in, float *out, int64_t n, int64_t r0, int64_t r1) {
    const int64_t full = n / 16 * 16;
    if (full == 0) return g_vector_quik(W, in, out, n, r0, r1);
    const Weight &w = W.weight();
    const RowTiles &rt = W.tiles();
    const int64_t M = w.rows, steps = in.stride / 64, tile_bytes = steps * kStepBytes;
    // The row tiles of [r0, r1) in runs that fit in L2 (kStageBytes), each unpacked once (columns
    // past Kp zeroed once per call, as their input codes are); then each group of token blocks,
    // whose input codes stay in L1, passes over the run.
    const int64_t run = std::max<int64_t>(1, kStageBytes / tile_bytes);
    const int64_t codes_bytes = w.Kp / 8 * 128;  // what the unpacking writes of a tile's tile_bytes
    thread_local std::vector<uint8_t> stage;
    stage.resize(size_t(run * tile_bytes));
    for (int64_t i = 0; i < run; ++i) std::memset(stage.data() + i * tile_bytes + codes_bytes, 0, tile_bytes - codes_bytes);
    static const TileConfig config = tile_config();
    _tile_loadconfig(&config);
    alignas(64) int32_t sums[kBlocks][16][16];
    alignas(64) float result[16][kTileRows];
    for (int64_t first = r0 / kTileRows; first * kTileRows < r1; first += run) {
        const int64_t tiles = std::min(run, (r1 - first * kTileRows + kTileRows - 1) / kTileRows);
        for (int64_t i = 0; i < tiles; ++i) {
            const uint8_t *codes = rt.tile(first + i) + rt.q4;
            uint8_t *dst = stage.data() + i * tile_bytes;
            for (int64_t c = 0; c < w.Kp / 8; ++c) {  // chunk c: columns 8c..8c+3 low, 8c+4..8c+7 high
                const __m512i v = _mm512_loadu_si512(codes + 64 * c);
                _mm512_storeu_si512(dst + 128 * c, Avx512::mask(v, 0x0F));
                _mm512_storeu_si512(dst + 128 * c + 64, Avx512::mask(Avx512::shr<4>(v), 0x0F));
            }
        }
        for (int64_t t0 = 0; t0 < full; t0 += 16 * kBlocks) {
            const int blocks = int(std::min<int64_t>(kBlocks, (full - t0) / 16));
            for (int64_t i = 0; i < tiles; ++i) {
                const uint8_t *b = stage.data() + i * tile_bytes;
                switch (blocks) {
                    case 1: tile_sums<1>(b, steps, in, t0, sums); break;
                    case 2: tile_sums<2>(b, steps, in, t0, sums); break;
                    case 3: tile_sums<3>(b, steps, in, t0, sums); break;
                    default: tile_sums<4>(b, steps, in, t0, sums); break;
                }
                const int64_t tile = first + i;
                const __mmask16 row_mask = __mmask16((1u << std::min(r1 - tile * kTileRows, kTileRows)) - 1);
                for (int blk = 0; blk < blocks; ++blk) {
                    __m512i acc[16];
                    for (int t = 0; t < 16; ++t) acc[t] = _mm512_load_si512(sums[blk][t]);
                    const int64_t tb = t0 + 16 * blk;
                    quik_finish<Avx512, 16>(w, rt, tile, Tokens<16>(token(in, tb)), acc, result);
                    for (int t = 0; t < 16; ++t)
                        _mm512_mask_storeu_ps(out + (tb + t) * M + tile * kTileRows, row_mask, _mm512_load_ps(result[t]));
                }
            }
        }
    }
    _tile_release();
    if (full < n) g_vector_quik(W, token(in, full), out + full * M, n - full, r0, r1);
}

// AMX-TILE and AMX-INT8 (CPUID leaf 7, EDX bits 24 and 25).
bool cpu_has_amx_int8() {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1);
}

// Linux hands out the tile registers' state only on request (once per process).
bool os_grants_tiles() {
#if defined(__linux__) && defined(SYS_arch_prctl)
    constexpr int kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
}

}  // namespace

bool amx_usable() {
    static const bool usable = cpu_has_amx_int8() && os_grants_tiles();
    return usable;
}

// The AVX-512 table with its quik matmul on AMX.
CpuKernels amx_kernel_table(const CpuKernels &avx512) {
    CpuKernels k = avx512;
    k.name = "amx";
    g_vector_quik = avx512.matmul_quik;
    k.matmul_quik = matmul_quik_amx;
    return k;
}

}  // namespace mixrt
