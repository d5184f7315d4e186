"""The torch-free part of the ``prm`` reward (:mod:`drox.rewards.prm`): its options, the oracle step checker and the
step splitter, shared with the generative judge (:mod:`drox.rewards.prm_judge`), the pairwise judge and the verl
backend's rule rewards (:mod:`drox.integrations.verl.rules`), whose reward workers parse the same options and check
steps the same way without importing torch or drox's reward sources.

The oracle checker is drox's own rule for arithmetic chains ``a op b = c`` [ENG]; the aggregations are Math-Shepherd's
``min`` (Wang et al., arXiv 2312.08935, §3.4), ``last`` (Snell et al., arXiv 2408.03314), PRM800K's ``prod``
(Lightman et al., arXiv 2305.20050) and GenPRM's ``mean`` (arXiv 2504.00891, App. A.1); the sequence score itself is
computed on tensors by :func:`drox.rewards.prm.aggregate_steps`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Literal, Optional, Sequence, Tuple

JUDGES = ("policy", "initial", "model")
"""Who judges (``reward.prm.judge``, ``reward.pairwise.judge``): the policy being trained, the frozen initial policy,
or a separate LM."""
KINDS = ("oracle", "hf", "monte_carlo", "generative")
ESTIMATES = ("soft", "hard")
AGGREGATIONS = ("min", "last", "prod", "mean")
HEADS = ("token_classification", "sequence_classification", "causal_lm")

# a op b = c with integers; the look-arounds keep it from starting or ending inside a longer number
_STEP = re.compile(r"(?<![\d.])(-?\d+)\s*([-+*×])\s*(-?\d+)\s*=\s*(-?\d+)(?!\d|\.\d)")


@dataclass
class PRMConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    kind: Literal[KINDS] = "oracle"
    """oracle (arithmetic step checker) | hf (a HF PRM checkpoint at model_path) | monte_carlo (the fraction of
    the policy's completions from each step's end that the verifier accepts; Math-Shepherd §3.3) | generative (a
    judge LM's probability of its "correct" verdict on each step; rewards/prm_judge.py)."""
    aggregation: Literal[AGGREGATIONS] = "min"
    """Step scores -> sequence score: min (Math-Shepherd) | last | prod (PRM800K) | mean."""
    dense: bool = False
    """Place step scores at step-end tokens (DeepSeekMath §4.1.3 reward-to-go) instead of aggregating."""
    empty_score: float = 0.0
    """Sequence score of a response without any step. [ENG]"""
    # --- oracle
    match_reference: bool = False
    """oracle: a step is correct only if its result also equals the reference step's at that index."""
    correct: float = 1.0
    """oracle: score of a correct step."""
    incorrect: float = 0.0
    """oracle: score of an incorrect step."""
    # --- hf
    model_path: str = ""
    """hf: PRM checkpoint (local folder or hub id)."""
    head: Literal[HEADS] = "token_classification"
    """hf: token_classification | sequence_classification | causal_lm."""
    step_separator: str = "\n"
    """hf: splits the response into steps; also joins the steps in the PRM input."""
    step_tag: str = ""
    """hf: appended after each step in the PRM input (Math-Shepherd ' ки', Qwen-PRM '<extra_0>')."""
    input_template: str = "{question}\n{steps}"
    """hf: the PRM input text; {question} = the prompt, {steps} = the tagged steps."""
    positive_label: int = 1
    """hf classification heads: index of the 'step is correct' label."""
    good_token: str = "+"
    """hf causal_lm: the label token meaning 'correct'."""
    bad_token: str = "-"
    """hf causal_lm: the label token meaning 'incorrect' ('' = use the full softmax)."""
    add_special_tokens: bool = True
    """hf: let the PRM tokenizer add its special tokens (BOS) to the input."""
    dtype: str = "float32"
    """hf: PRM parameter dtype (float32 | bfloat16 | float16)."""
    trust_remote_code: bool = False
    """hf: allow the checkpoint's own model code (Qwen2.5-Math-PRM); falls back to AutoModel."""
    # --- monte_carlo (step_separator splits the steps)
    mc_samples: int = 4
    """monte_carlo: completions sampled from each step's end (Math-Shepherd: N = 8)."""
    mc_estimate: Literal[ESTIMATES] = "soft"
    """monte_carlo: soft = fraction accepted (Math-Shepherd SE) | hard = 1 if any is accepted (HE)."""
    mc_max_new_tokens: Optional[int] = None
    """monte_carlo: length cap of each completion; null = the rollout's ``max_new_tokens``."""
    mc_temperature: float = 1.0
    """monte_carlo: sampling temperature of the completions. [ENG]"""

    # --- generative (step_separator splits the steps)
    judge: Literal[JUDGES] = "policy"
    """generative: policy (the model being trained judges itself) | initial (the frozen initial policy) | model (a
    separate LM at ``judge_path``)."""
    judge_path: str = ""
    """generative, judge=model: the judge LM, a local HF folder or hub id, or ``embedded`` (SmolLM2-135M-Instruct);
    loaded once and frozen, prompted with its own tokenizer and chat template."""
    judge_template: str = ("Problem: {question}\n\nSolution so far:\n{steps}\n\n"
                           "Is the last step of this solution correct?")
    """generative: the judge's user message; {question} = the prompt, {steps} = the steps up to the judged one."""
    judge_verify_tokens: int = 0
    """generative: tokens of verification the judge writes (greedy) before its verdict; 0 = verdict directly."""
    verdict_prefix: str = "\nVerdict:"
    """generative: text after the verification, before the verdict token."""
    verdict_good: str = " Yes"
    """generative: the verdict token meaning 'correct' (one token)."""
    verdict_bad: str = " No"
    """generative: the verdict token meaning 'incorrect' (one token)."""

    def __post_init__(self):
        if self.judge_verify_tokens < 0:
            raise ValueError(f"reward.prm.judge_verify_tokens must be >= 0, got {self.judge_verify_tokens}")
        if "{steps}" not in self.judge_template:
            raise ValueError(f"reward.prm.judge_template must contain {{steps}}, got {self.judge_template!r}")
        if self.mc_samples < 1:
            raise ValueError(f"reward.prm.mc_samples must be >= 1, got {self.mc_samples}")
        if self.mc_temperature <= 0:
            raise ValueError(f"reward.prm.mc_temperature must be > 0, got {self.mc_temperature}")
        if self.mc_max_new_tokens is not None and self.mc_max_new_tokens < 1:
            raise ValueError(f"reward.prm.mc_max_new_tokens must be >= 1 or null, got {self.mc_max_new_tokens}")


# ------------------------------------------------------------------------------------------------ steps


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def parse_steps(text: str) -> List[Tuple[int, str, int, int, int]]:
    """Every ``a op b = c`` in ``text`` as ``(a, op, b, c, end_char)``; ``×`` is read as ``*``."""
    return [(int(m.group(1)), m.group(2).replace("×", "*"), int(m.group(3)), int(m.group(4)), m.end())
            for m in _STEP.finditer(text)]


def check_steps(text: str, reference_steps: Optional[Sequence[str]] = None) -> List[Tuple[bool, int]]:
    """Oracle step checker: ``[(correct, end_char)]`` for each step of ``text``.

    Correct iff ``a op b == c``, and, when ``reference_steps`` is given, ``c`` equals the result of the
    reference step with the same index (a step past the reference's last is incorrect).
    """
    ref_results = None
    if reference_steps is not None:
        ref_results = [parse_steps(s)[-1][3] if parse_steps(s) else None for s in reference_steps]
    out = []
    for k, (a, op, b, c, end) in enumerate(parse_steps(text)):
        ok = _apply(a, op, b) == c
        if ref_results is not None:
            ok = ok and k < len(ref_results) and ref_results[k] == c
        out.append((ok, end))
    return out


def split_steps(text: str, separator: str) -> List[Tuple[int, int]]:
    """Character spans ``[start, end)`` of the non-empty steps of ``text`` (whitespace trimmed)."""
    if not separator:
        raise ValueError("reward.prm.step_separator must not be empty")
    spans, pos = [], 0
    for piece in text.split(separator):
        lead = len(piece) - len(piece.lstrip())
        body = piece.strip()
        if body:
            spans.append((pos + lead, pos + lead + len(body)))
        pos += len(piece) + len(separator)
    return spans


__all__ = ["AGGREGATIONS", "ESTIMATES", "HEADS", "JUDGES", "KINDS", "PRMConfig", "check_steps", "parse_steps",
           "split_steps"]
