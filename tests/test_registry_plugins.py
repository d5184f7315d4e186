"""The component registry, user plugins, the README's plugin example, the TRL-style ``function`` reward, the exact
top-p token count, the option YAML files against their dataclasses, and plugin advantage estimators.

Hand-computed values throughout; one 1-step run of the tiny model (the README example through the trainer).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import List, Literal, Optional

import pytest
import torch
from omegaconf import OmegaConf
from typer.testing import CliRunner

import drox
import drox.pipeline  # noqa: F401  (registers the built-in components)
from drox.cli.main import app
from drox.errors import ConfigError
from drox.filters.base import FILTERS
from drox.gates.base import GATES
from drox.masked_stats import ceil_fraction
from drox.plugins import import_plugins, load_callable, load_module, plugins_from_overrides
from drox.registry import CONF_DIR, Registry, coerce_value
from drox.rewards.base import REWARD_SOURCES, ScoringContext, score
from drox.rewards.function import call_reward_function, function_reward
from drox.signals.r3 import sigma_weights
from drox.trainers.algos import ADVANTAGE_ESTIMATORS, compute_advantages

from doubles import CharTok, make_batch

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
_counter = itertools.count()


def one_line(text: str) -> str:
    """CLI output with rich's soft wraps undone."""
    return " ".join(text.split())


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_counter)}_{id(object()) % 100000}"


def raises_config(match: str):
    return pytest.raises(ConfigError, match=re.escape(match))


# ================================================================================================ 1. the registry


@dataclass
class Opts:
    p: float = 0.5
    n: int = 3
    flag: bool = False
    label: str = "a"
    maybe: Optional[float] = None
    tags: List[str] = field(default_factory=lambda: ["x"])
    mode: Literal["a", "b"] = "a"

    def __post_init__(self):
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be in [0, 1], got {self.p}")
        if self.n < 1:
            raise ValueError(f"thing.n must be >= 1, got {self.n}")  # names the prefix itself: kept as is


@dataclass
class Required:
    path: str  # no default: required
    weight: float = 1.0


@pytest.fixture
def reg():
    r = Registry("thing", "thing")
    r.register("x", Opts)(lambda: "x")
    r.register("req", Required)(lambda: "req")
    r.register("bare")(lambda: "bare")
    return r


def test_register_get_names_and_meta(reg):
    def fn():
        return 1

    reg.register("y", Opts, kind="group", refill=True)(fn)
    assert reg.names() == ["bare", "req", "x", "y"]
    assert list(reg) == ["bare", "req", "x", "y"] and len(reg) == 4
    assert "y" in reg and "z" not in reg
    c = reg.get("y")
    assert c.fn is fn and c.options is Opts and c.meta == {"kind": "group", "refill": True}
    assert c.module == __name__
    assert reg["y"] is c
    reg.unregister("y")
    assert "y" not in reg
    reg.unregister("never_there")  # no error


def test_duplicate_name_is_a_config_error_naming_it(reg):
    with pytest.raises(ConfigError) as e:
        reg.register("x", Opts)(lambda: 2)
    msg = str(e.value)
    assert "'x'" in msg and "registered twice" in msg and "\n" not in msg
    assert reg.get("x").fn() == "x"  # the first registration is kept


def test_options_must_be_a_dataclass(reg):
    with pytest.raises(TypeError, match="options must be a dataclass"):
        reg.register("z", dict)


def test_unknown_name_lists_the_available_ones(reg):
    with pytest.raises(ConfigError) as e:
        reg.get("zzz")
    assert str(e.value) == "thing=zzz: unknown thing; available: bare, req, x"
    with pytest.raises(ConfigError) as e:
        reg.parse("zzz", {})
    assert str(e.value) == "unknown thing 'zzz'; available: bare, req, x"


def test_parse_coerces_every_type(reg):
    got = reg.parse("x", {"p": "1e-5", "n": "4", "flag": "TRUE", "label": 7, "maybe": "0.25", "tags": "solo",
                          "mode": "b"})
    assert got == Opts(p=1e-05, n=4, flag=True, label="7", maybe=0.25, tags=["solo"], mode="b")
    assert reg.parse("x", None) == Opts() and reg.parse("x", {}) == Opts()
    assert reg.parse("x", {"maybe": None}).maybe is None
    # an OmegaConf node as is
    assert reg.parse("x", OmegaConf.create({"n": 2, "tags": ["a", "b"]})) == Opts(n=2, tags=["a", "b"])


