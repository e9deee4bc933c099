// quantized_input.h: the input x of a quantized matmul (q8, q4, mix, block formats, quik) as the kernels read it:
// rounded to 8-bit codes with one f32 scale per block, x^ = d * q, so the weight codes can be
// multiplied with integer instructions and only sums are scaled in fp32. For q8/q4 a row is x
// padded with zeros to Kp, in blocks of one group (32 values; the block formats too); for mix it is x2 (the permuted
// 2-bit columns, zero padded to K2p) in blocks of kMixBlockGroups groups (256 values: the 2-bit
// kernel then multiplies the integer scale codes of a block's groups in integers too), followed
// by x4 (the permuted 4-bit columns) in blocks of one group. Blocks line up with weight groups.
// For quik (QUIK's activations, FORMAT.md 5.7) a row is instead x in its own column order, zero
// padded to a multiple of 64 (whole AMX tile rows), rounded per token, asymmetric, to `quik_bits`
// bits between the min lo and the max of its 4-bit columns: d = (max - lo) / (2^bits - 1),
// unsigned codes u = round((x - lo) / d) clamped to 0..2^bits-1, x^ = lo + d u. The fp16 columns
// get codes too, which meet weight code 0 (tiled_matrix.h), and keep x^ = x, their inputs listed
// in xout; the one block holds d, lo in sum and the code sum in qsum.
// Every kernel (scalar reference and fast twin) computes W x^ from these same values;
// tests/test_quant_kernels.py bounds the difference to W x.
#pragma once

#include <cstdint>
#include <vector>

#include "format/quant_layout.h"
#include "cpu/thread_pool.h"

namespace mixrt {

constexpr int64_t kGroupSlack = 8;

// CpuKernels::round_quik_row (kernels.h).
using QuikRowRounding = int32_t (*)(const float *x, const uint8_t *column, int64_t K, int bits, uint8_t *u,
                                    float *lo_out, float *d_out);
constexpr int64_t kMixBlockGroups = 8;  // groups per input scale block over the mix 2-bit columns

struct QuantizedInput {
    const int8_t *q = nullptr;   // [n, stride] codes, |q| <= 127
    // d, sum and qsum are followed by at least kGroupSlack readable values, so kernels may load 8 groups
    // at a time past the last one (they multiply those by zero weight scales).
    const float *d = nullptr;    // [n, groups] scale of the block each group of 32 codes is in
    const float *sum = nullptr;  // [n, groups] d * (sum of the group's codes) = the sum of x^ there
    const int32_t *qsum = nullptr;  // [n, groups] sum of the group's codes
    const int32_t *qsum16 = nullptr;  // [n, 2 groups] sums of the first and the last 16 codes of each group
    const float *xhat = nullptr; // [n, K] x^ in the original column order (outliers, reference;
                                 // quik: only when asked for)
    const float *xout = nullptr; // quik: [n, n_out] the fp16 columns' inputs, in perm order
    int64_t stride = 0, groups = 0, K = 0, n_out = 0;
};

// Storage for the quantized inputs of up to max_rows rows of width at most max_K; allocated once
// (per context), so quantizing never allocates.
class QuantizedInputBuffer {
public:
    // quik_bits: the width of quik inputs, 8 or 4.
    QuantizedInputBuffer(int64_t max_rows, int64_t max_K, int quik_bits = 8);
    // Rounds x [n, w.cols] into the layout of w's dtype. n <= max_rows. With a pool, several rows
    // are rounded in parallel. quik rows go through `round_quik_row` (a kernel table's, kernels.h),
    // and get xhat only when `quik_xhat` (the scalar kernels' input; the fast ones read the codes).
    QuantizedInput quantize(const Weight &w, const float *x, int64_t n, ThreadPool *pool = nullptr,
                            QuikRowRounding round_quik_row = nullptr, bool quik_xhat = true);

private:
    void quantize_row(const Weight &w, const float *xt, int64_t t, const QuantizedInput &in);
    void quantize_quik_row(const Weight &w, const float *xt, int64_t t, const QuantizedInput &in,
                           QuikRowRounding round_quik_row, bool with_xhat);

    int64_t max_rows_, max_K_;
    int quik_bits_;
    std::vector<int8_t> q_;
    std::vector<float> d_, sum_;
    std::vector<int32_t> qsum_, qsum16_;
    std::vector<float> xhat_, row_, xout_;
    std::vector<uint8_t> quik_column_;  // quik: 1 for a 4-bit column, 0 for an fp16 one or padding
};

}  // namespace mixrt
