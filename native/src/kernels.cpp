// XCA, simplified linear attention and RLMHSA on one (batch, head) or block of queries:
// staged operands, then small register-tiled products written with GCC/Clang vector
// extensions (8 fp32 lanes, 16 in the AVX-512 build), which the compiler maps to the
// target's registers (AVX-512, AVX2, 2 x SSE2, 2 x NEON).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels.hpp"

#ifndef EDGEVIT_ISA
#error "compile with -DEDGEVIT_ISA=<namespace>"
#endif

namespace edgevit {
namespace EDGEVIT_ISA {
namespace {

#ifndef EDGEVIT_VECTOR_BYTES
#define EDGEVIT_VECTOR_BYTES 32  // 8 fp32 lanes; the avx512 build sets 64 (16 lanes)
#endif
typedef float vf8 __attribute__((vector_size(EDGEVIT_VECTOR_BYTES)));
typedef int32_t vi8 __attribute__((vector_size(EDGEVIT_VECTOR_BYTES)));
constexpr int64_t kLanes = EDGEVIT_VECTOR_BYTES / 4;
constexpr int kTileRows = 6;  // 6 x 2 vectors: 12 accumulators fit in 16 registers
constexpr int kTileVecs = 2;

inline vf8 load(const float* p) {
    vf8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline void store(float* p, vf8 v) { std::memcpy(p, &v, sizeof v); }

// Lanes [0, count) of a vector; all of them when count >= 8.
inline vi8 lane_indices() {
    vi8 lane;
    for (int l = 0; l < kLanes; ++l) lane[l] = l;
    return lane;
}

inline vi8 lanes_below(int64_t count) {
    static const vi8 lane = lane_indices();
    const int32_t limit = static_cast<int32_t>(std::min<int64_t>(count, kLanes));
    return lane < limit;
}

// The first `count` floats at p (all 8 when count >= 8), the other lanes zero. Reads past the
// count (masked off) when the 8 floats lie before `end`, the end of p's buffer: one load
// instead of building the vector lane by lane.
inline vf8 load_head(const float* p, int64_t count, vi8 mask, const float* end) {
    if (count >= kLanes) return load(p);
    if (p + kLanes <= end) return (vf8)((vi8)load(p) & mask);
    vf8 v = {};
    for (int64_t l = 0; l < count; ++l) v[l] = p[l];
    return v;
}

// max(x, 0) lane by lane, NaN kept (as torch's relu and std::max(x, 0.f) do).
inline vf8 relu(vf8 x) {
    const vf8 zero = {};
    return (vf8)((vi8)x & ~(x < zero));
}

// exp(x) lane by lane: 2^n * p(r) with x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial
// (Cephes' expf coefficients); relative error below 2e-7. Inputs are clamped to [-87.3, 88.7].
inline vf8 exp8(vf8 x) {
    const vf8 hi = vf8{} + 88.7f, lo = vf8{} - 87.3f;
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    const vf8 magic = vf8{} + 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
    const vf8 n = (x * 1.44269504f + magic) - magic;
    const vf8 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    vf8 poly = r * 1.9875691500e-4f + 1.3981999507e-3f;
    poly = poly * r + 8.3334519073e-3f;
    poly = poly * r + 4.1665795894e-2f;
    poly = poly * r + 1.6666665459e-1f;
    poly = poly * r + 5.0000001201e-1f;
    poly = poly * r * r + r + 1.f;
    const vi8 scale = (__builtin_convertvector(n, vi8) + 127) << 23;
    return poly * (vf8)scale;
}

inline int64_t padded(int64_t dim) { return (dim + kLanes - 1) / kLanes * kLanes; }

// Row r, step k of the left operand: a[r * row_stride + k * step_stride].
struct Left {
    const float* a;
    int64_t row_stride, step_stride;
};

// Right operand: row k is b + k * stride, at least `vecs` * 8 readable floats wide.
struct Right {
    const float* b;
    int64_t stride;
};

// Destination rows: rows r of `out` (stride), first `cols` columns, each scaled by scale[r] if given.
struct Dest {
    float* out;
    int64_t stride, cols;
    const float* scale;
};

template <int R, int V>
inline void tile(const Left& left, const Right& right, const Dest& dest, int64_t row, int64_t vec,
                 int64_t steps) {
    vf8 acc[R][V];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < V; ++c) acc[r][c] = vf8{};  // not `= {}`: GCC zeroes that with rep stos
    const float* a = left.a + row * left.row_stride;
    const float* b = right.b + vec * kLanes;
    for (int64_t k = 0; k < steps; ++k) {
        vf8 bv[V];
        for (int c = 0; c < V; ++c) bv[c] = load(b + k * right.stride + c * kLanes);
        const float* ak = a + k * left.step_stride;
        for (int r = 0; r < R; ++r) {
            const float s = ak[r * left.row_stride];
            for (int c = 0; c < V; ++c) acc[r][c] += s * bv[c];
        }
    }
    const int64_t first = vec * kLanes;
    for (int r = 0; r < R; ++r) {
        const float scale = dest.scale ? dest.scale[row + r] : 1.f;
        float* o = dest.out + (row + r) * dest.stride + first;
        for (int c = 0; c < V; ++c) {
            const vf8 scaled = acc[r][c] * scale;
            const int64_t count = dest.cols - first - c * kLanes;
            if (count >= kLanes) {
                store(o + c * kLanes, scaled);
            } else {
                for (int64_t l = 0; l < count; ++l) o[c * kLanes + l] = scaled[l];
            }
        }
    }
}

template <int V>
inline void tile_rows(int rows, const Left& l, const Right& r, const Dest& d, int64_t row, int64_t vec, int64_t k) {
    switch (rows) {
        case 6: return tile<6, V>(l, r, d, row, vec, k);
        case 5: return tile<5, V>(l, r, d, row, vec, k);
        case 4: return tile<4, V>(l, r, d, row, vec, k);
        case 3: return tile<3, V>(l, r, d, row, vec, k);
        case 2: return tile<2, V>(l, r, d, row, vec, k);
        default: return tile<1, V>(l, r, d, row, vec, k);
    }
}

// dest[rows x dest.cols] = sum over `steps` of left(r, k) * right[k]; right rows padded to 8.
void product(const Left& left, const Right& right, const Dest& dest, int64_t rows, int64_t steps) {
    const int64_t vecs = padded(dest.cols) / kLanes;
    for (int64_t row = 0; row < rows; row += kTileRows) {
        const int r = static_cast<int>(std::min<int64_t>(kTileRows, rows - row));
        for (int64_t vec = 0; vec < vecs; vec += kTileVecs) {
            if (vecs - vec >= 2) tile_rows<2>(r, left, right, dest, row, vec, steps);
            else tile_rows<1>(r, left, right, dest, row, vec, steps);
        }
    }
}

// Per-thread scratch, reused across calls.
std::vector<float>& scratch(size_t floats) {
    thread_local std::vector<float> buffer;
    if (buffer.size() < floats) buffer.resize(floats);
    return buffer;
}

// One (batch, head) of qkv and out: rows of `row` floats in qkv, of C floats in out.
struct Head {
    int64_t tokens, d, dp, C, row, h;
    const float *q, *k, *v, *end;  // end: one past qkv, the limit of load_head's over-reads
    float* out;
};

Head head_of(const float* qkv, float* out, const AttentionShape& s, int64_t task) {
    const int64_t C = s.channels(), row = 3 * C, b = task / s.heads, h = task % s.heads;
    const float* q = qkv + b * s.tokens * row + h * s.dim;
    return Head{s.tokens, s.dim, padded(s.dim), C, row, h, q, q + C, q + 2 * C,
                qkv + s.batch * s.tokens * row, out + b * s.tokens * C + h * s.dim};
}

}  // namespace

void xca_task(const float* qkv, const float* temperature, float* out, const AttentionShape& s, int64_t task) {
    const Head hd = head_of(qkv, out, s, task);
    const int64_t n_tok = hd.tokens, d = hd.d, dp = hd.dp, C = hd.C, row = hd.row;
    const float *q = hd.q, *k = hd.k, *v = hd.v, *end = hd.end;

    // staging: q and k (N x dp, zero padded), squared norms of their columns over tokens
    std::vector<float>& buf = scratch(static_cast<size_t>(2 * n_tok * dp + 2 * dp + 2 * d * dp));
    float* qp = buf.data();
    float* kp = qp + n_tok * dp;
    float* qn = kp + n_tok * dp;
    float* kn = qn + dp;
    float* at = kn + dp;        // softmax(attn)^T, (d x dp): row j holds attn[:, j]
    float* gram = at + d * dp;  // (d x dp): q^T k, then the scaled logits
    for (int64_t j = 0; j < dp; j += kLanes) {
        const vi8 mask = lanes_below(d - j);
        vf8 qsq = {}, ksq = {};
        for (int64_t n = 0; n < n_tok; ++n) {
            const vf8 qv = load_head(q + n * row + j, d - j, mask, end);
            const vf8 kv = load_head(k + n * row + j, d - j, mask, end);
            store(qp + n * dp + j, qv);
            store(kp + n * dp + j, kv);
            qsq += qv * qv;
            ksq += kv * kv;
        }
        store(qn + j, qsq);
        store(kn + j, ksq);
    }
    // gram[i][j] = sum_n q[n, i] k[n, j]
    product(Left{qp, 1, dp}, Right{kp, dp}, Dest{gram, dp, d, nullptr}, d, n_tok);

    // attn = softmax(temperature * gram / (|q_i| |k_j|)), with F.normalize's 1e-12 floor
    const float temp = temperature[hd.h];
    const vf8 tiny = vf8{} + 1e-12f;
    for (int64_t j = 0; j < dp; j += kLanes) {  // kn: 1 / max(|k_j|, 1e-12)
        vf8 norm = load(kn + j);
        for (int l = 0; l < kLanes; ++l) norm[l] = std::sqrt(norm[l]);
        store(kn + j, 1.f / (norm > tiny ? norm : tiny));
    }
    std::fill(at, at + d * dp, 0.f);
    const vf8 minus_inf = tiny - INFINITY;
    for (int64_t i = 0; i < d; ++i) {
        float* g = gram + i * dp;  // lanes past d hold garbage: masked off below
        const float qscale = temp / std::max(std::sqrt(qn[i]), 1e-12f);
        vf8 top = minus_inf;
        for (int64_t j = 0; j < dp; j += kLanes) {
            const vi8 valid = lanes_below(d - j);
            const vf8 logit = load(g + j) * qscale * load(kn + j);
            const vf8 kept = (vf8)(((vi8)logit & valid) | ((vi8)minus_inf & ~valid));
            store(g + j, kept);
            top = top > kept ? top : kept;
        }
        float peak = top[0];
        for (int l = 1; l < kLanes; ++l) peak = std::max(peak, top[l]);
        vf8 total = {};
        for (int64_t j = 0; j < dp; j += kLanes) {
            const vf8 e = (vf8)((vi8)exp8(load(g + j) - peak) & lanes_below(d - j));
            store(g + j, e);
            total += e;
        }
        float sum = 0.f;
        for (int l = 0; l < kLanes; ++l) sum += total[l];
        const float inv = 1.f / sum;
        for (int64_t j = 0; j < d; ++j) at[j * dp + i] = g[j] * inv;
    }
    // out[n, i] = sum_j v[n, j] attn[i, j]
    product(Left{v, row, 1}, Right{at, dp}, Dest{hd.out, C, d, nullptr}, n_tok, d);
}

void sla_task(const float* qkv, const float* positional, float* out, const AttentionShape& s, int64_t task) {
    const Head hd = head_of(qkv, out, s, task);
    const int64_t n_tok = hd.tokens, d = hd.d, dp = hd.dp, C = hd.C, row = hd.row;
    const float *q = hd.q, *k = hd.k, *v = hd.v, *end = hd.end;
    const float* p = positional + hd.h * d;

    // staging: relu(q), relu(k + p), v (N x dp each, zero padded), column sums of relu(k + p)
    std::vector<float>& buf = scratch(static_cast<size_t>(3 * n_tok * dp + d * dp + dp + n_tok));
    float* qr = buf.data();
    float* kr = qr + n_tok * dp;
    float* vp = kr + n_tok * dp;
    float* kv = vp + n_tok * dp;
    float* ksum = kv + d * dp;
    float* z = ksum + dp;
    const float* p_end = positional + n_tok * C;
    for (int64_t j = 0; j < dp; j += kLanes) {
        const vi8 mask = lanes_below(d - j);
        vf8 sum = {};
        for (int64_t n = 0; n < n_tok; ++n) {
            const vf8 kv = relu(load_head(k + n * row + j, d - j, mask, end) +
                                load_head(p + n * C + j, d - j, mask, p_end));
            store(qr + n * dp + j, relu(load_head(q + n * row + j, d - j, mask, end)));
            store(kr + n * dp + j, kv);
            store(vp + n * dp + j, load_head(v + n * row + j, d - j, mask, end));
            sum += kv;
        }
        store(ksum + j, sum);
    }
    // kv[c][e] = sum_n relu(k)[n, c] v[n, e]
    product(Left{kr, 1, dp}, Right{vp, dp}, Dest{kv, dp, d, nullptr}, d, n_tok);
    for (int64_t c = 0; c < d; ++c) std::fill(kv + c * dp + d, kv + (c + 1) * dp, 0.f);
    // z[n] = 1 / (relu(q)[n] . ksum + 1e-6)
    for (int64_t n = 0; n < n_tok; ++n) {
        vf8 acc = {};
        for (int64_t j = 0; j < dp; j += kLanes) acc += load(qr + n * dp + j) * load(ksum + j);
        float total = 0.f;
        for (int l = 0; l < kLanes; ++l) total += acc[l];
        z[n] = 1.f / (total + 1e-6f);
    }
    // out[n, e] = z[n] sum_c relu(q)[n, c] kv[c][e]
    product(Left{qr, dp, 1}, Right{kv, dp}, Dest{hd.out, C, d, z}, n_tok, d);
}

// RLMHSA, two vectors of queries at a time (16 with 8 lanes, 32 with AVX-512's 16): their
// scores against every key stay in L1 (2 vectors per key), the softmax runs in base 2 on keys
// pre-scaled by log2(e), and its normalization is applied to the output instead of to every
// probability.
namespace rl {

constexpr float kLog2e = 1.44269504088896341f;
constexpr int64_t kGroup = 2 * kLanes;  // queries at a time: two vectors

// 2^x lane by lane for x <= 0 (a softmax's shifted scores): x = n + f, |f| <= 1/2, 2^f by a
// degree-5 polynomial fitted for relative error (1.9e-7 in float32); x clamped at -125, NaN kept.
inline vf8 exp2_nonpositive(vf8 x) {
    const vf8 lo = vf8{} - 125.f;  // not x - x + c: that is NaN for an infinite x
    x = x < lo ? lo : x;
    const vf8 magic = vf8{} + 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
    const vf8 t = x + magic;
    const vf8 f = x - (t - magic);
    vf8 poly = f * 1.3264644658e-3f + 9.6715139225e-3f;
    poly = poly * f + 5.5507339537e-2f;
    poly = poly * f + 2.4022242427e-1f;
    poly = poly * f + 6.9314700365e-1f;
    poly = poly * f + 1.f;
    const vi8 scale = ((vi8)t - 0x4B400000 + 127) << 23;  // t's low mantissa bits hold n
    return poly * (vf8)scale;
}

struct Block {
    int64_t keys, dim;
    const float* kt;  // keys x dim: k transposed, times log2(e)
    const float* v;   // dim rows of `keys` values (the input itself)
    float* scores;    // keys x 2 vectors
};

// scores[m] = sum_i kt[m][i] q[i] for K keys from `m`; the running maxima in top.
template <int K>
inline void score_keys(const Block& bl, const vf8* q, int64_t m, vf8 top[2]) {
    vf8 acc[K][2];
    for (int j = 0; j < K; ++j) acc[j][0] = acc[j][1] = vf8{};
    for (int64_t i = 0; i < bl.dim; ++i) {
        for (int j = 0; j < K; ++j) {
            const float w = bl.kt[(m + j) * bl.dim + i];
            acc[j][0] += w * q[2 * i];
            acc[j][1] += w * q[2 * i + 1];
        }
    }
    for (int j = 0; j < K; ++j) {
        for (int c = 0; c < 2; ++c) {
            store(bl.scores + (m + j) * kGroup + c * kLanes, acc[j][c]);
            top[c] = top[c] > acc[j][c] ? top[c] : acc[j][c];
        }
    }
}

// out rows [row, row + R) for the group's queries: sum_m v[row + r][m] p[m], times inv, `count` lanes.
template <int R>
inline void output_rows(const Block& bl, int64_t row, const vf8 inv[2], float* out, int64_t stride, int64_t count) {
    vf8 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = vf8{};
    for (int64_t m = 0; m < bl.keys; ++m) {
        const vf8 p0 = load(bl.scores + m * kGroup), p1 = load(bl.scores + m * kGroup + kLanes);
        for (int r = 0; r < R; ++r) {
            const float w = bl.v[(row + r) * bl.keys + m];
            acc[r][0] += w * p0;
            acc[r][1] += w * p1;
        }
    }
    for (int r = 0; r < R; ++r) {
        float* o = out + (row + r) * stride;
        for (int c = 0; c < 2; ++c) {
            const vf8 value = acc[r][c] * inv[c];
            const int64_t lanes = count - c * kLanes;
            if (lanes >= kLanes) store(o + c * kLanes, value);
            else for (int64_t l = 0; l < lanes; ++l) o[c * kLanes + l] = value[l];
        }
    }
}

}  // namespace rl

void rlmhsa_task(const float* q_all, const float* kv_all, float* out_all, const AttentionShape& s, int64_t task) {
    const int64_t n_tok = s.tokens, m_keys = s.keys, d = s.dim, C = s.channels();
    const int64_t block = kRlmhsaQueryBlock, blocks = (n_tok + block - 1) / block;
    const int64_t bh = task / blocks, n0 = task % blocks * block, b = bh / s.heads, h = bh % s.heads;
    const int64_t n_end = std::min(n0 + block, n_tok);
    const float* q = q_all + (b * C + h * d) * n_tok;  // row i (channel): q + i * N
    const float* k = kv_all + (b * 2 * C + h * d) * m_keys;  // row i: k + i * M
    const float* end = q_all + s.batch * C * n_tok;
    float* out = out_all + (b * C + h * d) * n_tok;

    // staging: the group's query vectors (d x 2, aligned), k transposed and scaled by
    // log2(e) (M x d), the scores (M x 2 vectors)
    std::vector<float>& buf = scratch(static_cast<size_t>(rl::kGroup * d + m_keys * d + rl::kGroup * m_keys + kLanes));
    const uintptr_t base = reinterpret_cast<uintptr_t>(buf.data());
    vf8* qv = reinterpret_cast<vf8*>((base + sizeof(vf8) - 1) / sizeof(vf8) * sizeof(vf8));
    float* kt = reinterpret_cast<float*>(qv + 2 * d);
    for (int64_t i = 0; i < d; ++i)
        for (int64_t m = 0; m < m_keys; ++m) kt[m * d + i] = k[i * m_keys + m] * rl::kLog2e;
    rl::Block bl{m_keys, d, kt, k + C * m_keys, kt + m_keys * d};

    for (int64_t n = n0; n < n_end; n += rl::kGroup) {
        const int64_t count = std::min<int64_t>(rl::kGroup, n_end - n);
        for (int64_t i = 0; i < d; ++i) {
            for (int c = 0; c < 2; ++c) {
                const int64_t lanes = count - c * kLanes;
                qv[2 * i + c] = lanes > 0 ? load_head(q + i * n_tok + n + c * kLanes, lanes, lanes_below(lanes), end)
                                          : vf8{};
            }
        }
        vf8 top[2] = {vf8{} - INFINITY, vf8{} - INFINITY};
        int64_t m = 0;
        for (; m + 4 <= m_keys; m += 4) rl::score_keys<4>(bl, qv, m, top);
        for (; m < m_keys; ++m) rl::score_keys<1>(bl, qv, m, top);
        vf8 total[2] = {vf8{}, vf8{}};
        for (int64_t j = 0; j < m_keys; ++j) {
            for (int c = 0; c < 2; ++c) {
                float* p = bl.scores + j * rl::kGroup + c * kLanes;
                const vf8 e = rl::exp2_nonpositive(load(p) - top[c]);
                store(p, e);
                total[c] += e;
            }
        }
        const vf8 inv[2] = {1.f / total[0], 1.f / total[1]};
        int64_t row = 0;
        for (; row + 6 <= d; row += 6) rl::output_rows<6>(bl, row, inv, out + n, n_tok, count);
        switch (d - row) {
            case 5: rl::output_rows<5>(bl, row, inv, out + n, n_tok, count); break;
            case 4: rl::output_rows<4>(bl, row, inv, out + n, n_tok, count); break;
            case 3: rl::output_rows<3>(bl, row, inv, out + n, n_tok, count); break;
            case 2: rl::output_rows<2>(bl, row, inv, out + n, n_tok, count); break;
            case 1: rl::output_rows<1>(bl, row, inv, out + n, n_tok, count); break;
            default: break;
        }
    }
}

}  // namespace EDGEVIT_ISA
}  // namespace edgevit