@pytest.mark.parametrize("raw, message", [
    ({"q": 1}, "thing: unknown option(s) q; allowed: flag, label, maybe, mode, n, p, tags"),
    ({"q": 1, "a": 2}, "thing: unknown option(s) a, q; allowed: flag, label, maybe, mode, n, p, tags"),
    ({"p": "abc"}, "thing.p=abc: expected a float"),
    ({"p": ""}, "thing.p='': expected a float"),
    ({"p": True}, "thing.p=True: expected a float"),
    ({"p": None}, "thing.p=None: expected a float (not null)"),
    ({"n": "abc"}, "thing.n=abc: expected an integer"),
    ({"n": 2.5}, "thing.n=2.5: expected an integer"),
    ({"n": False}, "thing.n=False: expected an integer"),
    ({"flag": "yes"}, "thing.flag=yes: expected true or false"),
    ({"flag": 1}, "thing.flag=1: expected true or false"),
    ({"label": [1]}, "thing.label=[1]: expected a string"),
    ({"label": True}, "thing.label=True: expected a string"),
    ({"maybe": "abc"}, "thing.maybe=abc: expected a float"),
    ({"tags": {"a": 1}}, "thing.tags={'a': 1}: expected a list"),
    ({"tags": ["ok", None]}, "thing.tags[1]=None: expected a string (not null)"),
    ({"mode": "c"}, "thing.mode=c is not allowed; choose one of: a, b"),
    ({"p": 2}, "thing: p must be in [0, 1], got 2.0"),  # __post_init__: prefixed
    ({"n": 0}, "thing.n must be >= 1, got 0"),  # already names it: not prefixed twice
])
def test_parse_errors_are_one_line_naming_the_key(reg, raw, message):
    with pytest.raises(ConfigError) as e:
        reg.parse("x", raw)
    assert str(e.value) == message


def test_required_option_is_reported(reg):
    with pytest.raises(ConfigError) as e:
        reg.parse("req", {})
    assert str(e.value) == "thing: missing required option(s) path; set e.g. thing.path=..."
    with pytest.raises(ConfigError) as e:
        reg.parse("req", {"path": "???"})  # Hydra's MISSING, as a composed config hands it over
    assert str(e.value) == "thing.path is required; set it, e.g. thing.path=..."
    assert reg.parse("req", {"path": "a.py"}) == Required("a.py")


def test_component_without_options_accepts_none(reg):
    assert reg.parse("bare", None) is None and reg.parse("bare", {}) is None
    with pytest.raises(ConfigError) as e:
        reg.parse("bare", {"b": 1, "a": 2})
    assert str(e.value) == "thing takes no options, got: a, b"


def test_a_config_group_prefixes_the_name_and_stores_in_hydra(monkeypatch):
    import drox.registry as registry

    stored = []
    monkeypatch.setattr(registry, "_store_in_hydra", lambda *a: stored.append(a))
    r = Registry("thing", "thing", config_group="thing")
    r.register("x", Opts)(lambda: 0)
    r.register("bare")(lambda: 0)  # no options: nothing to store
    assert stored == [("thing", "x", Opts)]
    with pytest.raises(ConfigError) as e:
        r.parse("x", {"p": "abc"})
    assert str(e.value) == "thing.x.p=abc: expected a float"
    with pytest.raises(ConfigError) as e:
        r.parse("x", {"p": 3})
    assert str(e.value) == "thing.x: p must be in [0, 1], got 3.0"
    Registry("plain", "plain").register("y", Opts)(lambda: 0)  # no config group: not stored
    assert stored == [("thing", "x", Opts)]


@pytest.mark.parametrize("value, tp, expected", [
    ("1e-5", float, 1e-05),
    (3, float, 3.0),
    ("-2", float, -2.0),
    (2.0, int, 2),
    ("7", int, 7),
    ("true", bool, True),
    ("False", bool, False),
    (True, bool, True),
    ("solo", List[str], ["solo"]),
    (3, List[int], [3]),
    (("a", "b"), List[str], ["a", "b"]),
    (["1", 2.0], List[int], [1, 2]),
    (None, Optional[int], None),
    ("4", Optional[int], 4),
    (5, str, "5"),
])
def test_coerce_value_hand_cases(value, tp, expected):
    got = coerce_value(value, tp, "k")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, tp, message", [
    (2.5, int, "k=2.5: expected an integer"),
    (True, int, "k=True: expected an integer"),
    (True, float, "k=True: expected a float"),
    ("1.5", int, "k=1.5: expected an integer"),
    ("maybe", bool, "k=maybe: expected true or false"),
    (0, bool, "k=0: expected true or false"),
    ({"a": 1}, List[str], "k={'a': 1}: expected a list"),
    ("x", Literal["a", "b"], "k=x is not allowed; choose one of: a, b"),
])
def test_coerce_value_rejects(value, tp, message):
    with pytest.raises(ConfigError) as e:
        coerce_value(value, tp, "k")
    assert str(e.value) == message


