"""drox.integrations.verl against verl 0.9.1's own code, on CPU (``make test-verl``; skipped where verl is not
installed, as in the main environment). The contracts of docs/verl.md "How drox plugs into verl": plugin discovery,
estimator numbers through verl's ``compute_advantage``, the reward manager on a real ``DataProto``, Hydra composition
of the generated config through verl's ``validate_config``, the entry point, and the plugin inside a Ray worker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl", reason="the verl suite runs in its own environment: make test-verl")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY  # noqa: E402

import drox.integrations.verl.register as register  # noqa: E402
from drox.errors import ConfigError  # noqa: E402
from drox.integrations.verl.estimators import ESTIMATORS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TINY_OVERRIDES  # noqa: E402

HF = ["model=hf", "model.path=Qwen/Qwen2.5-0.5B-Instruct"]
DROX_NAMES = sorted(ESTIMATORS)


def test_installed_verl_is_the_supported_release():
    from drox.integrations.verl import SUPPORTED_VERL, check_versions

    assert verl.__version__ == SUPPORTED_VERL == check_versions() == "0.9.1"


# ------------------------------------------------------------------------------------------------ T1 registration


def _registry_in_fresh_process(**env) -> list:
    code = ("import verl; from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as R; "
            "print(' '.join(sorted(f'{n}:{R[n].__module__}' for n in R if n.startswith('drox_'))))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**clean, **env}, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_plugin_discovery_by_entry_point_and_by_module_variable():
    """A plain `import verl` registers drox (the `verl.plugins` entry point of drox's pyproject); with entry points
    off it does not; VERL_USE_EXTERNAL_MODULES alone does."""
    expected = [f"{n}:drox.integrations.verl.estimators" for n in DROX_NAMES]
    assert _registry_in_fresh_process() == expected
    assert _registry_in_fresh_process(VERL_USE_EXTERNAL_PLUGINS="none") == []
    assert _registry_in_fresh_process(VERL_USE_EXTERNAL_PLUGINS="none",
                                      VERL_USE_EXTERNAL_MODULES="drox.integrations.verl.register") == expected


def test_registration_is_idempotent_and_checked(monkeypatch):
    import importlib

    import drox.integrations.verl.estimators as estimators

    assert sorted(register.register()) == sorted(register.register()) == DROX_NAMES == sorted(register.REGISTERED)
    old = ADV_ESTIMATOR_REGISTRY["drox_psr"]
    importlib.reload(estimators)  # new function objects: a fresh copy replaces drox's own entries, no clash
    importlib.reload(register)
    register.assert_registered()
    assert ADV_ESTIMATOR_REGISTRY["drox_psr"] is estimators.ESTIMATORS["drox_psr"] is not old
    monkeypatch.setitem(ADV_ESTIMATOR_REGISTRY, "drox_nsr", lambda **kw: None)
    with pytest.raises(ConfigError) as e:
        register.assert_registered()
    assert str(e.value).startswith("verl's advantage-estimator registry lacks drox's drox_nsr; import ")
    monkeypatch.undo()
    register.assert_registered()


# ------------------------------------------------------------------------------------------------ T1 estimators


def _batch(scores, lengths, uids, T=4) -> DataProto:
    rewards, mask = torch.zeros(len(scores), T), torch.zeros(len(scores), T)
    for i, (s, n) in enumerate(zip(scores, lengths)):
        mask[i, :n] = 1
        rewards[i, n - 1] = s
    return DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": np.array(uids, dtype=object)})


def _verl_advantages(data: DataProto, estimator: str, config=None, norm=True):
    from verl.trainer.ppo.ray_trainer import compute_advantage

    out = compute_advantage(data, adv_estimator=estimator, norm_adv_by_std_in_grpo=norm,
                            config=OmegaConf.create(config or {}))
    return out.batch["advantages"], out.batch["returns"]


def test_sign_selective_numbers_through_verls_compute_advantage():
    """W-REINFORCE with λ = 0.25 and weight 2 (arXiv 2506.01347 Eq. 9), through verl's own dispatcher (the V0 and V1
    trainers' path for every registered estimator): correct rows 0.5 on each valid token, incorrect -2."""
    data = _batch([1.0, 0.0, 1.0, 0.0], [2, 3, 1, 4], ["a", "a", "b", "b"])
    adv, ret = _verl_advantages(data, "drox_w_reinforce", {"drox": {"lam": 0.25, "scale": 2.0}})
    assert adv.tolist() == [[0.5, 0.5, 0, 0], [-2, -2, -2, 0], [0.5, 0, 0, 0], [-2, -2, -2, -2]]
    assert torch.equal(adv, ret)
    adv, _ = _verl_advantages(_batch([1.0, 0.0], [1, 2], ["a", "a"]), "drox_nsr")
    assert adv.tolist() == [[0, 0, 0, 0], [-1, -1, 0, 0]]
    adv, _ = _verl_advantages(_batch([1.0, 0.0], [1, 2], ["a", "a"]), "drox_psr")
    assert adv.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]


