"""libedgevit_ort.so: edgevit's attention as ONNX Runtime custom ops (ai.edgevit domain).

- ``--native-ops`` exports of a small EdgeNeXt, SLAB-DeiT and FMViT match the standard
  exports within 1e-5, through edgevit.load and through a bare ONNX Runtime session;
- a fresh process that imports only onnxruntime and numpy runs them (no Python in the loop);
- FMViT's attention is one RLMHSA node per block (fmvit_t and fmvit_s exported, the larger
  sizes traced to the program the export translates);
- hostile single-node graphs fail the run with a clear status, never a crash;
- a file whose domain nobody serves fails at load with one line naming it.

Skipped when the library is not built, except under CI=true, where it must be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import edgevit
from edgevit.native import ort_library

from .conftest import assert_clean_failure, run_cli
from .native_cases import CUSTOM_OP
from .ort_custom_ops import EXPECTED

LIBRARY = ort_library.path()
if LIBRARY is None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {ort_library.FILE_NAME} is not built: {ort_library.status().reason}", pytrace=False)
    pytest.skip(f"{ort_library.FILE_NAME} is not built: {ort_library.status().reason}", allow_module_level=True)
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ATOL = 1e-5


def bare_session(path, library=LIBRARY, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if library is not None:
        options.register_custom_ops_library(str(library))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def inputs_for(model, count=3, seed=0):
    return np.random.default_rng(seed).standard_normal((count, *model.input_size)).astype(np.float32)


@pytest.mark.parametrize("family", CUSTOM_OP)
def test_native_ops_export_is_one_node_per_attention(native_exports, family):
    from edgevit.native.torch_ops import attention_modules

    model, standard, native = native_exports[family]
    assert native.written and native.parity.max_abs_err < ATOL
    graph = onnx.load(str(native.path)).graph
    custom = [n for n in graph.node if n.domain == "ai.edgevit"]
    assert [n.op_type for n in custom] == [CUSTOM_OP[family]] * len(attention_modules(model))
    assert all(a.name == "heads" for n in custom for a in n.attribute)
    assert not any(n.domain == "ai.edgevit" for n in onnx.load(str(standard.path)).graph.node)


@pytest.mark.parametrize("family", CUSTOM_OP)
def test_native_ops_artifact_matches_the_standard_one(native_exports, family):
    """Through edgevit.load (which registers the library) at 1 and 2 threads, and a bare session."""
    model, standard, native = native_exports[family]
    x = inputs_for(model)
    want = np.concatenate([edgevit.load(standard.path).run(x[i:i + 1]) for i in range(len(x))])
    for threads in (1, 2):
        runtime = edgevit.load(native.path, threads=threads)
        got = np.concatenate([runtime.run(x[i:i + 1]) for i in range(len(x))])
        assert np.abs(got - want).max() <= ATOL
    session = bare_session(native.path)
    got = np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.abs(got - want).max() <= ATOL
    # the attention matters in these models: a wrong kernel would show (layer scales at 1)
    assert np.abs(want[0] - want[1]).max() > 1e-3


NO_EDGEVIT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import onnxruntime as ort

    library, pairs, x_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    x = np.load(x_path)
    worst = {}
    for family, (standard, native) in pairs.items():
        plain = ort.InferenceSession(standard, providers=["CPUExecutionProvider"])
        options = ort.SessionOptions()
        options.register_custom_ops_library(library)
        custom = ort.InferenceSession(native, options, providers=["CPUExecutionProvider"])
        name = plain.get_inputs()[0].name
        feed = x[family]
        worst[family] = max(float(np.abs(custom.run(None, {name: feed[i:i + 1]})[0]
                                         - plain.run(None, {name: feed[i:i + 1]})[0]).max()) for i in range(len(feed)))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("edgevit", "torch", "onnxruntime_extensions"))
    print(json.dumps({"worst": worst, "loaded": loaded}))
""")


