"""edgevit._native: the C++ XCA and simplified-linear-attention kernels.

Parity with the PyTorch references (edgevit.models), thread- and ISA-independence,
hypothesis properties and NaN/inf propagation (bad inputs: test_native_input_checks.py).

Skipped when the extension is not built, except under CI=true, where a missing extension fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgevit import native

from .native_cases import kernels_or_skip, make_inputs, make_pooled_inputs

_native = kernels_or_skip()
torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgevit.models.edgenext_layers import cross_covariance_attention  # noqa: E402
from edgevit.models.fmvit import pooled_attention  # noqa: E402
from edgevit.models.slab_layers import simplified_linear_attention  # noqa: E402

ATOL = 1e-5
HEAD_DIMS = (1, 3, 7, 12, 13, 22, 33, 42, 64, 73)


# --- references ------------------------------------------------------------------------

def ref_xca(qkv, temperature, heads):
    """The torch reference, evaluated in float64 so that the difference is the kernel's error."""
    out = cross_covariance_attention(torch.from_numpy(qkv).double(), torch.from_numpy(temperature).double(), heads)
    return out.numpy()


def ref_sla(qkv, positional, heads):
    out = simplified_linear_attention(torch.from_numpy(qkv).double(), torch.from_numpy(positional).double(), heads)
    return out.numpy()


def raw_xca(qkv, temperature, heads, threads=1):
    out = np.empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3), np.float32)
    _native.xca(qkv, temperature, out, heads, threads)
    return out


def raw_sla(qkv, positional, heads, threads=1):
    out = np.empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3), np.float32)
    _native.sla(qkv, positional, out, heads, threads)
    return out


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


# (batch, tokens, heads, head_dim): odd token counts, head dims that are not multiples of 8,
# batch > 1, a single token, 1..8 heads.
SHAPES = [
    (1, 1, 1, 1),
    (1, 1, 4, 13),
    (2, 1, 3, 7),
    (1, 3, 1, 3),
    (2, 3, 7, 13),
    (3, 5, 2, 1),
    (1, 7, 8, 12),
    (2, 9, 5, 22),
    (1, 17, 2, 33),
    (3, 21, 8, 3),
    (1, 31, 6, 42),
    (2, 33, 1, 17),
    (1, 49, 4, 64),
    (2, 49, 3, 73),
    (1, 63, 8, 7),
    (2, 64, 2, 24),
    (1, 97, 4, 40),
    (3, 13, 6, 9),
    (1, 197, 3, 64),
    (2, 255, 1, 73),
    (1, 5, 2, 8),
    (4, 11, 4, 16),
]
# every listed head dim with a few heads, token and batch counts
SHAPES += [(1 + i % 3, (2 * i + 1) * 3, 1 + (i * 3) % 8, d) for i, d in enumerate(HEAD_DIMS)]


def shape_id(shape):
    return "B{}-N{}-H{}-d{}".format(*shape)


# --- parity ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_xca_matches_torch_reference(shape):
    batch, tokens, heads, dim = shape
    qkv, temperature, _ = make_inputs(*shape, seed=sum(shape))
    out = native.xca(qkv, temperature, heads)
    assert out.shape == (batch, tokens, heads * dim) and out.dtype == np.float32
    assert max_abs(out, ref_xca(qkv, temperature, heads)) <= ATOL


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_sla_matches_torch_reference(shape):
    batch, tokens, heads, dim = shape
    qkv, _, positional = make_inputs(*shape, seed=sum(shape) + 1)
    out = native.sla(qkv, positional, heads)
    assert out.shape == (batch, tokens, heads * dim) and out.dtype == np.float32
    assert max_abs(out, ref_sla(qkv, positional, heads)) <= ATOL


@pytest.mark.parametrize("shape", SHAPES[::3], ids=shape_id)
def test_float32_reference_agrees_too(shape):
    """The same check against torch's own float32 evaluation of the references."""
    qkv, temperature, positional = make_inputs(*shape, seed=7)
    heads = shape[2]
    xca32 = cross_covariance_attention(torch.from_numpy(qkv), torch.from_numpy(temperature), heads).numpy()
    sla32 = simplified_linear_attention(torch.from_numpy(qkv), torch.from_numpy(positional), heads).numpy()
    assert max_abs(native.xca(qkv, temperature, heads), xca32) <= ATOL
    assert max_abs(native.sla(qkv, positional, heads), sla32) <= ATOL


