// cuda_check.h: every CUDA runtime call and kernel launch goes through MIXRT_CUDA_CHECK /
// MIXRT_CUDA_CHECK_LAUNCH, which turn a failure into mixrt::Error carrying the CUDA message and the
// call that failed. device_alloc names the bytes requested when the device is out of memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "error.h"

namespace mixrt::cuda {

[[noreturn]] inline void fail_cuda(cudaError_t err, const char *what, const char *file, int line) {
    const mixrt_status status =
        err == cudaErrorMemoryAllocation ? MIXRT_ERR_OUT_OF_MEMORY : MIXRT_ERR_INTERNAL;
    fail(status, std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                     "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

// cudaMalloc that reports how many bytes were asked for (and for what) when it fails.
inline void *device_alloc(size_t bytes, const std::string &what) {
    void *ptr = nullptr;
    if (bytes == 0) return nullptr;
    const cudaError_t err = cudaMalloc(&ptr, bytes);
    if (err != cudaSuccess) {
        cudaGetLastError();  // clear the sticky-free allocation error
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        fail(err == cudaErrorMemoryAllocation ? MIXRT_ERR_OUT_OF_MEMORY : MIXRT_ERR_INTERNAL,
             "CUDA: cannot allocate " + std::to_string(bytes) + " bytes for " + what + " (" +
                 std::to_string(free_bytes) + " of " + std::to_string(total_bytes) +
                 " bytes free on the device): " + cudaGetErrorString(err));
    }
    return ptr;
}

}  // namespace mixrt::cuda

#define MIXRT_CUDA_CHECK(call)                                                          \
    do {                                                                                \
        const cudaError_t mixrt_cuda_err_ = (call);                                     \
        if (mixrt_cuda_err_ != cudaSuccess)                                             \
            ::mixrt::cuda::fail_cuda(mixrt_cuda_err_, #call, __FILE__, __LINE__);       \
    } while (0)

// After a <<<...>>> launch: reports bad launch configurations (asynchronous faults surface at the
// next synchronizing call, which is checked too).
#define MIXRT_CUDA_CHECK_LAUNCH(name)                                                   \
    do {                                                                                \
        const cudaError_t mixrt_cuda_err_ = cudaGetLastError();                         \
        if (mixrt_cuda_err_ != cudaSuccess)                                             \
            ::mixrt::cuda::fail_cuda(mixrt_cuda_err_, name, __FILE__, __LINE__);        \
    } while (0)
