"""Fuzzed overrides and data files: whatever a user types, the answer is a composed config or one line with exit
code 2, never a traceback from deep inside Hydra, OmegaConf, torch or a component's options."""

from __future__ import annotations

import json

import pytest
import typer
from omegaconf import OmegaConf

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from drox.cli.main import CONF_DIR, compose  # noqa: E402
from drox.config import DroxConfig  # noqa: E402


def _leaf_keys(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if OmegaConf.is_dict(value):
            yield from _leaf_keys(value, path + ".")
        else:
            yield path


BASE_KEYS = sorted(k for k in _leaf_keys(OmegaConf.structured(DroxConfig)) if k not in ("plugins",))
COMPONENTS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")) for group in ("reward", "filter", "gate")}
COMPONENT_KEYS = {(group, name): sorted(_leaf_keys(OmegaConf.load(CONF_DIR / group / f"{name}.yaml")))
                  for group, names in COMPONENTS.items() for name in names}
GROUPS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
          for group in ("model", "task", "trainer", "rollout", "eval", "scale")}

VALUES = st.one_of(
    st.integers(-5, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "[]", "[1,2]", "{}", "''", "abc", "-1", "0", "1e-9", "nan", "inf",
                     "${oops}", "[a,", "\\boxed{}"]),
    st.text(alphabet="abcxyz01_-. ", min_size=0, max_size=8))


@st.composite
def overrides(draw):
    chosen = ["model=tiny", "logger.wandb_mode=disabled"]
    for group, options in GROUPS.items():
        if draw(st.booleans()):
            chosen.append(f"{group}={draw(st.sampled_from(options + ['nonexistent']))}")
    component = draw(st.sampled_from([None, *COMPONENT_KEYS]))
    if component is not None:
        group, name = component
        chosen.append(f"+{group}={name}")
        keys = COMPONENT_KEYS[component]
        if keys:
            chosen.append(f"{group}.{draw(st.sampled_from(keys))}={draw(VALUES)}")
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(st.sampled_from(BASE_KEYS), st.sampled_from(BASE_KEYS).map(lambda k: k + "x")))
        chosen.append(f"{key}={draw(VALUES)}")
    return chosen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides())
def test_any_override_composes_or_is_one_line_exit_2(args):
    try:
        compose(args)
    except typer.Exit as e:
        assert e.exit_code == 2, args


JSONL_LINES = st.one_of(
    st.just('{"prompt": "1+1?", "answer": "2"}'),
    st.sampled_from(['{"prompt": 3, "answer": "2"}', '{"answer": "2"}', '{"prompt": "x"}', "[1, 2]", "{", "null",
                     '{"prompt": "x", "answer": {"a": 1}}', '{"prompt": "x", "answer": ""}', "\x00\x01", '"text"',
                     '{"prompt": "x", "answer": [1]}', '{"prompt": null, "answer": "1"}']),
    st.text(max_size=20))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(JSONL_LINES, min_size=0, max_size=5))
def test_any_jsonl_file_loads_or_is_one_task_error(tmp_path, lines):
    from drox.config import TaskConfig
    from drox.tasks import TaskError, build_task

    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass") if all(
        "\ud800" > c or c > "\udfff" for line in lines for c in line) else path.write_text("{\n")
    cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), {"name": "jsonl", "path": str(path)})
    try:
        task = build_task(cfg, split="train")
    except TaskError as e:
        assert str(path) in str(e) and "\n" not in str(e).strip()
    else:
        assert len(task.dataset) >= 1
        for row in task.dataset:
            assert isinstance(row["answer"], str) and row["answer"].strip()


@pytest.mark.parametrize("content", [b"", b"PAR1", b"not parquet at all", b"PAR1" + b"\x00" * 64 + b"PAR1"])
def test_a_malformed_parquet_file_is_one_task_error(tmp_path, content):
    from drox.config import TaskConfig
    from drox.tasks import TaskError, build_task

    path = tmp_path / "data.parquet"
    path.write_bytes(content)
    cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), {"name": "parquet", "path": str(path)})
    with pytest.raises(TaskError, match=str(path).replace("\\", "\\\\")):
        build_task(cfg, split="train")


def test_the_fuzzer_sees_every_component():
    assert {"variance", "outcome", "rouge"} <= set(COMPONENTS["reward"]) and "query" in COMPONENTS["filter"]
    assert "trainer.lr" in BASE_KEYS and json.dumps(BASE_KEYS)
