// kernels_ref.cpp: the scalar reference of every CPU kernel: plain loops, fp32 accumulation in
// index order; quantized rows are decoded by the reference dequantize_row (quant_layout.cpp) and
// then multiplied. The fast kernels are tested against these (tests/test_kernels.py,
// tests/test_quant_kernels.py).
#include <vector>

#include "../half.h"
#include "kernels.h"

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

// Quantized rows: decode, then the same fp32 dot as above. x has row stride x_stride.
void matmul_decoded(const Weight &W, const float *x, int64_t x_stride, float *out, int64_t n, int64_t r0, int64_t r1) {
    thread_local std::vector<float> row;
    row.resize(W.cols);
    for (int64_t r = r0; r < r1; ++r) {
        dequantize_row(W, r, row.data());
        for (int64_t t = 0; t < n; ++t) {
            const float *xt = x + t * x_stride;
            float acc = 0.0f;
            for (int64_t k = 0; k < W.cols; ++k) acc += row[k] * xt[k];
            out[t * W.rows + r] = acc;
        }
    }
}

void matmul_q_ref(const Weight &W, const float *x, float *out, int64_t n, int64_t r0, int64_t r1) {
    matmul_decoded(W, x, W.Kp, out, n, r0, r1);
}

void matmul_mix_ref(const Weight &W, const float *, const float *, const float *x, float *out, int64_t n, int64_t r0,
                    int64_t r1) {
    matmul_decoded(W, x, W.cols, out, n, r0, r1);
}

float dot_ref(const float *a, const float *b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
    return acc;
}

void axpy_ref(float a, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

const CpuKernels &scalar_kernels() {
    static const CpuKernels k{"scalar",     matmul_ref<float>, matmul_ref<uint16_t>, matmul_q_ref, matmul_q_ref,
                              matmul_mix_ref, dot_ref,           axpy_ref};
    return k;
}

}  // namespace mixrt
