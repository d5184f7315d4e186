"""Every subpackage of drox, and every public name (``from drox import <name>`` for each of ``drox.__all__``),
imports alone in a fresh interpreter (``import drox.gates`` and ``from drox import register_gate`` failed
on an import cycle that the rest of the suite never saw, because its test files import ``drox.filters`` first).

Each import runs in a process of its own with no drox module loaded, since a cycle shows only for some import
orders: a child forked from one interpreter that has imported the heavy third-party modules (torch, transformers,
hydra) and nothing of drox. A subpackage that needs an optional dependency (pyproject's ``optional-dependencies``) which is not
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


FORK_SERVER = r"""
import json, os, sys, traceback
statements = json.loads(sys.stdin.read())
for name in ("torch", "numpy", "transformers", "omegaconf", "hydra", "yaml", "typer", "rich", "safetensors"):
    try:  # third-party modules only: importing them is what makes a fresh interpreter slow
        __import__(name)
    except Exception:
        pass
assert not [m for m in sys.modules if m == "drox" or m.startswith("drox.")], "the fork server imported drox"
results = {}
for statement in statements:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one statement, its output into the pipe, never back into the loop
        os.close(read_end)
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        code = 0
        try:
            exec(statement, {"__name__": "__main__"})
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, errors="replace") as pipe:
        output = pipe.read()
    results[statement] = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), output]
sys.__stdout__.write(json.dumps(results))
"""
"""One interpreter imports the heavy third-party modules once, then forks a child per statement: each child starts
with no drox module loaded, which is what an import-order cycle inside drox needs, for a fraction of the cost of a
new interpreter per statement (each of which imports torch and transformers again)."""


def run_forked(statements: list) -> dict:
    """{statement: CompletedProcess-like (returncode, stderr)} for ``statements``, each in a child forked from one
    server interpreter (FORK_SERVER); a fresh interpreter per statement where fork is not available."""
    if not hasattr(os, "fork"):
        return {statement: run_alone(statement) for statement in statements}
    import json
    import types

    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-c", FORK_SERVER], input=json.dumps(statements),
                              capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {statement: types.SimpleNamespace(returncode=code, stderr=output)
            for statement, (code, output) in json.loads(proc.stdout).items()}


@pytest.fixture(scope="module")
def results(request):
    """Every selected target's outcome, from one fork server: {statement: (returncode, stderr)}."""
    params = [getattr(getattr(item, "callspec", None), "params", {}) for item in request.session.items
              if item.module is request.module]
    return run_forked([p["statement"] for p in params if "statement" in p])


def test_a_forked_child_sees_no_drox_module_and_reports_a_failure():
    out = run_forked(["import sys; assert 'drox' not in sys.modules, 'drox preloaded'", "import drox.no_such_module",
                      "import drox.gates; import sys; assert 'drox.gates' in sys.modules"])
    codes = [o.returncode for o in out.values()]
    assert codes == [0, 1, 0], out
    assert "No module named 'drox.no_such_module'" in list(out.values())[1].stderr


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
