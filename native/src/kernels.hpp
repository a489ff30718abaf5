// The fp32 attention kernels, compiled once per instruction set (see CMakeLists.txt).
// EDGEVIT_ISA names the namespace of one build of kernels.cpp: baseline, avx2.
#pragma once
#include <cstdint>

namespace edgevit {

// One (batch, head) task's arguments. qkv is (B, N, 3*C) row-major with C = heads * dim;
// q, k and v of head h are columns [h*dim, (h+1)*dim) of the three C-wide blocks.
struct AttentionShape {
    int64_t batch, tokens, heads, dim;
    int64_t channels() const { return heads * dim; }
};

#define EDGEVIT_DECLARE_KERNELS(isa)                                                                  \
    namespace isa {                                                                                   \
    void xca_task(const float* qkv, const float* temperature, float* out, const AttentionShape& s,     \
                  int64_t task);                                                                      \
    void sla_task(const float* qkv, const float* positional, float* out, const AttentionShape& s,      \
                  int64_t task);                                                                      \
    }

EDGEVIT_DECLARE_KERNELS(baseline)
#if defined(__x86_64__) || defined(_M_X64)
EDGEVIT_DECLARE_KERNELS(avx2)
#define EDGEVIT_HAS_AVX2_BUILD 1
#endif

}  // namespace edgevit
