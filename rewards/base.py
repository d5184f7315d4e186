"""The reward-source contract and the combiner.

A source is a function ``(ctx: ScoringContext, opts) -> RewardOutput`` registered by name in
:data:`REWARD_SOURCES` with its options dataclass (which must have a float ``weight``);
``+reward=<name>`` selects it and ``reward.<name>.<option>=...`` sets its options (nested under the
name, so ``'+reward=[outcome,format]'`` selects several at once). A user's own source is registered
the same way from their own file (``plugins=[my_rewards.py]``; docs/plugins.md). The combiner checks
every output (shape, NaN, inf) and names the source at fault: a wrong-length score list is an error
here, never silently broadcast (TRL issue #6533).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

from drox.errors import ConfigError, NonFiniteError, check_finite
from drox.models.forward import eval_mode, frozen_copy, response_logits
from drox.models.logprobs import logprobs_from_logits
from drox.registry import Registry


@dataclass
class ScoringContext:
    """What a reward source may look at. Rows hold one dataset row per prompt (Q of them)."""

    batch: Any  # RolloutBatch, N = Q * G rows
    rows: List[Dict[str, Any]]  # Q dataset rows: prompt, answer, problem_id, metadata
    task: Any  # drox.tasks.Task (task.verifier may be None)
    step: int = 0
    seed: int = 0
    gen_batch: int = 0  # which generation batch of the step (> 0: a refill by dynamic sampling)
    valid: Optional[torch.Tensor] = None  # [Q, G] bool, rollouts every gate accepted (None: no gates)
    reference: Optional[Callable[[], Any]] = None  # the frozen initial policy, loaded on first call
    #   (shared with the trainer's KL term; rebuilt from the base config on resume, so it stays the initial one)
    policy: Any = None  # the current policy (for sources that need log-probs), may be None
    token_scorer: Optional[Callable] = None  # (prompt token lists, response token lists) -> [n, T', 2] teacher-forced
    #   (log-prob, rank) under the current policy through the rollout engine (vLLM prompt_logprobs); None: forward()
    tokenizer: Any = None
    engine: Any = None  # the rollout engine, for sources that sample continuations (Monte-Carlo step values)
    cache: Dict[str, Any] = field(default_factory=dict)  # results shared within the step (the verifier's)
    state: Dict[str, Any] = field(default_factory=dict)  # kept across steps by the trainer (e.g. a frozen model)
    counters: Dict[str, float] = field(default_factory=dict)  # extra forward passes/tokens, logged as scoring/*
    forward_batch_size: int = 32  # rows per extra forward pass
    max_new_tokens: Optional[int] = None  # the rollout's completion cap (length-based sources)
    reward_timeout: float = 0.0  # seconds a source may take per call (trainer.reward_timeout; 0 = no limit)
    reward_on_timeout: str = "stop"  # stop (one-line error) | zero (score 0 this step, counted as timeouts)

    @property
    def expanded_rows(self) -> List[Dict[str, Any]]:
        """N rows: each prompt's row repeated G times (group-major)."""
        G = self.batch.group_size
        return [r for r in self.rows for _ in range(G)]

    def verify(self):
        """The task verifier's result for every rollout, computed once per step and shared."""
        if "verify" not in self.cache:
            if self.task.verifier is None:
                raise ValueError(
                    f"task '{self.task.name}' has no verifier; choose a reward that needs none "
                    "(e.g. +reward=variance) or a verifiable task"
                )
            self.cache["verify"] = self.task.verifier(self.batch.texts, self.expanded_rows)
        return self.cache["verify"]


    def forward(self, prompt_ids, prompt_mask, response_ids, response_mask, reduce: Callable, model=None):
        """Teacher-forced forward passes in chunks, the one place extra scoring passes are counted.

        prompt_ids/prompt_mask: [n, P] left-padded; response_ids/response_mask: [n, T'] right-padded.
        ``reduce(logits [b, T', V], response_ids [b, T'], response_mask [b, T']) -> tensor [b, ...]``
        turns each chunk's logits into what the source needs (so [n, T', V] is never held whole).
        ``model`` defaults to the current policy. Runs under no_grad; returns the concatenation on CPU.
        """
        model = model if model is not None else self.policy
        if model is None:
            raise ValueError("this reward source needs a model, but the scoring context has none")
        device = next(model.parameters()).device
        outs = []
        with eval_mode(model), torch.no_grad():
            for start in range(0, prompt_ids.shape[0], self.forward_batch_size):
                sl = slice(start, start + self.forward_batch_size)
                r_ids, r_mask = response_ids[sl].to(device), response_mask[sl].to(device)
                logits = response_logits(model, prompt_ids[sl].to(device), prompt_mask[sl].to(device),
                                         r_ids, r_mask)
                outs.append(reduce(logits, r_ids, r_mask).cpu())
                self.counters["forward_passes"] = self.counters.get("forward_passes", 0) + 1
                self.counters["forward_tokens"] = (self.counters.get("forward_tokens", 0)
                                                   + float((prompt_mask[sl].sum() + r_mask.sum()).item()))
        return torch.cat(outs) if outs else torch.empty(0)

    def logprobs(self, prompt_ids, prompt_mask, response_ids, response_mask, model=None, temperature: float = 1.0):
        """Log-probs [n, T'] of ``response_ids`` (0 on padding) under ``model`` (default: the policy)."""
        def reduce(logits, ids, mask):
            return logprobs_from_logits(logits, ids, temperature) * mask

        return self.forward(prompt_ids, prompt_mask, response_ids, response_mask, reduce, model=model)


