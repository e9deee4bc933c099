// device_info.h: what the CUDA device is (plain C++, no CUDA headers: mixrt._internal includes it).
// Whether one is usable at all is the backend seam's question (backend.h:
// cuda::device_unavailable_reason, defined in device_info.cu).
#pragma once

#include <string>

namespace mixrt::cuda {

// The name of device 0 and its compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)".
std::string device_description();

}  // namespace mixrt::cuda
