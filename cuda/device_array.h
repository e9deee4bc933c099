// device_array.h: DeviceArray<T>, a typed device allocation owned by one object (cudaMalloc
// through device_alloc, so running out names the bytes; cudaFree on destruction).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "cuda_check.h"

namespace mixrt::cuda {

template <typename T>
class DeviceArray {
public:
    DeviceArray() = default;
    DeviceArray(size_t count, const std::string &what)
        : ptr_(static_cast<T *>(device_alloc(count * sizeof(T), what))), count_(count) {}
    ~DeviceArray() {
        if (ptr_) cudaFree(ptr_);
    }
    DeviceArray(DeviceArray &&other) noexcept : ptr_(other.ptr_), count_(other.count_) {
        other.ptr_ = nullptr;
        other.count_ = 0;
    }
    DeviceArray &operator=(DeviceArray &&other) noexcept {
        if (this != &other) {
            if (ptr_) cudaFree(ptr_);
            ptr_ = other.ptr_;
            count_ = other.count_;
            other.ptr_ = nullptr;
            other.count_ = 0;
        }
        return *this;
    }
    DeviceArray(const DeviceArray &) = delete;
    DeviceArray &operator=(const DeviceArray &) = delete;

    T *get() const { return ptr_; }
    size_t size() const { return count_; }

private:
    T *ptr_ = nullptr;
    size_t count_ = 0;
};

}  // namespace mixrt::cuda
