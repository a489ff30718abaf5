// The fp32 attention kernels, compiled once per instruction set (see CMakeLists.txt).
// EDGEVIT_ISA names the namespace of one build of kernels.cpp: baseline, avx2.
#pragma once
#include <cstdint>

namespace edgevit {

// One call's sizes. XCA and SLA: qkv is (B, N, 3*C) row-major with C = heads * dim; q, k and
// v of head h are columns [h*dim, (h+1)*dim) of the three C-wide blocks. RLMHSA: q is
// (B, C, N) channels first, kv (B, 2*C, keys) (the C key channels, then the C value
// channels), head h owns channels [h*dim, (h+1)*dim) of each.
struct AttentionShape {
    int64_t batch, tokens, heads, dim;
    int64_t keys = 0;  // RLMHSA's pooled key/value tokens
    int64_t channels() const { return heads * dim; }
};

// RLMHSA splits each (batch, head) into blocks of this many queries, the parallel tasks.
// The block depends on nothing else, so results do not depend on the thread count.
constexpr int64_t kRlmhsaQueryBlock = 128;

// Task signature: (first input, second input, out, shape, task index); the inputs are
// (qkv, temperature) for XCA, (qkv, positional) for SLA, (q, kv) for RLMHSA.
#define EDGEVIT_DECLARE_KERNELS(isa)                                                                  \
    namespace isa {                                                                                   \
    void xca_task(const float* qkv, const float* temperature, float* out, const AttentionShape& s,     \
                  int64_t task);                                                                      \
    void sla_task(const float* qkv, const float* positional, float* out, const AttentionShape& s,      \
                  int64_t task);                                                                      \
    void rlmhsa_task(const float* q, const float* kv, float* out, const AttentionShape& s, int64_t task); \
    }

EDGEVIT_DECLARE_KERNELS(baseline)
#if defined(__x86_64__) || defined(_M_X64)
EDGEVIT_DECLARE_KERNELS(avx2)
EDGEVIT_DECLARE_KERNELS(avx512)
#define EDGEVIT_HAS_AVX2_BUILD 1
#endif

}  // namespace edgevit