def test_public_plugin_api_resolves():
    from drox.rewards.base import RewardOutput, register_reward
    from drox.trainers.algos import register_advantage_estimator

    assert drox.register_reward is register_reward
    assert drox.RewardOutput is RewardOutput
    assert drox.register_advantage_estimator is register_advantage_estimator
    assert drox.ConfigError is ConfigError
    for name in drox._API:
        assert getattr(drox, name) is not None
    with pytest.raises(AttributeError):
        drox.no_such_thing  # noqa: B018


# ================================================================================================ 2. plugins


PLUGIN_SRC = '''
from dataclasses import dataclass
import torch
from drox import register_reward, RewardOutput

@dataclass
class Opts:
    weight: float = 1.0
    bonus: int = 2

@register_reward({name!r}, Opts)
def src(ctx, opts):
    return RewardOutput(seq=torch.full((ctx.batch.num_groups, ctx.batch.group_size), float(opts.bonus)))
'''


@pytest.fixture
def reward_name(request):
    """A fresh reward name, unregistered after the test."""
    name = unique("plugtest")
    request.addfinalizer(lambda: REWARD_SOURCES.unregister(name))
    return name


def test_load_module_of_a_file_registers_its_component(tmp_path, reward_name):
    from hydra.core.config_store import ConfigStore

    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN_SRC.format(name=reward_name))
    module = load_module(str(path))
    assert module.__name__.startswith("drox_plugin_my_plugin_")
    assert reward_name in REWARD_SOURCES
    assert REWARD_SOURCES.parse(reward_name, {"bonus": "5"}) == module.Opts(bonus=5)
    with pytest.raises(ConfigError) as e:
        REWARD_SOURCES.parse(reward_name, {"bonus": "abc"})
    assert str(e.value) == f"reward.{reward_name}.bonus=abc: expected an integer"
    # no YAML file: the defaults are stored in Hydra's ConfigStore, nested under the name
    node = ConfigStore.instance().load(f"reward/{reward_name}.yaml").node
    assert OmegaConf.to_container(node) == {reward_name: {"weight": 1.0, "bonus": 2}}
    # imported once per process: a second load is the same module, and registers nothing twice
    assert load_module(str(path)) is module
    assert import_plugins([str(path)]) == [module]


def test_a_required_option_of_a_plugin_is_stored_missing(tmp_path, reward_name):
    from hydra.core.config_store import ConfigStore

    path = tmp_path / "req_plugin.py"
    path.write_text(PLUGIN_SRC.format(name=reward_name).replace(
        "    weight: float = 1.0\n    bonus: int = 2", "    bonus: int\n    weight: float = 1.0"))
    load_module(str(path))
    node = ConfigStore.instance().load(f"reward/{reward_name}.yaml").node
    assert OmegaConf.to_container(node) == {reward_name: {"weight": 1.0, "bonus": "???"}}


def test_builtin_components_with_a_yaml_file_are_not_in_the_config_store():
    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo.get("reward", {})
    assert "outcome.yaml" not in repo and "variance.yaml" not in repo
    assert OmegaConf.to_container(ConfigStore.instance().load("reward/function.yaml").node) == \
        {"function": {"weight": 1.0, "path": ""}}


def test_missing_file_is_one_line_naming_the_entry(tmp_path):
    entry = str(tmp_path / "nope.py")
    with pytest.raises(ConfigError) as e:
        load_module(entry)
    msg = str(e.value)
    assert msg.startswith(f"plugins: {entry} is not a file") and "\n" not in msg
    with pytest.raises(ConfigError) as e:
        load_module("sub/dir/nope.py", key="reward.function.path")
    assert str(e.value).startswith("reward.function.path: sub/dir/nope.py is not a file")
    with pytest.raises(ConfigError) as e:
        load_module("   ")
    assert str(e.value) == "plugins: empty entry; give a file.py or a module name"


def test_module_raising_on_import_is_one_line_and_can_be_fixed(tmp_path, reward_name):
    path = tmp_path / "broken.py"
    path.write_text("x = 1\nraise RuntimeError('boom\\nsecond line')\n")
    with pytest.raises(ConfigError) as e:
        load_module(str(path))
    assert str(e.value).startswith(f"plugins: importing {path} failed: RuntimeError: boom")
    assert not any(m.startswith("drox_plugin_broken_") for m in sys.modules)  # not left half-imported
    # fixed on disk: the next load imports it afresh
    path.write_text(PLUGIN_SRC.format(name=reward_name))
    load_module(str(path))
    assert reward_name in REWARD_SOURCES


def test_syntax_error_in_a_plugin_is_a_config_error(tmp_path):
    path = tmp_path / "syntax.py"
    path.write_text("def f(:\n")
    with pytest.raises(ConfigError) as e:
        load_module(str(path))
    assert str(e.value).startswith(f"plugins: importing {path} failed: SyntaxError")


