"""Every extension point is a registry (drox.components): a task, a rollout engine, an objective and an advantage
estimator with options are each ONE file of the user's (``plugins=[file.py]``), selected by name like a built-in,
with their options parsed before anything loads. Each test writes the plugin file, trains one step of the tiny model
through it and checks what the component did; the built-ins are declared lazily and resolved the same way.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer

from drox.components import ADVANTAGE_SHAPERS, OBJECTIVES, ROLLOUT_ENGINES, ROLLOUT_SHAPES, TASKS, multiturn_tasks
from drox.trainers.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


def plugin(tmp_path: Path, code: str) -> tuple[Path, str]:
    """Write ``code`` (with NAME replaced by a fresh component name) to a plugin file; returns (path, name)."""
    name = f"ext_{next(_counter)}_{id(object()) % 100000}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(code).replace("NAME", name))
    return path, name


def train_one_step(compose_cfg, run: Path, *overrides: str):
    from drox.trainers import loop

    cfg = compose_cfg(*overrides, "trainer.steps=1", "logger.completions_per_step=4")
    loop.run_training(cfg, run, progress=False)
    return read_metrics(run / "metrics.jsonl")


# ------------------------------------------------------------------------------------------------ a task


TASK = '''
import datasets
from drox.components import register_task
from drox.tasks import MathVerifier, Task

@register_task("NAME")
def build(cfg, split):
    """Always 2 + 2: the reference is 4."""
    rows = [{"prompt": "2 + 2 =", "answer": "4", "problem_id": f"{split}-{i}"} for i in range(6)]
    return Task("NAME", datasets.Dataset.from_list(rows), MathVerifier())
'''


def test_a_task_is_one_file(compose_cfg, tmp_path):
    path, name = plugin(tmp_path, TASK)
    try:
        rows = train_one_step(compose_cfg, tmp_path / "run", f"plugins=[{path}]", f"task.name={name}")
        assert TASKS.meta(name) == {} and name not in multiturn_tasks()
        shown = [json.loads(x) for x in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
        assert {c["prompt"] for c in shown} == {"2 + 2 ="} and {c["reference"] for c in shown} == {"4"}
        assert rows[0]["samples_seen"] == 4  # Q=2 prompts x G=2 samples of the plugin's rows
    finally:
        TASKS.unregister(name)


# ------------------------------------------------------------------------------------------------ an engine


ENGINE = '''
from drox.components import register_engine
from drox.rollout.hf import HFRolloutEngine

CALLS = []

class Counting(HFRolloutEngine):
    def generate(self, prompts, group_size, **kwargs):
        CALLS.append((len(prompts), group_size, kwargs["seed"]))
        return super().generate(prompts, group_size, **kwargs)

@register_engine("NAME")
def build(rollout_cfg, model, tokenizer, model_cfg, opts):
    return Counting(model, tokenizer, model_cfg, batch_size=rollout_cfg.batch_size)
'''


def test_a_rollout_engine_is_one_file(compose_cfg, tmp_path):
    from drox.plugins import load_module

    path, name = plugin(tmp_path, ENGINE)
    try:
        rows = train_one_step(compose_cfg, tmp_path / "run", f"plugins=[{path}]", f"rollout.backend={name}")
        calls = load_module(str(path)).CALLS
        assert len(calls) == 1 and calls[0][:2] == (2, 2)  # one flat generation batch: Q=2 prompts, G=2 each
        assert rows[0]["samples_seen"] == 4 and rows[0]["rollout/tokens_generated"] > 0
    finally:
        ROLLOUT_ENGINES.unregister(name)
    with pytest.raises(typer.Exit):  # without the plugin the name is unknown: one line from the CLI's compose
        compose_cfg(f"rollout.backend={name}")


# ------------------------------------------------------------------------------------------------ an objective


OBJECTIVE = '''
from dataclasses import dataclass
from drox.components import register_objective
from drox.trainers.objectives import update_policy

SEEN = []

@dataclass
class Options:
    scale: float = 1.0

    def __post_init__(self):
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")

@register_objective("NAME", Options)
def scaled_pg(trainer, step, data, token_adv, mask, pg_mask, opts):
    """The policy-gradient update on advantages times ``scale``."""
    SEEN.append((opts.scale, float(token_adv.abs().sum())))
    out = update_policy(trainer, step, data.batch, token_adv * opts.scale, pg_mask, reg_mask=mask)
    return {**out, "NAME/scale": opts.scale}
'''


def test_an_objective_with_options_is_one_file(compose_cfg, tmp_path, capsys):
    from drox.pipeline import build_pipeline
    from drox.plugins import load_module

    path, name = plugin(tmp_path, OBJECTIVE)
    try:
        args = (f"plugins=[{path}]", f"trainer.objective={name}")
        rows = train_one_step(compose_cfg, tmp_path / "run", *args, f"+trainer.{name}.scale=0.0",
                              "rollout.temperature=5.0")
        seen = load_module(str(path)).SEEN
        assert len(seen) == 1 and seen[0][0] == 0.0
        assert rows[0][f"{name}/scale"] == 0.0
        assert rows[0]["pg_loss"] == 0.0  # zero advantages: the policy-gradient term is exactly 0
        cfg = compose_cfg(*args)
        assert build_pipeline(cfg).objective.opts.scale == 1.0  # the dataclass default when the config sets none
        capsys.readouterr()
        with pytest.raises(typer.Exit):
            compose_cfg(*args, f"+trainer.{name}.scale=abc")
        assert f"trainer.{name}.scale=abc: expected a float" in " ".join(capsys.readouterr().err.split())
        with pytest.raises(typer.Exit):
            compose_cfg(*args, f"+trainer.{name}.scale=-1")
        assert f"error: trainer.{name}: scale must be >= 0, got -1.0" in " ".join(capsys.readouterr().err.split())
    finally:
        OBJECTIVES.unregister(name)


# ------------------------------------------------------------------------------------------------ an estimator


ESTIMATOR = '''
from dataclasses import dataclass
import drox

@dataclass
class Options:
    shift: float = 0.0

@drox.register_advantage_estimator("NAME", Options)
def shifted(scores, eps, valid, opts):
    """The raw reward minus a constant (no group baseline)."""
    return scores.float() - opts.shift
'''


def test_an_estimator_with_options_is_one_file(compose_cfg, tmp_path, capsys):
    from drox.pipeline import build_pipeline
    from drox.trainers.algos import ADVANTAGE_ESTIMATORS

    path, name = plugin(tmp_path, ESTIMATOR)
    try:
        args = (f"plugins=[{path}]", f"trainer.advantage.estimator={name}")
        assert build_pipeline(compose_cfg(*args, f"+trainer.advantage.{name}.shift=0.25")).estimator.opts.shift == 0.25
        rows = train_one_step(compose_cfg, tmp_path / "run", *args, f"+trainer.advantage.{name}.shift=0.25")
        # every rollout is valid: the mean advantage is the mean reward minus the shift
        assert rows[0]["advantage/mean"] == pytest.approx(rows[0]["reward/mean"] - 0.25, abs=1e-6)
        capsys.readouterr()
        with pytest.raises(typer.Exit):
            compose_cfg(*args, f"+trainer.advantage.{name}.shift=abc")
        assert f"trainer.advantage.{name}.shift=abc: expected a float" in " ".join(capsys.readouterr().err.split())
    finally:
        ADVANTAGE_ESTIMATORS.unregister(name)


# ------------------------------------------------------------------------------------------------ the built-ins


def test_builtins_are_declared_lazily_and_registered_by_their_modules():
    """Every declared built-in's module registers it (with its options), and the names are the expected ones."""
    import drox.components as c

    assert TASKS.names() == ["arithmetic", "countdown", "hub", "jsonl", "parquet", "revise", "twenty_questions"]
    assert multiturn_tasks() == ("twenty_questions",)
    assert ROLLOUT_ENGINES.names() == ["hf", "vllm"]
    assert ROLLOUT_SHAPES.names() == ["episodes", "flat", "tree"]
    assert OBJECTIVES.names() == ["dpo", "pg"]
    assert ADVANTAGE_SHAPERS.names() == ["verl"]
    assert {"grpo", "dr_grpo", "rloo", "none", "tree", "tree_2norm"} <= set(c.ADVANTAGE_ESTIMATORS.names())
    assert c.combine_choices() == ("sum", "dvao", "normalize_then_sum", "normalize_then_sum_no_batch",
                                   "sum_then_normalize")

    for registry in (TASKS, ROLLOUT_SHAPES, OBJECTIVES, ADVANTAGE_SHAPERS, c.ADVANTAGE_ESTIMATORS, c.COMBINERS,
                     c.POLICY_LOSSES, c.LOSS_AGGREGATIONS, c.KL_ESTIMATORS):
        for name in registry.names():  # importing the declared module registers the name (else a ConfigError)
            assert registry.get(name).module.startswith("drox."), (registry.what, name)
    assert OBJECTIVES.get("dpo").options.__name__ == "DPOOptions"
    assert ADVANTAGE_SHAPERS.get("verl").options.__name__ == "VERLConfig"


