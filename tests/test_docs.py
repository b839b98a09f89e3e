"""Documentation that runs: doctests of every lamfast module, the tutorial's example scripts, the
README's Python example, and an example in every CLI command's --help; and documentation that
stays true: the dotted paths, .py files, links and #anchors that README.md and docs/ name exist,
and README.md stays short."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import lamfast
from lamfast.cli import cli

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(m.name for m in pkgutil.walk_packages(lamfast.__path__, "lamfast."))
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
OPTIONAL = {"dask", "distributed", "matplotlib", "zarr", "sklearn", "threadpoolctl", "torch"}


@pytest.mark.parametrize("name", ["lamfast", *MODULES])
def test_doctests(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:  # a module of an optional extra that is not installed
        if (e.name or "").split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs {e.name}")
        raise
    result = doctest.testmod(
        module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False
    )
    assert result.failed == 0, f"{result.failed} doctest failures in {name} (run pytest -s)"


def test_public_functions_have_examples():
    """Every public function and class re-exported by lamfast shows an example."""
    missing = [
        name
        for name in lamfast.__all__
        if callable(getattr(lamfast, name))
        and not name.endswith("Error")
        and ">>>" not in (getattr(lamfast, name).__doc__ or "")
    ]
    assert not missing, f"no >>> example in the docstring of {missing}"


def _commands(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=" ".join)
def test_every_command_help_has_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    match = re.search(r"Examples?:\n((?:\s+lamfast .+\n)+)", result.output)
    assert match, f"lamfast {' '.join(path)} --help shows no 'Example:' with a command line"


def _run(args, tmp_path, **env):
    environ = {**os.environ, "PYTHONHASHSEED": "0", **env}
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_on_small_sizes(path, tmp_path):
    result = _run([str(path), "--quick"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "examples print what they found"
    assert "Traceback" not in result.stderr


def test_examples_exist_for_each_tutorial_part():
    names = [p.name for p in EXAMPLES]
    for stem in ("simulated", "frames", "fixes", "dask"):
        assert any(stem in n for n in names), stem
    tutorial = (ROOT / "docs" / "tutorial.md").read_text()
    for name in names:
        assert name in tutorial, f"docs/tutorial.md does not mention examples/{name}"


def test_readme_python_example_runs():
    """The README's Python API block runs and prints the output shown under it."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## Python API.*?```python\n(.*?)```\n+Output:\n+```\n(.*?)```", text, re.S)
    assert match, "README.md has a '## Python API' section with a python block and its output"
    code, shown = match.groups()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == shown


# --- the docs stay true: dotted paths, links, length ------------------------------------------

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH_FILES = [*DOC_FILES, *EXAMPLES]
DOTTED = re.compile(r"(?<![\w.])lamfast(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(
    r"^[ \t]*from[ \t]+(lamfast(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)", re.M
)
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)


def _dotted_paths():
    """{dotted path: [where]} for every ``lamfast.x.y`` named in the docs and the examples, and
    every ``from lamfast.x import y`` (as ``lamfast.x.y``)."""
    found: dict[str, list[str]] = {}
    for file in PATH_FILES:
        text = file.read_text(encoding="utf-8")
        where = file.relative_to(ROOT).as_posix()
        hits = [(m.start(), m.group()) for m in DOTTED.finditer(text)]
        for m in FROM_IMPORT.finditer(text):
            for name in m.group(2).strip("()").split(","):
                if name.split():
                    hits.append((m.start(), f"{m.group(1)}.{name.split()[0]}"))
        for pos, path in hits:
            found.setdefault(path, []).append(f"{where}:{text.count(chr(10), 0, pos) + 1}")
    return found


DOTTED_PATHS = _dotted_paths()