@pytest.mark.parametrize("shape", [(2, 1, 3, 7), (3, 21, 8, 13), (4, 49, 5, 33), (2, 64, 3, 73), (5, 9, 2, 1)],
                         ids=shape_id)
def test_threads_give_bitwise_identical_results(shape):
    """Each (batch, head) is computed by one thread, start to end: the thread count cannot change a bit."""
    heads = shape[2]
    qkv, temperature, positional = make_inputs(*shape, seed=3)
    xca1, sla1 = raw_xca(qkv, temperature, heads, 1), raw_sla(qkv, positional, heads, 1)
    for threads in (2, 3, 0):  # 0: one per hardware thread
        np.testing.assert_allclose(raw_xca(qkv, temperature, heads, threads), xca1, rtol=0, atol=0)
        np.testing.assert_allclose(raw_sla(qkv, positional, heads, threads), sla1, rtol=0, atol=0)
    np.testing.assert_array_equal(native.xca(qkv, temperature, heads, threads=1), xca1)
    np.testing.assert_array_equal(native.xca(qkv, temperature, heads, threads=2), xca1)
    np.testing.assert_array_equal(native.sla(qkv, positional, heads, threads=1), sla1)
    np.testing.assert_array_equal(native.sla(qkv, positional, heads, threads=2), sla1)
    assert max_abs(xca1, ref_xca(qkv, temperature, heads)) <= ATOL
    assert max_abs(sla1, ref_sla(qkv, positional, heads)) <= ATOL


def test_threads_through_the_wrapper_on_a_shape_big_enough_to_split():
    """The kernels keep small calls on one thread; this one is big enough for 2 (4 flops x B N C d > 16e6)."""
    shape = (2, 256, 4, 64)
    heads = shape[2]
    qkv, temperature, positional = make_inputs(*shape, seed=5)
    assert 4.0 * 2 * 256 * 256 * 64 >= 2 * _native.min_flops_per_thread
    np.testing.assert_array_equal(native.xca(qkv, temperature, heads, threads=2),
                                  native.xca(qkv, temperature, heads, threads=1))
    np.testing.assert_array_equal(native.sla(qkv, positional, heads, threads=2),
                                  native.sla(qkv, positional, heads, threads=1))
    assert max_abs(native.xca(qkv, temperature, heads, threads=2), ref_xca(qkv, temperature, heads)) <= ATOL
    assert max_abs(native.sla(qkv, positional, heads, threads=2), ref_sla(qkv, positional, heads)) <= ATOL


def test_every_batch_and_head_is_computed_independently():
    """A batch of B equals B calls on one item each: no task reads another's rows."""
    shape = (3, 17, 4, 13)
    heads = shape[2]
    qkv, temperature, positional = make_inputs(*shape, seed=11)
    xca, sla = native.xca(qkv, temperature, heads), native.sla(qkv, positional, heads)
    for b in range(shape[0]):
        one = np.ascontiguousarray(qkv[b:b + 1])
        np.testing.assert_array_equal(native.xca(one, temperature, heads), xca[b:b + 1])
        np.testing.assert_array_equal(native.sla(one, positional, heads), sla[b:b + 1])


def test_zero_q_and_k_columns_follow_the_normalize_floor():
    """An all-zero q or k column normalizes to 0 (F.normalize's 1e-12 floor), not NaN."""
    batch, tokens, heads, dim = 2, 9, 2, 5
    qkv, temperature, positional = make_inputs(batch, tokens, heads, dim, seed=2)
    channels = heads * dim
    qkv[:, :, 0] = 0.0  # q column 0 of head 0
    qkv[:, :, channels + dim + 1] = 0.0  # k column 1 of head 1
    out = native.xca(qkv, temperature, heads)
    assert np.isfinite(out).all()
    assert max_abs(out, ref_xca(qkv, temperature, heads)) <= ATOL
    qkv[:, :, :channels] = 0.0  # all of q: SLA's numerator is 0
    assert max_abs(native.sla(qkv, positional, heads), ref_sla(qkv, positional, heads)) <= ATOL


