"""A composed drox experiment config -> a verl 0.9.1 launch: Hydra overrides, environment, command (no verl import).

:func:`translate` reads the config that ``drox train`` would run (validated by :func:`drox.pipeline.build_pipeline`)
and returns a :class:`LaunchPlan`: the overrides of ``python -m drox.integrations.verl.main`` (whose config,
``config/drox_ppo_trainer.yaml``, already holds the wiring every drox run shares) in a fixed order, the
environment, and the paths of the data and model it needs. What verl cannot express raises
:class:`UnsupportedError`, one line naming the component (the CLI exits 2 on it).

What maps to what (docs/verl.md has the full table):

=====================================  ==========================================================================
drox                                   verl
=====================================  ==========================================================================
model.path / model=smollm2-135m        actor_rollout_ref.model.path (the embedded model's converted HF folder)
task (exported, :mod:`export`)         data.train_files, data.val_files
trainer.prompts_per_step (Q)           data.train_batch_size; ppo_mini_batch_size = Q / trainer.mini_batches
trainer.samples_per_prompt (G)         actor_rollout_ref.rollout.n
trainer.steps, lr, schedule, ...       trainer.total_training_steps, actor.optim.*
clip_low / clip_high, loss_agg         actor.clip_ratio_low / _high, actor.loss_agg_mode (+ loss_scale_factor)
kl_coef, kl_estimator                  actor.use_kl_loss, kl_loss_coef, kl_loss_type
estimator grpo / dr_grpo / rloo        verl's grpo / grpo with norm_adv_by_std_in_grpo=false / rloo
+reward=positive_only|negative_only|   algorithm.adv_estimator=drox_psr|drox_nsr|drox_w_reinforce
        w_reinforce                    (algorithm.drox.scale, algorithm.drox.lam)
+reward=outcome, format                drox.reward.* (DroxRewardManager)
+reward=prm (kind=oracle)              drox.reward.prm.* (DroxRewardManager); dense=true also trainer_mode=drox_sync
                                       (the step rewards' reward-to-go in trainer.py)
+filter=dynamic_sampling               algorithm.filter_groups (metric acc, or reward)
trainer.advantage.combine=dvao|...     trainer.v1.trainer_mode=drox_sync, drox.trainer.* (trainer.py)
+filter=entropy                        trainer.v1.trainer_mode=drox_sync, drox.trainer.entropy.* (trainer.py)
+reward=variance (DRO's R3)            rollout.agent.default_agent_loop=drox_r3 (agent_loop.py), drox.r3.*,
                                       trainer_mode=drox_sync with drox.trainer.r3=true (trainer.py)
+filter=query (threshold, online)      trainer.v1.sampler.custom_sampler=DroxReplayBuffer (sampler.py)
trainer.tis_cap                        algorithm.rollout_correction.rollout_is=token, rollout_is_threshold
=====================================  ==========================================================================
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from drox.errors import ConfigError

__all__ = ["ENTRY_MODULE", "LaunchPlan", "PLUGIN_MODULE", "Topology", "UnsupportedError", "hydra_value",
           "translate"]

ENTRY_MODULE = "drox.integrations.verl.main"
PLUGIN_MODULE = "drox.integrations.verl.register"
DEFAULT_MAX_PROMPT_LENGTH = 1024
"""data.max_prompt_length: drox's tasks have no prompt cap; their prompts are far below this (override with
``--verl-arg data.max_prompt_length=N``)."""
MIN_TOKENS_PER_GPU = 16384
"""actor.ppo_max_token_len_per_gpu (dynamic batch size) is at least this, and at least one prompt + response."""

SIGN_ESTIMATORS = {"positive_only": "drox_psr", "negative_only": "drox_nsr", "w_reinforce": "drox_w_reinforce"}
RULE_REWARDS = ("outcome", "format")
COMBINED_REWARDS = (*RULE_REWARDS, "prm")
"""Sources whose own scores ``DroxRewardManager`` returns in ``reward_extra_info``: the objectives a combiner reads."""
SUPPORTED_REWARDS = (*RULE_REWARDS, "prm", *SIGN_ESTIMATORS, "variance")
PRM_KINDS = ("oracle",)
"""``reward.prm.kind`` values the verl backend runs (the rule checker, in the reward workers)."""
AGENT_LOOPS = Path(__file__).resolve().parent / "config" / "agent_loops.yaml"
"""verl's agent-loop file naming drox's R3 loop; an absolute path, the same on every node of identical images."""
VERL_ESTIMATORS = {"grpo": ("grpo", True), "dr_grpo": ("grpo", False), "rloo": ("rloo", None)}
"""drox estimator -> (verl's built-in estimator, norm_adv_by_std_in_grpo or None); the same numbers for groups of
G >= 2 (tests/verl_suite checks it through verl's compute_advantage)."""
KL_TYPES = {"k1": "kl", "kl": "kl", "k2": "mse", "mse": "mse", "k3": "low_var_kl", "low_var_kl": "low_var_kl"}

NOT_BUILT = "drox.integrations.verl does not have it yet (docs/verl.md, 'Not done')"
REWARD_REASONS = {
    "confidence": "self-certainty needs the policy's full logits, which verl 0.9.1's engine does not return "
                  "(verl RFC #7712)",
    "pairwise": f"it calls the policy inside the reward, and {NOT_BUILT}",
    "sdpo": f"it calls the policy inside the reward, and {NOT_BUILT}",
    "delta_belief": "it scores multi-turn episodes, which the verl backend does not run",
    "srl": f"SRL's step-wise rows and similarity reward are not ported, and {NOT_BUILT}",
    "overlong": f"DAPO's overlong punishment is not ported to DroxRewardManager, and {NOT_BUILT}",
}
FILTER_REASONS = {
    "mean_range": "verl's group filter drops only zero-variance groups (filter_groups); a mean range needs drox's "
                  f"sampler, and {NOT_BUILT}",
}


class UnsupportedError(ConfigError):
    """A drox component or option that the verl backend cannot run; the message is one line naming it."""


def unsupported(component: str, why: str) -> UnsupportedError:
    return UnsupportedError(f"{component} is not supported by the verl backend: {why}")


@dataclass
class Topology:
    """Where verl runs: ``nnodes`` x ``gpus_per_node`` GPUs, vLLM replicas of ``rollout_tp`` GPUs each."""

    nnodes: int = 1
    gpus_per_node: int = 1
    rollout_tp: int = 1

    def check(self) -> None:
        for name in ("nnodes", "gpus_per_node", "rollout_tp"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}={getattr(self, name)} must be a positive integer")
        if self.gpus_per_node % self.rollout_tp:
            raise ConfigError(f"--rollout-tp={self.rollout_tp} must divide --gpus-per-node={self.gpus_per_node} "
                              "(each vLLM replica takes rollout_tp GPUs of one node)")


@dataclass
class LaunchPlan:
    """Everything a verl launch of one drox experiment needs (see :func:`translate`)."""

    overrides: List[str]
    env: Dict[str, str]
    run_dir: Path
    data_dir: Path
    model_path: str
    embedded_model: bool = False
    """True: ``model_path`` is the embedded SmolLM2's converted folder (made once before launching)."""
    summary: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def train_file(self) -> Path:
        return self.data_dir / "train.parquet"

    @property
    def val_file(self) -> Path:
        return self.data_dir / "val.parquet"

    def argv(self, python: str = "python") -> List[str]:
        """The local command as an argument list."""
        return [python, "-m", ENTRY_MODULE, *self.overrides]

    def render_local(self, python: str = "python") -> str:
        """The local command as shell text, one override per line."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return " \\\n  ".join([f"{env} {python} -m {ENTRY_MODULE}", *(shlex.quote(o) for o in self.overrides)])

    def ray_submit_argv(self, address: str, python: str = "python") -> List[str]:
        """``ray job submit`` of the same command to the Ray cluster whose dashboard is ``address``."""
        runtime_env = json.dumps({"env_vars": self.env}, sort_keys=True)
        return ["ray", "job", "submit", "--address", address, "--runtime-env-json", runtime_env, "--",
                *self.argv(python)]

    def render_ray(self, address: str, python: str = "python") -> str:
        argv = self.ray_submit_argv(address, python)
        head = " ".join(shlex.quote(a) for a in argv[: argv.index("--") + 1 + 3])
        return " \\\n  ".join([head, *(shlex.quote(o) for o in self.overrides)])


# ------------------------------------------------------------------------------------------------ override values

_PLAIN = re.compile(r"[A-Za-z0-9_./:+-]+")


def hydra_value(value: Any) -> str:
    """``value`` written as a Hydra override value: true/false, null, numbers as Python writes them, lists as
    ``[a,b]``, plain strings as they are and any other string quoted (so Hydra reads it back unchanged)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.fullmatch(text) and text not in ("true", "false", "null") and not _is_number(text):
        return text
    # Hydra reads backslashes in a quoted value as they are, except a run of them just before a quote: double the
    # run that ends the value so that the closing quote stays a quote
    trailing = len(text) - len(text.rstrip("\\"))
    body = text + "\\" * trailing
    if "'" not in text:
        return "'" + body + "'"
    if '"' not in text:
        return '"' + body + '"'
    raise ConfigError(f"{text!r}: a value holding both quote characters cannot be passed to verl's Hydra config")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


class _Overrides:
    def __init__(self):
        self.items: Dict[str, str] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.items[key] = hydra_value(value)

    def render(self) -> List[str]:
        return [f"{k}={v}" for k, v in self.items.items()]


# ------------------------------------------------------------------------------------------------ translation


def _get(cfg, key: str) -> Any:
    return OmegaConf.select(cfg, key)


def _check_supported(cfg, pipeline) -> None:
    """Raise :class:`UnsupportedError` for the first component the verl backend cannot run."""
    from drox.components import multiturn_tasks

    if cfg.plugins:
        raise unsupported(f"plugins={list(cfg.plugins)}", "components from your own files are not shipped to verl's "
                          "Ray workers; register them with verl directly (docs/verl.md)")
    task = _get(cfg, "task.name")
    if task in multiturn_tasks():
        raise unsupported(f"task={task}", "its rollouts are multi-turn episodes with an environment, and verl's "
                          f"multi-turn loop is tool calling; {NOT_BUILT}")
    if _get(cfg, "task.verifier") == "none" or (task == "revise" and _get(cfg, "task.verifier") != "math"):
        raise unsupported(f"task={task} without a verifier", "DroxRewardManager scores with the task's verifier; "
                          "choose a verifiable task (or task.verifier=math)")
    if _get(cfg, "task.srl") or _get(cfg, "trainer.srl_steps"):
        raise unsupported("SRL (task.srl / trainer.srl_steps)", f"step-wise expert rows are not ported; {NOT_BUILT}")
    if not _get(cfg, "model.chat_template"):
        raise unsupported("model.chat_template=false", "verl always applies the tokenizer's chat template to the "
                          "prompt messages")
    if _get(cfg, "model.name") == "tiny":
        raise unsupported("model=tiny", "it is a random model built in memory and verl loads a model folder; use "
                          "model=hf model.path=<HF id or folder> or model=smollm2-135m")
    if _get(cfg, "rollout.tree.enabled"):
        raise unsupported("rollout.tree.enabled=true (Tree-GRPO)", f"verl samples flat groups; {NOT_BUILT}")
    if _get(cfg, "trainer.objective") != "pg":
        raise unsupported(f"trainer.objective={_get(cfg, 'trainer.objective')}", "verl trains the policy-gradient "
                          "objective only")
    if _get(cfg, "trainer.policy_loss") != "ppo_clip":
        raise unsupported(f"trainer.policy_loss={_get(cfg, 'trainer.policy_loss')}", "only drox's ppo_clip maps to "
                          "verl's vanilla loss")
    for key, why in (("trainer.advantage.verl_shaping", "it needs the responses' hidden states"),
                     ("trainer.effective_rank", "it needs the responses' hidden states"),
                     ("trainer.mask_truncated", f"DAPO's overlong filtering is not ported; {NOT_BUILT}")):
        if _get(cfg, key):
            raise unsupported(f"{key}=true", why)
    if _get(cfg, "trainer.time_budget"):
        raise unsupported("trainer.time_budget", "verl stops at trainer.total_training_steps only")
    combine = _get(cfg, "trainer.advantage.combine")
    if combine != "sum" and len(pipeline.rewards) > 1:
        other = [n for n in pipeline.rewards if n not in COMBINED_REWARDS]
        if other:
            raise unsupported(f"trainer.advantage.combine={combine} over +reward={other[0]}", "drox's trainer "
                              f"subclass combines the scores DroxRewardManager returns only "
                              f"({', '.join(COMBINED_REWARDS)})")
    for name, opts in pipeline.rewards.items():
        if name not in SUPPORTED_REWARDS:
            why = REWARD_REASONS.get(name, f"it is not ported to DroxRewardManager; {NOT_BUILT}")
            raise unsupported(f"+reward={name}", f"{why} (supported: {', '.join(SUPPORTED_REWARDS)})")
    prm = pipeline.rewards.get("prm")
    if prm is not None and prm.kind not in PRM_KINDS:
        raise unsupported(f"reward.prm.kind={prm.kind}", "it scores steps with a model (hf: a PRM checkpoint, "
                          "generative: a judge LM, monte_carlo: the policy's completions), which needs a model server "
                          f"behind verl's reward loop, and {NOT_BUILT}; kind=oracle runs")
    variance = pipeline.rewards.get("variance")
    if variance is not None:
        _check_r3_options(variance, "reward.variance")
    signs = [n for n in pipeline.rewards if n in SIGN_ESTIMATORS]
    if signs and len(pipeline.rewards) > 1:
        raise unsupported(f"+reward=[{','.join(pipeline.rewards)}]", f"{signs[0]}'s scores are advantages, which "
                          "the verl backend runs alone (drox_psr / drox_nsr / drox_w_reinforce estimators)")
    for stage in pipeline.gates:
        raise unsupported(f"+gate={stage.name}", f"gates are not ported; {NOT_BUILT}")
    for stage in pipeline.micro_token_filters:
        raise unsupported(f"filter.{stage.name}.scope=micro_batch", "verl splits the batch into its own mini- and "
                          "micro-batches; drox's trainer subclass masks over the whole batch (scope=batch)")
    for stage in pipeline.batch_token_filters:
        if stage.name != "entropy":
            raise unsupported(f"+filter={stage.name}", FILTER_REASONS.get(stage.name, NOT_BUILT))
        for key in ("trainer.kl_coef", "trainer.entropy_coef"):
            if _get(cfg, key) > 0:
                raise unsupported(f"+filter=entropy with {key}={_get(cfg, key)}", "verl applies the KL and entropy "
                                  "terms on the same mask as the policy loss, so the 80/20 mask would narrow them "
                                  "too (drox keeps them on every token)")
    for stage in pipeline.group_filters:
        if stage.name == "query":
            q = stage.opts
            if q.mode != "online":
                raise unsupported("filter.query.mode=offline", f"DRO's offline filter rounds are not ported; {NOT_BUILT}")
            if q.drop_fraction > 0 or q.threshold is None:
                raise unsupported(f"filter.query.drop_fraction={q.drop_fraction}", "verl's replay buffer decides "
                                  "group by group as they finish, so DRO's rank cut within a batch has no "
                                  "counterpart; use a threshold: filter.query.drop_fraction=0 "
                                  "filter.query.threshold=<sigma_max>")
            if variance is None:
                _check_r3_options(q.variance_options, "filter.query.variance")
            continue
        if stage.name != "dynamic_sampling":
            raise unsupported(f"+filter={stage.name}", FILTER_REASONS.get(stage.name, NOT_BUILT))
        if stage.opts.metric == "score" and stage.opts.std_eps > 0:
            raise unsupported(f"filter.dynamic_sampling.std_eps={stage.opts.std_eps}", "verl's filter_groups drops "
                              "groups whose reward std is exactly 0; use std_eps=0")


def _check_r3_options(opts, key: str) -> None:
    """What the verl backend's R3 (the drox_r3 agent loop + the trainer) runs: the current policy, no masked
    baseline, no length penalty."""
    if opts.reward_policy == "lagged":
        raise unsupported(f"{key}.reward_policy=lagged", "the lagged copy of the policy needs a reference model "
                          "refreshed every k steps, which verl 0.9.1 has no API for (a verl change)")
    if opts.reward_policy != "policy":
        raise unsupported(f"{key}.reward_policy={opts.reward_policy}", "scoring under the frozen initial policy needs "
                          f"the reward-model router or the reference worker, and {NOT_BUILT}")
    if opts.masked_baseline:
        raise unsupported(f"{key}.masked_baseline=true", f"the empty-reasoning baseline pass is not ported; {NOT_BUILT}")
    if opts.length_weight != 0:
        raise unsupported(f"{key}.length_weight={opts.length_weight}", f"DRO's length penalty is not ported; "
                          f"{NOT_BUILT}")


def _model_path(cfg) -> tuple:
    """(path verl loads, whether it is the embedded model's converted folder)."""
    if cfg.model.name == "smollm2-135m":
        from drox.models.loading import SMOLLM2_DIRNAME, cache_root

        return str((cache_root(cfg.model.cache_dir) / SMOLLM2_DIRNAME).resolve()), True
    path = cfg.model.path
    if not path:
        raise ConfigError("model=hf needs model.path=<HF id or local folder>")
    local = Path(str(path)).expanduser()
    if local.exists() or str(path).startswith((".", "/", "~")):
        return str(local.resolve()), False
    return str(path), False  # a hub id, downloaded by verl's workers


def translate(cfg, *, run_dir: Path, topology: Optional[Topology] = None, extra: Sequence[str] = (),
              pipeline=None) -> LaunchPlan:
    """The verl launch of the drox config ``cfg`` (composed and validated, as ``drox train`` would run it).

    ``run_dir``: where the exported data (``run_dir/data``) and verl's checkpoints (``run_dir/checkpoints``) go.
    ``topology``: GPUs and vLLM tensor parallelism. ``extra``: verl overrides appended as they are (last wins).
    Raises :class:`UnsupportedError` or :class:`ConfigError` (one line) for what verl cannot run.
    """
    from drox.pipeline import build_pipeline

    topology = topology or Topology()
    topology.check()
    pipeline = pipeline if pipeline is not None else build_pipeline(cfg)
    _check_supported(cfg, pipeline)
    run_dir = Path(run_dir).expanduser().resolve()
    data_dir = run_dir / "data"
    model_path, embedded = _model_path(cfg)
    t, r = cfg.trainer, cfg.rollout
    Q, G = int(t.prompts_per_step), int(t.samples_per_prompt)
    notes: List[str] = []
    o = _Overrides()

    # data and batch
    o["data.train_files"] = str(data_dir / "train.parquet")
    o["data.val_files"] = str(data_dir / "val.parquet")
    o["data.train_batch_size"] = Q
    o["data.max_prompt_length"] = DEFAULT_MAX_PROMPT_LENGTH
    o["data.max_response_length"] = int(r.max_new_tokens)
    o["data.seed"] = int(cfg.seed)

    # model
    o["actor_rollout_ref.model.path"] = model_path
    if int(t.lora_r) > 0:
        o["actor_rollout_ref.model.lora_rank"] = int(t.lora_r)
        o["actor_rollout_ref.model.lora_alpha"] = int(t.lora_alpha)

    # the policy update
    a = "actor_rollout_ref.actor"
    o[f"{a}.optim.lr"] = float(t.lr)
    o[f"{a}.optim.weight_decay"] = float(t.weight_decay)
    o[f"{a}.optim.betas"] = [float(b) for b in t.betas]
    o[f"{a}.optim.lr_warmup_steps"] = int(t.warmup_steps)
    o[f"{a}.optim.lr_scheduler_type"] = str(t.schedule)
    o[f"{a}.optim.clip_grad"] = float(t.max_grad_norm) if t.max_grad_norm > 0 else 1.0e9
    o[f"{a}.ppo_mini_batch_size"] = Q // int(t.mini_batches)
    o[f"{a}.ppo_epochs"] = int(t.mu)
    o[f"{a}.use_dynamic_bsz"] = True
    o[f"{a}.ppo_max_token_len_per_gpu"] = max(MIN_TOKENS_PER_GPU, DEFAULT_MAX_PROMPT_LENGTH + int(r.max_new_tokens))
    o[f"{a}.clip_ratio_low"] = float(t.clip_low)
    o[f"{a}.clip_ratio_high"] = float(t.clip_high)
    o[f"{a}.loss_agg_mode"] = str(t.loss_agg)
    if t.loss_agg == "seq-mean-token-sum-norm":  # Dr. GRPO's constant: the generation budget, not the padded T
        o[f"{a}.loss_scale_factor"] = int(r.max_new_tokens)
    o[f"{a}.entropy_coeff"] = float(t.entropy_coef)
    if t.kl_coef > 0:
        o[f"{a}.use_kl_loss"] = True
        o[f"{a}.kl_loss_coef"] = float(t.kl_coef)
        o[f"{a}.kl_loss_type"] = KL_TYPES[str(t.kl_estimator)]
    if t.checkpoint == "weights":
        o[f"{a}.checkpoint.save_contents"] = ["model", "extra"]

    # sampling
    ro = "actor_rollout_ref.rollout"
    o[f"{ro}.n"] = G
    o[f"{ro}.temperature"] = float(r.temperature)
    o[f"{ro}.top_p"] = float(r.top_p)
    o[f"{ro}.seed"] = int(cfg.seed)
    o[f"{ro}.tensor_model_parallel_size"] = int(topology.rollout_tp)
    if r.backend == "vllm":
        o[f"{ro}.gpu_memory_utilization"] = float(r.vllm.gpu_memory_utilization)
        o[f"{ro}.enforce_eager"] = bool(r.vllm.enforce_eager)
    else:
        notes.append("rollout.backend=hf: verl samples with vLLM (its own gpu_memory_utilization, 0.5)")
    ev = cfg.eval
    o[f"{ro}.val_kwargs.n"] = int(ev.n) if ev.n is not None else int(max(ev.pass_at_k))
    o[f"{ro}.val_kwargs.temperature"] = float(ev.temperature)
    o[f"{ro}.val_kwargs.top_p"] = float(ev.top_p)
    o[f"{ro}.val_kwargs.do_sample"] = float(ev.temperature) > 0

    # advantages and rewards
    reward = {"outcome": {"weight": 1.0, "correct": 1.0, "incorrect": 0.0}, "format": {"weight": 0.0, "pattern": None}}
    signs = [n for n in pipeline.rewards if n in SIGN_ESTIMATORS]
    if signs:
        name = signs[0]
        opts = pipeline.rewards[name]
        o["algorithm.adv_estimator"] = SIGN_ESTIMATORS[name]
        o["algorithm.drox.scale"] = float(opts.weight)
        if name == "w_reinforce":
            o["algorithm.drox.lam"] = float(opts.lam)
    else:
        est = str(t.advantage.estimator)
        if est not in VERL_ESTIMATORS:
            hint = ("; estimator=none is for +reward=positive_only|negative_only|w_reinforce" if est == "none" else "")
            raise unsupported(f"trainer.advantage.estimator={est}", f"the verl backend maps grpo, dr_grpo and rloo to "
                              f"verl's own{hint}")
        if est == "grpo" and float(t.advantage.eps) != 1e-6:
            raise unsupported(f"trainer.advantage.eps={t.advantage.eps}", "verl's grpo adds 1e-6 to the std")
        verl_name, norm = VERL_ESTIMATORS[est]
        o["algorithm.adv_estimator"] = verl_name
        if norm is not None:
            o["algorithm.norm_adv_by_std_in_grpo"] = norm
        for name, opts in pipeline.rewards.items():
            if name == "outcome":
                reward["outcome"] = {"weight": float(opts.weight), "correct": float(opts.correct),
                                     "incorrect": float(opts.incorrect)}
            elif name == "format":
                reward["format"] = {"weight": float(opts.weight), "pattern": opts.pattern}
            elif name == "prm":
                reward["prm"] = {"enable": True, "weight": float(opts.weight),
                                 "aggregation": str(opts.aggregation), "dense": bool(opts.dense),
                                 "empty_score": float(opts.empty_score), "match_reference": bool(opts.match_reference),
                                 "correct": float(opts.correct), "incorrect": float(opts.incorrect)}
        if "outcome" not in pipeline.rewards:
            reward["outcome"]["weight"] = 0.0  # e.g. +reward=format alone: the verifier only feeds acc
    query = next((f for f in pipeline.group_filters if f.name == "query"), None)
    for stage in pipeline.group_filters:
        if stage.name != "dynamic_sampling":
            continue
        metric = "acc" if stage.opts.metric == "acc" else "reward"
        if query is not None:  # drox's sampler evicts DAPO's groups too
            o["trainer.v1.sampler.sampler_kwargs.dapo_metric"] = metric
        else:
            o["algorithm.filter_groups.enable"] = True
            o["algorithm.filter_groups.metric"] = metric
            o["algorithm.filter_groups.max_num_gen_batches"] = int(stage.opts.max_gen_batches)
        notes.append("filter dynamic_sampling: verl's V1 trainer refills evicted groups without a max_gen_batches cap "
                     "(algorithm.filter_groups.max_inflight_gen_batches bounds what is in flight)")
    # DRO: R3 rollouts (the drox_r3 agent loop scores the reference on the rollout server), R3 in the trainer, the
    # query filter in drox's sampler
    variance = pipeline.rewards.get("variance")
    r3_opts = variance if variance is not None else (query.opts.variance_options if query is not None else None)
    if r3_opts is not None:
        o[f"{ro}.agent.default_agent_loop"] = "drox_r3"
        o[f"{ro}.agent.agent_loop_config_path"] = str(AGENT_LOOPS)
        o["drox.r3.weight"] = float(r3_opts.weight)
        o["drox.r3.weighting"] = str(r3_opts.weighting)
        o["drox.r3.tau"] = float(r3_opts.tau)
        o["drox.r3.top_p"] = float(r3_opts.top_p)
        o["drox.r3.template"] = str(r3_opts.template)
        o["drox.r3.reference_field"] = str(r3_opts.reference_field)
    if variance is not None:
        o["trainer.v1.trainer_mode"] = "drox_sync"
        o["drox.trainer.r3"] = True
        o["drox.trainer.estimator"] = str(t.advantage.estimator)
        o["drox.trainer.eps"] = float(t.advantage.eps)
    if query is not None:
        o["trainer.v1.sampler.custom_sampler.path"] = "pkg://drox.integrations.verl.sampler"
        o["trainer.v1.sampler.custom_sampler.name"] = "DroxReplayBuffer"
        o["trainer.v1.sampler.sampler_kwargs.sigma_threshold"] = float(query.opts.threshold)
        o["trainer.v1.sampler.sampler_kwargs.train_batch_size"] = Q
        o["data.gen_batch_size"] = 1  # exact refills: one prompt per fetch
    # dense PRM step rewards: their reward-to-go is added by drox's trainer subclass (trainer.py)
    if reward.get("prm", {}).get("dense"):
        o["trainer.v1.trainer_mode"] = "drox_sync"
        o["drox.trainer.eps"] = float(t.advantage.eps)
    # drox's trainer subclass (trainer.py): multi-objective advantages and the 80/20 token mask
    if t.advantage.combine != "sum" and len(pipeline.rewards) > 1:
        o["trainer.v1.trainer_mode"] = "drox_sync"
        o["drox.trainer.combine"] = str(t.advantage.combine)
        o["drox.trainer.objectives"] = list(pipeline.rewards)
        o["drox.trainer.weights"] = [float(opts.weight) for opts in pipeline.rewards.values()]
        o["drox.trainer.eps"] = float(t.advantage.eps)
    for stage in pipeline.batch_token_filters:  # only entropy gets here (_check_supported)
        o["trainer.v1.trainer_mode"] = "drox_sync"
        o["drox.trainer.entropy.rho"] = float(stage.opts.rho)
        o["drox.trainer.entropy.invert"] = bool(stage.opts.invert)
    if float(t.tis_cap) > 0:
        o["algorithm.rollout_correction.rollout_is"] = "token"
        o["algorithm.rollout_correction.rollout_is_threshold"] = float(t.tis_cap)
    o["drox.reward.outcome.weight"] = reward["outcome"]["weight"]
    o["drox.reward.outcome.correct"] = reward["outcome"]["correct"]
    o["drox.reward.outcome.incorrect"] = reward["outcome"]["incorrect"]
    if reward["format"]["weight"]:
        o["drox.reward.format.weight"] = reward["format"]["weight"]
        if reward["format"]["pattern"] is not None:
            o["drox.reward.format.pattern"] = reward["format"]["pattern"]
    for key, value in reward.get("prm", {}).items():
        o[f"drox.reward.prm.{key}"] = value
    o["drox.verify_timeout"] = float(cfg.task.verify_timeout)

    # the run
    tr = "trainer"
    o[f"{tr}.total_training_steps"] = int(t.steps)
    o[f"{tr}.total_epochs"] = int(t.steps)  # an upper bound: every epoch has at least one step
    o[f"{tr}.nnodes"] = int(topology.nnodes)
    o[f"{tr}.n_gpus_per_node"] = int(topology.gpus_per_node)
    o[f"{tr}.project_name"] = str(cfg.logger.project)
    o[f"{tr}.experiment_name"] = str(cfg.logger.run_name or run_dir.name)
    wandb = cfg.logger.wandb_mode
    o[f"{tr}.logger"] = ["console"] if wandb == "disabled" else ["console", "wandb"]
    saving = t.checkpoint != "none"
    o[f"{tr}.save_freq"] = int(t.save_every) if saving and t.save_every > 0 else -1
    o[f"{tr}.max_actor_ckpt_to_keep"] = int(t.keep_checkpoints)
    o[f"{tr}.test_freq"] = int(t.eval_every) if t.eval_every > 0 else -1
    o[f"{tr}.val_before_train"] = t.eval_every > 0
    o[f"{tr}.resume_mode"] = "auto" if cfg.resume else "disable"
    o[f"{tr}.default_local_dir"] = str(run_dir / "checkpoints")
    env = {"VERL_USE_EXTERNAL_MODULES": PLUGIN_MODULE}
    if wandb != "disabled":
        o["ray_kwargs.ray_init.runtime_env.env_vars.WANDB_MODE"] = str(wandb)
        env["WANDB_MODE"] = str(wandb)

    summary = (f"{cfg.model.path or cfg.model.name} on {cfg.task.name}: {o.items['algorithm.adv_estimator']}, "
               f"{Q} prompts x {G} samples, {t.steps} steps, {topology.nnodes} node(s) x {topology.gpus_per_node} "
               f"GPU(s)")
    return LaunchPlan(overrides=[*o.render(), *extra], env=env, run_dir=run_dir, data_dir=data_dir,
                      model_path=model_path, embedded_model=embedded, summary=summary, notes=notes)