def test_name_registered_twice_names_the_entry(tmp_path, reward_name):
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text(PLUGIN_SRC.format(name=reward_name))
    second.write_text(PLUGIN_SRC.format(name=reward_name))
    load_module(str(first))
    with pytest.raises(ConfigError) as e:
        load_module(str(second))
    msg = str(e.value)
    assert msg.startswith(f"plugins: {second}: reward source '{reward_name}' is registered twice (first by "
                          "drox_plugin_first_")
    assert "\n" not in msg
    # a built-in name
    clash = tmp_path / "clash.py"
    clash.write_text(PLUGIN_SRC.format(name="outcome"))
    with pytest.raises(ConfigError) as e:
        load_module(str(clash))
    assert str(e.value).startswith(f"plugins: {clash}: reward source 'outcome' is registered twice (first by drox")
    assert REWARD_SOURCES.get("outcome").module.startswith("drox.rewards")


def test_dotted_modules(tmp_path, monkeypatch):
    import json as json_module

    assert load_module("json") is json_module
    with pytest.raises(ConfigError) as e:
        load_module("no_such_module_xyz.sub")
    assert str(e.value) == ("plugins: no module named 'no_such_module_xyz' (importing no_such_module_xyz.sub); "
                            "give a file.py path or install the package")
    name = unique("boom_mod")
    (tmp_path / f"{name}.py").write_text("raise KeyError('k')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_module(name)
    assert str(e.value) == f"plugins: importing {name} failed: KeyError: 'k'"


def test_load_callable_forms(tmp_path, monkeypatch):
    path = tmp_path / "fns.py"
    path.write_text("def f(x):\n    return x + 1\n\nclass C:\n    @staticmethod\n    def m():\n        return 'm'\n\n"
                    "CONST = 3\n")
    assert load_callable(f"{path}:f", "k")(1) == 2
    assert load_callable(f"{path}:C.m", "k")() == "m"
    import os.path

    assert load_callable("os.path:join", "k") is os.path.join
    monkeypatch.chdir(tmp_path)  # a relative file path is relative to the working directory
    assert load_callable("fns.py:f", "k")(2) == 3


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "k=nocolon: give 'file.py:function' or 'module:function'"),
    (":f", "k=:f: give 'file.py:function' or 'module:function'"),
    ("{path}:", "k={path}:: give 'file.py:function' or 'module:function'"),
    ("{path}:missing", "k={path}:missing: {path} has no attribute 'missing'"),
    ("{path}:C.nope", "k={path}:C.nope: {path} has no attribute 'C.nope'"),
    ("{path}:CONST", "k={path}:CONST: CONST is not callable"),
    ("json:nope", "k=json:nope: json has no attribute 'nope'"),
])
def test_load_callable_bad_forms(tmp_path, spec, message):
    path = tmp_path / "fns.py"
    path.write_text("def f():\n    return 1\n\nclass C:\n    pass\n\nCONST = 3\n")
    with pytest.raises(ConfigError) as e:
        load_callable(spec.format(path=path), "k")
    assert str(e.value) == message.format(path=path)


def test_load_callable_missing_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_callable(f"{tmp_path}/none.py:f", "reward.function.path")
    assert str(e.value).startswith(f"reward.function.path: {tmp_path}/none.py is not a file")


@pytest.mark.parametrize("overrides, expected", [
    (["model=tiny", "plugins=[a.py,b.mod]", "+reward=x"], ["a.py", "b.mod"]),
    (["+plugins=a.py"], ["a.py"]),
    (["++plugins=[dir/x.py]"], ["dir/x.py"]),
    (["plugins=/abs/path/p-1.py"], ["/abs/path/p-1.py"]),
    (["plugins=[]"], []),
    (["plugins=['a b.py']"], ["a b.py"]),
    (["model=tiny", "reward.plugins=[x.py]", "plugins_extra=1", "myplugins=a.py", "+reward=plugins"], []),
    ([], []),
])
def test_plugins_from_overrides(overrides, expected):
    assert plugins_from_overrides(overrides) == expected


# ================================================================================================ 3. the README example


README_NAME = "short_readme_test"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Write your own reward source", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no ```python block under '### Write your own reward source'"
    return match.group(1)


@pytest.fixture(scope="module")
def readme_plugin(tmp_path_factory):
    code = readme_block()
    assert '@register_reward("short", ShortOpts)' in code
    path = tmp_path_factory.mktemp("readme") / "my_rewards.py"
    path.write_text(code.replace('"short"', f'"{README_NAME}"'))
    yield path
    REWARD_SOURCES.unregister(README_NAME)


