"""``distill``: on-policy distillation from a teacher model, as a dense reward (docs/algorithms.md "On-policy
distillation: a teacher's per-token reverse KL").

The policy (the student) samples its own responses; a frozen teacher reads each one in a teacher-forced pass and every
sampled token is scored by how much more likely the teacher finds it than the student did:

    r_t = log pi_T(y_t | x, y_<t) − log pi_S(y_t | x, y_<t)

Since ``y_t ~ pi_S``, ``−r_t`` is the single-sample estimate of the reverse KL ``KL(pi_S ‖ pi_T)`` at that position:
the on-policy objective of GKD (Agarwal et al., "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", arXiv 2306.13649) with the reverse KL, in the form of Thinking Machines' "On-Policy
Distillation" recipe (the negative per-token reverse KL is the token's advantage, discount 0). The arithmetic is
:mod:`drox.signals.logprob_gap`'s, shared with ``sdpo``.

Options (``reward.distill.*``):

* ``teacher`` (required): a model name drox knows (``tiny``, ``toy``, ``smollm2-135m``: what ``model=<name>`` loads),
  a local HF folder (e.g. a ``drox sft`` output such as ``experiments/base_policy/model``, the embedded SmolLM2 after
  SFT) or a hub id; checked when the config is built (:func:`drox.models.loading.model_spec`), loaded on the first
  scoring call, frozen and kept in ``ctx.state`` for the rest of the run. It is not saved in checkpoints: a resumed
  run loads it again from this option.
* ``device``: ``policy`` (the policy's device, default) or another one (``cpu``, ``cuda:1``); ``dtype``: null = the
  policy's ``model.dtype``.
* ``student``: where ``log pi_S`` comes from. ``rollout`` (default): the log-probs the rollout recorded while
  sampling (the trainer's own, the behaviour log-probs of the update), so the teacher's is the only extra pass; this
  needs ``rollout.temperature=1``, else they are the log-probs of ``softmax(z/T)``. ``recompute``: a teacher-forced
  pass of the current policy at temperature 1, computed exactly as the teacher's (a teacher with the policy's weights
  then gives exactly 0).
* ``dense``: true places ``r_t`` at every policy token; false gives ``Σ_t r_t`` as one score per rollout (through the
  advantage estimator). ``clip``: bound each ``r_t``.

The teacher and the policy must share a tokenizer (the teacher scores the policy's token ids): the first scoring call
compares the two tokenizers before it loads the teacher's weights and stops with one line naming both vocabulary sizes.

Advantages: conf/reward/distill.yaml sets ``trainer.advantage.dense=per_token``, so each ``r_t`` is its own token's
advantage (no group normalisation, no reward-to-go). Alone, the sequence scores are 0 and every estimator gives them a
0 advantage, so ``Â_{i,t} = w·r_t``; beside an outcome reward, ``Â_{i,t} = Â_i + w·r_t`` with ``Â_i`` the outcome's
group-normalised advantage, as the recipe adds the reverse-KL term to the task advantage.

Logs ``reward/distill/reverse_kl`` (mean per-token estimate), ``gap_token_mean``, ``gap_seq_mean``,
``positive_token_frac`` and ``teacher_seconds`` (the teacher pass); the teacher pass (and the student pass with
``student: recompute``) counts in ``scoring/forward_passes`` and ``scoring/forward_tokens``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from drox.errors import ConfigError
from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.signals.logprob_gap import gap_diagnostics, token_gaps

OPTION = "reward.distill.teacher"
STUDENTS = ("rollout", "recompute")
DTYPES = ("float32", "bfloat16", "float16")
STATE_KEY = "distill/teacher"
"""Where the loaded teacher is kept in ``ctx.state`` (no ``step`` key: ``scoring_state_dict`` does not save it)."""


@dataclass
class DistillConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward (it multiplies every r_t)."""
    teacher: str = ""
    """The teacher: a model name (tiny, toy, smollm2-135m: what model=<name> loads), a local HF model folder (e.g. a
    drox sft output) or a hub id. Required. Loaded once on the first scoring call; not saved in checkpoints."""
    device: str = "policy"
    """Where the teacher runs: policy (the policy's device) | cpu | cuda | cuda:N | mps."""
    dtype: Optional[str] = None
    """The teacher's parameter dtype: null = model.dtype | float32 | bfloat16 | float16."""
    student: Literal[STUDENTS] = "rollout"
    """log pi_S from: rollout (the log-probs recorded while sampling; no extra pass; needs rollout.temperature=1) |
    recompute (a teacher-forced pass of the current policy at temperature 1)."""
    dense: bool = True
    """true: r_t at every policy token (trainer.advantage.dense decides the advantage) | false: Σ_t r_t per rollout."""
    clip: Optional[float] = None
    """Bound each r_t to [-clip, clip]; null = unbounded. [ENG]"""

    def __post_init__(self):
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"reward.distill.clip must be > 0 or null, got {self.clip}")
        if not re.fullmatch(r"policy|cpu|mps|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"reward.distill.device={self.device}: choose policy, cpu, mps, cuda or cuda:N")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"reward.distill.dtype={self.dtype}: choose null (model.dtype) or one of "
                             f"{', '.join(DTYPES)}")


