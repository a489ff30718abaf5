// edgevit._native: Python bindings of the attention kernels (nanobind).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>
#include <thread>

#include "attention.hpp"

namespace nb = nanobind;
using Tensor4 = nb::ndarray<const float, nb::ndim<4>, nb::c_contig, nb::device::cpu>;
using Vector = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Output = nb::ndarray<nb::numpy, float, nb::ndim<4>>;

namespace {

void same_shape(const Tensor4& a, const Tensor4& b, const char* name) {
    for (size_t i = 0; i < 4; ++i) {
        if (a.shape(i) != b.shape(i)) throw nb::value_error((std::string(name) + " must have q's shape").c_str());
    }
}

Output empty_like(const Tensor4& x) {
    size_t shape[4] = {x.shape(0), x.shape(1), x.shape(2), x.shape(3)};
    float* data = new float[x.size()];
    nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
    return Output(data, 4, shape, owner);
}

int resolve_threads(int threads) {
    if (threads > 0) return threads;
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

}  // namespace

NB_MODULE(_native, m) {
    m.doc() = "edgevit's fused fp32 attention kernels";
    m.def("xca", [](Tensor4 q, Tensor4 k, Tensor4 v, Vector temperature, int threads) {
        same_shape(q, k, "k");
        same_shape(q, v, "v");
        if (temperature.shape(0) != q.shape(1)) throw nb::value_error("temperature must have one value per head");
        Output out = empty_like(q);
        {
            nb::gil_scoped_release release;
            edgevit::xca_forward(q.data(), k.data(), v.data(), temperature.data(), out.data(),
                                 q.shape(0), q.shape(1), q.shape(2), q.shape(3), resolve_threads(threads));
        }
        return out;
    }, nb::arg("q").noconvert(), nb::arg("k").noconvert(), nb::arg("v").noconvert(),
       nb::arg("temperature").noconvert(), nb::arg("threads") = 0,
       "Cross-covariance attention: q, k, v (B, H, d, N) float32, temperature (H,) -> (B, H, d, N).");
    m.def("sla", [](Tensor4 q, Tensor4 k, Tensor4 v, int threads) {
        same_shape(q, k, "k");
        same_shape(q, v, "v");
        Output out = empty_like(q);
        {
            nb::gil_scoped_release release;
            edgevit::sla_forward(q.data(), k.data(), v.data(), out.data(),
                                 q.shape(0), q.shape(1), q.shape(2), q.shape(3), resolve_threads(threads));
        }
        return out;
    }, nb::arg("q").noconvert(), nb::arg("k").noconvert(), nb::arg("v").noconvert(), nb::arg("threads") = 0,
       "Simplified linear attention: q, k, v (B, H, N, d) float32 -> (B, H, N, d).");
}
