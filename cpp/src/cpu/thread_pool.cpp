// thread_pool.cpp: see thread_pool.h. Wake-up protocol: the caller publishes the task, bumps
// epoch_ and notifies only if some worker registered itself in sleeping_ (all sequentially
// consistent, so no wake-up is lost). Lifetime: a worker registers in active_ before it reads
// task_; the caller, once every index is done, clears task_ and waits for active_ to drain, so no
// worker touches a finished task. Results never depend on the thread count because chunks only
// split independent work.
#include "cpu/thread_pool.h"

#include <string>
#include <system_error>

#include "error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MIXRT_PAUSE() _mm_pause()
#else
#define MIXRT_PAUSE() std::this_thread::yield()
#endif

namespace mixrt {

namespace {
// After this many pause-spins a waiting thread yields its core on each further check: on a
// machine with more runnable threads than cores, the thread being waited for may need it.
constexpr int kSpinsBeforeYield = 1 << 10;
// An idle worker sleeps after this many checks (spins, then yields): about a millisecond or two.
constexpr int kSpinIterations = kSpinsBeforeYield + (1 << 12);

inline void wait_step(int spins) {
    if (spins < kSpinsBeforeYield) MIXRT_PAUSE();
    else std::this_thread::yield();
}
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    workers_.reserve(n_threads_ - 1);
    for (int i = 1; i < n_threads_; ++i) {
        try {
            workers_.emplace_back(&ThreadPool::worker, this);
        } catch (const std::system_error &e) {
            // The OS refused a thread (a thread or memory limit): stop the ones already running
            // instead of leaving joinable threads behind, and say how far it got.
            stop_workers();
            fail(MIXRT_ERR_OUT_OF_MEMORY, "could not start thread " + std::to_string(i + 1) + " of " +
                 std::to_string(n_threads_) + " (" + e.what() + "); use fewer threads");
        }
    }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
        epoch_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto &t : workers_) t.join();
}

void ThreadPool::work(Task &task) {
    for (;;) {
        const int64_t begin = task.next.fetch_add(task.grain);
        if (begin >= task.n) return;
        const int64_t end = begin + task.grain < task.n ? begin + task.grain : task.n;
        task.fn(task.obj, begin, end);
        task.done.fetch_add(end - begin, std::memory_order_release);
    }
}

void ThreadPool::run(int64_t n, const void *obj, TaskFn fn) {
    if (n <= 0) return;
    if (n_threads_ == 1 || n == 1) {
        fn(obj, 0, n);
        return;
    }
    // Two chunks per thread: claims cost cross-core cache-line transfers, which decode pays
    // hundreds of times per token (2 chunks decode SmolLM2 ~5% faster than 4), yet a thread that
    // falls behind still leaves its second chunk to the others.
    Task task{fn, obj, n, (n + 2 * n_threads_ - 1) / (2 * n_threads_)};
    task_.store(&task);
    epoch_.fetch_add(1);
    if (sleeping_.load() > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        wake_.notify_all();
    }
    work(task);
    for (int spins = 0; task.done.load(std::memory_order_acquire) != n; ++spins) wait_step(spins);
    task_.store(nullptr);
    for (int spins = 0; active_.load() != 0; ++spins) wait_step(spins);
}

void ThreadPool::worker() {
    uint64_t seen = 0;
    for (;;) {
        int spins = 0;
        while (epoch_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) wait_step(spins++);
        if (epoch_.load() == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            sleeping_.fetch_add(1);
            wake_.wait(lock, [&] { return epoch_.load() != seen; });
            sleeping_.fetch_sub(1);
        }
        seen = epoch_.load();
        if (stop_) return;
        active_.fetch_add(1);
        if (Task *task = task_.load()) work(*task);
        active_.fetch_sub(1);
    }
}

}  // namespace mixrt
