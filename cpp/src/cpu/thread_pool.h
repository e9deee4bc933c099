// thread_pool.h: a fixed pool of worker threads that share a loop: every thread, the caller
// included, claims contiguous chunks of indices until none is left, so a thread that the OS has
// descheduled (a busy machine) leaves its share to the others instead of stalling the loop. Workers
// spin briefly between calls (decode issues hundreds of short parallel loops per token), then
// sleep. parallel_for never allocates; each index is handled by exactly one thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace mixrt {

class ThreadPool {
public:
    // n_threads in all, the calling thread included; throws Error if the OS refuses a thread.
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }

    // Calls fn(begin, end) on disjoint chunks that cover [0, n); returns when all have run.
    template <typename Fn>
    void parallel_for(int64_t n, const Fn &fn) {
        run(n, &fn, [](const void *f, int64_t b, int64_t e) { (*static_cast<const Fn *>(f))(b, e); });
    }

private:
    using TaskFn = void (*)(const void *, int64_t, int64_t);
    struct Task {  // one parallel_for call, on the caller's stack
        TaskFn fn;
        const void *obj;
        int64_t n, grain;
        // On lines of their own: claims and completions do not disturb each other or the fields above.
        alignas(64) std::atomic<int64_t> next{0};
        alignas(64) std::atomic<int64_t> done{0};
    };
    void run(int64_t n, const void *obj, TaskFn fn);
    void worker();
    void stop_workers();  // wakes, ends and joins every started worker
    static void work(Task &task);

    int n_threads_;
    std::vector<std::thread> workers_;
    std::atomic<uint64_t> epoch_{0};
    std::atomic<Task *> task_{nullptr};
    alignas(64) std::atomic<int> active_{0};  // workers that may be touching *task_ (own line: written per call)
    std::atomic<int> sleeping_{0};
    bool stop_ = false;
    std::mutex mutex_;
    std::condition_variable wake_;
};

}  // namespace mixrt
