// gemv_host_io.h: host-array wrappers of the weight kernels (device_weight.h) for tests and tools:
// each copies its inputs to the device, fills the output with NaN (so an unwritten element shows),
// runs the kernel on its own stream, synchronizes and copies the result back.
#pragma once

#include <cstdint>
#include <vector>

#include "device_weight.h"

namespace mixrt::cuda {

// y [n, rows] for x [n, cols]; schedule matters for mix weights only.
std::vector<float> matvec_host(const DeviceWeight &w, const float *x, int n, MixSchedule schedule);
// [n, cols]: the rows rows_idx[0..n) decoded to fp32.
std::vector<float> gather_rows_host(const DeviceWeight &w, const int32_t *rows_idx, int n);
// [rows, cols] f16 bit patterns.
std::vector<uint16_t> dequantize_f16_host(const DeviceWeight &w);

}  // namespace mixrt::cuda