def test_readme_bash_line_matches_the_python_block():
    text = (ROOT / "README.md").read_text().split("### Write your own reward source", 1)[1]
    bash = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert "plugins=[my_rewards.py] +reward=short reward.short.target=5" in bash


def test_readme_plugin_through_the_cli(readme_plugin):
    args = ["config", "model=tiny", f"plugins=[{readme_plugin}]", f"+reward={README_NAME}"]
    result = runner.invoke(app, [*args, f"reward.{README_NAME}.target=5"])
    assert result.exit_code == 0, result.output
    assert "target: 5" in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "target: 10" in result.output  # the dataclass default, without a YAML file
    result = runner.invoke(app, [*args, f"reward.{README_NAME}.target=abc"])
    assert result.exit_code == 2, result.output
    assert f"reward.{README_NAME}.target=abc: expected an integer" in one_line(result.output)
    result = runner.invoke(app, [*args, f"reward.{README_NAME}.nope=1"])  # Hydra: not in the stored node
    assert result.exit_code == 2, result.output
    assert f"reward.{README_NAME}.nope" in one_line(result.output)
    result = runner.invoke(app, [*args, f"+reward.{README_NAME}.nope=1"])  # added: the registry rejects it
    assert result.exit_code == 2, result.output
    assert f"error: reward.{README_NAME}: unknown option(s) nope; allowed: target, weight" in one_line(result.output)


def test_a_missing_plugin_file_fails_the_cli_with_one_line(tmp_path):
    result = runner.invoke(app, ["config", "model=tiny", f"plugins=[{tmp_path}/gone.py]"])
    assert result.exit_code == 2
    assert f"plugins: {tmp_path}/gone.py is not a file" in one_line(result.output)


def test_unselected_plugin_reward_is_unknown_without_plugins():
    result = runner.invoke(app, ["config", "model=tiny", "+reward=never_registered_xyz"])
    assert result.exit_code == 2
    assert "never_registered_xyz" in one_line(result.output)


def test_readme_plugin_trains_one_step(readme_plugin, compose_cfg, tmp_path):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg(f"plugins=[{readme_plugin}]", f"+reward={README_NAME}", f"reward.{README_NAME}.target=5",
                      "trainer.steps=1", "logger.completions_per_step=4")
    loop.run_training(cfg, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1]
    mean = rows[0][f"reward/{README_NAME}/mean"]
    assert mean <= 0
    assert mean == pytest.approx(rows[0]["reward/mean"])  # the only source, weight 1
    # every rollout of the step (Q·G = 2·2) is in completions.jsonl: recompute the README's score by hand
    shown = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert len(shown) == 4
    for c in shown:
        assert c["reward"] == pytest.approx(-abs(len(c["completion"]) - 5))
    assert mean == pytest.approx(sum(c["reward"] for c in shown) / 4)


# ================================================================================================ 4. TRL-style functions


def test_call_reward_function_none_is_nan():
    def f(prompts, completions, **kw):
        return [None, 1.0, 0.5]

    out = call_reward_function(f, ["p"] * 3, ["a", "b", "c"], {}, "my_f")
    assert out.dtype == torch.float32 and out.shape == (3,)
    assert math.isnan(out[0]) and out[1:].tolist() == [1.0, 0.5]
    ints = call_reward_function(lambda prompts, completions: [1, -2], ["p"] * 2, ["a", "b"], {}, "g")
    assert ints.tolist() == [1.0, -2.0]
    tensor = call_reward_function(lambda prompts, completions: torch.tensor([0.25, 3.0]), ["p"] * 2, ["a", "b"],
                                  {}, "t")
    assert tensor.tolist() == [0.25, 3.0]


@pytest.mark.parametrize("result, message", [
    ([1.0, 2.0], "reward function my_f returned 2 scores for 3 completions"),
    ([1.0, 2.0, 3.0, 4.0], "reward function my_f returned 4 scores for 3 completions"),
    ([1.0, "x", 0.0], "reward function my_f returned 'x' for completion 1; expected a finite number or None"),
    ([1.0, 0.0, True], "reward function my_f returned True for completion 2; expected a finite number or None"),
    ([float("inf"), 0.0, 0.0], "reward function my_f returned inf for completion 0"),
    ([float("nan"), 0.0, 0.0], "reward function my_f returned nan for completion 0"),
    (1.0, "reward function my_f returned float; expected a list of 3 floats"),
    (None, "reward function my_f returned NoneType; expected a list of 3 floats"),
])
def test_call_reward_function_errors_name_the_function(result, message):
    with pytest.raises(ValueError) as e:
        call_reward_function(lambda prompts, completions, **kw: result, ["p"] * 3, ["a", "b", "c"], {}, "my_f")
    assert str(e.value).startswith(message)


