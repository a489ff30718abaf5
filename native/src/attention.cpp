#include "attention.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>

namespace edgevit {
namespace {

// Runs body(task) for task in [0, tasks) on up to `threads` threads (1: this thread only).
void parallel_for(int64_t tasks, int threads, const std::function<void(int64_t)>& body) {
    int64_t workers = std::min<int64_t>(tasks, std::max(1, threads));
    if (workers <= 1) {
        for (int64_t t = 0; t < tasks; ++t) body(t);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(workers));
    for (int64_t w = 0; w < workers; ++w) {
        pool.emplace_back([=, &body] {
            for (int64_t t = w; t < tasks; t += workers) body(t);
        });
    }
    for (auto& thread : pool) thread.join();
}

void normalize_rows(const float* x, float* y, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) {
        const float* row = x + r * cols;
        float sum = 0.f;
        for (int64_t c = 0; c < cols; ++c) sum += row[c] * row[c];
        const float scale = 1.f / std::max(std::sqrt(sum), 1e-12f);
        for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = row[c] * scale;
    }
}

}  // namespace

void xca_forward(const float* q, const float* k, const float* v, const float* temperature, float* out,
                 int64_t batch, int64_t heads, int64_t dim, int64_t tokens, int threads) {
    const int64_t block = dim * tokens;
    parallel_for(batch * heads, threads, [&](int64_t task) {
        const int64_t offset = task * block;
        const float temp = temperature[task % heads];
        std::vector<float> qn(static_cast<size_t>(block)), kn(static_cast<size_t>(block));
        std::vector<float> knt(static_cast<size_t>(block)), attn(static_cast<size_t>(dim * dim));
        normalize_rows(q + offset, qn.data(), dim, tokens);
        normalize_rows(k + offset, kn.data(), dim, tokens);
        for (int64_t j = 0; j < dim; ++j)  // (N, d): the inner loops below run along d, without reductions
            for (int64_t n = 0; n < tokens; ++n) knt[n * dim + j] = kn[j * tokens + n];
        for (int64_t i = 0; i < dim; ++i) {
            float* a = attn.data() + i * dim;
            std::fill(a, a + dim, 0.f);
            const float* qi = qn.data() + i * tokens;
            for (int64_t n = 0; n < tokens; ++n) {
                const float qv = qi[n];
                const float* kt = knt.data() + n * dim;
                for (int64_t j = 0; j < dim; ++j) a[j] += qv * kt[j];
            }
            float top = -INFINITY;
            for (int64_t j = 0; j < dim; ++j) {
                a[j] *= temp;
                top = std::max(top, a[j]);
            }
            float sum = 0.f;
            for (int64_t j = 0; j < dim; ++j) {
                a[j] = std::exp(a[j] - top);
                sum += a[j];
            }
            const float inv = 1.f / sum;
            float* o = out + offset + i * tokens;
            std::fill(o, o + tokens, 0.f);
            for (int64_t j = 0; j < dim; ++j) {
                const float w = a[j] * inv;
                const float* vj = v + offset + j * tokens;
                for (int64_t n = 0; n < tokens; ++n) o[n] += w * vj[n];
            }
        }
    });
}

void sla_forward(const float* q, const float* k, const float* v, float* out,
                 int64_t batch, int64_t heads, int64_t tokens, int64_t dim, int threads) {
    const int64_t block = tokens * dim;
    parallel_for(batch * heads, threads, [&](int64_t task) {
        const int64_t offset = task * block;
        std::vector<float> kv(static_cast<size_t>(dim * dim), 0.f), ksum(static_cast<size_t>(dim), 0.f);
        for (int64_t m = 0; m < tokens; ++m) {
            const float* km = k + offset + m * dim;
            const float* vm = v + offset + m * dim;
            for (int64_t c = 0; c < dim; ++c) {
                const float kc = std::max(km[c], 0.f);
                ksum[c] += kc;
                float* row = kv.data() + c * dim;
                for (int64_t e = 0; e < dim; ++e) row[e] += kc * vm[e];
            }
        }
        for (int64_t n = 0; n < tokens; ++n) {
            const float* qn = q + offset + n * dim;
            float* o = out + offset + n * dim;
            std::fill(o, o + dim, 0.f);
            float denom = 0.f;
            for (int64_t c = 0; c < dim; ++c) {
                const float qc = std::max(qn[c], 0.f);
                denom += qc * ksum[c];
                const float* row = kv.data() + c * dim;
                for (int64_t e = 0; e < dim; ++e) o[e] += qc * row[e];
            }
            const float z = 1.f / (denom + 1e-6f);
            for (int64_t e = 0; e < dim; ++e) o[e] *= z;
        }
    });
}

}  // namespace edgevit