def test_grpo_dense_through_verls_v1_multi_trajectory_path():
    """The V1 trainer's own function (compute_advantage_for_multi_trajectories, keys {uid}_{session}_{index}) keeps
    drox_grpo_dense's per-token advantages. Hand values as in the main suite: group a's step rewards 0.5, 1, 0 ->
    normalised 0, +1, -1 (mean 0.5, unbiased std 0.5) -> reward-to-go [1, 1, 1, 0] and [-1, -1, 0, 0]."""
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    rewards = torch.tensor([[0.0, 0.5, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    uids = ["a", "b", "a", "b"]
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": np.array(uids, dtype=object)})
    keys = [f"{u}_{s}_0" for u, s in zip(uids, [0, 0, 1, 1])]
    out = compute_advantage_for_multi_trajectories(data, batch_keys=keys, adv_estimator="drox_grpo_dense",
                                                   config=OmegaConf.create({"drox": {"eps": 1e-6}}))
    z = 0.5 / (0.5 + 1e-6)
    expected = torch.tensor([[z, z, z, 0], [0] * 4, [-z, -z, 0, 0], [0] * 4])
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-6, atol=1e-7)


def test_the_estimators_drox_maps_to_verls_builtins_give_drox_numbers():
    """The launcher maps grpo / dr_grpo / rloo to verl's own estimators; for groups of >= 2 they give drox's numbers.
    Group a: scores 1, 0, 0, 1: mean 0.5, unbiased std sqrt(1/3) -> GRPO ±0.5/0.57735 = ±0.8660; Dr. GRPO ±0.5;
    RLOO: 1 - 1/3 = 0.6667 and 0 - 2/3."""
    from drox.trainers.algos import compute_advantages

    scores = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5]
    uids = ["a", "a", "a", "a", "b", "b", "b"]
    data = _batch(scores, [1] * 7, uids, T=1)
    q = {"a": torch.tensor([[1.0, 0.0, 0.0, 1.0]]), "b": torch.tensor([[1.0, 0.0, 0.5]])}
    for drox_name, verl_name, norm in (("grpo", "grpo", True), ("dr_grpo", "grpo", False), ("rloo", "rloo", True)):
        adv, _ = _verl_advantages(_batch(scores, [1] * 7, uids, T=1), verl_name, norm=norm)
        mine = torch.cat([compute_advantages(q["a"], drox_name)[0], compute_advantages(q["b"], drox_name)[0]])
        assert adv[:, 0].tolist() == pytest.approx(mine.tolist(), abs=1e-6), drox_name
    adv, _ = _verl_advantages(data, "grpo")
    assert adv[:4, 0].tolist() == pytest.approx([0.8660239, -0.8660239, -0.8660239, 0.8660239], abs=1e-6)
    adv, _ = _verl_advantages(_batch(scores, [1] * 7, uids, T=1), "rloo")
    assert adv[:2, 0].tolist() == pytest.approx([2 / 3, -2 / 3])


# ------------------------------------------------------------------------------------------------ T1 reward manager


class CharTokenizer:
    """id = ord(char); 0 is padding (a special token)."""

    eos_token = ""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(i)) for i in ids if not (skip_special_tokens and int(i) == 0))


