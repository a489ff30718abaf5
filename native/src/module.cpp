// edgevit._native: Python bindings of the attention kernels (nanobind). Arrays come from numpy
// or torch (DLPack); the caller allocates the output, so torch ops write into torch memory.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>
#include <thread>

#include "attention.hpp"

namespace nb = nanobind;
using Input3 = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using Input2 = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Input1 = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Output3 = nb::ndarray<float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;

namespace {

struct Checked {
    int64_t batch, tokens, heads, dim;
};

// Shapes shared by both kernels: qkv (B, N, 3*H*d), out (B, N, H*d), not overlapping qkv.
Checked check(const Input3& qkv, const Output3& out, int64_t heads, const char* op) {
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
    const char* in_begin = reinterpret_cast<const char*>(qkv.data());
    const char* in_end = in_begin + qkv.nbytes();
    const char* out_begin = reinterpret_cast<const char*>(out.data());
    const char* out_end = out_begin + out.nbytes();
    if (out_begin < in_end && in_begin < out_end)
        throw nb::value_error((name + ": out must not overlap qkv").c_str());
    return Checked{batch, tokens, heads, channels / heads};
}

int resolve_threads(int threads) {
    if (threads > 0) return threads;
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

}  // namespace

NB_MODULE(_native, m) {
    m.doc() = "edgevit's fused fp32 attention kernels (XCA, simplified linear attention)";
    m.def("xca", [](Input3 qkv, Input1 temperature, Output3 out, int64_t heads, int threads) {
        const Checked s = check(qkv, out, heads, "xca");
        if (static_cast<int64_t>(temperature.shape(0)) != heads)
            throw nb::value_error("xca: temperature must have one value per head");
        nb::gil_scoped_release release;
        edgevit::xca_forward(qkv.data(), temperature.data(), out.data(), s.batch, s.tokens, s.heads, s.dim,
                             resolve_threads(threads));
    }, nb::arg("qkv").noconvert(), nb::arg("temperature").noconvert(), nb::arg("out").noconvert(),
       nb::arg("heads"), nb::arg("threads") = 0,
       "Cross-covariance attention. qkv (B, N, 3C) float32, temperature (heads,), out (B, N, C) written.");
    m.def("sla", [](Input3 qkv, Input2 positional, Output3 out, int64_t heads, int threads) {
        const Checked s = check(qkv, out, heads, "sla");
        if (static_cast<int64_t>(positional.shape(0)) != s.tokens ||
            static_cast<int64_t>(positional.shape(1)) != s.heads * s.dim)
            throw nb::value_error("sla: positional must have shape (tokens, channels)");
        nb::gil_scoped_release release;
        edgevit::sla_forward(qkv.data(), positional.data(), out.data(), s.batch, s.tokens, s.heads, s.dim,
                             resolve_threads(threads));
    }, nb::arg("qkv").noconvert(), nb::arg("positional").noconvert(), nb::arg("out").noconvert(),
       nb::arg("heads"), nb::arg("threads") = 0,
       "Simplified linear attention (no depth-wise conv). qkv (B, N, 3C), positional (N, C), out (B, N, C).");
    m.def("isa", &edgevit::active_isa, "Instruction set the kernels use on this CPU: avx2 or baseline.");
#ifdef EDGEVIT_SANITIZE
    m.attr("sanitized") = true;
#else
    m.attr("sanitized") = false;
#endif
}
