// A small persistent thread pool: spawning threads per call would cost more than the kernels.
#pragma once
#include <cstdint>
#include <functional>

namespace edgevit {

// Runs body(task) for every task in [0, tasks) on up to `threads` threads, the caller included.
// Concurrent callers do not wait for each other: a caller that finds the pool busy runs its
// tasks on its own thread.
void parallel_for(int64_t tasks, int threads, const std::function<void(int64_t)>& body);

}  // namespace edgevit
