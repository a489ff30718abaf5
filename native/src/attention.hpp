// Fused fp32 attention kernels of edgevit (portable C++17; the compiler vectorizes the inner loops).
#pragma once
#include <cstdint>

namespace edgevit {

// EdgeNeXt's cross-covariance attention core, per (batch, head):
// q, k, v: (B, H, d, N); temperature: (H); out: (B, H, d, N).
// out = softmax_j(temperature[h] * <q_i/|q_i|, k_j/|k_j|>) @ v, norms over the N tokens (eps 1e-12).
void xca_forward(const float* q, const float* k, const float* v, const float* temperature, float* out,
                 int64_t batch, int64_t heads, int64_t dim, int64_t tokens, int threads);

// SLAB's simplified linear attention core, per (batch, head):
// q, k, v: (B, H, N, d); out: (B, H, N, d).
// out_n = (relu(q_n) @ (relu(k)^T v)) / (relu(q_n) . sum_m relu(k_m) + 1e-6).
void sla_forward(const float* q, const float* k, const float* v, float* out,
                 int64_t batch, int64_t heads, int64_t tokens, int64_t dim, int threads);

}  // namespace edgevit
