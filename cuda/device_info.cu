// device_info.cu: probes for a usable CUDA device (device count, driver/runtime errors).
#include "device_info.h"

#include <cuda_runtime.h>

#include "backend.h"

namespace mixrt::cuda {

namespace {

// "12.4" from CUDA's 12040.
std::string cuda_version_text(int version) {
    return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

}  // namespace

std::string device_unavailable_reason() {
    // The driver version is 0 when no NVIDIA driver is installed, which is also what a machine
    // without an NVIDIA GPU looks like; the runtime then reports "insufficient driver", which would
    // mislead.
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    if (driver == 0) return "no NVIDIA GPU driver is installed (no NVIDIA GPU on this machine)";
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) cudaGetLastError();
    if (err == cudaErrorInsufficientDriver)
        return "the NVIDIA driver supports CUDA " + cuda_version_text(driver) + ", older than the CUDA " +
               cuda_version_text(runtime) + " runtime mixrt was built with: update the driver";
    if (err == cudaErrorNoDevice || (err == cudaSuccess && count == 0))
        return "no NVIDIA GPU found (driver for CUDA " + cuda_version_text(driver) + " installed)";
    if (err != cudaSuccess) return std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    return "";
}

std::string device_description() {
    if (!device_unavailable_reason().empty()) return "";
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "";
    return std::string(prop.name) + " (sm_" + std::to_string(prop.major * 10 + prop.minor) + ")";
}

}  // namespace mixrt::cuda
