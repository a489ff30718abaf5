"""edgevit._native and its edgevit.native wrappers on bad input: every bad dtype, rank,
shape, view, overlap or size is a Python exception (raw bindings: ValueError/TypeError;
edgevit.native: InputError), never a crash, and the output is left untouched.

Skipped when the extension is not built, except under CI=true, where a missing extension fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgevit import native
from edgevit.errors import InputError

from .native_cases import kernels_or_skip, make_inputs

_native = kernels_or_skip()
torch = pytest.importorskip("torch")


# --- bad inputs: raw bindings ------------------------------------------------------------------

B, N, H, D = 2, 5, 2, 3
C = H * D


def good():
    qkv, temperature, positional = make_inputs(B, N, H, D, seed=9)
    return qkv, temperature, positional, np.zeros((B, N, C), np.float32)


def _raw_cases():
    """(name, op, kwargs overriding the good arguments, expected exception types)."""
    qkv, temperature, positional, out = good()
    flat = np.zeros(B * N * 3 * C + B * N * C, np.float32)
    shared = flat[:B * N * 3 * C].reshape(B, N, 3 * C)
    readonly = np.zeros((B, N, C), np.float32)
    readonly.flags.writeable = False
    cases = [
        ("float64 qkv", dict(qkv=qkv.astype(np.float64)), TypeError),
        ("int32 qkv", dict(qkv=qkv.astype(np.int32)), TypeError),
        ("int64 qkv", dict(qkv=qkv.astype(np.int64)), TypeError),
        ("float16 qkv", dict(qkv=qkv.astype(np.float16)), TypeError),
        ("float64 out", dict(out=out.astype(np.float64)), TypeError),
        ("2-D qkv", dict(qkv=qkv[0]), TypeError),
        ("4-D qkv", dict(qkv=qkv[None]), TypeError),
        ("list qkv", dict(qkv=qkv.tolist()), TypeError),
        ("None qkv", dict(qkv=None), TypeError),
        ("3C not 3 x heads x d", dict(qkv=np.zeros((B, N, 3 * C + 3), np.float32),
                                      out=np.zeros((B, N, C + 1), np.float32)), ValueError),
        ("width not a multiple of 3", dict(qkv=np.zeros((B, N, 3 * C + 1), np.float32)), ValueError),
        ("heads 0", dict(heads=0), ValueError),
        ("heads negative", dict(heads=-2), ValueError),
        ("heads not dividing", dict(heads=4), ValueError),
        ("out wrong channels", dict(out=np.zeros((B, N, C + 1), np.float32)), ValueError),
        ("out wrong tokens", dict(out=np.zeros((B, N - 1, C), np.float32)), ValueError),
        ("out wrong batch", dict(out=np.zeros((B + 1, N, C), np.float32)), ValueError),
        ("out 2-D", dict(out=np.zeros((N, C), np.float32)), TypeError),
        ("out read-only", dict(out=readonly), TypeError),
        ("transposed qkv view", dict(qkv=np.zeros((B, 3 * C, N), np.float32).transpose(0, 2, 1)), TypeError),
        ("strided qkv view", dict(qkv=np.zeros((B, N, 6 * C), np.float32)[:, :, ::2]), TypeError),
        ("non-contiguous out", dict(out=np.zeros((B, N, 2 * C), np.float32)[:, :, ::2]), TypeError),
        ("out overlapping qkv", dict(qkv=shared, out=flat[:B * N * C].reshape(B, N, C)), ValueError),
        ("out inside qkv's tail", dict(qkv=shared, out=flat[B * N * 3 * C - 1:][:B * N * C].reshape(B, N, C)),
         ValueError),
        ("out is qkv's storage", dict(qkv=flat[:B * N * 3 * C].reshape(B, N, 3 * C),
                                      out=flat[2 * B * N * C:3 * B * N * C].reshape(B, N, C)), ValueError),
        ("empty batch", dict(qkv=np.zeros((0, N, 3 * C), np.float32), out=np.zeros((0, N, C), np.float32)),
         ValueError),
        ("empty tokens", dict(qkv=np.zeros((B, 0, 3 * C), np.float32), out=np.zeros((B, 0, C), np.float32)),
         ValueError),
        ("empty channels", dict(qkv=np.zeros((B, N, 0), np.float32), out=np.zeros((B, N, 0), np.float32)),
         ValueError),
    ]
    return cases


RAW_CASES = _raw_cases()


@pytest.mark.parametrize("op", ["xca", "sla"])
@pytest.mark.parametrize("name, kwargs, expected", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_bindings_raise_on_bad_input(op, name, kwargs, expected):
    qkv, temperature, positional, out = good()
    args = dict(qkv=qkv, out=out, heads=H)
    args.update(kwargs)
    extra = temperature if op == "xca" else positional
    with pytest.raises(expected):
        getattr(_native, op)(args["qkv"], extra, args["out"], args["heads"], 1)


@pytest.mark.parametrize("temperature, expected", [
    (np.ones(H + 1, np.float32), ValueError),
    (np.ones(H - 1, np.float32), ValueError),
    (np.ones(H, np.float64), TypeError),
    (np.ones((H, 1), np.float32), TypeError),
    (np.ones(2 * H, np.float32)[::2], TypeError),
    (np.ones(0, np.float32), ValueError),
], ids=["too long", "too short", "float64", "2-D", "strided", "empty"])
def test_raw_xca_rejects_a_bad_temperature(temperature, expected):
    qkv, _, _, out = good()
    with pytest.raises(expected):
        _native.xca(qkv, temperature, out, H, 1)


@pytest.mark.parametrize("positional, expected", [
    (np.zeros((N + 1, C), np.float32), ValueError),
    (np.zeros((N, C + 1), np.float32), ValueError),
    (np.zeros((C, N), np.float32), ValueError),
    (np.zeros((1, N, C), np.float32), TypeError),
    (np.zeros(N * C, np.float32), TypeError),
    (np.zeros((N, C), np.float64), TypeError),
    (np.zeros((C, N), np.float32).T, TypeError),
    (np.zeros((0, C), np.float32), ValueError),
], ids=["too many tokens", "too many channels", "transposed shape", "3-D", "1-D", "float64",
        "transposed view", "empty"])
def test_raw_sla_rejects_a_bad_positional_table(positional, expected):
    qkv, _, _, out = good()
    with pytest.raises(expected):
        _native.sla(qkv, positional, out, H, 1)


def test_raw_bindings_leave_out_untouched_on_error():
    qkv, temperature, _, _ = good()
    out = np.full((B, N, C), 7.0, np.float32)
    with pytest.raises(ValueError):
        _native.xca(qkv, np.ones(H + 1, np.float32), out, H, 1)
    assert (out == 7.0).all()


# --- bad inputs: the edgevit.native wrappers -----------------------------------------------------

WRAPPER_CASES = [
    ("float64 qkv", lambda q: q.astype(np.float64), H),
    ("int32 qkv", lambda q: q.astype(np.int32), H),
    ("int64 qkv", lambda q: q.astype(np.int64), H),
    ("2-D qkv", lambda q: q[0], H),
    ("4-D qkv", lambda q: q[None], H),
    ("list qkv", lambda q: q.tolist(), H),
    ("torch tensor qkv", lambda q: torch.from_numpy(q), H),
    ("width not 3 x heads x d", lambda q: np.zeros((B, N, 3 * C + 3), np.float32), H),
    ("heads not dividing", lambda q: q, 4),
    ("heads 0", lambda q: q, 0),
    ("heads negative", lambda q: q, -1),
]


@pytest.mark.parametrize("op", ["xca", "sla"])
@pytest.mark.parametrize("name, edit, heads", WRAPPER_CASES, ids=[c[0] for c in WRAPPER_CASES])
def test_wrappers_raise_input_error(op, name, edit, heads):
    qkv, temperature, positional, _ = good()
    extra = temperature if op == "xca" else positional
    with pytest.raises(InputError):
        getattr(native, op)(edit(qkv), extra, heads)


@pytest.mark.parametrize("temperature", [np.ones(H + 1, np.float32), np.ones(0, np.float32)],
                         ids=["too long", "empty"])
def test_wrapper_xca_bad_temperature_raises_input_error(temperature):
    qkv, _, _, _ = good()
    with pytest.raises(InputError):
        native.xca(qkv, temperature, H)


@pytest.mark.parametrize("positional", [np.zeros((N + 1, C), np.float32), np.zeros((N, C + 1), np.float32)],
                         ids=["too many tokens", "too many channels"])
def test_wrapper_sla_bad_positional_raises_input_error(positional):
    qkv, _, _, _ = good()
    with pytest.raises(InputError):
        native.sla(qkv, positional, H)


@pytest.mark.parametrize("op", ["xca", "sla"])
@pytest.mark.parametrize("shape", [(0, N, 3 * C), (B, 0, 3 * C), (B, N, 0)], ids=["batch", "tokens", "channels"])
def test_wrapper_empty_qkv_raises_input_error(op, shape):
    _, temperature, positional, _ = good()
    extra = temperature if op == "xca" else np.zeros((shape[1], shape[2] // 3), np.float32)
    with pytest.raises(InputError):
        getattr(native, op)(np.zeros(shape, np.float32), extra, H)


def test_wrapper_accepts_a_positional_table_with_a_leading_1():
    """A (1, N, C) table, as torch keeps it, works; a transposed (C, N) one is refused."""
    qkv, _, positional, _ = good()
    np.testing.assert_array_equal(native.sla(qkv, positional[None], H), native.sla(qkv, positional, H))
    with pytest.raises(InputError, match="positional must have shape"):
        native.sla(qkv, np.ascontiguousarray(positional.T), H)


def test_head_widths_past_the_limit_are_refused_before_any_allocation():
    """XCA and SLA stage d x d per head: a 3-token input with d = 2^20 would ask for 8 TB."""
    wide = 1 << 20
    qkv = np.zeros((1, 3, 3 * wide), np.float32)
    out = np.zeros((1, 3, wide), np.float32)
    with pytest.raises(ValueError, match="head width 1048576 is above the kernels' limit of 1024"):
        _native.xca(qkv, np.ones(1, np.float32), out, 1, 1)
    with pytest.raises(ValueError, match="head width"):
        _native.sla(qkv, np.zeros((3, wide), np.float32), out, 1, 1)
    with pytest.raises(InputError, match="head width"):
        native.xca(qkv, np.ones(1, np.float32), 1)


# --- RLMHSA ------------------------------------------------------------------------------------

PH, PD, PN, PM = 2, 4, 7, 3  # heads, head width, tokens, keys
PC = PH * PD


def pooled_good():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((B, PC, PN)).astype(np.float32), rng.standard_normal((B, 2 * PC, PM)).astype(np.float32),
            np.zeros((B, PC, PN), np.float32))


def _pooled_cases():
    q, kv, out = pooled_good()
    flat = np.zeros(B * PC * PN * 2, np.float32)
    return [
        ("float64 q", dict(q=q.astype(np.float64)), TypeError),
        ("int32 kv", dict(kv=kv.astype(np.int32)), TypeError),
        ("4-D q", dict(q=q[None]), TypeError),
        ("2-D kv", dict(kv=kv[0]), TypeError),
        ("None q", dict(q=None), TypeError),
        ("transposed q view", dict(q=np.zeros((B, PN, PC), np.float32).transpose(0, 2, 1)), TypeError),
        ("heads 0", dict(heads=0), ValueError),
        ("heads negative", dict(heads=-1), ValueError),
        ("heads not dividing", dict(heads=3), ValueError),
        ("kv with C channels", dict(kv=kv[:, :PC].copy()), ValueError),
        ("kv of another batch", dict(kv=np.zeros((B + 1, 2 * PC, PM), np.float32)), ValueError),
        ("out of another shape", dict(out=np.zeros((B, PC, PN + 1), np.float32)), ValueError),
        ("empty tokens", dict(q=np.zeros((B, PC, 0), np.float32), out=np.zeros((B, PC, 0), np.float32)), ValueError),
        ("empty keys", dict(kv=np.zeros((B, 2 * PC, 0), np.float32)), ValueError),
        ("out overlapping q", dict(q=flat[:B * PC * PN].reshape(B, PC, PN), out=flat[B * PC * PN - 1:][:B * PC * PN]
                                    .reshape(B, PC, PN)), ValueError),
    ]


POOLED_CASES = _pooled_cases()


@pytest.mark.parametrize("name, kwargs, expected", POOLED_CASES, ids=[c[0] for c in POOLED_CASES])
def test_raw_rlmhsa_raises_on_bad_input_and_leaves_out_untouched(name, kwargs, expected):
    q, kv, out = pooled_good()
    args = dict(q=q, kv=kv, out=out, heads=PH)
    args.update(kwargs)
    before = args["out"].copy() if isinstance(args["out"], np.ndarray) else None
    with pytest.raises(expected):
        _native.rlmhsa(args["q"], args["kv"], args["out"], args["heads"], 1)
    if before is not None and name != "out overlapping q":
        np.testing.assert_array_equal(args["out"], before)


@pytest.mark.parametrize("q, kv, heads, match", [
    (np.zeros((B, PC, PN), np.float64), np.zeros((B, 2 * PC, PM), np.float32), PH, "float32"),
    (np.zeros((PC, PN), np.float32), np.zeros((B, 2 * PC, PM), np.float32), PH, "float32 array of shape"),
    (np.zeros((B, PC, PN), np.float32), np.zeros((B, PC, PM), np.float32), PH, "kv must have batch"),
    (np.zeros((B, PC, PN), np.float32), np.zeros((B, 2 * PC, PM), np.float32), 3, "heads x head_dim"),
    (np.zeros((B, PC, 0), np.float32), np.zeros((B, 2 * PC, PM), np.float32), PH, "is empty"),
], ids=["float64", "2-D", "kv channels", "heads", "empty"])
def test_wrapper_rlmhsa_raises_input_error(q, kv, heads, match):
    with pytest.raises(InputError, match=match):
        native.rlmhsa(q, kv, heads)
