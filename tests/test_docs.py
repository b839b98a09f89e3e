"""Documentation that runs: doctests of every lamfast module, the tutorial's example scripts, the
README's Python example, and an example in every CLI command's --help."""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

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
