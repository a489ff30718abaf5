#include "attention.hpp"

#include <cstdlib>
#include <cstring>

#include "kernels.hpp"
#include "threadpool.hpp"

namespace edgevit {
namespace {

using Task = void (*)(const float*, const float*, float*, const AttentionShape&, int64_t);

// AVX2 + FMA when the CPU has them, unless EDGEVIT_NATIVE_ISA=baseline asks for the portable build.
bool use_avx2() {
#if defined(EDGEVIT_HAS_AVX2_BUILD) && (defined(__GNUC__) || defined(__clang__))
    static const bool chosen = [] {
        const char* forced = std::getenv("EDGEVIT_NATIVE_ISA");
        if (forced != nullptr && std::strcmp(forced, "baseline") == 0) return false;
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return chosen;
#else
    return false;
#endif
}

// Runs the build of `task` that use_avx2() picks, one call per (batch, head).
void run(Task portable, Task avx2_task, const float* qkv, const float* extra, float* out,
         const AttentionShape& shape, int threads) {
    Task task = portable;
#ifdef EDGEVIT_HAS_AVX2_BUILD
    if (use_avx2()) task = avx2_task;
#else
    (void)avx2_task;
#endif
    parallel_for(shape.batch * shape.heads, threads, [&](int64_t t) { task(qkv, extra, out, shape, t); });
}

#ifdef EDGEVIT_HAS_AVX2_BUILD
#define EDGEVIT_BUILDS(name) baseline::name, avx2::name
#else
#define EDGEVIT_BUILDS(name) baseline::name, nullptr
#endif

}  // namespace

void xca_forward(const float* qkv, const float* temperature, float* out, int64_t batch, int64_t tokens,
                 int64_t heads, int64_t dim, int threads) {
    run(EDGEVIT_BUILDS(xca_task), qkv, temperature, out, AttentionShape{batch, tokens, heads, dim}, threads);
}

void sla_forward(const float* qkv, const float* positional, float* out, int64_t batch, int64_t tokens,
                 int64_t heads, int64_t dim, int threads) {
    run(EDGEVIT_BUILDS(sla_task), qkv, positional, out, AttentionShape{batch, tokens, heads, dim}, threads);
}

const char* active_isa() { return use_avx2() ? "avx2" : "baseline"; }

}  // namespace edgevit
