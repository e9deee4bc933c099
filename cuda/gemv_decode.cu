// gemv_decode.cu: element-wise decode of a DeviceWeight in fp32 with the element functions of the
// CPU reference decode (format/quant_element.h): gather_rows (embedding lookup, fp32 rows) and
// dequantize_f16 (the whole matrix as f16 for the prefill GEMMs). One thread per weight; a mix
// thread decodes the weight at permuted position j and writes it to column perm[j], adding the
// row's outlier at that column (found by binary search in the row's sorted outlier columns).
#include "device_weight.h"

#include <algorithm>
#include <string>

#include "cuda_check.h"

namespace mixrt::cuda {
namespace {

constexpr int kThreads = 256;

// (column, value) of the weight at stored position j of row r: j is the column itself for every
// dtype but mix, where it is the permuted position.
struct Decoded {
    int64_t col;
    float value;
};

__device__ Decoded decode_at(const DeviceParts &p, DType dtype, int64_t K, int64_t r, int64_t j) {
    switch (dtype) {
        case DType::f32: return {j, p.f32[r * K + j]};
        case DType::f16: return {j, f16_value(p.f16[r * K + j])};
        case DType::q8: return {j, q8_element(p.q8_codes, p.q8_scales, p.Kp, p.G, r, j)};
        case DType::q4: return {j, q4_element(p.q4_codes, p.q4_scales, p.q4_mins, p.Kp / 2, p.G, r, j)};
        case DType::mix: {
            const MixShape shape{p.K2, p.K2p, p.G2, p.B2, p.K4 / kGroup};
            const int64_t col = p.perm[j];
            float v = j < p.K2 ? mix2_element(p.q2, p.meta2, p.super2, shape, r, j)
                               : q4_element(p.q4_codes, p.q4_scales, p.q4_mins, p.K4 / 2, shape.G4, r, j - p.K2);
            uint32_t lo = p.row_ptr[r], hi = p.row_ptr[r + 1];  // outliers of row r: [lo, hi)
            while (lo < hi) {
                const uint32_t mid = (lo + hi) / 2;
                if (p.out_cols[mid] < col) lo = mid + 1;
                else hi = mid;
            }
            if (lo < p.row_ptr[r + 1] && p.out_cols[lo] == col) v += f16_value(p.out_vals[lo]);
            return {col, v};
        }
    }
    return {j, 0.0f};
}

// grid (ceil(K / kThreads), rows): out[i*K + col] for row rows_idx[i] (or i when rows_idx is null).
__global__ void gather_rows_kernel(DeviceParts p, DType dtype, int64_t rows, int64_t K, const int32_t *rows_idx,
                                   float *out) {
    const int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x, i = blockIdx.y;
    if (j >= K) return;
    int64_t r = rows_idx[i];
    if (r < 0 || r >= rows) {  // an id out of range yields NaN rows rather than a wild read
        out[i * K + j] = __int_as_float(0x7FC00000);
        return;
    }
    const Decoded d = decode_at(p, dtype, K, r, j);
    out[i * K + d.col] = d.value;
}

// grid (ceil(K / kThreads), rows): rows r0 + blockIdx.y.
__global__ void dequantize_f16_kernel(DeviceParts p, DType dtype, int64_t K, int64_t r0, __half *out) {
    const int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x, r = r0 + blockIdx.y;
    if (j >= K) return;
    const Decoded d = decode_at(p, dtype, K, r, j);
    out[r * K + d.col] = __float2half_rn(d.value);
}

dim3 grid_for(int64_t K, int64_t rows, const char *what) {
    if (rows > 65535)
        fail(MIXRT_ERR_INVALID_ARGUMENT, std::string(what) + ": at most 65535 rows per launch, found " + std::to_string(rows));
    return dim3(unsigned((K + kThreads - 1) / kThreads), unsigned(rows));
}

}  // namespace

void gather_rows(const DeviceWeight &w, const int32_t *rows_idx, int n, float *out, cudaStream_t stream) {
    if (n < 0) fail(MIXRT_ERR_INVALID_ARGUMENT, "gather_rows: n must be >= 0, found " + std::to_string(n));
    if (n == 0) return;
    gather_rows_kernel<<<grid_for(w.cols(), n, "gather_rows"), kThreads, 0, stream>>>(w.parts(), w.dtype(), w.rows(),
                                                                                     w.cols(), rows_idx, out);
    MIXRT_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void dequantize_f16(const DeviceWeight &w, __half *out, cudaStream_t stream) {
    for (int64_t r0 = 0; r0 < w.rows(); r0 += 65535) {  // grid.y holds at most 65535 rows
        const int64_t rows = std::min<int64_t>(65535, w.rows() - r0);
        dequantize_f16_kernel<<<grid_for(w.cols(), rows, "dequantize_f16"), kThreads, 0, stream>>>(
            w.parts(), w.dtype(), w.cols(), r0, out);
        MIXRT_CUDA_CHECK_LAUNCH("dequantize_f16_kernel");
    }
}

}  // namespace mixrt::cuda