def scoring_state_dict(state: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpointable part of the scoring state: the frozen model copies (weights + step)."""
    return {k: {"step": v["step"], "weights": {n: t.detach().cpu().clone() for n, t in v["model"].state_dict().items()}}
            for k, v in state.items() if isinstance(v, dict) and "model" in v and "step" in v}


def load_scoring_state(saved: Dict[str, Any], policy) -> Dict[str, Any]:
    """Rebuild the frozen copies saved by :func:`scoring_state_dict` (architecture from ``policy``)."""
    state = {}
    for k, v in saved.items():
        held = frozen_copy(policy, v["step"])
        held["model"].load_state_dict(v["weights"])
        state[k] = held
    return state


@dataclass
class RewardOutput:
    seq: torch.Tensor  # [Q, G] one score per rollout
    token: Optional[torch.Tensor] = None  # [Q, G, T] dense scores (T = response length), or None
    token_mask: Optional[torch.Tensor] = None  # [Q, G, T] bool: positions holding a dense score (None: the nonzero ones)
    diagnostics: Dict[str, float] = field(default_factory=dict)  # scalars, logged as reward/<name>/<key>
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)  # tensors for later stages, e.g. sigma_max [Q]


#: ``+reward=<name>``: ``fn(ctx: ScoringContext, opts) -> RewardOutput``; options dataclass with a float ``weight``.
#: ``meta["check"]``: optional ``fn(opts, cfg)`` raising ValueError when the rest of the config contradicts the
#: source (run once at config time). ``meta["advantages"]``: True for a (plugin) source whose scores are already
#: advantages and need ``trainer.advantage.estimator=none``; ``inverse`` refuses to flip them. No built-in source
#: sets it: PSR/NSR/W-REINFORCE are advantage estimators on the outcome reward (drox.signals.sign).
REWARD_SOURCES = Registry("reward", "reward source", config_group="reward")


def register_reward(name: str, options: type, **meta):
    """Decorator: register ``fn(ctx, opts) -> RewardOutput`` as ``+reward=name``; ``options`` is its options
    dataclass (it must have a float ``weight``, the source's weight in the combined reward)."""
    if not any(f.name == "weight" for f in dataclasses.fields(options)):
        raise TypeError(f"reward source {name!r}: its options dataclass {options.__name__} needs a float `weight`")
    return REWARD_SOURCES.register(name, options, **meta)


@dataclass
class Combined:
    seq: torch.Tensor  # [Q, G] weighted sum of sequence scores
    token: Optional[torch.Tensor]  # [Q, G, T] weighted sum of dense scores, or None
    per_source: Dict[str, RewardOutput]
    metrics: Dict[str, float]
    token_mask: Optional[torch.Tensor] = None  # [Q, G, T] bool: union of the sources' dense-score positions
    table: Optional[torch.Tensor] = None  # [Q, G, K] each source's sequence scores (multi-objective combiners)
    weights: Optional[torch.Tensor] = None  # [K] the sources' weights, in the order of ``per_source``


def score(ctx: ScoringContext, sources: Dict[str, Any]) -> Combined:
    """Run every configured source and combine them by their weights.

    ``sources`` maps source names to their parsed options (the pipeline's, built once before training);
    the pipeline puts ``outcome`` there when none is configured (plain RLVR).
    """
    Q, G, T = ctx.batch.num_groups, ctx.batch.group_size, ctx.batch.response_ids.shape[1]
    seq = torch.zeros(Q, G)
    token: Optional[torch.Tensor] = None
    token_mask: Optional[torch.Tensor] = None
    per_source: Dict[str, RewardOutput] = {}
    metrics: Dict[str, float] = {}
    weights: List[float] = []
    for name, opts in sources.items():
        out = call_source(name, opts, ctx)
        _check_output(name, out, Q, G, T, ctx.step)
        w = float(opts.weight)
        weights.append(w)
        seq = seq + w * out.seq.float()
        if out.token is not None:
            token = (token if token is not None else torch.zeros(Q, G, T)) + w * out.token.float()
            # a step reward of exactly 0 (an incorrect step) is a reward, not "no reward": keep its position
            placed = out.token_mask.bool() if out.token_mask is not None else out.token != 0
            token_mask = placed if token_mask is None else token_mask | placed
        per_source[name] = out
        metrics[f"reward/{name}/mean"] = out.seq.float().mean().item()
        metrics[f"reward/{name}/std"] = out.seq.float().std().item() if out.seq.numel() > 1 else 0.0
        for k, v in out.diagnostics.items():
            metrics[f"reward/{name}/{k}"] = float(v)
    for k, v in ctx.counters.items():
        metrics[f"scoring/{k}"] = float(v)
    table = torch.stack([out.seq.float() for out in per_source.values()], dim=-1)  # [Q, G, K]
    return Combined(seq=seq, token=token, per_source=per_source, metrics=metrics, token_mask=token_mask,
                    table=table, weights=torch.tensor(weights))  # weights [K]


class RewardSourceError(ValueError):
    """A reward source raised or overran ``trainer.reward_timeout``: one line naming it and the step."""


class _Timeout(Exception):
    """Raised inside a reward source by the SIGALRM handler of :func:`_time_limit`."""


def call_source(name: str, opts: Any, ctx: ScoringContext) -> RewardOutput:
    """One source's scores, its failures as :class:`RewardSourceError` (the original exception is chained:
    ``DROX_DEBUG=1`` shows its traceback) and, with ``trainer.reward_timeout`` > 0, a hang cut after that many
    seconds (SIGALRM: the main thread on Unix; elsewhere no limit)."""
    limit = float(ctx.reward_timeout or 0.0)
    fn = REWARD_SOURCES.get(name).fn
    try:
        with _time_limit(limit, f"step {ctx.step}: reward source '{name}' took more than trainer.reward_timeout="
                                f"{limit:g} s; make it faster or raise the limit"):
            return fn(ctx, opts)
    except _Timeout as e:
        if ctx.reward_on_timeout != "zero":
            raise RewardSourceError(str(e)) from None
        # trainer.reward_on_timeout=zero: this step's scores of the source are 0, and the cut is counted
        return RewardOutput(seq=torch.zeros(ctx.batch.num_groups, ctx.batch.group_size), diagnostics={"timeouts": 1.0})
    except (RewardSourceError, NonFiniteError, ConfigError):
        raise
    except Exception as e:  # a user's source (plugin, function reward) failing is their input to fix
        detail = str(e).splitlines()[0] if str(e) else ""
        raise RewardSourceError(f"step {ctx.step}: reward source '{name}' raised {type(e).__name__}"
                                f"{': ' + detail if detail else ''} (DROX_DEBUG=1 shows the traceback)") from e


@contextlib.contextmanager
def _time_limit(seconds: float, message: str):
    import signal
    import threading

    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout(message)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check_output(name: str, out: RewardOutput, Q: int, G: int, T: int, step: int) -> None:
    if not isinstance(out.seq, torch.Tensor) or tuple(out.seq.shape) != (Q, G):
        got = tuple(out.seq.shape) if isinstance(out.seq, torch.Tensor) else type(out.seq).__name__
        raise ValueError(f"reward source '{name}' returned scores of shape {got}; expected [Q, G] = [{Q}, {G}]")
    check_finite("rewards", out.seq, step, source=name)
    if out.token is not None:
        if tuple(out.token.shape) != (Q, G, T):
            raise ValueError(
                f"reward source '{name}' returned token scores of shape {tuple(out.token.shape)}; "
                f"expected [Q, G, T] = [{Q}, {G}, {T}]"
            )
        check_finite("token rewards", out.token, step, source=name)
        if out.token_mask is not None and tuple(out.token_mask.shape) != (Q, G, T):
            raise ValueError(f"reward source '{name}' returned a token mask of shape {tuple(out.token_mask.shape)}; "
                             f"expected [Q, G, T] = [{Q}, {G}, {T}]")
