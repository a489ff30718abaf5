"""What the board-demo tests share: the demos' paths and readers of their output (the
``frames`` folder they run on is a fixture in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import CliResult, run_cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PI_DEMO = EXAMPLES / "raspberry_pi" / "demo.py"
JETSON_DEMO = EXAMPLES / "jetson" / "demo.py"


def demo_output(result: CliResult) -> tuple[list[dict], dict]:
    """Per-frame JSON lines and the summary of a ``--json`` demo run."""
    assert result.code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def assert_demo_failure(result: CliResult, contains: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("demo: error:") and contains in lines[0], lines[0]


def predicted(artifact: Path, image: Path) -> list[int]:
    """The workstation's ``edgevit predict`` top-3 classes for ``image``."""
    result = run_cli("--json", "predict", str(artifact), str(image), "--top-k", "3")
    assert result.code == 0, result.stderr
    return [row["class"] for row in json.loads(result.stdout)["top"]]
