#include "attention.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "threadpool.hpp"

namespace edgevit {
namespace {

enum class Isa { baseline, avx2, avx512 };

// The widest build this CPU runs: AVX-512 (16 lanes), AVX2 + FMA (8), else the portable one.
// EDGEVIT_NATIVE_ISA=avx2 or =baseline asks for a narrower one.
Isa chosen_isa() {
#if defined(EDGEVIT_HAS_AVX2_BUILD) && (defined(__GNUC__) || defined(__clang__))
    static const Isa chosen = [] {
        const char* forced = std::getenv("EDGEVIT_NATIVE_ISA");
        const std::string cap = forced ? forced : "";
        const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
        if (cap == "baseline" || !avx2) return Isa::baseline;
        if (cap == "avx2" || !avx512) return Isa::avx2;
        return Isa::avx512;
    }();
    return chosen;
#else
    return Isa::baseline;
#endif
}

#ifdef EDGEVIT_HAS_AVX2_BUILD
#define EDGEVIT_PICK(name) \
    (chosen_isa() == Isa::avx512 ? avx512::name : chosen_isa() == Isa::avx2 ? avx2::name : baseline::name)
#else
#define EDGEVIT_PICK(name) baseline::name
#endif

}  // namespace

std::string shape_error(Attention op, const AttentionShape& s) {
    const char* name = op == Attention::xca ? "XCA" : op == Attention::sla ? "SLA" : "RLMHSA";
    if (s.batch <= 0 || s.tokens <= 0 || s.heads <= 0 || s.dim <= 0 || (op == Attention::rlmhsa && s.keys <= 0))
        return std::string(name) + ": the inputs must not be empty";
    if (op != Attention::rlmhsa && s.dim > kMaxHeadDim)
        return std::string(name) + ": head width " + std::to_string(s.dim) + " is above the kernels' limit of " +
               std::to_string(kMaxHeadDim);
    return "";
}

AttentionJob plan(Attention op, const AttentionShape& s) {
    const double heads = static_cast<double>(s.batch * s.heads), d = static_cast<double>(s.dim);
    const double n = static_cast<double>(s.tokens);
    AttentionJob job{nullptr, s.batch * s.heads, 4.0 * heads * n * d * d};
    switch (op) {
        case Attention::xca: job.task = EDGEVIT_PICK(xca_task); break;
        case Attention::sla: job.task = EDGEVIT_PICK(sla_task); break;
        case Attention::rlmhsa: {
            const int64_t block = kRlmhsaQueryBlock;
            job.task = EDGEVIT_PICK(rlmhsa_task);
            job.tasks = s.batch * s.heads * ((s.tokens + block - 1) / block);
            job.flops = (4.0 * d + 8.0) * heads * n * static_cast<double>(s.keys);
            break;
        }
    }
    return job;
}

int AttentionJob::threads_for(double min_flops) const {
    return static_cast<int>(std::clamp(flops / min_flops, 1.0, static_cast<double>(std::min<int64_t>(tasks, 1024))));
}

void run(const AttentionJob& job, const float* a, const float* b, float* out, const AttentionShape& shape,
         int threads) {
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    parallel_for(job.tasks, std::min(threads, job.threads_for(kMinFlopsPerThread)),
                 [&](int64_t t) { job.task(a, b, out, shape, t); });
}

const char* active_isa() {
    switch (chosen_isa()) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "baseline";
    }
}

}  // namespace edgevit
