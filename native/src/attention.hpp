// Public entry points of the native attention kernels (fp32, CPU), shared by the Python
// bindings (module.cpp) and the ONNX Runtime custom-op library (ort_ops.cpp).
#pragma once
#include <cstdint>
#include <string>

#include "kernels.hpp"

namespace edgevit {

enum class Attention {
    // Cross-covariance attention (EdgeNeXt/XCiT). Inputs: qkv (B, N, 3C) as the qkv Linear
    // writes it, temperature (heads,). out (B, N, C) = softmax(T_h * norm(q)^T norm(k))
    // applied to v, per head, norms over the tokens.
    xca,
    // SLAB's simplified linear attention without the depth-wise conv on v. Inputs: qkv
    // (B, N, 3C), positional (N, C) added to k. out[n] = relu(q_n) (relu(K+P)^T V) /
    // (relu(q_n) . sum relu(K+P) + 1e-6).
    sla,
    // FMViT's attention over pooled keys. Inputs: q (B, C, N) channels first (already
    // scaled), kv (B, 2C, M). out (B, C, N) = per head, v softmax_m(k^T q).
    rlmhsa,
};

// Below this much work per thread a call on edgevit's own pool (run) stays on fewer
// threads: waking a sleeping thread costs more than it saves (benchmarks/native_attention.py,
// edgenext_small's shapes). ONNX Runtime's pool spins and wakes faster: ort_ops.cpp has its own.
constexpr double kMinFlopsPerThread = 8e6;

// One call split into independent tasks, with the kernel build this CPU runs.
struct AttentionJob {
    void (*task)(const float*, const float*, float*, const AttentionShape&, int64_t);
    int64_t tasks;
    double flops;  // the work, for how many threads to wake (an exp counts as 8 flops)
    // threads worth waking at `min_flops` of work each: between 1 and tasks
    int threads_for(double min_flops) const;
};

// XCA and SLA stage d x d tables per head: head widths above this are refused, so that a
// tiny hostile input cannot ask for a huge scratch buffer (the zoo's widths are 8-64).
constexpr int64_t kMaxHeadDim = 1024;

// Why `op` cannot run on `shape`, or "" when it can: no size may be zero or negative, the
// head width of XCA and SLA at most kMaxHeadDim. Callers check ranks and the inputs' shapes.
std::string shape_error(Attention op, const AttentionShape& shape);

// The job for `op` on `shape` (checked with shape_error first).
AttentionJob plan(Attention op, const AttentionShape& shape);

// Runs the job on the persistent pool with up to `threads` threads (<= 0: all cores).
void run(const AttentionJob& job, const float* a, const float* b, float* out, const AttentionShape& shape,
         int threads);

// The instruction set the kernels run with on this machine: "avx2" or "baseline".
const char* active_isa();

}  // namespace edgevit