def test_call_reward_function_accepts_numpy_scores_like_trl():
    """TRL's GRPOTrainer turns a function's output into ``torch.tensor([r if r is not None else nan ...])``, so
    numpy scalars (np.float32, np.int64) and a 1-D ndarray are valid scores there."""
    np = pytest.importorskip("numpy")
    out = call_reward_function(lambda prompts, completions: [np.float32(0.5), np.int64(1), None], ["p"] * 3,
                               ["a", "b", "c"], {}, "np_f")
    assert out[:2].tolist() == [0.5, 1.0] and math.isnan(out[2])
    out = call_reward_function(lambda prompts, completions: np.array([0.25, 2.0]), ["p"] * 2, ["a", "b"], {}, "arr")
    assert out.tolist() == [0.25, 2.0]


def test_call_reward_function_passes_only_named_columns_unless_kwargs():
    columns = {"answer": ["1", "2"], "problem_id": ["p0", "p1"], "completion_ids": [[1], [2, 3]]}
    seen = {}

    def named(prompts, completions, answer):
        seen["named"] = dict(prompts=prompts, completions=completions, answer=answer)
        return [0.0, 0.0]

    def everything(prompts, completions, **kwargs):
        seen["all"] = dict(kwargs)
        return [0.0, 0.0]

    def positional_named(completions, prompts, completion_ids):
        seen["ids"] = completion_ids
        return [0.0, 0.0]

    call_reward_function(named, ["q0", "q1"], ["a", "b"], columns, "named")
    call_reward_function(everything, ["q0", "q1"], ["a", "b"], columns, "all")
    call_reward_function(positional_named, ["q0", "q1"], ["a", "b"], columns, "ids")
    assert seen["named"] == {"prompts": ["q0", "q1"], "completions": ["a", "b"], "answer": ["1", "2"]}
    assert seen["all"] == columns
    assert seen["ids"] == [[1], [2, 3]]


FUNCTION_SRC = '''
CALLS = []

def f(prompts, completions, answer, completion_ids, **kw):
    CALLS.append(dict(prompts=prompts, completions=completions, answer=answer, completion_ids=completion_ids,
                      kw=kw))
    return [None, 1.0, 0.5, -2]

def only_prompts(prompts, completions):
    return [None] * len(completions)
'''


def function_ctx():
    tok = CharTok()
    texts = ["ab", "c", "def", "gh"]
    batch = make_batch(tok, ["q0", "q1"], texts, G=2)
    rows = [{"prompt": "q0", "answer": "1", "problem_id": "p0"}, {"prompt": "q1", "answer": "2", "problem_id": "p1"}]
    return ScoringContext(batch=batch, rows=rows, task=None), texts


def test_function_reward_on_a_batch(tmp_path):
    path = tmp_path / "trl_fn.py"
    path.write_text(FUNCTION_SRC)
    opts = REWARD_SOURCES.parse("function", {"path": f"{path}:f", "weight": 2})
    ctx, texts = function_ctx()
    out = function_reward(ctx, opts)
    assert out.seq.tolist() == [[0.0, 1.0], [0.5, -2.0]]
    assert out.diagnostics == {"none_frac": 0.25}
    call = load_module(str(path)).CALLS[-1]
    assert call["prompts"] == ["q0", "q0", "q1", "q1"]
    assert call["completions"] == texts
    assert call["answer"] == ["1", "1", "2", "2"]
    assert call["completion_ids"] == [[97, 98], [99], [100, 101, 102], [103, 104]]  # unpadded
    assert call["kw"] == {"problem_id": ["p0", "p0", "p1", "p1"]}
    # through the combiner: weight 2, None counts 0
    combined = score(ctx, {"function": opts})
    assert combined.seq.tolist() == [[0.0, 2.0], [1.0, -4.0]]
    assert combined.metrics["reward/function/none_frac"] == 0.25
    assert combined.metrics["reward/function/mean"] == pytest.approx(-0.125)


def test_function_reward_all_none(tmp_path):
    path = tmp_path / "trl_none.py"
    path.write_text(FUNCTION_SRC)
    ctx, _ = function_ctx()
    out = function_reward(ctx, REWARD_SOURCES.parse("function", {"path": f"{path}:only_prompts"}))
    assert out.seq.tolist() == [[0.0, 0.0], [0.0, 0.0]] and out.diagnostics == {"none_frac": 1.0}