def test_shapes_and_objective_are_resolved_from_the_config(compose_cfg):
    from drox.pipeline import build_pipeline

    p = build_pipeline(compose_cfg())
    assert (p.shape.name, p.engine.name, p.objective.name, p.shapers, p.needs_reference) == \
        ("flat", "hf", "pg", [], False)
    p = build_pipeline(compose_cfg("rollout.tree.enabled=true", "trainer.samples_per_prompt=8",
                                   "trainer.advantage.verl_shaping=true", "trainer.kl_coef=0.1"))
    assert (p.shape.name, [s.name for s in p.shapers], p.needs_reference) == ("tree", ["verl"], True)
    assert p.shapers[0].opts.stride == 40  # VERLConfig's default, parsed from trainer.advantage.verl
    p = build_pipeline(compose_cfg("trainer.objective=dpo", "trainer.dpo_beta=0.5"))
    assert (p.objective.name, p.objective.opts.beta, p.objective.opts.threshold, p.needs_reference) == \
        ("dpo", 0.5, 0.9, True)


def test_importing_drox_components_imports_no_component():
    code = ("import sys, drox.components as c; c.TASKS.meta('twenty_questions'); "
            "assert 'torch' not in sys.modules, 'torch'; "
            "assert not any(m.startswith(('drox.tasks', 'drox.rollout', 'drox.trainers')) for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)


# ------------------------------------------------------------------------------------------------ installed plugins


def test_an_installed_package_plugs_in_through_its_entry_point(tmp_path, monkeypatch):
    """A package whose metadata declares a ``drox.plugins`` entry point registers its components on the first
    import_plugins, without ``plugins=``."""
    import drox.plugins as plugins

    name = f"ext_ep_{next(_counter)}"
    (tmp_path / f"{name}_pkg.py").write_text(textwrap.dedent(TASK).replace("NAME", name))
    info = tmp_path / f"{name}_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[drox.plugins]\nmine = {name}_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_imported_installed", False)
    try:
        assert f"{name}_pkg" in plugins.installed_plugins()
        assert name not in TASKS
        plugins.import_plugins([])
        assert name in TASKS and TASKS.get(name).module == f"{name}_pkg"
    finally:
        TASKS.unregister(name)
        sys.modules.pop(f"{name}_pkg", None)


def test_import_drox_imports_neither_torch_nor_a_component():
    code = ("import sys, drox; assert 'torch' not in sys.modules, 'torch'; "
            "assert sorted(m for m in sys.modules if m.startswith('drox')) == ['drox'], sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)


def test_reward_sources_filters_and_gates_are_imported_on_first_use():
    """Their packages declare each module's components by reading the source; the module is imported when the
    component is first asked for (a source without a YAML file at once: Hydra needs its options to compose)."""
    code = ("import sys; from drox.rewards import REWARD_SOURCES; from drox.filters import FILTERS; "
            "assert {'variance', 'outcome', 'random', 'inverse'} <= set(REWARD_SOURCES.names()); "
            "assert {'query', 'entropy', 'dynamic_sampling', 'mean_range'} <= set(FILTERS.names()); "
            "assert 'drox.rewards.variance' not in sys.modules and 'drox.filters.query' not in sys.modules; "
            "assert 'drox.rewards.function' in sys.modules; "
            "assert FILTERS.get('query').meta['kind'] == 'group'; "
            "assert 'drox.filters.query' in sys.modules and 'drox.rewards.variance' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)
