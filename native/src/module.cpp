// edgevit._native: Python bindings of the attention kernels (nanobind). Arrays come from numpy
// or torch (DLPack); the caller allocates the output, so torch ops write into torch memory.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>

#include "attention.hpp"

namespace nb = nanobind;
using Input3 = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using Input2 = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Input1 = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Output3 = nb::ndarray<float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using edgevit::Attention;

namespace {

template <typename In>
void check_apart(const In& input, const Output3& out, const std::string& message) {
    const char* in_begin = reinterpret_cast<const char*>(input.data());
    const char* in_end = in_begin + input.nbytes();
    const char* out_begin = reinterpret_cast<const char*>(out.data());
    const char* out_end = out_begin + out.nbytes();
    if (out_begin < in_end && in_begin < out_end) throw nb::value_error(message.c_str());
}

// Shapes shared by both kernels: qkv (B, N, 3*H*d), out (B, N, H*d), not overlapping qkv.
edgevit::AttentionShape check(const Input3& qkv, const Output3& out, int64_t heads, const char* op) {
    const std::string name(op);
    if (heads <= 0) throw nb::value_error((name + ": heads must be positive").c_str());
    const int64_t batch = static_cast<int64_t>(qkv.shape(0)), tokens = static_cast<int64_t>(qkv.shape(1));
    const int64_t width = static_cast<int64_t>(qkv.shape(2));
    if (batch == 0 || tokens == 0 || width == 0)
        throw nb::value_error((name + ": qkv must not be empty").c_str());
    if (width % (3 * heads) != 0)
        throw nb::value_error((name + ": qkv's last dimension " + std::to_string(width) +
                               " is not 3 x heads x head_dim for " + std::to_string(heads) + " heads").c_str());
    const int64_t channels = width / 3;
    if (static_cast<int64_t>(out.shape(0)) != batch || static_cast<int64_t>(out.shape(1)) != tokens ||
        static_cast<int64_t>(out.shape(2)) != channels)
        throw nb::value_error((name + ": out must have shape (" + std::to_string(batch) + ", " +
                               std::to_string(tokens) + ", " + std::to_string(channels) + ")").c_str());
    check_apart(qkv, out, name + ": out must not overlap qkv");
    return edgevit::AttentionShape{batch, tokens, heads, channels / heads};
}

// RLMHSA: q (B, C, N), kv (B, 2C, M), out (B, C, N), C divisible by heads, out apart from both.
edgevit::AttentionShape check_rlmhsa(const Input3& q, const Input3& kv, const Output3& out, int64_t heads) {
    if (heads <= 0) throw nb::value_error("rlmhsa: heads must be positive");
    const int64_t batch = static_cast<int64_t>(q.shape(0)), channels = static_cast<int64_t>(q.shape(1));
    const int64_t tokens = static_cast<int64_t>(q.shape(2)), keys = static_cast<int64_t>(kv.shape(2));
    if (batch == 0 || channels == 0 || tokens == 0 || keys == 0)
        throw nb::value_error("rlmhsa: q and kv must not be empty");
    if (channels % heads != 0)
        throw nb::value_error(("rlmhsa: q's " + std::to_string(channels) + " channels are not heads x head_dim for " +
                               std::to_string(heads) + " heads").c_str());
    if (static_cast<int64_t>(kv.shape(0)) != batch || static_cast<int64_t>(kv.shape(1)) != 2 * channels)
        throw nb::value_error(("rlmhsa: kv must have shape (" + std::to_string(batch) + ", " +
                               std::to_string(2 * channels) + ", keys)").c_str());
    if (static_cast<int64_t>(out.shape(0)) != batch || static_cast<int64_t>(out.shape(1)) != channels ||
        static_cast<int64_t>(out.shape(2)) != tokens)
        throw nb::value_error("rlmhsa: out must have q's shape");
    check_apart(q, out, "rlmhsa: out must not overlap q");
    check_apart(kv, out, "rlmhsa: out must not overlap kv");
    return edgevit::AttentionShape{batch, tokens, heads, channels / heads, keys};
}

template <typename In>
void forward(Attention op, const In& a, const float* b, Output3& out, const edgevit::AttentionShape& shape,
             int threads) {
    const std::string error = edgevit::shape_error(op, shape);
    if (!error.empty()) throw nb::value_error(error.c_str());
    nb::gil_scoped_release release;
    edgevit::run(edgevit::plan(op, shape), a.data(), b, out.data(), shape, threads);
}

}  // namespace

NB_MODULE(_native, m) {
    m.doc() = "edgevit's fused fp32 attention kernels (XCA, simplified linear attention, RLMHSA)";
    m.def("xca", [](Input3 qkv, Input1 temperature, Output3 out, int64_t heads, int threads) {
        const edgevit::AttentionShape s = check(qkv, out, heads, "xca");
        if (static_cast<int64_t>(temperature.shape(0)) != heads)
            throw nb::value_error("xca: temperature must have one value per head");
        forward(Attention::xca, qkv, temperature.data(), out, s, threads);
    }, nb::arg("qkv").noconvert(), nb::arg("temperature").noconvert(), nb::arg("out").noconvert(),
       nb::arg("heads"), nb::arg("threads") = 0,
       "Cross-covariance attention. qkv (B, N, 3C) float32, temperature (heads,), out (B, N, C) written.");
    m.def("sla", [](Input3 qkv, Input2 positional, Output3 out, int64_t heads, int threads) {
        const edgevit::AttentionShape s = check(qkv, out, heads, "sla");
        if (static_cast<int64_t>(positional.shape(0)) != s.tokens ||
            static_cast<int64_t>(positional.shape(1)) != s.heads * s.dim)
            throw nb::value_error("sla: positional must have shape (tokens, channels)");
        forward(Attention::sla, qkv, positional.data(), out, s, threads);
    }, nb::arg("qkv").noconvert(), nb::arg("positional").noconvert(), nb::arg("out").noconvert(),
       nb::arg("heads"), nb::arg("threads") = 0,
       "Simplified linear attention (no depth-wise conv). qkv (B, N, 3C), positional (N, C), out (B, N, C).");
    m.def("rlmhsa", [](Input3 q, Input3 kv, Output3 out, int64_t heads, int threads) {
        const edgevit::AttentionShape s = check_rlmhsa(q, kv, out, heads);
        forward(Attention::rlmhsa, q, kv.data(), out, s, threads);
    }, nb::arg("q").noconvert(), nb::arg("kv").noconvert(), nb::arg("out").noconvert(),
       nb::arg("heads"), nb::arg("threads") = 0,
       "FMViT's attention over pooled keys. q (B, C, N) scaled, kv (B, 2C, M), out (B, C, N) written.");
    m.attr("min_flops_per_thread") = edgevit::kMinFlopsPerThread;
    m.def("isa", &edgevit::active_isa, "Instruction set the kernels use on this CPU: avx2 or baseline.");
#ifdef EDGEVIT_SANITIZE
    m.attr("sanitized") = true;
#else
    m.attr("sanitized") = false;
#endif
}