def test_a_process_without_edgevit_runs_the_files(native_exports, tmp_path):
    """No Python in the loop: onnxruntime and numpy only, the library registered by path."""
    pairs = {family: (str(standard.path), str(native.path)) for family, (_, standard, native) in native_exports.items()}
    x_path = tmp_path / "x.npz"
    np.savez(x_path, **{family: inputs_for(model, 2, seed=5) for family, (model, _, _) in native_exports.items()})
    proc = subprocess.run([sys.executable, "-I", "-c", NO_EDGEVIT, str(LIBRARY), json.dumps(pairs), str(x_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert set(result["worst"]) == set(CUSTOM_OP) and max(result["worst"].values()) <= ATOL, result


def test_the_example_app_runs_a_native_file(native_exports, tmp_path):
    """examples/onnxruntime_custom_ops.py: what the docs show an app doing."""
    _, standard, native = native_exports["fmvit"]
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "onnxruntime_custom_ops.py")
    proc = subprocess.run([sys.executable, "-I", example, str(native.path), "--library", str(LIBRARY),
                           "--compare", str(standard.path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max abs difference" in proc.stdout and "edgevit" not in proc.stderr


@pytest.mark.parametrize("size", ["fmvit_t", "fmvit_s"])
def test_fmvit_exports_rlmhsa_as_single_nodes(size, tmp_path):
    """Head widths 8 (t) and 16 (s), through the whole --native-ops export, which verifies
    against PyTorch on the way."""
    from edgevit.models.fmvit import RLMHSA

    result = edgevit.export(size, "onnx", tmp_path, native_ops=True, image_size=64, num_inputs=1)
    assert result.written and result.parity.max_abs_err < 1e-4
    blocks = sum(isinstance(m, RLMHSA) for m in edgevit.create_model(size).modules())
    graph = onnx.load(str(result.path)).graph
    assert [n.op_type for n in graph.node if n.domain == "ai.edgevit"] == ["RLMHSA"] * blocks
    assert not any(n.op_type == "Softmax" for n in graph.node)


@pytest.mark.parametrize("size", ["fmvit_m", "fmvit_b", "fmvit_l"])
def test_the_larger_fmvit_sizes_trace_to_one_op_per_attention(size):
    """Head widths 16 (m) and 32 (b, l): the program the --native-ops export translates (each
    edgevit::rlmhsa op becomes one ai.edgevit::RLMHSA node, as the two sizes above show) has one
    op per attention block and no softmax left (their full exports cost 10-20 s each)."""
    import torch

    from edgevit.native.torch_ops import attention_modules, attention_path

    model = edgevit.reparameterize(edgevit.create_model(size).eval())
    with attention_path(model, native_ops=True):
        program = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count("edgevit.rlmhsa.default") == len(attention_modules(model)) > 0
    assert not any("softmax" in t for t in targets)


# --- single-node graphs: hostile inputs get a clear status, never a crash; parity -------------

CUSTOM_OPS_SCRIPT = os.path.join(os.path.dirname(__file__), "ort_custom_ops.py")


def test_hostile_inputs_fail_the_run_with_a_clear_status_and_the_ops_match_float64():
    proc = subprocess.run([sys.executable, CUSTOM_OPS_SCRIPT, str(LIBRARY)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"the process died ({proc.returncode}): {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["hostile"]) == set(EXPECTED)
    for name, fragment in EXPECTED.items():
        assert fragment in result["hostile"][name], (name, result["hostile"][name])
    assert max(result["parity"].values()) <= ATOL, result["parity"]


# --- where the library is missing ---------------------------------------------------------------

def test_a_bare_session_without_the_library_names_the_domain(native_exports):
    with pytest.raises(Exception, match="ai.edgevit"):
        bare_session(native_exports["slab"][2].path, library=None)


def test_edgevit_without_any_path_fails_at_load_with_one_line(native_exports):
    """Neither the library nor the kernels (EDGEVIT_NATIVE=0): one line naming the domain."""
    path = native_exports["fmvit"][2].path
    result = run_cli("info", str(path), env={"EDGEVIT_NATIVE": "0"})
    assert_clean_failure(result, contains="ai.edgevit")
    assert ort_library.FILE_NAME in result.stderr


def test_a_library_path_that_is_not_a_library_is_one_clear_line(native_exports, tmp_path):
    fake = tmp_path / "libedgevit_ort.so"
    fake.write_bytes(b"not an ELF file")
    result = run_cli("info", str(native_exports["edgenext"][2].path), env={"EDGEVIT_ORT_LIBRARY": str(fake)})
    assert_clean_failure(result, contains=f"cannot load {fake}")


def test_info_native_names_the_library():
    result = run_cli("--json", "info", "--native")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["ort_library"] == str(LIBRARY) and info["onnx_runtime"].startswith(ort_library.FILE_NAME)
    fallback = json.loads(run_cli("--json", "info", "--native", env={"EDGEVIT_ORT_LIBRARY": "0"}).stdout)
    assert fallback["ort_library"] is None and fallback["ort_library_reason"] == "EDGEVIT_ORT_LIBRARY=0"
    assert "onnxruntime-extensions" in fallback["onnx_runtime"]


def test_the_library_links_nothing_of_onnx_runtime_and_exports_only_its_entry_point():
    import shutil

    if shutil.which("readelf") is None or shutil.which("nm") is None:
        pytest.skip("binutils (readelf, nm) are not installed")
    needed = subprocess.run(["readelf", "-d", str(LIBRARY)], capture_output=True, text=True, check=True).stdout
    assert "NEEDED" in needed and "onnxruntime" not in needed
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(LIBRARY)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    functions = [line.split()[-1] for line in symbols if line.split()[1] == "T"]
    assert functions == ["RegisterCustomOps"], functions
