"""The package's layers, checked on its import graph.

Every ``import`` statement of every module counts, at module level or inside a
function (a function-level import is still a dependency; it must not hide a cycle).
Imports under ``if TYPE_CHECKING:`` are left out: they never run.

The rules:
- no import cycle between the package's modules;
- only ``convviz_check.backends`` imports a framework (tensorflow, torch, jax);
- the core (artifacts, storage, metrics, localization, golden, checks, report, the
  parent side of the cross-backend package...) imports no Keras, no framework and no
  pytest, and no package module outside the core (one exception, named in
  CORE_EXCEPTIONS and checked at run time);
- only the plugin modules import pytest.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "convviz_check"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

FRAMEWORKS = {"tensorflow", "torch", "jax", "jaxlib"}
KERAS = {"keras", "keras_hub"}
PYTEST = {"pytest", "_pytest", "xdist"}

# Modules (and packages, by prefix) that must stay light: NumPy, the standard library,
# Pillow, matplotlib colormaps, scikit-image and each other only.
CORE = (
    "convviz_check.types",
    "convviz_check.heatmaps",
    "convviz_check.evidence",
    "convviz_check.calibration",
    "convviz_check.errors",
    "convviz_check.artifacts",
    "convviz_check.storage",
    "convviz_check.metrics",
    "convviz_check.measures",
    "convviz_check.regions",
    "convviz_check.tolerances",
    "convviz_check.localization",
    "convviz_check.pattern_response",
    "convviz_check.counterfactual",
    "convviz_check.spectral",
    "convviz_check.render",
    "convviz_check.golden",
    "convviz_check.sidecars",
    "convviz_check.checks",
    "convviz_check.report",
    "convviz_check.judge",
    "convviz_check.crossbackend.pool",
    "convviz_check.crossbackend.agreement",
    "convviz_check.crossbackend.requests",
    "convviz_check.cli.golden",
)
# The one edge out of the core, by design: a pool computes the backend this process
# already runs in this process (crossbackend.local), and that module imports the worker
# side only once Keras is imported here (crossbackend.local.running_backend reads
# sys.modules). test_the_core_pool_never_imports_keras_itself checks that at run time.
CORE_EXCEPTIONS = {("convviz_check.crossbackend.pool", "convviz_check.crossbackend.local")}
PLUGIN = (
    "convviz_check.plugin",
    "convviz_check.plugin_options",
    "convviz_check.plugin_session",
    "convviz_check.plugin_fixture",
    "convviz_check.plugin_agreement",
)
# Test files shipped for users to copy (the gate example): pytest code by design.
USER_TESTS = ("convviz_check.examples.gate",)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, name: str, type_level: bool = False) -> set[str]:
    """Absolute names of everything ``path`` imports (outside TYPE_CHECKING blocks, or
    everything with ``type_level``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    skipped = {
        id(n)
        for block in ast.walk(tree)
        if not type_level and isinstance(block, ast.If) and _is_type_checking(block)
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from . import golden` imports the submodule golden
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


# is_file: golden folders are named after test files (examples/gate/golden/test_gate.py/)
MODULES = {_module_name(p): p for p in ROOT.rglob("*.py") if p.is_file()}


def _graph(type_level: bool = False) -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {m for m in _imports(path, name, type_level) if m}
    return graph


GRAPH = _graph()
# With the imports made for type checkers only: a cycle there still ties two modules'
# meanings together (one cannot change without the other).
TYPED_GRAPH = _graph(type_level=True)
INTERNAL = set(GRAPH)


def _internal_edges(name: str, graph: dict[str, set[str]] | None = None) -> set[str]:
    return {m for m in (graph or GRAPH)[name] if m in INTERNAL and m != name}


def _third_party(name: str) -> set[str]:
    return {m.split(".")[0] for m in GRAPH[name] if not m.startswith(PACKAGE)}


def _is(name: str, group: tuple[str, ...]) -> bool:
    return any(name == g or name.startswith(g + ".") for g in group)


def find_cycles(graph: dict[str, set[str]] | None = None) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    graph = graph or GRAPH
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(_internal_edges(v, graph)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_graph_sees_the_package_and_its_relative_imports():
    assert "convviz_check.golden" in GRAPH
    assert "convviz_check.storage" in _internal_edges("convviz_check.golden")
    assert "convviz_check.artifacts" in _internal_edges("convviz_check.golden")


def test_no_import_cycle_between_modules():
    assert find_cycles() == []


def test_cycle_finder_finds_a_planted_cycle(monkeypatch):
    planted = {k: set(v) for k, v in GRAPH.items()}
    planted["convviz_check.types"].add("convviz_check.golden")  # golden -> ... -> types
    monkeypatch.setitem(globals(), "GRAPH", planted)
    assert any("convviz_check.types" in c and "convviz_check.golden" in c for c in find_cycles())


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_only_backends_import_a_framework(name):
    if _is(name, ("convviz_check.backends",)):
        return
    assert not (_third_party(name) & FRAMEWORKS), (
        f"{name} imports {_third_party(name) & FRAMEWORKS}"
    )


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if _is(n, CORE)))
def test_core_imports_no_keras_no_framework_no_pytest(name):
    forbidden = _third_party(name) & (FRAMEWORKS | KERAS | PYTEST)
    assert not forbidden, f"{name} imports {sorted(forbidden)}"


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if _is(n, CORE)))
def test_core_imports_only_core_modules(name):
    outside = sorted(
        m
        for m in _internal_edges(name)
        if not _is(m, CORE) and m != PACKAGE and (name, m) not in CORE_EXCEPTIONS
    )
    assert not outside, f"{name} (core) imports {outside}"


def test_the_core_pool_never_imports_keras_itself():
    # Keras made unimportable: an in-process pool must still build, find no local
    # backend and never reach the worker side (the `agree` command runs like this).
    code = (
        "import sys\n"
        "for m in ('keras', 'tensorflow', 'torch', 'jax'): sys.modules[m] = None\n"
        "from convviz_check.crossbackend.pool import WorkerPool, default_pool\n"
        "pool = WorkerPool(in_process=True)\n"
        "assert not any(pool.is_local(b) for b in ('tensorflow', 'torch', 'jax'))\n"
        "assert not default_pool().is_local('tensorflow')\n"
        "heavy = [m for m in ('convviz_check.crossbackend.worker', 'convviz_check.backends',\n"
        "                     'convviz_check.models') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "pool.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_only_the_plugin_imports_pytest(name):
    if _is(name, PLUGIN + USER_TESTS):
        return
    assert not (_third_party(name) & PYTEST), f"{name} imports pytest"


def test_no_import_cycle_even_through_type_checking_imports():
    # The package's __init__ re-exports the public API (for type checkers too) and every
    # `from . import x` passes through it: it is the facade, not a module of meaning.
    graph = {n: {m for m in e if m != PACKAGE} for n, e in TYPED_GRAPH.items() if n != PACKAGE}
    assert find_cycles(graph) == []


# The one module that may name private Keras API (each symbol listed there with the
# Keras version it was verified on).
KERAS_PRIVATE = "convviz_check.keras_private"


PRIVATE_PREFIXES = ("keras.src", "keras_hub.src")


def private_keras_names(text: str) -> list[str]:
    """The private Keras package prefixes ``text`` names (in code, strings or comments:
    an ``importlib.import_module("keras" + ".src...")`` spelled out is caught too)."""
    return [private for private in PRIVATE_PREFIXES if private in text]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != KERAS_PRIVATE))
def test_private_keras_api_is_named_only_in_the_audited_module(name):
    named = private_keras_names(MODULES[name].read_text(encoding="utf-8"))
    assert not named, (
        f"{name} names {named}: move the symbol into {KERAS_PRIVATE} (with the Keras "
        "version it was verified on) and call it from there"
    )


def test_the_private_name_check_finds_a_planted_name():
    assert private_keras_names('importlib.import_module("keras.src.backend.common")') == [
        "keras.src"
    ]
    assert private_keras_names("from keras_hub.src.models import x") == ["keras_hub.src"]
    assert private_keras_names("import keras\nkeras.ops.sum(x)") == []
    # the audited module itself does name them (the check would see it)
    assert private_keras_names(MODULES[KERAS_PRIVATE].read_text(encoding="utf-8"))


def test_the_audited_module_imports_no_keras_at_import_time():
    assert not {m.split(".")[0] for m in GRAPH[KERAS_PRIVATE]} & (KERAS | FRAMEWORKS)


# A module says one thing: past this many lines it is doing several (split it by
# meaning, as heatmaps, sidecars and plugin_options were split out).
MAX_MODULE_LINES = 600
# A function past this many lines of code (docstring, comments and blank lines aside)
# hides steps that deserve names.
MAX_FUNCTION_CODE_LINES = 80


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_the_line_limit(name):
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines (limit {MAX_MODULE_LINES})"


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, source: list[str]) -> int:
    body = node.body
    first = body[0]
    start = first.lineno
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str):  # the docstring
            start = first.end_lineno + 1 if first.end_lineno is not None else start
    end = node.end_lineno or start
    return sum(
        1 for line in source[start - 1 : end] if line.strip() and not line.strip().startswith("#")
    )


def long_functions(path: Path) -> list[tuple[str, int]]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    return [
        (node.name, n)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := _code_lines(node, lines)) > MAX_FUNCTION_CODE_LINES
    ]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_is_over_the_code_line_limit(name):
    assert long_functions(MODULES[name]) == []


def test_the_function_limit_counts_code_not_docstrings_or_comments(tmp_path):
    body = "\n".join(f"    x{i} = {i}  # step" for i in range(MAX_FUNCTION_CODE_LINES))
    doc = '    """' + "\n    words" * 50 + '\n    """\n'
    short = tmp_path / "short.py"
    short.write_text(f"def f():\n{doc}    # a comment\n\n{body}\n")
    assert long_functions(short) == []
    long = tmp_path / "long.py"
    long.write_text(f"def f():\n{doc}{body}\n    return 1\n")
    assert long_functions(long) == [("f", MAX_FUNCTION_CODE_LINES + 1)]
