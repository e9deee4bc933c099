// speed_probe.cpp: see speed_probe.h. The read kernel sums 64-bit words with independent
// accumulators (vectorised by the compiler, no AVX needed); each thread reads a contiguous slice.
#include "cpu/speed_probe.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "error.h"
#include "cpu/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/matmul.h"

namespace mixrt {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

uint64_t sum_words(const uint64_t *p, size_t n) {
    uint64_t a[8] = {};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) a[j] += p[i + j];
    for (; i < n; ++i) a[0] += p[i];
    uint64_t s = 0;
    for (int j = 0; j < 8; ++j) s += a[j];
    return s;
}

}  // namespace

std::vector<double> read_bandwidth(int threads, size_t bytes, int reps) {
    const size_t words = bytes / 8;
    std::unique_ptr<uint64_t[]> buffer(new (std::nothrow) uint64_t[words]);
    if (!buffer) fail(MIXRT_ERR_OUT_OF_MEMORY, "cannot allocate the " + std::to_string(bytes >> 20) + " MiB bandwidth buffer");
    for (size_t i = 0; i < words; ++i) buffer[i] = i;  // touches every page
    ThreadPool pool(threads);
    std::vector<uint64_t> sums(pool.size());
    std::vector<double> rates;
    for (int rep = 0; rep < reps; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        pool.parallel_for(pool.size(), [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) {
                const size_t b = words * t / pool.size(), e = words * (t + 1) / pool.size();
                sums[t] = sum_words(buffer.get() + b, e - b);
            }
        });
        rates.push_back(double(words * 8) / seconds_since(start));
    }
    uint64_t total = 0;
    for (uint64_t s : sums) total += s;
    if (total != (words - 1) * words / 2) fail(MIXRT_ERR_INTERNAL, "read_bandwidth: wrong checksum");
    return rates;
}

std::vector<double> time_matmuls(const std::vector<const TiledMatrix *> &weights, int threads, int n, int reps) {
    int64_t max_K = 1, max_M = 1;
    for (const TiledMatrix *w : weights) {
        max_K = std::max(max_K, w->weight().cols);
        max_M = std::max(max_M, w->weight().rows);
    }
    std::vector<float> x(size_t(n) * max_K), out(size_t(n) * max_M);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 2654435761u % 2001) - 1000) / 1000.0f;
    ThreadPool pool(threads);
    QuantizedInputBuffer xq(n, max_K);
    const CpuKernels &kernels = best_kernels();
    std::vector<double> times;
    for (int rep = -1; rep < reps; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        for (const TiledMatrix *w : weights) parallel_matmul(kernels, pool, xq, *w, x.data(), out.data(), n);
        if (rep >= 0) times.push_back(seconds_since(start));
    }
    return times;
}

}  // namespace mixrt
