// kernels.h: the CPU kernel tables, a ladder from the scalar reference (kernels_ref.cpp) to
// AVX2/FMA/F16C (kernels_avx2.cpp), 256-bit AVX-VNNI (kernels_avxvnni.cpp), AVX-512 VNNI
// (kernels_avx512.cpp) and AMX (kernels_amx.cpp); the VNNI tables replace the quantized matmuls,
// the rest is AVX2's, and AMX replaces AVX-512's quik matmul from 16 tokens on.
// tests/test_kernels.py and tests/test_quant_kernels.py compare every table the machine can run
// with the scalar one on the same data. The table used is picked once, at first use: the highest
// the CPU supports, or the one named by the environment variable MIXRT_CPU_KERNELS (scalar, avx2,
// avxvnni, avx512, amx), which may only name a table the CPU can run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "format/quant_layout.h"
#include "cpu/quantized_input.h"
#include "cpu/tiled_matrix.h"

namespace mixrt {

struct CpuKernels {
    const char *name;
    bool reads_tiles;  // its quantized matmuls read row tiles (all but the scalar table)
    // Rows [r0, r1) of out = x W^T: out[t*M + r] = sum_k x[t*K + k] * W[r*K + k] for t < n.
    // W is [M, K] row-major; x is [n, K]; out is [n, M].
    void (*matmul_f32)(const float *W, const float *x, float *out, int64_t n, int64_t M, int64_t K,
                       int64_t r0, int64_t r1);
    void (*matmul_f16)(const uint16_t *W, const float *x, float *out, int64_t n, int64_t M, int64_t K,
                       int64_t r0, int64_t r1);
    // The quantized dtypes (FORMAT.md 5.3-5.7; matmul_block for every block format): rows [r0, r1) of out = x^ W^T, out is
    // [n, W.weight().rows], with x^ the input rounded as quantized_input.h describes, in the
    // layout of W's dtype. r0 is a multiple of kTileRows. The scalar table reads the canonical
    // parts (W.weight()), the others the row tiles (W.tiles()).
    void (*matmul_q8)(const TiledMatrix &W, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1);
    void (*matmul_q4)(const TiledMatrix &W, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1);
    void (*matmul_mix)(const TiledMatrix &W, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1);
    void (*matmul_block)(const TiledMatrix &W, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1);
    void (*matmul_quik)(const TiledMatrix &W, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1);
    // Attention of nq queries (the query heads that share one KV head, rows `q_stride` floats
    // apart) over len cached positions of that head (rows of width hd, `stride` values apart, f16
    // or f32 as the KV cache stores them), so each cached row is read once for all of them:
    // scores[h * len + j] = q_h . K[j]; out[h * out_stride + i] = sum_j p[h * len + j] V[j][i]
    // (out is overwritten).
    void (*attn_scores_f16)(const float *q, int64_t nq, int64_t q_stride, const uint16_t *K, int64_t stride,
                            int64_t len, int64_t hd, float *scores);
    void (*attn_values_f16)(const float *p, int64_t nq, const uint16_t *V, int64_t stride, int64_t len, int64_t hd,
                            float *out, int64_t out_stride);
    void (*attn_scores_f32)(const float *q, int64_t nq, int64_t q_stride, const float *K, int64_t stride,
                            int64_t len, int64_t hd, float *scores);
    void (*attn_values_f32)(const float *p, int64_t nq, const float *V, int64_t stride, int64_t len, int64_t hd,
                            float *out, int64_t out_stride);
    // dst[i] = x[i] rounded to f16 (nearest even), i < n: keys and values into the cache.
    void (*to_f16)(const float *x, uint16_t *dst, int64_t n);
    // Each of `rows` rows of `len` attention scores s (rows `len` apart) becomes softmax(scale s):
    // p_j = exp(scale s_j - m) / sum_i exp(scale s_i - m), m the row's largest scale s_j.
    void (*softmax_rows)(float *s, int64_t rows, int64_t len, float scale);
    // A quik input row (quantized_input.h): lo and hi, the min and max of x[k] where column[k] is
    // 1, then u[k] = round((x[k] - lo) / d) clamped to 0..2^bits-1 for every k < K, with
    // d = (hi - lo) / (2^bits - 1) (0 when hi = lo; lo = hi = 0 without such columns). NaN inputs
    // are left out of lo and hi and get code 0. Returns the sum of the codes; *lo_out and *d_out
    // receive lo and d. Bit for bit the same in every table.
    int32_t (*round_quik_row)(const float *x, const uint8_t *column, int64_t K, int bits, uint8_t *u, float *lo_out,
                              float *d_out);
};

// The scalar round_quik_row (kernels_ref.cpp), which the AVX2 tables use too.
int32_t round_quik_row_ref(const float *x, const uint8_t *column, int64_t K, int bits, uint8_t *u, float *lo_out,
                           float *d_out);

const CpuKernels &scalar_kernels();
// The table called `name` (scalar, avx2, avxvnni, avx512, amx), or nullptr when this build or CPU cannot
// run it.
const CpuKernels *kernels_named(const std::string &name);
// The names of the tables this build and CPU can run, lowest first.
std::vector<std::string> available_kernels();
// The table every context uses: MIXRT_CPU_KERNELS if set, else the highest available. Throws
// mixrt::Error naming the variable's value and the available tables when it cannot be used.
const CpuKernels &best_kernels();

}  // namespace mixrt
