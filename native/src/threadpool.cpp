#include "threadpool.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

namespace edgevit {
namespace {

class Pool {
public:
    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& worker : workers_) worker.join();
    }

    // Runs the job with `helpers` pool threads beside the caller; false if the pool is busy.
    bool run(int64_t tasks, int helpers, const std::function<void(int64_t)>& body) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock()) return false;
        grow(helpers);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            body_ = &body;
            tasks_ = tasks;
            next_.store(0);
            active_ = helpers;
            wanted_ = helpers;
            ++generation_;
        }
        wake_.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return active_ == 0; });
        body_ = nullptr;
        return true;
    }

private:
    void grow(int helpers) {
        while (static_cast<int>(workers_.size()) < helpers) {
            const int index = static_cast<int>(workers_.size());
            workers_.emplace_back([this, index] { loop(index); });
        }
    }

    void drain() {
        for (int64_t t = next_.fetch_add(1); t < tasks_; t = next_.fetch_add(1)) (*body_)(t);
    }

    void loop(int index) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stopping_ || (generation_ != seen && index < wanted_); });
                if (stopping_) return;
                seen = generation_;
            }
            drain();
            std::lock_guard<std::mutex> lock(mutex_);
            if (--active_ == 0) done_.notify_one();
        }
    }

    std::mutex busy_;   // one job at a time
    std::mutex mutex_;  // guards the job fields below
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    const std::function<void(int64_t)>* body_ = nullptr;
    int64_t tasks_ = 0;
    std::atomic<int64_t> next_{0};
    int active_ = 0, wanted_ = 0;
    uint64_t generation_ = 0;
    bool stopping_ = false;
};

Pool& pool() {
    static Pool instance;
    return instance;
}

// A forked child inherits the pool without its threads: it runs everything on its own thread.
const pid_t owner = getpid();

}  // namespace

void parallel_for(int64_t tasks, int threads, const std::function<void(int64_t)>& body) {
    const int helpers = static_cast<int>(std::min<int64_t>(tasks, std::max(1, threads))) - 1;
    if (helpers <= 0 || getpid() != owner || !pool().run(tasks, helpers, body)) {
        for (int64_t t = 0; t < tasks; ++t) body(t);
    }
}

}  // namespace edgevit