def check_options(opts: DistillConfig, cfg) -> None:
    """Config time: the teacher names a model (a known name, an existing HF folder or a hub id; nothing is loaded) and
    ``student: rollout`` samples at temperature 1."""
    from omegaconf import OmegaConf

    from drox.models.loading import MODEL_SPEC_HELP, model_spec

    if not str(opts.teacher or "").strip():
        raise ValueError(f"{OPTION} is required: {MODEL_SPEC_HELP} (e.g. {OPTION}=smollm2-135m)")
    model_spec(opts.teacher, OPTION)
    temperature = OmegaConf.select(cfg, "rollout.temperature")
    if opts.student == "rollout" and temperature is not None and float(temperature) != 1.0:
        raise ValueError(f"reward.distill.student=rollout reads the log-probs recorded while sampling, which at "
                         f"rollout.temperature={temperature} are those of softmax(z/T), not the policy's; set "
                         "reward.distill.student=recompute (one more pass) or rollout.temperature=1")


def check_vocabulary(teacher_tokenizer, policy_tokenizer, teacher: str) -> None:
    """One :class:`ConfigError` line when the teacher cannot score the policy's token ids: another vocabulary size,
    or the same size with other ids."""
    n_teacher, n_policy = len(teacher_tokenizer), len(policy_tokenizer)
    fix = "choose a teacher with the policy's tokenizer (its model family), or a policy with the teacher's"
    if n_teacher != n_policy:
        raise ConfigError(f"{OPTION}={teacher} has a vocabulary of {n_teacher} tokens and the policy one of "
                          f"{n_policy}: the teacher scores the policy's token ids, so both need the same tokenizer; "
                          f"{fix}")
    vocab_t, vocab_p = getattr(teacher_tokenizer, "get_vocab", None), getattr(policy_tokenizer, "get_vocab", None)
    if vocab_t is not None and vocab_p is not None and vocab_t() != vocab_p():
        raise ConfigError(f"{OPTION}={teacher} has {n_teacher} tokens like the policy but other token ids: the "
                          f"teacher scores the policy's token ids, so both need the same tokenizer; {fix}")


def teacher_model(ctx: ScoringContext, cfg: DistillConfig):
    """The frozen teacher, loaded on the first call and kept in ``ctx.state`` (again when an option changes).

    Its settings are what ``model=<teacher>`` would load (:func:`drox.models.loading.model_spec`) with the policy's
    ``cache_dir``, ``dtype`` (unless ``cfg.dtype``) and ``aligned_weights``; its tokenizer is checked against the
    policy's (:func:`check_vocabulary`) before its weights load."""
    key = (cfg.teacher, cfg.device, cfg.dtype)
    held = ctx.state.get(STATE_KEY)
    if held is not None and held["key"] == key:
        return held["model"]
    from omegaconf import OmegaConf

    from drox.config import ModelConfig
    from drox.models.loading import load_policy, load_tokenizer, model_spec, resolve_device

    if ctx.tokenizer is None:
        raise ValueError("reward.distill needs the policy's tokenizer in the scoring context")
    base = getattr(ctx.engine, "model_cfg", None)
    kept = {k: base[k] for k in ("cache_dir", "dtype", "aligned_weights") if base is not None and k in base}
    if cfg.dtype is not None:
        kept["dtype"] = cfg.dtype
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), kept, model_spec(cfg.teacher, OPTION))
    check_vocabulary(load_tokenizer(model_cfg), ctx.tokenizer, cfg.teacher)
    if cfg.device == "policy":
        device = next(ctx.policy.parameters()).device if ctx.policy is not None else torch.device("cpu")
    else:
        device = resolve_device(cfg.device)
    model, _ = load_policy(model_cfg, device)
    model.requires_grad_(False)
    ctx.state[STATE_KEY] = {"key": key, "model": model}
    return model


@register_reward("distill", DistillConfig, check=check_options,
                 verl="it runs a teacher model inside the reward, and drox.integrations.verl does not have in-process "
                      "model rewards yet (docs/verl.md, 'Not done')")
def distill(ctx: ScoringContext, cfg: DistillConfig) -> RewardOutput:
    """``r_t = log pi_T(y_t) − log pi_S(y_t)`` at every policy token: ``token [Q, G, T]`` (``seq`` 0), or with
    ``dense: false`` ``seq = Σ_t r_t``."""
    batch = ctx.batch
    Q, G, T = batch.num_groups, batch.group_size, batch.response_ids.shape[1]
    mask = batch.policy_mask.float()  # [N, T] the tokens the policy sampled (not an episode's environment tokens)
    if cfg.student == "rollout" and float(batch.temperature) != 1.0:
        raise ValueError(f"reward.distill.student=rollout needs rollout.temperature=1 (the batch was sampled at "
                         f"{batch.temperature}); set reward.distill.student=recompute")
    model = teacher_model(ctx, cfg)
    start = time.perf_counter()
    teacher = ctx.logprobs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                           model=model)  # [N, T], one teacher-forced pass over the batch (counted)
    seconds = time.perf_counter() - start
    if cfg.student == "recompute":
        student = ctx.logprobs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    else:
        student = batch.logprobs.float()  # [N, T] recorded while sampling
    raw = token_gaps(teacher, student, mask)  # [N, T]
    gaps = raw if cfg.clip is None else token_gaps(teacher, student, mask, cfg.clip)
    diagnostics = {**gap_diagnostics(gaps, mask),
                   "reverse_kl": -(raw.sum() / mask.sum().clamp_min(1)).item(),
                   "teacher_seconds": seconds}
    if not cfg.dense:
        return RewardOutput(seq=gaps.sum(-1).view(Q, G), diagnostics=diagnostics)
    return RewardOutput(seq=torch.zeros(Q, G), token=gaps.view(Q, G, T), token_mask=mask.bool().view(Q, G, T),
                        diagnostics=diagnostics)


__all__ = ["DistillConfig", "check_options", "check_vocabulary", "distill", "teacher_model"]