def test_non_contiguous_input_through_the_wrapper_is_made_contiguous():
    shape = (2, 7, 3, 13)
    heads = shape[2]
    qkv, temperature, positional = make_inputs(*shape, seed=4)
    strided = np.asfortranarray(qkv)
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(native.xca(strided, temperature, heads), native.xca(qkv, temperature, heads))
    np.testing.assert_array_equal(native.sla(strided, np.asfortranarray(positional), heads),
                                  native.sla(qkv, positional, heads))


def test_status_reports_the_active_kernels():
    status = native.status()
    assert status.active and status.path == "native"
    assert status.isa == _native.isa() in ("avx512", "avx2", "baseline")
    assert status.sanitized is bool(_native.sanitized)
    assert status.isa in status.describe()


# --- hypothesis properties -------------------------------------------------------------------

dims = dict(batch=st.integers(1, 3), tokens=st.integers(1, 40), heads=st.integers(1, 6), dim=st.integers(1, 24),
            scale=st.floats(0.05, 4.0), seed=st.integers(0, 2**32 - 1))
PROPERTY = settings(max_examples=40, deadline=None)


@pytest.mark.parametrize("op", ["xca", "sla"])
@PROPERTY
@given(**dims)
def test_property_parity(op, batch, tokens, heads, dim, scale, seed):
    qkv, temperature, positional = make_inputs(batch, tokens, heads, dim, seed=seed, scale=scale)
    if op == "xca":
        got, want = native.xca(qkv, temperature, heads), ref_xca(qkv, temperature, heads)
    else:
        got, want = native.sla(qkv, positional, heads), ref_sla(qkv, positional, heads)
    assert max_abs(got, want) <= ATOL


@PROPERTY
@given(**dims)
def test_property_xca_rows_are_convex_combinations_of_v(batch, tokens, heads, dim, scale, seed):
    """out[b, n, h, i] = sum_j attn[b, h, i, j] v[b, n, h, j] with attn row-stochastic, so each output
    channel of a head lies between the min and max of v over that head's channels, for that token."""
    qkv, temperature, _ = make_inputs(batch, tokens, heads, dim, seed=seed, scale=scale)
    channels = heads * dim
    out = native.xca(qkv, temperature, heads).reshape(batch, tokens, heads, dim)
    v = qkv[:, :, 2 * channels:].reshape(batch, tokens, heads, dim)
    lo, hi = v.min(axis=-1, keepdims=True), v.max(axis=-1, keepdims=True)
    slack = 1e-6 * np.maximum(np.abs(lo), np.abs(hi)) * dim + 1e-7
    assert np.all(out >= lo - slack) and np.all(out <= hi + slack)


@PROPERTY
@given(**dims)
def test_property_sla_with_negative_q_is_zero(batch, tokens, heads, dim, scale, seed):
    """relu(q) = 0 makes every numerator 0 (the denominator is 1e-6, not 0)."""
    qkv, _, positional = make_inputs(batch, tokens, heads, dim, seed=seed, scale=scale)
    channels = heads * dim
    qkv[:, :, :channels] = -np.abs(qkv[:, :, :channels]) - 0.01
    out = native.sla(qkv, positional, heads)
    assert np.isfinite(out).all()
    assert np.max(np.abs(out)) <= 1e-6


@PROPERTY
@given(**dims)
def test_property_sla_rows_stay_within_the_range_of_v(batch, tokens, heads, dim, scale, seed):
    """out[n] = sum_m w[n, m] v[m] / (sum_m w[n, m] + 1e-6) with w >= 0: between min and max of v (and 0)."""
    qkv, _, positional = make_inputs(batch, tokens, heads, dim, seed=seed, scale=scale)
    channels = heads * dim
    out = native.sla(qkv, positional, heads).reshape(batch, tokens, heads, dim)
    v = qkv[:, :, 2 * channels:].reshape(batch, tokens, heads, dim)
    lo = np.minimum(v.min(axis=1, keepdims=True), 0.0)  # over tokens, per channel
    hi = np.maximum(v.max(axis=1, keepdims=True), 0.0)
    slack = 1e-6 * np.maximum(np.abs(lo), np.abs(hi)) * tokens + 1e-7
    assert np.all(out >= lo - slack) and np.all(out <= hi + slack)


