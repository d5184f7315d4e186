"""A composed drox experiment config -> a verl 0.9.1 launch: Hydra overrides, environment, command (no verl import).

:func:`translate` reads the config that ``drox train`` would run (validated by :func:`drox.pipeline.build_pipeline`)
and returns a :class:`LaunchPlan`: the overrides of ``python -m drox.integrations.verl.main`` (whose config,
``config/drox_ppo_trainer.yaml``, already holds the wiring every drox run shares) in a fixed order, the
environment, and the paths of the data and model it needs. What verl cannot express raises
:class:`UnsupportedError`, one line naming the component (the CLI exits 2 on it). Each component declares how it
runs under verl where it registers (``verl=``; :mod:`drox.integrations.verl.mapping`); this module checks the core
config and loops over the pipeline's components.

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
estimator psr / nsr / w_reinforce     algorithm.adv_estimator=drox_psr|drox_nsr|drox_w_reinforce
(+reward=positive_only|... aliases)    (algorithm.drox.scale, correct_above, lam)
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

AGENT_LOOPS = Path(__file__).resolve().parent / "config" / "agent_loops.yaml"
"""verl's agent-loop file naming drox's R3 loop; an absolute path, the same on every node of identical images."""
KL_TYPES = {"k1": "kl", "kl": "kl", "k2": "mse", "mse": "mse", "k3": "low_var_kl", "low_var_kl": "low_var_kl"}

NOT_BUILT = "drox.integrations.verl does not have it yet (docs/verl.md, 'Not done')"
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


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

    def update(self, rendered: Dict[str, str]) -> None:
        """Overrides whose values are already written for Hydra."""
        self.items.update(rendered)

    def render(self) -> List[str]:
        return [f"{k}={v}" for k, v in self.items.items()]


# ------------------------------------------------------------------------------------------------ translation


def _get(cfg, key: str) -> Any:
    return OmegaConf.select(cfg, key)


@dataclass
class MapContext:
    """What a component's verl mapping (:mod:`mapping`) reads besides its options: the config, the pipeline, and
    :meth:`note` for what the plan should say."""

    cfg: Any
    pipeline: Any
    notes: List[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)


def _stages(cfg, pipeline) -> List[tuple]:
    """(section, label, registry, name, options) of every component the run uses, in the order they are checked;
    ``section`` says where their overrides go in the command (:func:`translate`)."""
    from drox.components import (ADVANTAGE_ESTIMATORS, ADVANTAGE_SHAPERS, COMBINERS, OBJECTIVES, POLICY_LOSSES,
                                 ROLLOUT_ENGINES, ROLLOUT_SHAPES, TASKS)
    from drox.filters.base import FILTERS
    from drox.gates.base import GATES
    from drox.rewards.base import REWARD_SOURCES

    t = cfg.trainer
    out = [("other", f"task={cfg.task.name}", TASKS, cfg.task.name, cfg.task),
           ("engine", f"rollout.backend={pipeline.engine.name}", ROLLOUT_ENGINES, pipeline.engine.name,
            pipeline.engine.opts),
           ("other", f"rollout shape '{pipeline.shape.name}'", ROLLOUT_SHAPES, pipeline.shape.name,
            pipeline.shape.opts),
           ("other", f"trainer.objective={pipeline.objective.name}", OBJECTIVES, pipeline.objective.name,
            pipeline.objective.opts),
           ("other", f"trainer.policy_loss={t.policy_loss}", POLICY_LOSSES, str(t.policy_loss), None),
           *[("other", f"advantage shaper '{s.name}'", ADVANTAGE_SHAPERS, s.name, s.opts) for s in pipeline.shapers],
           *[("reward", f"+reward={n}", REWARD_SOURCES, n, o) for n, o in pipeline.rewards.items()]]
    if pipeline.combiner is not None:
        out.append(("combiner", f"trainer.advantage.combine={pipeline.combiner.name}", COMBINERS,
                    pipeline.combiner.name, pipeline.combiner.opts))
    out += [("filter", f"+gate={g.name}", GATES, g.name, g.opts) for g in pipeline.gates]
    out += [("token_filter", f"+filter={f.name}", FILTERS, f.name, f.opts)
            for f in (*pipeline.micro_token_filters, *pipeline.batch_token_filters)]
    out += [("filter", f"+filter={f.name}", FILTERS, f.name, f.opts) for f in pipeline.group_filters]
    out.append(("estimator", f"trainer.advantage.estimator={pipeline.estimator.name}", ADVANTAGE_ESTIMATORS,
                pipeline.estimator.name, pipeline.estimator.opts))
    return out


def verl_support(registry, name: str) -> Any:
    """What ``name`` declares with ``verl=``: a mapping function (callable or ``"module:function"``), a reason it
    cannot run under verl (any other string), or None (nothing declared). Read without importing its module."""
    return registry.meta(name).get("verl")


def _mapping(declared: Any):
    if callable(declared):
        return declared
    if isinstance(declared, str) and _TARGET.fullmatch(declared):
        import importlib

        module, _, attr = declared.partition(":")
        return getattr(importlib.import_module(module), attr)
    return None


def stage_overrides(label: str, registry, name: str, opts, ctx: MapContext) -> Dict[str, str]:
    """The verl overrides of one component (its declared mapping's), or :class:`UnsupportedError`: its declared
    reason, or, when it declares nothing, one line naming the supported components of its kind."""
    declared = verl_support(registry, name)
    fn = _mapping(declared)
    if fn is None:
        supported = [n for n in registry.names() if _mapping(verl_support(registry, n)) is not None]
        why = declared if isinstance(declared, str) else "it is not ported"
        raise unsupported(label, f"{why} (supported: {', '.join(supported) or 'none'})")
    result = fn(opts, ctx) or {}
    if isinstance(result, dict):
        return {k: hydra_value(v) for k, v in result.items()}
    return dict(str(item).split("=", 1) for item in result)  # ["key=value", ...] as written


def _check_supported(cfg, pipeline, ctx: Optional[MapContext] = None) -> Dict[str, Dict[str, str]]:
    """Raise :class:`UnsupportedError` for the first part of the run the verl backend cannot run: the checks on the
    core config, then every component in turn (what its registration declares, :func:`stage_overrides`). Returns
    the components' overrides by section."""
    ctx = ctx or MapContext(cfg, pipeline)
    if cfg.plugins:
        raise unsupported(f"plugins={list(cfg.plugins)}", "components from your own files are not shipped to verl's "
                          "Ray workers; register them with verl directly (docs/verl.md)")
    if _get(cfg, "task.srl") or _get(cfg, "trainer.srl_steps"):
        raise unsupported("SRL (task.srl / trainer.srl_steps)", f"step-wise expert rows are not ported; {NOT_BUILT}")
    if not _get(cfg, "model.chat_template"):
        raise unsupported("model.chat_template=false", "verl always applies the tokenizer's chat template to the "
                          "prompt messages")
    if _get(cfg, "model.name") == "tiny":
        raise unsupported("model=tiny", "it is a random model built in memory and verl loads a model folder; use "
                          "model=hf model.path=<HF id or folder> or model=smollm2-135m")
    for key, why in (("trainer.effective_rank", "it needs the responses' hidden states"),
                     ("trainer.mask_truncated", f"DAPO's overlong filtering is not ported; {NOT_BUILT}")):
        if _get(cfg, key):
            raise unsupported(f"{key}=true", why)
    if _get(cfg, "trainer.time_budget"):
        raise unsupported("trainer.time_budget", "verl stops at trainer.total_training_steps only")
    sections: Dict[str, Dict[str, str]] = {}
    for section, label, registry, name, opts in _stages(cfg, pipeline):
        sections.setdefault(section, {}).update(stage_overrides(label, registry, name, opts, ctx))
    return sections


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
    ctx = MapContext(cfg, pipeline)
    mapped = _check_supported(cfg, pipeline, ctx)
    run_dir = Path(run_dir).expanduser().resolve()
    data_dir = run_dir / "data"
    model_path, embedded = _model_path(cfg)
    t, r = cfg.trainer, cfg.rollout
    Q, G = int(t.prompts_per_step), int(t.samples_per_prompt)
    notes = ctx.notes
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
    o.update(mapped.get("engine", {}))
    ev = cfg.eval
    o[f"{ro}.val_kwargs.n"] = int(ev.n) if ev.n is not None else int(max(ev.pass_at_k))
    o[f"{ro}.val_kwargs.temperature"] = float(ev.temperature)
    o[f"{ro}.val_kwargs.top_p"] = float(ev.top_p)
    o[f"{ro}.val_kwargs.do_sample"] = float(ev.temperature) > 0

    # advantages, filters and rewards: what the components map to (mapping.py)
    for section in ("estimator", "other", "filter", "token_filter", "combiner"):
        o.update(mapped.get(section, {}))
    if float(t.tis_cap) > 0:
        o["algorithm.rollout_correction.rollout_is"] = "token"
        o["algorithm.rollout_correction.rollout_is_threshold"] = float(t.tis_cap)
    # DroxRewardManager's outcome block is always written; without +reward=outcome (e.g. +reward=format alone) the
    # verifier only feeds acc
    o["drox.reward.outcome.weight"] = 1.0 if "outcome" in pipeline.rewards else 0.0
    o["drox.reward.outcome.correct"] = 1.0
    o["drox.reward.outcome.incorrect"] = 0.0
    o.update(mapped.get("reward", {}))
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
