// device_weight.cu: DeviceWeight::upload, the copy of a stored weight (quant_layout.h's Weight)
// into one device allocation laid out as described in device_weight.h, and its lifetime.
#include "device_weight.h"

#include <string>
#include <utility>
#include <vector>

#include "cuda_check.h"

namespace mixrt::cuda {
namespace {

constexpr uint64_t kPartAlign = 256;

uint64_t align_up(uint64_t v) { return (v + kPartAlign - 1) / kPartAlign * kPartAlign; }

// One host source (or nullptr for an empty part) and its byte count; placed at `offset`.
struct HostPart {
    const void *data;
    uint64_t bytes;
    uint64_t offset = 0;
};

std::string shape_text(const Weight &w) {
    return std::string(dtype_name(w.dtype)) + " [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]";
}

}  // namespace

DeviceWeight DeviceWeight::upload(const Weight &w) {
    if (is_block_format(w.dtype) || w.dtype == DType::quik)
        fail(MIXRT_ERR_INVALID_ARGUMENT, std::string("dtype ") + dtype_name(w.dtype) +
                                             " is not implemented by the CUDA backend yet");
    const uint64_t M = w.rows, K = w.cols;
    const MixView &m = w.mix;
    const std::vector<uint64_t> sizes = part_sizes(w.dtype, M, K, uint64_t(m.K4), uint64_t(m.nnz));
    std::vector<uint16_t> perm16;
    std::vector<HostPart> host;
    switch (w.dtype) {
        case DType::f32:
        case DType::f16: host = {{w.data, sizes[0]}}; break;
        case DType::q8: host = {{w.q8.codes, sizes[0]}, {w.q8.scales, sizes[1]}}; break;
        case DType::q4: host = {{w.q4.codes, sizes[0]}, {w.q4.scales, sizes[1]}, {w.q4.mins, sizes[2]}}; break;
        case DType::mix:
            perm16.assign(m.perm, m.perm + K);  // K <= 65536: every index fits in u16
            host = {{perm16.data(), 2 * K},     {m.q2, sizes[1]},      {m.meta2, sizes[2]},   {m.super2, sizes[3]},
                    {m.w4.codes, sizes[4]},     {m.w4.scales, sizes[5]}, {m.w4.mins, sizes[6]}, {m.row_ptr, sizes[7]},
                    {m.cols, sizes[8]},         {m.vals, sizes[9]}};
            break;
    }
    DeviceParts dims;  // the sizes the staged-input scratch depends on
    dims.Kp = w.Kp;
    dims.G = w.G;
    dims.K2p = m.K2p;
    dims.G2 = m.G2;
    dims.K4 = m.K4;
    const uint64_t staged_bytes = uint64_t(staged_input_floats(w.dtype, dims)) * kMaxMatvecInputs * sizeof(float);
    uint64_t total = 0;
    for (HostPart &p : host) {
        p.offset = total;
        total += align_up(p.bytes);
    }
    const uint64_t staged_offset = total;
    total += align_up(staged_bytes);

    DeviceWeight d;
    d.dtype_ = w.dtype;
    d.rows_ = w.rows;
    d.cols_ = w.cols;
    d.bytes_ = total;
    d.memory_ = device_alloc(total, "weight " + shape_text(w));
    uint8_t *base = static_cast<uint8_t *>(d.memory_);
    for (const HostPart &p : host)
        if (p.bytes) MIXRT_CUDA_CHECK(cudaMemcpy(base + p.offset, p.data, p.bytes, cudaMemcpyHostToDevice));

    auto at = [&](size_t i) -> const void * { return host[i].bytes ? base + host[i].offset : nullptr; };
    DeviceParts &dp = d.parts_;
    dp.Kp = w.Kp;
    dp.G = w.G;
    if (staged_bytes) {  // zeroed: the kernels read (and ignore) the slots of unused inputs
        MIXRT_CUDA_CHECK(cudaMemset(base + staged_offset, 0, staged_bytes));
        dp.staged = reinterpret_cast<float *>(base + staged_offset);
        dp.staged_stride = staged_input_floats(w.dtype, dims);
    }
    switch (w.dtype) {
        case DType::f32: dp.f32 = static_cast<const float *>(at(0)); break;
        case DType::f16: dp.f16 = static_cast<const __half *>(at(0)); break;
        case DType::q8:
            dp.q8_codes = static_cast<const int8_t *>(at(0));
            dp.q8_scales = static_cast<const __half *>(at(1));
            break;
        case DType::q4:
            dp.q4_codes = static_cast<const uint8_t *>(at(0));
            dp.q4_scales = static_cast<const __half *>(at(1));
            dp.q4_mins = static_cast<const __half *>(at(2));
            break;
        case DType::mix:
            dp.K2 = m.K2;
            dp.K2p = m.K2p;
            dp.G2 = m.G2;
            dp.B2 = m.B2;
            dp.K4 = m.K4;
            dp.nnz = m.nnz;
            dp.perm = static_cast<const uint16_t *>(at(0));
            dp.q2 = static_cast<const uint8_t *>(at(1));
            dp.meta2 = static_cast<const uint8_t *>(at(2));
            dp.super2 = static_cast<const __half *>(at(3));
            dp.q4_codes = static_cast<const uint8_t *>(at(4));
            dp.q4_scales = static_cast<const __half *>(at(5));
            dp.q4_mins = static_cast<const __half *>(at(6));
            dp.row_ptr = static_cast<const uint32_t *>(at(7));
            dp.out_cols = static_cast<const uint16_t *>(at(8));
            dp.out_vals = static_cast<const __half *>(at(9));
            break;
    }
    return d;
}

DeviceWeight::~DeviceWeight() {
    if (memory_) cudaFree(memory_);  // no throw from a destructor; a failure here has no remedy
}

DeviceWeight::DeviceWeight(DeviceWeight &&other) noexcept
    : dtype_(other.dtype_), rows_(other.rows_), cols_(other.cols_), bytes_(other.bytes_),
      memory_(std::exchange(other.memory_, nullptr)), parts_(std::exchange(other.parts_, DeviceParts{})) {}

DeviceWeight &DeviceWeight::operator=(DeviceWeight &&other) noexcept {
    if (this != &other) {
        if (memory_) cudaFree(memory_);
        dtype_ = other.dtype_;
        rows_ = other.rows_;
        cols_ = other.cols_;
        bytes_ = other.bytes_;
        memory_ = std::exchange(other.memory_, nullptr);
        parts_ = std::exchange(other.parts_, DeviceParts{});
    }
    return *this;
}

}  // namespace mixrt::cuda
