"""The generative step judge of ``reward.prm kind=generative`` (docs/algorithms.md "PRM rewards").

A language model judges each step by reading the problem and the solution up to that step, optionally writing a
short verification of its own (GenPRM, ThinkPRM, StepWiser and the reasoning reward models RM-R1 / DeepSeek-GRM
all verify in words before the verdict), and then answering; the step's score is

    s_k = p(good) / (p(good) + p(bad))

at the verdict position, with ``good``/``bad`` the judge's two verdict tokens (" Yes" / " No" by default): the
probability of "correct" renormalised over the two verdicts. The judge is the policy being trained
(``judge: policy``, self-judgment) or the frozen initial policy (``judge: initial``). Choices [ENG]: the judge
prompt (``judge_template``, rendered with the policy's chat template), greedy verification of at most
``judge_verify_tokens`` tokens (policy judge only: the rollout engine writes it), the verdict read after
``verdict_prefix``. Pairwise self-judgment (the policy comparing two responses of a group) is not implemented.
"""

from __future__ import annotations

from typing import List, Tuple

import torch

from drox.rewards._spans import right_pad
from drox.rewards.base import ScoringContext


def judge_prompts(question: str, steps: List[str], template: str) -> List[str]:
    """One judge prompt per step k: ``template`` with {question} and {steps} = steps 1..k, one per line."""
    return [template.format(question=question, steps="\n".join(steps[: k + 1])) for k in range(len(steps))]


def verdict_probability(logits: torch.Tensor, good: int, bad: int) -> torch.Tensor:
    """``p(good) / (p(good) + p(bad))`` = sigmoid(z_good − z_bad) from logits [..., V] -> [...]."""
    z = logits.float()
    return torch.sigmoid(z[..., good] - z[..., bad])


def single_token(tokenizer, text: str, what: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"reward.prm.{what}={text!r} is {len(ids)} tokens for the judge's tokenizer; it must be one")
    return int(ids[0])


def generative_step_scores(ctx: ScoringContext, cfg) -> List[List[Tuple[float, int]]]:
    """Per rollout, ``(s_k, step end char)`` for each step (module docstring), in batched judge passes."""
    from drox.rewards.prm import split_steps

    batch, G = ctx.batch, ctx.batch.group_size
    if ctx.engine is None or ctx.tokenizer is None:
        raise ValueError("reward.prm kind=generative needs the rollout engine and the tokenizer in the scoring context")
    if cfg.judge == "initial" and cfg.judge_verify_tokens > 0:
        raise ValueError("reward.prm judge=initial cannot write a verification (the engine samples from the policy); "
                         "set judge_verify_tokens=0 or judge=policy")
    prompts, owners = [], []
    for n, text in enumerate(batch.texts):
        spans = split_steps(text, cfg.step_separator)
        question = ctx.rows[n // G]["prompt"]
        steps = [text[a:b] for a, b in spans]
        prompts += judge_prompts(question, steps, cfg.judge_template)
        owners += [(n, end) for _, end in spans]
    per_row: List[List[Tuple[float, int]]] = [[] for _ in range(batch.num_rows)]
    if not prompts:
        return per_row
    good = single_token(ctx.tokenizer, cfg.verdict_good, "verdict_good")
    bad = single_token(ctx.tokenizer, cfg.verdict_bad, "verdict_bad")
    verifications = [""] * len(prompts)
    if cfg.judge_verify_tokens > 0:
        written = ctx.engine.generate(prompts, 1, max_new_tokens=int(cfg.judge_verify_tokens), temperature=0.0)
        verifications = list(written.texts)
        ctx.counters["judge_tokens"] = ctx.counters.get("judge_tokens", 0) + float(written.response_mask.sum())
    # the judge's answer: its verification, the verdict prefix, then the good token, whose logits hold the verdict
    answers = [ctx.tokenizer(v + cfg.verdict_prefix, add_special_tokens=False)["input_ids"] + [good]
               for v in verifications]
    resp_ids, resp_mask = right_pad(answers, int(getattr(ctx.tokenizer, "pad_token_id", 0) or 0))
    p_ids, p_mask = ctx.engine.encode_prompts(prompts)

    def reduce(logits, ids, mask):  # [b, T', V] -> [b]: the verdict at each row's last real position
        last = mask.sum(-1).long() - 1
        return verdict_probability(logits[torch.arange(logits.shape[0]), last], good, bad)

    judge = ctx.reference() if cfg.judge == "initial" else None
    scores = ctx.forward(p_ids, p_mask, resp_ids, resp_mask, reduce, model=judge)  # [len(prompts)]
    for (n, end), s in zip(owners, scores.tolist()):
        per_row[n].append((float(s), end))
    return per_row


__all__ = ["generative_step_scores", "judge_prompts", "single_token", "verdict_probability"]