def _trajectory(prompt: str, response: str, T: int, ground_truth: str, extra_info: dict) -> DataProto:
    p = torch.tensor([[ord(c) for c in prompt]])
    r = torch.zeros(1, T, dtype=torch.long)
    r[0, : len(response)] = torch.tensor([ord(c) for c in response])
    attn = torch.cat([torch.ones_like(p), (r != 0).long()], dim=1)
    return DataProto.from_dict(
        tensors={"prompts": p, "responses": r, "input_ids": torch.cat([p, r], 1), "attention_mask": attn},
        non_tensors={"data_source": np.array(["drox/countdown"], dtype=object),
                     "reward_model": np.array([{"style": "rule", "ground_truth": ground_truth}], dtype=object),
                     "extra_info": np.array([extra_info], dtype=object)})


def _manager_config(*extra):
    from drox.integrations.verl.launch import translate
    from drox.integrations.verl.resolve import compose_verl_config
    from drox.cli.main import compose

    cfg = compose([*TINY_OVERRIDES, *HF, *extra])
    plan = translate(cfg, run_dir=Path("/tmp/drox-verl-test"))
    return compose_verl_config(plan.overrides)


def test_reward_manager_resolves_by_path_and_scores_a_real_dataproto():
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    from drox.integrations.verl.reward_manager import DroxRewardManager

    config = _manager_config("+reward=[outcome,format]", "reward.outcome.incorrect=-1", "reward.format.weight=0.5")
    assert resolve_reward_manager_cls(config) is DroxRewardManager  # source=importlib, pkg:// path
    row = {"problem_id": "countdown-train-0", "answer": "10", "numbers": [2, 3, 4], "target": 10}
    info = {"index": 0, "problem_id": "countdown-train-0", "split": "train", "drox_task": "countdown",
            "drox_verifier": "countdown", "drox_row": json.dumps(row)}

    async def score(response):
        manager = DroxRewardManager(config=config, tokenizer=CharTokenizer(), compute_score=None)
        return await manager.run_single(_trajectory("Q?", response, 16, "10", info))

    right = asyncio.run(score("\\boxed{2*3+4}"))
    assert right == {"reward_score": 1.5, "reward_extra_info": {"acc": 1.0, "outcome": 1.0, "format": 1.0,
                                                                "verifier_timeouts": 0.0, "score": 1.5}}
    wrong = asyncio.run(score("it is 2*3*4"))  # incorrect (-1) and no box (0)
    assert (wrong["reward_score"], wrong["reward_extra_info"]["acc"]) == (-1.0, 0.0)
    # verl places the scalar on the last valid response token (the sparse layout drox's estimators read)
    data = _trajectory("Q?", "\\boxed{2*3+4}", 16, "10", info)
    dense = DroxRewardManager.assemble_rm_scores(data, [right["reward_score"]])
    assert dense[0].nonzero().flatten().tolist() == [len("\\boxed{2*3+4}") - 1] and dense[0].sum() == 1.5


PRM_TEXTS = ["1+1=2\n2+2=4", "1+1=3\n3+3=6!"]
PRM_INFO = {"index": 0, "problem_id": "arithmetic-train-0", "split": "train", "drox_task": "arithmetic",
            "drox_verifier": "math", "drox_row": json.dumps({"answer": "4", "steps": ["1 + 1 = 2", "2 + 2 = 4"]})}


def test_reward_manager_scores_the_oracle_prm_on_a_real_dataproto():
    """+reward=[outcome,prm] through verl's config: sequence mode adds weight · min(step scores) to reward_score; dense
    mode leaves the outcome alone and returns the steps as one JSON string (CharTokenizer: token t is character t,
    so the steps ending at characters 5 and 11 end at tokens 4 and 10)."""
    from drox.integrations.verl.reward_manager import DroxRewardManager

    async def score(config, response):
        manager = DroxRewardManager(config=config, tokenizer=CharTokenizer(), compute_score=None)
        return await manager.run_single(_trajectory("Q?", response, 16, "4", PRM_INFO))

    sequence = _manager_config("+reward=[outcome,prm]", "reward.prm.weight=0.5", "reward.prm.aggregation=mean")
    right, wrong = (asyncio.run(score(sequence, text)) for text in PRM_TEXTS)
    assert right["reward_score"] == 1.5 and wrong["reward_score"] == 0.25  # 1 + 0.5·1 and 0 + 0.5·mean(0, 1)
    assert (wrong["reward_extra_info"]["prm"], wrong["reward_extra_info"]["prm_steps"]) == (0.5, 2.0)
    assert "drox_steps" not in wrong["reward_extra_info"]
    dense = _manager_config("+reward=[outcome,prm]", "reward.prm.dense=true")
    right, wrong = (asyncio.run(score(dense, text)) for text in PRM_TEXTS)
    assert (right["reward_score"], wrong["reward_score"]) == (1.0, 0.0)  # the outcome alone
    info = wrong["reward_extra_info"]
    assert isinstance(info["drox_steps"], str)  # verl's validation skips strings and averages the rest
    assert json.loads(info["drox_steps"]) == {"score": [0.0, 1.0], "end": [5, 11], "token": [4, 10]}
    assert (info["prm"], info["prm_aggregate"]) == (0.0, 0.0)
    assert json.loads(right["reward_extra_info"]["drox_steps"])["score"] == [1.0, 1.0]
    # verl's validation metrics over these infos: the JSON is skipped, the scalars averaged
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    infos = {k: [right["reward_extra_info"][k], info[k]] for k in info}
    metrics = process_validation_metrics(["drox/arithmetic"] * 2, ["u", "u"], infos)["drox/arithmetic"]
    assert "drox_steps" not in metrics and metrics["acc"]["mean@2"] == 0.5


