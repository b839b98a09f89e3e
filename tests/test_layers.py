"""The structure stays visible: stages import only downward, and no module imports in a circle.

Stages, bottom to top (docs/architecture.md):

    ground       config, errors, _jit, _blas, _progress, _version, _files, _procs
    moments      lamfast.moments.*
    sources      lamfast.sources.*
    solvers      lamfast.solvers.*
    probes       lamfast.probes.*
    estimator    lamfast.estimator
    experiments  lamfast.experiments.*
    top          lamfast (the package's public face), cli, info, benchmarks

Every import of a lamfast module is checked, at module level and inside functions: its target's
stage must not be above the importer's. Within a stage, the module-level imports between modules
must form no circle. Parsed with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lamfast"
STAGES = ("ground", "moments", "sources", "solvers", "probes", "estimator", "experiments", "top")
GROUND = {"config", "errors", "_jit", "_blas", "_progress", "_version", "_files", "_procs"}
TOP = {"cli", "info", "benchmarks"}
# Modules an import inside a function may name: the optional extras, and one measured start-up
# cost. Anything else inside a function is a dodged circle or a needless deferral.
DEFERRED_OK = {
    "dask",
    "distributed",
    "matplotlib",
    "zarr",
    "sklearn",
    "torch",
    "av",  # the readers of other formats (sources/frames), each an optional extra
    "h5py",
    "pyarrow",
    "imageio",
    "PIL",
    # measured start-up costs of `import lamfast` (python -X importtime), each needed by one path
    "scipy.sparse",  # ARPACK (top_eigh(method="arpack"))
    "scipy.stats",  # 0.24 s: the noise-aware moment-gd (binomial label counts)
    "scipy.optimize",  # 0.14 s: the L-BFGS polish of moment-gd
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def stage_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return STAGES.index("top")  # lamfast/__init__.py
    head = parts[1]
    if head in GROUND:
        return STAGES.index("ground")
    if head in TOP:
        return STAGES.index("top")
    if head in STAGES:
        return STAGES.index(head)
    raise AssertionError(f"{module} belongs to no stage: add it to one (tests/test_layers.py)")


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute lamfast modules named by an import (``from X import a`` may import submodule a)."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = importer.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    out = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        where = PACKAGE.parent / Path(*candidate.split("."))
        if where.with_suffix(".py").exists() or where.is_dir():
            out.append(candidate)  # a submodule
        elif base not in out:
            out.append(base)  # a name defined by the module (or package __init__) ``base``
    return [m for m in out if m == "lamfast" or m.startswith("lamfast.")]


def in_functions(tree: ast.Module) -> set[int]:
    """ids of the import statements inside a function (module-level ``try:`` imports are not)."""
    inner = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            inner.update(id(n) for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom))
    return inner


def imports(path: Path):
    """``(target module, line, at module level)`` for every lamfast import in ``path``."""
    tree = ast.parse(path.read_text())
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    inner = in_functions(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for target in resolve(importer, is_package, node):
                yield target, node.lineno, id(node) not in inner
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lamfast"):
                    yield alias.name, node.lineno, id(node) not in inner


def deferred_imports(path: Path):
    """Imports inside functions (any module), with their line."""
    tree = ast.parse(path.read_text())
    inner = in_functions(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) in inner:
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) and node.level:
                names = ["." * node.level + (node.module or "")]
            yield names, node.lineno


FILES = sorted(PACKAGE.rglob("*.py"))


def upward_imports(files) -> list[str]:
    bad = []
    for path in files:
        importer = module_name(path)
        for target, line, _ in imports(path):
            if importer == "lamfast" or target == "lamfast" and importer == "lamfast":
                continue
            if target == "lamfast":
                bad.append(f"{importer}:{line} imports the package lamfast (the top)")
            elif stage_of(target) > stage_of(importer):
                bad.append(
                    f"{importer}:{line} ({STAGES[stage_of(importer)]}) imports {target} "
                    f"({STAGES[stage_of(target)]})"
                )
    return bad


def circles(files) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for path in files:
        importer = module_name(path)
        graph.setdefault(importer, set())
        for target, _, top in imports(path):
            # a package's __init__ re-exports its modules: an edge into the package is an edge
            # into the modules it imports, so only module-to-module edges are followed
            if top and target != importer:
                graph[importer].add(target)
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt in graph and not state.get(nxt):
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [])
    return found


def test_every_module_has_a_stage():
    for path in FILES:
        stage_of(module_name(path))


def test_no_upward_import():
    assert upward_imports(FILES) == []


def test_no_circular_import():
    # the package's own __init__ imports everything by design; cycles through it are not cycles
    # of the flow, but a submodule importing ``lamfast`` is refused by test_no_upward_import
    assert [c for c in circles(FILES) if "lamfast" not in c] == []


def test_imports_inside_functions_only_defer_extras():
    bad = []
    for path in FILES:
        for names, line in deferred_imports(path):
            for name in names:
                if name.startswith(".") or name.startswith("lamfast"):
                    bad.append(f"{module_name(path)}:{line} imports {name} inside a function")
                elif not any(name == ok or name.startswith(ok + ".") for ok in DEFERRED_OK):
                    bad.append(f"{module_name(path)}:{line} defers {name} (not an optional extra)")
    assert bad == []


def test_the_guard_catches_an_upward_import(tmp_path):
    """The check can fail: a moments module that imports the estimator is reported."""
    fake = PACKAGE / "moments" / "core.py"
    text = fake.read_text() + "\nfrom ..estimator import LinearLAM\n"
    copy = tmp_path / "core.py"
    copy.write_text(text)

    bad = []
    for target, _, _ in imports_as(copy, "lamfast.moments.core"):
        if stage_of(target) > stage_of("lamfast.moments.core"):
            bad.append(target)
    assert bad == ["lamfast.estimator"]


def imports_as(path: Path, importer: str):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield from ((t, node.lineno, True) for t in resolve(importer, False, node))


@pytest.mark.parametrize("stage", STAGES[1:-1])
def test_stage_folders_exist(stage):
    assert (PACKAGE / stage).is_dir() or (PACKAGE / f"{stage}.py").is_file()
