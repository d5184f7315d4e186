"""What a paper-scale run of a table costs, estimated before anything runs (``driver.py <name> --scale paper
--dry-run``).

The estimate counts matrix-multiply FLOPs with the usual dense-transformer rule (about 2 N FLOPs per token for a
forward pass of an N-parameter model, 6 N for forward and backward: the approximation of Kaplan et al. 2020, arXiv
2001.08361, whose section was not checked here) and divides by an H100's dense bf16 peak times a utilisation.
Every number that is ours, not measured, is a named constant below, and the dry run prints them beside the
estimate:

* tokens per rollout: the prompt (``PROMPT_TOKENS``, the papers' prompts are a few hundred tokens; ours) plus the
  *whole* response budget (``rollout.max_new_tokens``): an upper bound, since most responses stop earlier;
* per training step: generation (2 N per token), the old-policy log-probs when the update takes more than one
  optimizer step per batch (2 N), the reference model's log-probs when ``trainer.kl_coef`` > 0 (2 N), and
  ``mu`` passes of forward + backward (6 N each);
* the final evaluation: ``eval.n`` samples of every test problem (2 N per token; ``EVAL_PROBLEMS`` problems when
  the test file is not there to count);
* utilisation: ``TRAIN_MFU`` of the peak for the update, ``GENERATE_MFU`` for sampling, which is memory-bound
  (ours: typical of published RL runs' throughput, not measured here; nothing in drox has run on a GPU yet).

The parameter count is read from the model's name (``Qwen2.5-Math-7B`` -> 7e9); a name without one gives no
estimate rather than a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

H100_BF16_PEAK = 989.4e12
"""FLOP/s: NVIDIA H100 SXM, dense bf16 tensor-core peak (NVIDIA's datasheet figure)."""
TRAIN_MFU = 0.40
"""Share of the peak the forward/backward passes reach (ours, not measured)."""
GENERATE_MFU = 0.10
"""Share of the peak sampling reaches (ours: decoding is memory-bound; not measured)."""
PROMPT_TOKENS = 256
"""Tokens per prompt (ours: the papers do not report a mean prompt length)."""
EVAL_PROBLEMS = 500
"""Test problems assumed when the test file is not there to count (MATH-500's size; ours)."""

_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*([BbMm])(?![a-zA-Z])")


def parameters_from_name(name: str) -> Optional[float]:
    """The parameter count a model's name states (``Qwen/Qwen2.5-Math-7B`` -> 7e9, ``SmolLM2-135M`` -> 1.35e8,
    ``DeepSeek-R1-Distill-Qwen-1.5B`` -> 1.5e9), the last such number in the name; None when it states none."""
    found = _SIZE.findall(Path(str(name)).name.replace("_", "-"))
    if not found:
        return None
    value, unit = found[-1]
    return float(value) * (1e9 if unit in "Bb" else 1e6)


def count_lines(path: Optional[str]) -> Optional[int]:
    """Non-blank lines of a JSONL file, or None when there is no such file."""
    if not path or not Path(path).is_file():
        return None
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


@dataclass
class Estimate:
    """One run's estimated cost on one H100."""

    params: float
    """Model parameters (from its name)."""
    tokens_per_step: int
    """Tokens through the model per training step: rollouts x (prompt + response budget)."""
    step_seconds: float
    """One training step: sampling at GENERATE_MFU, log-prob passes and updates at TRAIN_MFU."""
    steps: int
    eval_seconds: float
    """The final evaluation: eval.n samples of each test problem."""
    eval_problems: int
    eval_problems_counted: bool
    """False: the test file was not there, EVAL_PROBLEMS assumed."""

    @property
    def gpu_hours(self) -> float:
        return (self.steps * self.step_seconds + self.eval_seconds) / 3600


def estimate(cfg, test_problems: Optional[int] = None) -> Optional[Estimate]:
    """The cost of one run of ``cfg`` (a composed drox config) with ``test_problems`` held-out problems (None: not
    known), or None when the model's name states no size."""
    params = parameters_from_name(str(cfg.model.path or cfg.model.name))
    if params is None:
        return None
    t, r = cfg.trainer, cfg.rollout
    tokens = int(t.prompts_per_step) * int(t.samples_per_prompt) * (PROMPT_TOKENS + int(r.max_new_tokens))
    optimizer_steps_per_batch = int(t.mu) * int(t.mini_batches)
    extra_forwards = (optimizer_steps_per_batch > 1) + (float(t.kl_coef) > 0)  # old-policy and reference log-probs
    generate_flops = 2 * params * tokens
    train_flops = (6 * int(t.mu) + 2 * extra_forwards) * params * tokens
    step_seconds = generate_flops / (H100_BF16_PEAK * GENERATE_MFU) + train_flops / (H100_BF16_PEAK * TRAIN_MFU)
    counted = test_problems is not None
    problems = int(test_problems) if counted else EVAL_PROBLEMS
    if cfg.eval.get("num_problems"):
        problems = min(problems, int(cfg.eval.num_problems))
    eval_tokens = problems * int(cfg.eval.n) * (PROMPT_TOKENS + int(cfg.eval.get("max_new_tokens") or r.max_new_tokens))
    eval_seconds = 2 * params * eval_tokens / (H100_BF16_PEAK * GENERATE_MFU)
    return Estimate(params=params, tokens_per_step=tokens, step_seconds=step_seconds, steps=int(t.steps),
                    eval_seconds=eval_seconds, eval_problems=problems, eval_problems_counted=counted)


def assumptions() -> str:
    """The constants of the estimate, as one line for the dry run's output."""
    return (f"H100 dense bf16 peak {H100_BF16_PEAK / 1e12:.1f} TFLOP/s at {TRAIN_MFU:.0%} utilisation for updates "
            f"and {GENERATE_MFU:.0%} for sampling; {PROMPT_TOKENS} prompt tokens and the full response budget per "
            "rollout (an upper bound); 2N FLOPs per token forward, 6N forward+backward (experiments/paper_scale.py)")
