"""The import graph of drox's own modules, read with ``ast`` (nothing is imported): no cycle, no upward import
from a lower layer, and components (reward sources, gates, filters) that do not import each other; logic they
share lives below them instead (``signals/``; ``teacher_forced/`` for the scoring passes that need a model).

Layers, lowest first: the base modules (errors, registry, components, config, ...), tasks, signals, models,
rollout, the teacher-forced scoring passes, the components, evaluation and the pipeline, trainers, integrations,
the CLI, benchmarks. A module may import its own layer and those below; imports inside functions count too (they
are dependencies all the same, only later).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent  # the repository root is the drox package
NOT_CODE = {"tests", "experiments", "conf", "docs"}

LAYERS = [
    {"drox", "errors", "registry", "components", "config", "plugins", "atomic", "masked_stats"},
    {"tasks"},  # tasks and their verifiers (answer extraction, which signals/ shares)
    {"signals"},  # shared math (padding, spans, R3 statistics, calibration, ROUGE): below everything that uses it
    {"models"},
    {"rollout"},
    # teacher-forced scoring passes that several components share (DRO's reference pass: the variance reward and
    # the query filter); they need a model and the rollout batch, which signals/ may not import
    {"teacher_forced"},
    {"rewards", "gates", "filters"},
    {"evaluation", "pipeline"},
    {"trainers"},
    {"integrations"},
    {"cli"},
    {"benchmarks"},
]
COMPONENTS = {"rewards", "gates", "filters"}

# Known violations: none. A component never imports another: what two of them share lives below them (signals/,
# teacher_forced/), and what one computes for another in the same step travels in what the loop hands on (the query
# filter reads the variance reward's sigma from the scored batch, not from the reward's module).
KNOWN_UPWARD: set = set()
KNOWN_BETWEEN_COMPONENTS: set = set()
# cycles through imports made inside functions (each module imports the other only when called)
KNOWN_LAZY_CYCLES = [
    {"drox.cli.main", "drox.cli.report_cmd"},
]


def modules() -> Dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in NOT_CODE or any(p.startswith(".") for p in rel.parts):
            continue
        dotted = ".".join(rel.with_suffix("").parts)
        out["drox" if dotted == "__init__" else "drox." + dotted.removesuffix(".__init__")] = path
    return out


MODULES = modules()


def _resolve(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def imports(name: str, path: Path) -> List[Tuple[str, int, bool]]:
    """(imported drox module, line, at import time?) for every import in ``path``; ``if TYPE_CHECKING:`` blocks
    are skipped (annotations only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: List[Tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                for a in child.names:  # ``from drox.trainers import algos`` imports the module drox.trainers.algos
                    full = f"{base}.{a.name}"
                    found.append((full if full in MODULES else base, child.lineno, top))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return [(_resolve(m), line, top) for m, line, top in found if m == "drox" or m.startswith("drox.")]


def edges(import_time_only: bool) -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for target, _, top in imports(name, path):
            if target != name and (top or not import_time_only):
                graph[name].add(target)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[Set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return out


def top(name: str) -> str:
    return name.split(".")[1] if "." in name else "drox"


def layer(name: str) -> int:
    return next(i for i, members in enumerate(LAYERS) if top(name) in members)


def test_every_module_has_a_layer_and_the_reader_sees_the_imports():
    assert all(top(m) in set().union(*LAYERS) for m in MODULES), sorted({top(m) for m in MODULES})
    pipeline = {t for t, _, _ in imports("drox.pipeline", MODULES["drox.pipeline"])}
    assert {"drox.components", "drox.config", "drox.rewards"} <= pipeline  # absolute imports
    tasks = {t for t, _, _ in imports("drox.tasks", MODULES["drox.tasks"])}
    assert "drox.tasks.srl" in tasks and "drox.tasks.common" in tasks  # ``from . import srl``, ``from .common``


def test_no_import_cycle():
    assert cycles(edges(import_time_only=True)) == []
    assert sorted(map(sorted, cycles(edges(import_time_only=False)))) == sorted(map(sorted, KNOWN_LAZY_CYCLES))


def test_no_upward_import():
    upward = sorted((a, b) for a, targets in edges(import_time_only=False).items() for b in targets
                    if layer(b) > layer(a))
    assert upward == sorted(KNOWN_UPWARD)


def test_components_do_not_import_each_other():
    between = sorted((a, b) for a, targets in edges(import_time_only=False).items() for b in targets
                     if top(a) in COMPONENTS and top(b) in COMPONENTS and top(a) != top(b))
    assert between == sorted(KNOWN_BETWEEN_COMPONENTS)


def test_the_trainers_and_the_cli_are_imported_only_from_above():
    for a, targets in edges(import_time_only=False).items():
        for b in targets:
            if top(b) in ("trainers", "cli") and top(a) != top(b):
                assert top(a) in ("integrations", "cli", "benchmarks"), (a, b)
