// Public entry points of the native attention kernels (fp32, CPU).
#pragma once
#include <cstdint>

namespace edgevit {

// Cross-covariance attention (EdgeNeXt/XCiT). qkv: (batch, tokens, 3 * heads * dim), as the
// qkv Linear writes it; temperature: (heads,). Writes out: (batch, tokens, heads * dim) =
// softmax(T_h * norm(q)^T norm(k)) applied to v, per head, norms over tokens.
void xca_forward(const float* qkv, const float* temperature, float* out, int64_t batch, int64_t tokens,
                 int64_t heads, int64_t dim, int threads);

// SLAB's simplified linear attention without the depth-wise conv on v. positional:
// (tokens, heads * dim), added to k. out[n] = relu(q_n) (relu(K+P)^T V) / (relu(q_n) . sum relu(K+P) + 1e-6).
void sla_forward(const float* qkv, const float* positional, float* out, int64_t batch, int64_t tokens,
                 int64_t heads, int64_t dim, int threads);

// The instruction set the kernels run with on this machine: "avx2" or "baseline".
const char* active_isa();

}  // namespace edgevit