# --- NaN and inf ----------------------------------------------------------------------------

@pytest.mark.parametrize("part", ["q", "k", "v"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nan_and_inf_propagate_without_crashing(part, value):
    """One non-finite input: no exception, non-finite exactly where the reference is, the rest in parity."""
    batch, tokens, heads, dim = 2, 9, 3, 13
    qkv, temperature, positional = make_inputs(batch, tokens, heads, dim, seed=6)
    channels = heads * dim
    column = {"q": 0, "k": channels, "v": 2 * channels}[part] + dim + 2  # head 1
    qkv[1, 4, column] = value
    xca = native.xca(qkv, temperature, heads)
    sla = native.sla(qkv, positional, heads)
    with np.errstate(invalid="ignore"):
        for out, ref in ((xca, ref_xca(qkv, temperature, heads)), (sla, ref_sla(qkv, positional, heads))):
            assert out.shape == (batch, tokens, channels)
            if np.isnan(value):
                assert np.isnan(out).any(), "a NaN input must not vanish"
            np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref))
            finite = np.isfinite(ref)
            assert max_abs(out[finite], ref[finite]) <= ATOL
            # the other batch item and the other heads are untouched
            assert np.isfinite(out[0]).all()
            assert np.isfinite(out[1, :, :dim]).all() and np.isfinite(out[1, :, 2 * dim:]).all()


def test_nan_in_positional_and_temperature_propagates():
    batch, tokens, heads, dim = 1, 5, 2, 7
    qkv, temperature, positional = make_inputs(batch, tokens, heads, dim, seed=8)
    positional[2, 3] = np.nan
    assert np.isnan(native.sla(qkv, positional, heads)).any()
    temperature[1] = np.nan
    assert np.isnan(native.xca(qkv, temperature, heads)).any()


def test_nan_everywhere_is_nan_everywhere():
    qkv = np.full((2, 3, 3 * 2 * 5), np.nan, np.float32)
    assert np.isnan(native.xca(qkv, np.ones(2, np.float32), 2)).all()
    assert np.isnan(native.sla(qkv, np.zeros((3, 10), np.float32), 2)).all()


# --- the portable (baseline) build -------------------------------------------------------------

NARROW_BUILD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from edgevit import _native
    from edgevit.models.edgenext_layers import cross_covariance_attention
    from edgevit.models.slab_layers import simplified_linear_attention

    assert _native.isa() == sys.argv[2], _native.isa()
    worst = 0.0
    for batch, tokens, heads, dim in [(1, 1, 1, 1), (2, 3, 7, 13), (1, 49, 4, 64), (3, 21, 8, 3),
                                      (2, 63, 3, 73), (1, 17, 2, 33), (2, 9, 5, 22)]:
        rng = np.random.default_rng(batch * tokens + dim)
        C = heads * dim
        qkv = rng.standard_normal((batch, tokens, 3 * C)).astype(np.float32)
        temperature = rng.uniform(0.25, 2.5, heads).astype(np.float32)
        positional = (rng.standard_normal((tokens, C)) * 0.5).astype(np.float32)
        for threads in (1, 2):
            out = np.empty((batch, tokens, C), np.float32)
            _native.xca(qkv, temperature, out, heads, threads)
            ref = cross_covariance_attention(torch.from_numpy(qkv).double(),
                                             torch.from_numpy(temperature).double(), heads).numpy()
            worst = max(worst, float(np.abs(out - ref).max()))
            out = np.empty((batch, tokens, C), np.float32)
            _native.sla(qkv, positional, out, heads, threads)
            ref = simplified_linear_attention(torch.from_numpy(qkv).double(),
                                              torch.from_numpy(positional).double(), heads).numpy()
            worst = max(worst, float(np.abs(out - ref).max()))
    from edgevit.models.fmvit import pooled_attention
    for batch, heads, dim, tokens, keys in [(1, 1, 8, 1, 1), (2, 3, 16, 45, 7), (1, 2, 32, 300, 49), (2, 1, 5, 17, 3)]:
        rng = np.random.default_rng(tokens + keys)
        C = heads * dim
        q = (rng.standard_normal((batch, C, tokens)) / np.sqrt(dim)).astype(np.float32)
        kv = rng.standard_normal((batch, 2 * C, keys)).astype(np.float32)
        ref = pooled_attention(torch.from_numpy(q).double().reshape(batch, C, tokens, 1),
                               torch.from_numpy(kv).double().reshape(batch, 2 * C, keys, 1), heads)
        for threads in (1, 2):
            out = np.empty_like(q)
            _native.rlmhsa(q, kv, out, heads, threads)
            worst = max(worst, float(np.abs(out - ref.reshape(q.shape).numpy()).max()))
    assert worst <= 1e-5, worst
    np.save(sys.argv[1], np.array([worst]))
    print("build ok", sys.argv[2], worst)