def _resolve(path):
    """Import the longest importable module prefix of ``path``, then getattr the rest."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as e:
            missing = e.name or ""
            if missing == name or name.startswith(missing + "."):
                continue  # not a module (an attribute, or a module that does not exist)
            if missing.split(".")[0] in OPTIONAL:
                pytest.skip(f"{name} needs {missing}")
            raise
        if getattr(obj, "__file__", None) is None:  # a directory without __init__.py
            raise ModuleNotFoundError(f"{name} is a namespace package, not a module of lamfast")
        for j, attr in enumerate(parts[i:], start=i):
            if not hasattr(obj, attr):
                prefix = ".".join(parts[:j])
                raise AttributeError(
                    f"no module {prefix}.{attr}, no attribute {attr!r} of {prefix}"
                )
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def test_docs_name_dotted_paths():
    assert "lamfast.LinearLAM" in DOTTED_PATHS and len(DOTTED_PATHS) > 10


@pytest.mark.parametrize("path", sorted(DOTTED_PATHS))
def test_dotted_path_resolves(path):
    """Every ``lamfast.x.y`` in README.md, docs/*.md and examples/*.py names something real."""
    try:
        _resolve(path)
        error = None
    except (ImportError, AttributeError) as e:
        error = e
    if error is not None:
        where = ", ".join(DOTTED_PATHS[path])
        pytest.fail(f"{path} (in {where}) does not resolve: {error}", pytrace=False)


def _anchor(heading):
    """GitHub's anchor of a heading: lowercase, punctuation other than '-' and '_' dropped, spaces
    to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link's text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(file):
    """Anchors of the headings of a Markdown file (outside code blocks), duplicates numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", file.read_text()), re.M):
        base = _anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        anchors.add(base if n == 0 else f"{base}-{n}")
    return anchors


def _links(file):
    """Relative link targets ``[text](target)`` / ``![alt](target)`` outside code blocks."""
    text = FENCE.sub("", file.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "code", text)  # code spans are not links
    for m in re.finditer(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text):
        target = m.group(1)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # not http:, https:, mailto:, ...
            yield target


LINKS = [(f, t) for f in DOC_FILES for t in sorted(set(_links(f)))]


def test_docs_have_links():
    assert any(t.startswith("docs/") for f, t in LINKS if f.name == "README.md")


@pytest.mark.parametrize(
    "file, target", LINKS, ids=[f"{f.relative_to(ROOT).as_posix()}->{t}" for f, t in LINKS]
)
def test_relative_link_resolves(file, target):
    """Relative Markdown links point at files of the repository, and #anchors at headings."""
    path, _, anchor = target.partition("#")
    dest = (file.parent / path).resolve() if path else file
    assert dest.exists(), f"{file.name}: link to {target}: no file {path}"
    assert dest.is_relative_to(ROOT), f"{file.name}: link to {target} leaves the repository"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{file.name}: link to {target}: no heading #{anchor}"


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 350, f"README.md has {lines} lines; move reference material to docs/"


def test_quoted_case_count_agrees():
    """README.md and docs/ quote the size of tests/test_hostile.py's table (that test checks
    README.md); every quote states the same number."""
    counts = {
        (f.name, n) for f in DOC_FILES for n in re.findall(r"a table of (\d+) cases", f.read_text())
    }
    assert len({n for _, n in counts}) <= 1, counts


def _py_files_named():
    """{path: [file]} of every ``lamfast/...py``, ``tests/...py``, ``bench/...py`` or
    ``examples/...py`` named in README.md and docs/*.md."""
    found: dict[str, list[str]] = {}
    for file in DOC_FILES:
        for path in re.findall(
            r"(?<![\w/.-])(?:lamfast|tests|bench|examples)/[\w/.-]*?\.py\b", file.read_text()
        ):
            where = found.setdefault(path, [])
            if file.relative_to(ROOT).as_posix() not in where:
                where.append(file.relative_to(ROOT).as_posix())
    return found


PY_FILES = _py_files_named()


@pytest.mark.parametrize("path", sorted(PY_FILES))
def test_named_python_file_exists(path):
    """Source files named by the docs (e.g. ``lamfast/config.py``) are files of the repository."""
    assert (ROOT / path).is_file(), f"{path} (named in {', '.join(PY_FILES[path])}) does not exist"


def test_docs_name_nothing_outside_the_repository():
    """The docs stand on their own: no design or style notes that live outside the repository."""
    for file in DOC_FILES:
        hits = re.findall(r"\b(?:DESIGN|STYLE)\b(?:[ .]*\d[\d.]*)?", file.read_text())
        assert not hits, f"{file.relative_to(ROOT)} refers to notes outside the repository: {hits}"


def test_frames_example_reads_lamfasts_own_layout(tmp_path):
    """examples/02_frames_npz.py --npz takes a file in the layout `lamfast fit` reads (one time
    axis, episode_starts) as well as its own per-episode layout."""
    from lamfast.sources.gridworld import write_gridworld

    write_gridworld(tmp_path / "grid.npz", episodes=30, length=12)
    result = _run([str(ROOT / "examples" / "02_frames_npz.py"), "--npz", "grid.npz"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "finds the same latent directions: True" in result.stdout
    np.savez(tmp_path / "bad.npz", frames=np.zeros((10, 4)), actions=np.zeros(3))
    result = _run([str(ROOT / "examples" / "02_frames_npz.py"), "--npz", "bad.npz"], tmp_path)
    assert result.returncode == 1 and "match neither layout" in result.stderr
    assert "Traceback" not in result.stderr


def test_readme_30_second_example_output_is_real():
    """The README's first console example prints exactly what is shown (but the timing line)."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```console\n\$ lamfast (fit [^\n]*)\n(.*?)```", text, re.S)
    assert match, "README.md shows a `lamfast fit` console example"
    command, shown = match.groups()
    result = CliRunner().invoke(cli, command.split())
    assert result.exit_code == 0, result.output

    def lines(s):
        return [x for x in s.splitlines() if not re.fullmatch(r"[\d.]+ s", x.strip())]

    assert lines(result.stdout) == lines(shown)


def _generated_blocks():
    sys.path.insert(0, str(ROOT))  # bench/ is a package of the repository, not of lamfast
    try:
        from bench import docs_tables
    finally:
        sys.path.remove(str(ROOT))
    found = []
    for doc in docs_tables.DOCS:
        for section, path, body, _ in docs_tables.blocks((ROOT / doc).read_text()):
            found.append((doc, section, path, body))
    return docs_tables, found


def test_docs_have_generated_tables():
    _, found = _generated_blocks()
    assert {section for _, section, _, _ in found} >= {
        "library",
        "reproduce",
        "reproduce-summary",
        "grid-points",
    }


def test_generated_tables_are_their_measurements():
    """Every generated block is what ``python -m bench.docs_tables`` renders from the results
    file it names: a measured table cannot be edited by hand, or drift from its figures."""
    docs_tables, found = _generated_blocks()
    for doc, section, path, body in found:
        file = ROOT / path
        assert file.is_file(), f"{doc}: the {section} block names {path}, which does not exist"
        result = json.loads(file.read_text())
        assert body == docs_tables.render(section, result), (
            f"{doc}: the {section} block is not the rendering of {path}; run "
            f"`python -m bench.docs_tables --from {path}`"
        )
