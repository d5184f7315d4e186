"""Every subpackage of drox, and every public name (``from drox import <name>`` for each of ``drox.__all__``),
imports alone in a fresh interpreter (``import drox.gates`` and ``from drox import register_gate`` failed
on an import cycle that the rest of the suite never saw, because its test files import ``drox.filters`` first).

Each import runs in its own subprocess, since a cycle shows only for some import orders; the subprocesses run a few
at a time. A subpackage that needs an optional dependency (pyproject's ``optional-dependencies``) which is not
installed is skipped with that reason. ``import drox`` staying torch-free is tested in test_packaging.py.
The shared layer ``drox.signals`` must stay below the components: an AST check over its modules.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import drox

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("verl", "vllm", "peft")  # pyproject.toml [project.optional-dependencies]
COMPONENTS = ("rewards", "gates", "filters", "trainers", "rollout", "evaluation", "models", "cli", "integrations")
MISSING = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")


def subpackages() -> list:
    """``drox.<dotted>`` for every folder below the root holding an ``__init__.py`` (tests/ has none, and
    benchmarks/, experiments/, docs/ are not packages), found on disk so a new subpackage is covered unasked."""
    found = []

    def walk(folder: Path, dotted: str) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
            found.append(f"{dotted}.{sub.name}")
            walk(sub, f"{dotted}.{sub.name}")

    walk(ROOT, "drox")
    return found


SUBPACKAGES = subpackages()
NAMES = list(drox.__all__)
TARGETS = [f"import {m}" for m in SUBPACKAGES] + [f"from drox import {n}" for n in NAMES]


def run_alone(statement: str):
    """``statement`` in a fresh interpreter, outside the repository (its root is the package, so it must not be
    on sys.path as a folder of top-level modules) -> the CompletedProcess."""
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, cwd=cwd,
                              timeout=300)


@pytest.fixture(scope="module")
def results(request):
    """Every selected target's subprocess, run a few at a time: {statement: CompletedProcess}."""
    params = [getattr(getattr(item, "callspec", None), "params", {}) for item in request.session.items
              if item.module is request.module]
    selected = [p["statement"] for p in params if "statement" in p]
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1))) as pool:
        return dict(zip(selected, pool.map(run_alone, selected)))


def test_discovery_sees_the_known_subpackages():
    for pkg in ("drox.cli", "drox.gates", "drox.rewards", "drox.filters", "drox.signals", "drox.trainers",
                "drox.integrations.verl"):
        assert pkg in SUBPACKAGES
    assert not any(".tests" in p or ".benchmarks" in p or ".experiments" in p for p in SUBPACKAGES)
    assert {"register_gate", "register_reward", "GateResult"} <= set(NAMES)


@pytest.mark.parametrize("statement", TARGETS)
def test_imports_alone_in_a_fresh_interpreter(results, statement):
    out = results[statement] if statement in results else run_alone(statement)
    if out.returncode != 0:
        missing = MISSING.findall(out.stderr)
        dep = missing[-1].split(".")[0] if missing else None
        if dep in OPTIONAL and importlib.util.find_spec(dep) is None:
            pytest.skip(f"`{statement}` needs the optional dependency {dep!r}, which is not installed")
    tail = "\n".join(out.stderr.strip().splitlines()[-8:])
    assert out.returncode == 0, f"`{statement}` fails in a fresh interpreter:\n{tail}"


def imported_modules(path: Path) -> set:
    """Absolute module names imported anywhere in ``path`` (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "signals").glob("*.py")), ids=lambda p: p.name)
def test_signals_import_no_component(path):
    """drox.signals holds what several components share; importing a component from it would bring the cycle
    back (each component package imports all its modules)."""
    bad = sorted(m for m in imported_modules(path)
                 if any(m == f"drox.{c}" or m.startswith(f"drox.{c}.") for c in COMPONENTS))
    assert not bad, f"signals/{path.name} imports components: {bad}"