""")


NARROWER = {"avx512": ("avx2", "baseline"), "avx2": ("baseline",), "baseline": ()}


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_narrower_builds_match_the_reference(isa, tmp_path):
    """The builds this CPU does not pick by default, forced with EDGEVIT_NATIVE_ISA."""
    if isa not in NARROWER[_native.isa()]:
        pytest.skip(f"the {isa} build is not a narrower one on this CPU ({_native.isa()})")
    env = dict(os.environ, EDGEVIT_NATIVE_ISA=isa)
    result = tmp_path / "worst.npy"
    proc = subprocess.run([sys.executable, "-c", NARROW_BUILD_SCRIPT, str(result), isa], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "build ok" in proc.stdout
    assert float(np.load(result)[0]) <= ATOL


def test_baseline_and_default_isa_agree(tmp_path):
    """The same inputs through the portable build (in a subprocess) and the default one (here)."""
    qkv, temperature, positional = make_inputs(2, 37, 3, 21, seed=12)
    np.save(tmp_path / "qkv.npy", qkv)
    np.save(tmp_path / "t.npy", temperature)
    np.save(tmp_path / "p.npy", positional)
    script = textwrap.dedent(f"""
        import numpy as np
        from edgevit import _native
        assert _native.isa() == "baseline"
        d = {str(tmp_path)!r}
        qkv, t, p = (np.load(f"{{d}}/{{n}}.npy") for n in ("qkv", "t", "p"))
        out = np.empty((2, 37, 63), np.float32)
        _native.xca(qkv, t, out, 3, 1)
        np.save(f"{{d}}/xca.npy", out)
        out = np.empty((2, 37, 63), np.float32)
        _native.sla(qkv, p, out, 3, 1)
        np.save(f"{{d}}/sla.npy", out)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, EDGEVIT_NATIVE_ISA="baseline"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert max_abs(np.load(tmp_path / "xca.npy"), native.xca(qkv, temperature, 3)) <= ATOL
    assert max_abs(np.load(tmp_path / "sla.npy"), native.sla(qkv, positional, 3)) <= ATOL


# --- RLMHSA (FMViT's attention over pooled keys) ---------------------------------------------

def ref_rlmhsa(q, kv, heads):
    """pooled_attention in float64, on (B, C, N) / (B, 2C, M) as 1-pixel-wide grids."""
    out = pooled_attention(torch.from_numpy(q).double()[..., None], torch.from_numpy(kv).double()[..., None], heads)
    return out[..., 0].numpy()


def raw_rlmhsa(q, kv, heads, threads=1):
    out = np.empty_like(q)
    _native.rlmhsa(q, kv, out, heads, threads)
    return out


