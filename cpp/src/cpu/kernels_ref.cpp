// kernels_ref.cpp: the scalar reference of every CPU kernel: plain loops, fp32 accumulation in
// index order; quantized rows are decoded by the reference dequantize_row (quant_layout.cpp) and
// then multiplied with the rounded input x^ (quantized_input.h), from the canonical parts
// (never the row tiles). The fast kernels are tested against these (tests/test_kernels.py,
// tests/test_quant_kernels.py).
#include <algorithm>
#include <cmath>
#include <vector>

#include "format/half.h"
#include "cpu/kernels.h"

namespace mixrt {

namespace {

template <typename T>
float load(const T *p, int64_t i);
template <>
float load<float>(const float *p, int64_t i) { return p[i]; }
template <>
float load<uint16_t>(const uint16_t *p, int64_t i) { return half_to_float(p[i]); }

template <typename T>
void matmul_ref(const T *W, const float *x, float *out, int64_t n, int64_t M, int64_t K, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        const T *w = W + r * K;
        for (int64_t t = 0; t < n; ++t) {
            const float *xt = x + t * K;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; ++k) acc += load(w, k) * xt[k];
            out[t * M + r] = acc;
        }
    }
}

// Quantized rows: decode each row, then the same fp32 dot as above with x^ in the original column
// order (the same for every quantized dtype).
void matmul_q_ref(const TiledMatrix &tiled, const QuantizedInput &x, float *out, int64_t n, int64_t r0, int64_t r1) {
    const Weight &W = tiled.weight();
    thread_local std::vector<float> row;
    row.resize(W.cols);
    for (int64_t r = r0; r < r1; ++r) {
        dequantize_row(W, r, row.data());
        for (int64_t t = 0; t < n; ++t) {
            const float *xt = x.xhat + t * x.K;
            float acc = 0.0f;
            for (int64_t k = 0; k < W.cols; ++k) acc += row[k] * xt[k];
            out[t * W.rows + r] = acc;
        }
    }
}

template <typename T>
void attn_scores_ref(const float *q, int64_t nq, int64_t q_stride, const T *K, int64_t stride, int64_t len, int64_t hd,
                     float *scores) {
    for (int64_t h = 0; h < nq; ++h)
        for (int64_t j = 0; j < len; ++j) {
            float acc = 0.0f;
            for (int64_t i = 0; i < hd; ++i) acc += q[h * q_stride + i] * load(K + j * stride, i);
            scores[h * len + j] = acc;
        }
}

template <typename T>
void attn_values_ref(const float *p, int64_t nq, const T *V, int64_t stride, int64_t len, int64_t hd, float *out,
                     int64_t out_stride) {
    for (int64_t h = 0; h < nq; ++h)
        for (int64_t i = 0; i < hd; ++i) {
            float acc = 0.0f;
            for (int64_t j = 0; j < len; ++j) acc += p[h * len + j] * load(V + j * stride, i);
            out[h * out_stride + i] = acc;
        }
}

void to_f16_ref(const float *x, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_half(x[i]);
}

void softmax_rows_ref(float *s, int64_t rows, int64_t len, float scale) {
    for (int64_t i = 0; i < rows; ++i) {
        float *row = s + i * len;
        float top = -INFINITY;
        for (int64_t j = 0; j < len; ++j) top = std::max(top, row[j] *= scale);
        float sum = 0;
        for (int64_t j = 0; j < len; ++j) {
            row[j] = std::exp(row[j] - top);
            sum += row[j];
        }
        const float inv_sum = 1.0f / sum;
        for (int64_t j = 0; j < len; ++j) row[j] *= inv_sum;
    }
}

}  // namespace

int32_t round_quik_row_ref(const float *x, const uint8_t *column, int64_t K, int bits, uint8_t *u, float *lo_out,
                           float *d_out) {
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t k = 0; k < K; ++k)
        if (column[k]) {
            lo = std::min(lo, x[k]);
            hi = std::max(hi, x[k]);
        }
    if (lo > hi) lo = hi = 0.0f;  // no 4-bit column
    const float top = float((1 << bits) - 1);
    const float d = (hi - lo) / top, inv = hi > lo ? top / (hi - lo) : 0.0f;
    int32_t total = 0;
    for (int64_t k = 0; k < K; ++k) {
        const float r = std::nearbyint((x[k] - lo) * inv);  // ties to even (the default rounding mode)
        const float positive = r > 0.0f ? r : 0.0f;          // NaN -> 0; the fp16 columns may fall outside
        const float c = positive < top ? positive : top;
        u[k] = uint8_t(c);
        total += int32_t(c);
    }
    *lo_out = lo;
    *d_out = d;
    return total;
}

const CpuKernels &scalar_kernels() {
    static const CpuKernels k{"scalar",
                              false,
                              matmul_ref<float>,
                              matmul_ref<uint16_t>,
                              matmul_q_ref,
                              matmul_q_ref,
                              matmul_q_ref,
                              matmul_q_ref,
                              matmul_q_ref,
                              attn_scores_ref<uint16_t>,
                              attn_values_ref<uint16_t>,
                              attn_scores_ref<float>,
                              attn_values_ref<float>,
                              to_f16_ref,
                              softmax_rows_ref,
                              round_quik_row_ref};
    return k;
}

}  // namespace mixrt