def test_function_reward_config_time_errors(tmp_path):
    result = runner.invoke(app, ["config", "model=tiny", "+reward=function"])
    assert result.exit_code == 2, result.output
    assert "reward.function.path is required" in one_line(result.output)
    result = runner.invoke(app, ["config", "model=tiny", "+reward=function",
                                 f"reward.function.path={tmp_path}/gone.py:f"])
    assert result.exit_code == 2, result.output
    assert f"reward.function.path: {tmp_path}/gone.py is not a file" in one_line(result.output)
    path = tmp_path / "ok_fn.py"
    path.write_text(FUNCTION_SRC)
    result = runner.invoke(app, ["config", "model=tiny", "+reward=function", f"reward.function.path={path}:nope"])
    assert result.exit_code == 2, result.output
    assert f"reward.function.path={path}:nope: {path} has no attribute 'nope'" in one_line(result.output)
    result = runner.invoke(app, ["config", "model=tiny", "+reward=function", f"reward.function.path={path}:f"])
    assert result.exit_code == 0, result.output
    assert f"{path}:f" in result.output.replace("\n", "")


def test_config_output_is_valid_yaml_with_long_values(tmp_path):
    """``drox config ... > run.yaml``: the printed YAML must not be wrapped at the console width (80 columns
    when not a terminal), or a long value moves to its own line and the file no longer reads back."""
    folder = tmp_path / ("a_rather_long_folder_name_" * 3)
    folder.mkdir()
    path = folder / "ok_fn.py"
    path.write_text(FUNCTION_SRC)
    result = runner.invoke(app, ["config", "model=tiny", "+reward=function", f"reward.function.path={path}:f"])
    assert result.exit_code == 0, result.output
    printed = OmegaConf.create(result.output)
    assert printed.reward.function.path == f"{path}:f"


# ================================================================================================ 5. exact top-p counts


@pytest.mark.parametrize("p, n, k", [(0.6, 25, 15), (0.1, 10, 1), (0.3, 10, 3), (0.7, 10, 7), (0.2, 5, 1),
                                     (0.2, 6, 2), (0.6, 0, 0), (1.0, 7, 7), (0.25, 3, 1)])
def test_ceil_fraction_hand_cases(p, n, k):
    assert ceil_fraction(p, n) == k
    t = ceil_fraction(p, torch.tensor([n, n]))
    assert t.dtype == torch.long and t.tolist() == [k, k]


@pytest.mark.parametrize("top_p", [0.1, 0.2, 0.3, 0.6, 0.7])
def test_top_p_keeps_exactly_ceil_of_the_decimal(top_p):
    J = 200
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(J, J, generator=g)
    lengths = torch.arange(1, J + 1)
    mask = (torch.arange(J)[None, :] < lengths[:, None]).float()  # row i: |y| = i + 1
    w = sigma_weights(sigma, mask, "top_p", top_p=top_p)
    kept = (w > 0).sum(-1)
    expected = [max(1, math.ceil(Fraction(str(top_p)) * n)) for n in range(1, J + 1)]
    assert kept.tolist() == expected
    assert torch.allclose(w.sum(-1), torch.ones(J))
    for i in (0, 9, 24, 199):  # the kept tokens are the largest σ, each weighted 1/k
        n, k = i + 1, expected[i]
        top = set(torch.topk(sigma[i, :n], k).indices.tolist())
        assert set(torch.nonzero(w[i]).flatten().tolist()) == top
        assert torch.allclose(w[i][w[i] > 0], torch.full((k,), 1.0 / k))
    assert (w[mask == 0] == 0).all()


def test_top_p_hand_cases_and_ties():
    def kept(top_p, n):
        sigma = torch.linspace(1.0, 2.0, n)[None]
        return int((sigma_weights(sigma, torch.ones(1, n), "top_p", top_p=top_p) > 0).sum())

    assert kept(0.6, 25) == 15 and kept(0.1, 10) == 1 and kept(0.3, 10) == 3 and kept(0.7, 10) == 7
    # ties broken by position: equal σ keeps the first ceil(0.5·4) = 2 positions
    w = sigma_weights(torch.ones(1, 4), torch.ones(1, 4), "top_p", top_p=0.5)
    assert w.tolist() == [[0.5, 0.5, 0.0, 0.0]]
    # padding never kept, even with a larger σ there
    w = sigma_weights(torch.tensor([[0.1, 0.2, 9.0]]), torch.tensor([[1.0, 1.0, 0.0]]), "top_p", top_p=0.5)
    assert w.tolist() == [[0.0, 1.0, 0.0]]


# ================================================================================================ 6. option files