def test_the_prm_config_composes_and_dense_needs_drox_s_trainer():
    from omegaconf import open_dict

    from drox.integrations.verl.resolve import validate_verl_config

    config = _manager_config("+reward=[outcome,prm]", "reward.prm.dense=true", "reward.prm.aggregation=prod")
    validate_verl_config(config)
    assert (config.drox.reward.prm.enable, config.drox.reward.prm.dense, config.trainer.v1.trainer_mode) == (
        True, True, "drox_sync")
    with open_dict(config):
        config.trainer.v1.trainer_mode = "sync"
    with pytest.raises(ConfigError, match="drox.reward.prm.dense=true needs trainer.v1.trainer_mode=drox_sync"):
        validate_verl_config(config)
    validate_verl_config(_manager_config("+reward=prm"))  # sequence mode: verl's own trainer


# ------------------------------------------------------------------------------------------------ T1 config


@pytest.mark.parametrize("extra, checks", [
    ((), {"algorithm.adv_estimator": "grpo", "actor_rollout_ref.rollout.n": 2, "data.train_batch_size": 2,
          "reward.reward_manager.name": "DroxRewardManager", "actor_rollout_ref.rollout.name": "vllm",
          "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES": "drox.integrations.verl.register"}),
    (("+reward=w_reinforce", "+filter=dynamic_sampling"),
     {"algorithm.adv_estimator": "drox_w_reinforce", "algorithm.drox.lam": 0.1, "algorithm.filter_groups.enable": True,
      "algorithm.filter_groups.metric": "acc"}),
    (("trainer.advantage.estimator=dr_grpo", "trainer.loss_agg=seq-mean-token-sum-norm", "trainer.kl_coef=0.001",
      "logger.wandb_mode=offline"),
     {"algorithm.norm_adv_by_std_in_grpo": False, "actor_rollout_ref.actor.loss_scale_factor": 8,
      "actor_rollout_ref.actor.use_kl_loss": True, "actor_rollout_ref.actor.kl_loss_coef": 0.001,
      "trainer.logger": ["console", "wandb"],
      "ray_kwargs.ray_init.runtime_env.env_vars.WANDB_MODE": "offline"}),
    (("+reward=[outcome,variance]", "+filter=[query,dynamic_sampling]", "filter.query.drop_fraction=0",
      "filter.query.threshold=0.05"),
     {"actor_rollout_ref.rollout.agent.default_agent_loop": "drox_r3", "trainer.v1.trainer_mode": "drox_sync",
      "drox.r3.template": "{reasoning}\\boxed{{answer}}", "drox.trainer.r3": True,
      "trainer.v1.sampler.custom_sampler.path": "pkg://drox.integrations.verl.sampler",
      "trainer.v1.sampler.sampler_kwargs.sigma_threshold": 0.05, "trainer.v1.sampler.sampler_kwargs.dapo_metric": "acc",
      "trainer.v1.sampler.sampler_kwargs.train_batch_size": 2, "data.gen_batch_size": 1}),
    (("+reward=[outcome,format]", "reward.format.pattern='<answer>(.*?)</answer>'"),
     {"drox.reward.format.pattern": "<answer>(.*?)</answer>", "drox.reward.format.weight": 1.0}),
])
def test_generated_overrides_compose_and_pass_validate_config(extra, checks):
    from drox.integrations.verl.resolve import validate_verl_config

    config = _manager_config(*extra)
    validate_verl_config(config)
    for key, value in checks.items():
        got = OmegaConf.select(config, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, key


def test_lora_composes_and_its_vllm_check_is_one_line_without_vllm():
    """verl's validate_config asks the installed vLLM for its largest LoRA rank (verl/utils/config.py), so on a machine
    without vLLM a LoRA config can be composed but not fully validated."""
    import importlib.util

    from drox.integrations.verl.resolve import validate_verl_config

    config = _manager_config("trainer.lora_r=8", "trainer.lora_alpha=32")
    assert (config.actor_rollout_ref.model.lora_rank, config.actor_rollout_ref.model.lora_alpha) == (8, 32)
    if importlib.util.find_spec("vllm") is not None:
        validate_verl_config(config)
        return
    with pytest.raises(ConfigError) as e:
        validate_verl_config(config)
    assert str(e.value) == ("verl's validate_config checks LoRA rank 8 against the installed vLLM, and vLLM is not "
                            "installed here; check this config where vLLM is (a GPU node), or without LoRA")


def test_a_bad_verl_override_is_one_line():
    from drox.integrations.verl.resolve import compose_verl_config

    with pytest.raises(ConfigError) as e:
        compose_verl_config(["data.no_such_key=1"])
    assert "\n" not in str(e.value) and str(e.value).startswith("verl's config rejected an override: ")


def test_dry_run_prints_the_resolved_config(tmp_path):
    from typer.testing import CliRunner

    from drox.cli.main import app

    result = CliRunner().invoke(app, ["verl", *TINY_OVERRIDES, *HF, f"run_dir={tmp_path}/run", "--dry-run",
                                      "--verl-arg", "data.max_prompt_length=256"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "# resolved verl 0.9.1 config (passes verl's validate_config):" in text
    resolved = OmegaConf.create(text.split("(passes verl's validate_config):\n", 1)[1])
    assert resolved.data.max_prompt_length == 256  # --verl-arg comes last and wins
    assert resolved.data.train_files == str((tmp_path / "run" / "data" / "train.parquet").resolve())
    assert not (tmp_path / "run").exists()


def test_entry_point_composes_through_hydra_main():
    """`python -m drox.integrations.verl.main --cfg job` prints the config verl would run (Hydra stops before the
    task function), so the packaged config and its search path work from the installed entry point."""
    out = subprocess.run([sys.executable, "-m", "drox.integrations.verl.main", "--cfg", "job",
                          "actor_rollout_ref.model.path=/m", "algorithm.adv_estimator=drox_psr"],
                         capture_output=True, text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    config = OmegaConf.create(out.stdout)
    assert config.algorithm.adv_estimator == "drox_psr" and config.algorithm.drox.correct_above == 0.5
    assert config.reward.reward_manager.module.path == "pkg://drox.integrations.verl.reward_manager"
    assert config.trainer.v1.trainer_mode == "sync" and config.trainer.use_v1


def test_the_task_runner_is_verls_v1_runner_with_the_registration_check():
    from verl.trainer.main_ppo import TaskRunnerV1

    from drox.integrations.verl.runner import DroxTaskRunner, DroxTaskRunnerActor

    assert issubclass(DroxTaskRunnerActor, TaskRunnerV1.__ray_actor_class__)
    assert DroxTaskRunner.__ray_actor_class__ is DroxTaskRunnerActor and hasattr(DroxTaskRunner, "remote")


# ------------------------------------------------------------------------------------------------ T2 Ray worker


@pytest.mark.slow
def test_plugin_registers_inside_a_ray_worker():
    """verl's Ray workers get drox's estimators from the runtime_env variable the launch config sets (a local Ray
    with one CPU; about 10 s)."""
    code = """
import ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
         runtime_env={"env_vars": {"VERL_USE_EXTERNAL_MODULES": "drox.integrations.verl.register",
                                   "VERL_USE_EXTERNAL_PLUGINS": "none"}})

@ray.remote
def names():
    import verl
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as R
    return sorted(n for n in R if n.startswith("drox_"))

print(" ".join(ray.get(names.remote())))
ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-4:] == DROX_NAMES