# (batch, heads, head_dim, tokens, keys): head widths 8/16/32 (the zoo's) and odd ones, token
# counts below, at and across the 16-query groups and 128-query blocks, odd key counts, batch > 1
POOLED_SHAPES = [
    (1, 1, 8, 1, 1), (1, 1, 8, 3136, 49), (2, 3, 8, 785, 49), (1, 2, 16, 197, 49), (3, 4, 16, 49, 49),
    (2, 1, 32, 129, 13), (1, 8, 32, 31, 50), (2, 2, 8, 15, 4), (1, 3, 16, 17, 1), (2, 5, 3, 33, 7),
    (1, 1, 13, 255, 9), (4, 2, 1, 16, 2), (1, 24, 16, 49, 49), (2, 6, 16, 196, 49),
]


def pooled_id(shape):
    return "B{}-H{}-d{}-N{}-M{}".format(*shape)


@pytest.mark.parametrize("shape", POOLED_SHAPES, ids=pooled_id)
def test_rlmhsa_matches_the_float64_reference(shape):
    batch, heads, dim, tokens, keys = shape
    q, kv = make_pooled_inputs(*shape, seed=sum(shape))
    out = native.rlmhsa(q, kv, heads)
    assert out.shape == q.shape and out.dtype == np.float32
    assert max_abs(out, ref_rlmhsa(q, kv, heads)) <= ATOL


@pytest.mark.parametrize("shape", POOLED_SHAPES[1:4] + POOLED_SHAPES[9:11], ids=pooled_id)
def test_rlmhsa_threads_give_bitwise_identical_results(shape):
    heads = shape[1]
    q, kv = make_pooled_inputs(*shape, seed=3)
    one = raw_rlmhsa(q, kv, heads, 1)
    for threads in (2, 3, 0):
        np.testing.assert_array_equal(raw_rlmhsa(q, kv, heads, threads), one)
    assert max_abs(one, ref_rlmhsa(q, kv, heads)) <= ATOL


def test_rlmhsa_takes_grids_and_large_scores():
    """(B, C, H, W) grids through the wrapper; scores in the hundreds (a sharp softmax) stay exact."""
    q, kv = make_pooled_inputs(2, 2, 16, 64, 16, seed=4, scale=30.0)
    out = native.rlmhsa(q.reshape(2, 32, 8, 8), kv.reshape(2, 64, 4, 4), 2)
    assert out.shape == (2, 32, 8, 8)
    ref = ref_rlmhsa(q, kv, 2)
    assert max_abs(out.reshape(q.shape), ref) <= ATOL * max(1.0, float(np.abs(ref).max()))


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), heads=st.integers(1, 4), dim=st.sampled_from([1, 3, 8, 16, 24, 32]),
       tokens=st.integers(1, 300), keys=st.integers(1, 60), seed=st.integers(0, 2 ** 16))
def test_property_rlmhsa_parity_and_convexity(batch, heads, dim, tokens, keys, seed):
    """Parity, and each output is a convex combination of its head's values (within rounding)."""
    q, kv = make_pooled_inputs(batch, heads, dim, tokens, keys, seed=seed)
    out = native.rlmhsa(q, kv, heads)
    assert max_abs(out, ref_rlmhsa(q, kv, heads)) <= ATOL
    v = kv[:, heads * dim:]  # (B, C, M)
    slack = 1e-5
    assert np.all(out >= v.min(axis=2, keepdims=True) - slack) and np.all(out <= v.max(axis=2, keepdims=True) + slack)


@pytest.mark.parametrize("part", ["q", "k", "v"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_rlmhsa_nan_and_inf_propagate_as_in_the_reference(part, value):
    batch, heads, dim, tokens, keys = 2, 3, 8, 40, 7
    q, kv = make_pooled_inputs(batch, heads, dim, tokens, keys, seed=6)
    channels = heads * dim
    if part == "q":
        q[1, dim + 2, 21] = value  # head 1, token 21
    else:
        kv[1, (0 if part == "k" else channels) + dim + 2, 3] = value  # head 1, key 3
    out = native.rlmhsa(q, kv, heads)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = ref_rlmhsa(q, kv, heads)
    np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref))
    finite = np.isfinite(ref)
    assert max_abs(out[finite], ref[finite]) <= ATOL
    assert np.isfinite(out[0]).all() and np.isfinite(out[1, :dim]).all() and np.isfinite(out[1, 2 * dim:]).all()