GROUPS = {"reward": REWARD_SOURCES, "filter": FILTERS, "gate": GATES}
ALIASES = {("reward", "positive_only"), ("reward", "negative_only"), ("reward", "w_reinforce")}
"""Files that select other components (here the psr / nsr / w_reinforce estimators), not option files."""
YAML_FILES = [(g, p) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml")) if (g, p.stem) not in ALIASES]


def yaml_block(group: str, path: Path):
    """The options a YAML option file sets: at ``<name>``, or at ``<group>.<name>`` for ``@package _global_``."""
    cfg = OmegaConf.load(path)
    first = path.read_text().splitlines()[0].strip()
    if first == "# @package _global_":
        return cfg[group][path.stem]
    return cfg[path.stem]


def test_yaml_files_found():
    names = {(g, p.stem) for g, p in YAML_FILES}
    assert ("reward", "outcome") in names and ("filter", "entropy") in names and ("gate", "rubric") in names
    assert ("reward", "negative_only") not in names and all((CONF_DIR / g / f"{n}.yaml").is_file() for g, n in ALIASES)


@pytest.mark.parametrize("group, path", YAML_FILES, ids=[f"{g}/{p.stem}" for g, p in YAML_FILES])
def test_yaml_option_file_equals_the_dataclass_defaults(group, path):
    registry = GROUPS[group]
    name = path.stem
    assert name in registry, f"{group}/{name}.yaml names no registered {registry.what}"
    options = registry.get(name).options
    block = yaml_block(group, path)
    assert registry.parse(name, block) == options()
    fields = {f.name for f in dataclasses.fields(options) if f.init}
    assert set(block) == fields, f"{path.name} should document every option: missing {fields - set(block)}"


SELECTABLE = [(g, n) for g, reg in GROUPS.items() for n in reg.names()]


def test_function_and_every_builtin_name_is_listed():
    assert ("reward", "function") in SELECTABLE and ("reward", "outcome") in SELECTABLE
    no_yaml = {n for g, n in SELECTABLE if not (CONF_DIR / g / f"{n}.yaml").is_file()}
    assert "function" in no_yaml


@pytest.mark.parametrize("group, name", SELECTABLE, ids=[f"{g}/{n}" for g, n in SELECTABLE])
def test_every_registered_component_is_selectable(compose_cfg, tmp_path, group, name):
    registry = GROUPS[group]
    extra = []
    if name == "function":  # its path is required
        (tmp_path / "f.py").write_text("def f(prompts, completions, **kw):\n    return [0.0] * len(completions)\n")
        extra = [f"reward.function.path={tmp_path}/f.py:f"]
    if name == "delta_belief":  # it reads beliefs about a secret after each turn: a multi-turn task only
        extra = ["task=twenty_questions"]
    if name == "distill":  # its teacher is required
        extra = ["reward.distill.teacher=tiny"]
    cfg = compose_cfg(f"+{group}={name}", *extra)
    block = OmegaConf.to_container(cfg[group][name], resolve=True)
    parsed = registry.parse(name, block)
    if name == "function":
        assert parsed == registry.get(name).options(path=f"{tmp_path}/f.py:f")
    elif name == "distill":
        assert parsed == registry.get(name).options(teacher="tiny")
    else:
        assert parsed == registry.get(name).options()


# ================================================================================================ 7. estimators


def test_plugin_advantage_estimator_is_accepted(compose_cfg):
    from drox.pipeline import build_pipeline

    name = unique("plus_one")

    @drox.register_advantage_estimator(name)
    def plus_one(scores, eps, valid):
        return scores.float() + 1

    try:
        assert compute_advantages(torch.tensor([[1.0, 2.0]]), name).tolist() == [[2.0, 3.0]]
        cfg = compose_cfg()
        cfg.trainer.advantage.estimator = name
        build_pipeline(cfg)
        assert compose_cfg(f"trainer.advantage.estimator={name}").trainer.advantage.estimator == name
    finally:
        ADVANTAGE_ESTIMATORS.unregister(name)
    cfg = compose_cfg()
    cfg.trainer.advantage.estimator = name
    with pytest.raises(ConfigError) as e:
        build_pipeline(cfg)
    assert str(e.value) == (f"trainer.advantage.estimator={name} is not allowed; choose one of: "
                            f"{', '.join(ADVANTAGE_ESTIMATORS.names())}")


def test_unknown_estimator_lists_the_registered_names(compose_cfg):
    from drox.pipeline import build_pipeline

    cfg = compose_cfg()
    cfg.trainer.advantage.estimator = "nope"
    with pytest.raises(ConfigError) as e:
        build_pipeline(cfg)
    names = ADVANTAGE_ESTIMATORS.names()
    assert {"dr_grpo", "grpo", "none", "rloo"} <= set(names)
    message = f"trainer.advantage.estimator=nope is not allowed; choose one of: {', '.join(names)}"
    assert str(e.value) == message
    result = runner.invoke(app, ["config", "model=tiny", "trainer.advantage.estimator=nope"])
    assert result.exit_code == 2  # the CLI adds the nearest name (drox.cli.suggest)
    hinted = message.replace("not allowed;", "not allowed (did you mean trainer.advantage.estimator=none?);")
    assert f"error: {hinted}" in one_line(result.output)
