// device_info.h: whether this build has the CUDA backend and whether a usable device is present
// (plain C++, no CUDA headers: the dispatching C++ sources and the Python module include it).
#pragma once

#include <string>


namespace mixrt::cuda {

// Empty when a CUDA device can be used; otherwise why not (no device, driver error, ...).
std::string device_unavailable_reason();
// The name of device 0 and its compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)".
std::string device_description();

}  // namespace mixrt::cuda
