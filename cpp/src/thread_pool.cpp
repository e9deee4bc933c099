// thread_pool.cpp: see thread_pool.h. Wake-up protocol: the caller bumps epoch_ and notifies only
// if some worker registered itself in sleeping_ (both sequentially consistent, so no wake-up is
// lost); results never depend on the thread count because chunks only split independent work.
#include "thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MIXRT_PAUSE() _mm_pause()
#else
#define MIXRT_PAUSE() std::this_thread::yield()
#endif

namespace mixrt {

namespace {
constexpr int kSpinIterations = 1 << 17;  // a few milliseconds of spinning before sleeping
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back(&ThreadPool::worker, this, i);
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
        epoch_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto &t : workers_) t.join();
}

void ThreadPool::run_chunk(int index) const {
    int64_t begin = task_n_ * index / n_threads_;
    int64_t end = task_n_ * (index + 1) / n_threads_;
    if (begin < end) task_fn_(task_obj_, begin, end);
}

void ThreadPool::run(int64_t n, const void *obj, TaskFn fn) {
    if (n <= 0) return;
    if (n_threads_ == 1 || n == 1) {
        fn(obj, 0, n);
        return;
    }
    task_obj_ = obj;
    task_fn_ = fn;
    task_n_ = n;
    pending_.store(n_threads_ - 1);
    epoch_.fetch_add(1);
    if (sleeping_.load() > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        wake_.notify_all();
    }
    run_chunk(0);
    while (pending_.load(std::memory_order_acquire) != 0) MIXRT_PAUSE();
}

void ThreadPool::worker(int index) {
    uint64_t seen = 0;
    for (;;) {
        int spins = 0;
        while (epoch_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
            MIXRT_PAUSE();
            ++spins;
        }
        if (epoch_.load() == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            sleeping_.fetch_add(1);
            wake_.wait(lock, [&] { return epoch_.load() != seen; });
            sleeping_.fetch_sub(1);
        }
        seen = epoch_.load(std::memory_order_acquire);
        if (stop_) return;
        run_chunk(index);
        pending_.fetch_sub(1, std::memory_order_release);
    }
}

}  // namespace mixrt
