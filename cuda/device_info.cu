// device_info.cu: probes for a usable CUDA device (device count, driver/runtime errors).
#include "device_info.h"

#include <cuda_runtime.h>

namespace mixrt::cuda {

std::string device_unavailable_reason() {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    }
    if (count == 0) return "no CUDA device present";
    return "";
}

std::string device_description() {
    if (!device_unavailable_reason().empty()) return "";
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "";
    return std::string(prop.name) + " (sm_" + std::to_string(prop.major * 10 + prop.minor) + ")";
}

}  // namespace mixrt::cuda
