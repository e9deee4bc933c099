// gemv_host_io.cu: the host-array wrappers of gemv_host_io.h.
#include "gemv_host_io.h"

#include <algorithm>

#include "cuda_check.h"

namespace mixrt::cuda {
namespace {

// A device buffer of n elements of T, freed on scope exit (errors included).
template <typename T>
struct DeviceBuffer {
    T *ptr = nullptr;
    DeviceBuffer(size_t n, const char *what) { ptr = static_cast<T *>(device_alloc(n * sizeof(T), what)); }
    ~DeviceBuffer() {
        if (ptr) cudaFree(ptr);
    }
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer &operator=(const DeviceBuffer &) = delete;
};

struct Stream {
    cudaStream_t s = nullptr;
    Stream() { MIXRT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
    ~Stream() { cudaStreamDestroy(s); }
};

template <typename T, typename Launch>
std::vector<T> run_poisoned(size_t count, int poison_byte, const Launch &launch) {
    DeviceBuffer<T> out(count, "kernel output");
    Stream stream;
    MIXRT_CUDA_CHECK(cudaMemsetAsync(out.ptr, poison_byte, count * sizeof(T), stream.s));
    launch(out.ptr, stream.s);
    MIXRT_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    std::vector<T> host(count);
    MIXRT_CUDA_CHECK(cudaMemcpy(host.data(), out.ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}

}  // namespace

std::vector<float> matvec_host(const DeviceWeight &w, const float *x, int n, MixSchedule schedule) {
    DeviceBuffer<float> dx(size_t(std::max(n, 1)) * w.cols(), "matvec input");
    MIXRT_CUDA_CHECK(cudaMemcpy(dx.ptr, x, size_t(n) * w.cols() * sizeof(float), cudaMemcpyHostToDevice));
    return run_poisoned<float>(size_t(n) * w.rows(), 0xFF, [&](float *y, cudaStream_t s) {
        if (w.dtype() == DType::mix) matvec_mix(w, dx.ptr, y, n, schedule, s);
        else matvec(w, dx.ptr, y, n, s);
    });
}

std::vector<float> gather_rows_host(const DeviceWeight &w, const int32_t *rows_idx, int n) {
    DeviceBuffer<int32_t> idx(size_t(std::max(n, 1)), "row ids");
    MIXRT_CUDA_CHECK(cudaMemcpy(idx.ptr, rows_idx, size_t(n) * sizeof(int32_t), cudaMemcpyHostToDevice));
    return run_poisoned<float>(size_t(n) * w.cols(), 0xFF,
                               [&](float *out, cudaStream_t s) { gather_rows(w, idx.ptr, n, out, s); });
}

std::vector<uint16_t> dequantize_f16_host(const DeviceWeight &w) {
    return run_poisoned<uint16_t>(size_t(w.rows()) * w.cols(), 0xFF, [&](uint16_t *out, cudaStream_t s) {
        dequantize_f16(w, reinterpret_cast<__half *>(out), s);
    });
}

}  // namespace mixrt::cuda
