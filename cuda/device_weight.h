// device_weight.h: weight matrices on the GPU and the kernels that read them. A DeviceWeight owns
// one device allocation holding a matrix [rows, cols] (or a vector, rows == 1) of any stored dtype
// (FORMAT.md 5); the free functions are its matrix-vector product for 1..8 inputs, the row gather
// of an embedding lookup and the dequantization to f16 used as scratch by the prefill GEMMs.
//
// Device layout (DeviceParts): the parts of FORMAT.md in the file's order and byte layout, each
// 256-byte aligned inside the one allocation, with one repack: a mix permutation is stored as u16
// (K <= 65536). Quantized weights also own a small scratch where matvec stages its input (so
// matvec calls on one weight must not run concurrently on different streams).
//
// Every function checks its arguments and CUDA status and throws mixrt::Error with the message;
// the kernels are asynchronous on the given stream.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "format/quant_layout.h"

namespace mixrt::cuda {

constexpr int kMaxMatvecInputs = 8;  // n of matvec: 1 ..= 8 input vectors per launch

// Device pointers into a DeviceWeight's allocation; only those of its dtype are set.
struct DeviceParts {
    int64_t Kp = 0, G = 0;            // q8 / q4: cols padded to whole groups, group count
    const float *f32 = nullptr;       // f32 [rows, cols]
    const __half *f16 = nullptr;      // f16 [rows, cols]
    const int8_t *q8_codes = nullptr; // q8 [rows, Kp]
    const __half *q8_scales = nullptr;  // [rows, G]
    const uint8_t *q4_codes = nullptr;  // q4 [rows, Kp/2], also the 4-bit part of mix [rows, K4/2]
    const __half *q4_scales = nullptr;  // [rows, G] (mix: [rows, K4/32])
    const __half *q4_mins = nullptr;    // [rows, G] (mix: [rows, K4/32])
    // mix (FORMAT.md 5.5)
    int64_t K2 = 0, K2p = 0, G2 = 0, B2 = 0, K4 = 0, nnz = 0;
    const uint16_t *perm = nullptr;     // [cols]: 2-bit columns, then 4-bit columns
    const uint8_t *q2 = nullptr;        // [rows, K2p/4], blocks of 64 columns in 16 bytes
    const uint8_t *meta2 = nullptr;     // [rows, G2]: scale code (bits 5..0) | zero << 6
    const __half *super2 = nullptr;     // [rows, B2]
    const uint32_t *row_ptr = nullptr;  // [rows + 1] outlier CSR
    const uint16_t *out_cols = nullptr; // [nnz] original columns
    const __half *out_vals = nullptr;   // [nnz]
    // q8 / q4 / mix: scratch for kMaxMatvecInputs staged inputs of staged_stride floats each
    // (gemv_matvec.cu: x permuted into the order the kernel reads it, and its group sums).
    float *staged = nullptr;
    int64_t staged_stride = 0;
};

// Floats per input of the staged-input scratch of a weight with these parts (0 for f32 / f16).
int64_t staged_input_floats(DType dtype, const DeviceParts &p);

class DeviceWeight {
public:
    // Copies (and repacks) w to the current device. Throws mixrt::Error: MIXRT_ERR_OOM (or the
    // CUDA status) naming the tensor shape and the bytes it needed.
    static DeviceWeight upload(const Weight &w);

    DeviceWeight() = default;
    ~DeviceWeight();
    DeviceWeight(DeviceWeight &&other) noexcept;
    DeviceWeight &operator=(DeviceWeight &&other) noexcept;
    DeviceWeight(const DeviceWeight &) = delete;
    DeviceWeight &operator=(const DeviceWeight &) = delete;

    DType dtype() const { return dtype_; }
    int64_t rows() const { return rows_; }
    int64_t cols() const { return cols_; }
    uint64_t device_bytes() const { return bytes_; }
    const DeviceParts &parts() const { return parts_; }

private:
    DType dtype_ = DType::f32;
    int64_t rows_ = 0, cols_ = 0;
    uint64_t bytes_ = 0;
    void *memory_ = nullptr;
    DeviceParts parts_{};
};

// y[t*rows + r] = sum_k x[t*cols + k] * W[r, k] for t < n (n = 1 ..= kMaxMatvecInputs); x and y
// fp32 device arrays, x in the original column order (the kernel applies the mix permutation).
void matvec(const DeviceWeight &w, const float *x, float *y, int n, cudaStream_t stream);

// How the mix kernel schedules the loads and decode of its scales: overlapped with the weight
// loads (each lane prefetches the codes and scales of its next unit before it computes the current
// one; what matvec uses), or synchronous (a unit's scales are loaded only after its codes have been
// used: the comparison the benchmark shows).
enum class MixSchedule { overlapped, synchronous };
void matvec_mix(const DeviceWeight &w, const float *x, float *y, int n, MixSchedule schedule,
                          cudaStream_t stream);

// out[i*cols + k] = W[rows_idx[i], k] in fp32 for i < n (embedding lookup; rows_idx on the device,
// each in [0, rows)).
void gather_rows(const DeviceWeight &w, const int32_t *rows_idx, int n, float *out,
                           cudaStream_t stream);

// out = W as f16 [rows, cols], original column order (scratch for the prefill GEMMs).
void dequantize_f16(const DeviceWeight &w, __half *out, cudaStream_t stream);

}  // namespace mixrt::cuda
