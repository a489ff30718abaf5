"""The package's structure, read from its own imports (docs/architecture.md draws it):

- no import circle between edgevit's modules, counting imports inside functions too;
- no import from a lower layer up (the table below, bottom first);
- an import inside a function only where it keeps an optional dependency (torch, onnx,
  coremltools, ray, ...) off the device path, with a comment saying so; the entry points
  (``edgevit/__init__``, the CLI commands) defer imports for start-up time and say so once;
- no module over about 400 lines.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"sdk": "edgevit", "exporters": "edgevit.exporters", "runtimes": "edgevit.runtimes"}

# bottom first: a module may import its own layer and the layers below it, never above
LAYERS = (
    ("foundation", ("edgevit._version", "edgevit.errors", "edgevit.optional", "edgevit.paths", "edgevit.quiet")),
    ("artifact contract", ("edgevit.artifact",)),
    ("reparam and forms", ("edgevit.reparam",)),
    ("models", ("edgevit.models",)),
    ("native", ("edgevit.native", "edgevit._native")),
    ("runtimes", ("edgevit.runtimes",)),
    ("int8", ("edgevit.int8",)),
    ("exporters", ("edgevit.exporters",)),
    ("export pipeline", ("edgevit.pipeline",)),
    ("apps and inspection", ("edgevit.apps", "edgevit.inspect")),
    ("edvit", ("edgevit.edvit",)),
    ("api", ("edgevit.api",)),
    ("cli", ("edgevit.cli",)),
    ("package", ("edgevit", "edgevit.__main__")),
)
# third-party modules that a device (the torch-free install) may lack: importing one at the top
# of a module makes that module, and everything importing it at the top, "heavy"
OPTIONAL = {"torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime_extensions", "coremltools", "litert_torch",
            "ai_edge_litert", "ai_edge_quantizer", "tflite_runtime", "ray", "sklearn", "yaml", "matplotlib",
            "mediapipe", "flatbuffers", "safetensors", "cv2", "picamera2"}
# modules that defer light imports on purpose, for start-up time (said in their docstrings)
DEFERRING = ("edgevit", "edgevit.cli")
MAX_LINES = 420


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported edgevit module, or a third-party top-level name
    line: int
    top_level: bool  # at module level (not inside a function or TYPE_CHECKING)
    commented: bool  # a comment on the import's line says why


def module_files() -> dict[str, Path]:
    """Every module of the package, by its import name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: set[str]) -> list[Import]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def resolve(module: str, level: int) -> str:
        if not level:
            return module
        base = package.split(".")[: len(package.split(".")) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # never runs
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.Import):
                    targets = [alias.name for alias in child.names]
                else:
                    base = resolve(child.module or "", child.level)
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names]
                commented = _says_why(lines[child.end_lineno - 1])
                for target in dict.fromkeys(targets):
                    if target.startswith("edgevit"):
                        while target not in modules and "." in target:
                            target = target.rpartition(".")[0]
                    else:
                        target = target.split(".")[0]
                    found.append(Import(name, target, child.lineno, top, commented))
            visit(child, inner)

    visit(ast.parse(text), True)
    return found


def _says_why(line: str) -> bool:
    """The line carries a comment with words of its own (a bare ``# noqa: F401`` says nothing)."""
    comment = line.partition("#")[2]
    return any(ch.isalpha() for ch in re.sub(r"noqa(:\s*[A-Z]+[0-9]+(,\s*[A-Z]+[0-9]+)*)?", "", comment))


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    files = module_files()
    modules = set(files) | {"edgevit._native"}
    return [imp for name, path in files.items() for imp in _imports(name, path, modules)]


def layer_of(module: str) -> int:
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_only = prefix == "edgevit"
            if (module == prefix or (not exact_only and module.startswith(prefix + "."))) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)"
    return best


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a list."""
    sys.setrecursionlimit(10000)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_no_import_circle(imports):
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target.startswith("edgevit") and imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
    assert _cycles(edges) == []


def test_no_import_from_a_lower_layer_up(imports):
    upward = [f"{imp.source}:{imp.line} imports {imp.target} ({LAYERS[layer_of(imp.source)][0]} -> "
              f"{LAYERS[layer_of(imp.target)][0]})"
              for imp in imports if imp.target.startswith("edgevit") and layer_of(imp.target) > layer_of(imp.source)]
    assert upward == []


def test_exporters_and_runtimes_never_import_the_cli_or_the_api(imports):
    bad = [imp for imp in imports if imp.source.startswith(("edgevit.exporters", "edgevit.runtimes"))
           and imp.target.startswith(("edgevit.cli", "edgevit.api"))]
    assert bad == []


def _heavy(imports: list[Import]) -> set[str]:
    """edgevit modules that import an optional dependency at their top, directly or through
    another edgevit module (a package's __init__ counts for its submodules)."""
    top: dict[str, set[str]] = {}
    for imp in imports:
        if imp.top_level:
            top.setdefault(imp.source, set()).add(imp.target)
    heavy = {source for source, targets in top.items() if targets & OPTIONAL}
    changed = True
    while changed:
        changed = False
        for source, targets in top.items():
            parents = {source.rsplit(".", n)[0] for n in range(1, source.count("."))}
            if source not in heavy and (targets & heavy or parents & heavy):
                heavy.add(source)
                changed = True
    return heavy


def test_imports_inside_functions_keep_optional_dependencies_off_the_device_path(imports):
    heavy = _heavy(imports)
    deferred = [imp for imp in imports if not imp.top_level and imp.target.startswith("edgevit")
                and not imp.source.startswith(DEFERRING[1]) and imp.source != DEFERRING[0]]
    light = [f"{imp.source}:{imp.line} imports {imp.target} inside a function, but it is light: import it at the top"
             for imp in deferred if imp.target not in heavy]
    unsaid = [f"{imp.source}:{imp.line} imports {imp.target} inside a function without a comment saying why"
              for imp in deferred if not imp.commented]
    assert light + unsaid == []


def test_the_device_path_is_light(imports):
    """What a torch-free install runs (load, run, inspect, predict, bundle, the board demos,
    a split plan's runner) imports no optional dependency at its top."""
    heavy = _heavy(imports)
    device = ["edgevit", "edgevit.api", "edgevit.cli.main", "edgevit.runtimes.loader", "edgevit.runtimes.onnxruntime",
              "edgevit.runtimes.litert", "edgevit.runtimes.coreml", "edgevit.apps.predict", "edgevit.apps.bundle",
              "edgevit.apps.frames", "edgevit.inspect.artifact", "edgevit.inspect.bench", "edgevit.edvit.runner",
              "edgevit.edvit.worker", "edgevit.native", "edgevit.models.registry"]
    assert [name for name in device if name in heavy] == []


def test_no_module_over_about_400_lines():
    long = {name: n for name, path in module_files().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_module_is_in_a_layer():
    for name in module_files():
        layer_of(name)
