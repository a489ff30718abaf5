"""edgevit.benchmark as users call it: from a plain script, each artifact in its own process."""

from __future__ import annotations

import json
import subprocess
import sys


def test_benchmark_from_an_unguarded_script_runs_the_script_once(artifacts, tmp_path):
    """No ``if __name__ == "__main__":`` guard: the workers must not run the caller's script again."""
    runs = tmp_path / "runs.txt"
    script = tmp_path / "bench_me.py"
    script.write_text(
        "import edgevit\n"
        f"open({str(runs)!r}, 'a').write('ran\\n')\n"
        f"report = edgevit.benchmark([{str(artifacts['onnx'])!r}, {str(artifacts['tflite'])!r}], runs=2, warmup=0)\n"
        "import json; print(json.dumps([r.median_ms for r in report.rows]))\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert runs.read_text() == "ran\n"  # once: in this process only
    assert all(ms > 0 for ms in json.loads(proc.stdout))


def test_a_worker_that_dies_is_one_clear_error(artifacts, tmp_path, monkeypatch):
    import edgevit
    from edgevit.inspect import bench

    monkeypatch.setattr(bench.sys, "executable", str(tmp_path / "no-python"))
    try:
        edgevit.benchmark([artifacts["onnx"]], runs=1)
    except edgevit.EdgeVitError as exc:
        assert "benchmark worker" in str(exc)
    else:
        raise AssertionError("expected an EdgeVitError")
