"""Every Python package in the source tree ships in the wheel (pyproject's package list)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for package, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            name = ".".join([package, *relative.parts])
            if any(name.startswith(p + ".") or name == p for p in config["package-dir"] if p != package
                   and p.startswith(package + ".")):
                continue  # mapped to its own folder
            assert name in listed, f"{name} ({init.parent}) is missing from [tool.setuptools] packages"
