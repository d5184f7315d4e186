"""The generative step judge of ``reward.prm kind=generative`` (docs/algorithms.md "PRM rewards").

A language model judges each step by reading the problem and the solution up to that step, optionally writing a
short verification of its own (GenPRM, ThinkPRM, StepWiser and the reasoning reward models RM-R1 / DeepSeek-GRM
all verify in words before the verdict), and then answering; the step's score is

    s_k = p(good) / (p(good) + p(bad))

at the verdict position, with ``good``/``bad`` the judge's two verdict tokens (" Yes" / " No" by default): the
probability of "correct" renormalised over the two verdicts. The judge is the policy being trained
(``judge: policy``, self-judgment), the frozen initial policy (``judge: initial``) or a separate LM (``judge:
model`` with ``judge_path``: a local HF folder, a hub id, or ``embedded``; its own tokenizer and chat template). Choices [ENG]: the judge
prompt (``judge_template``, rendered with the policy's chat template), greedy verification of at most
``judge_verify_tokens`` tokens (judges that can sample: policy, model), the verdict read after ``verdict_prefix``.
The same judge machinery (:func:`judge_verdicts`) serves pairwise self-judgment (rewards/pairwise.py).
"""

from __future__ import annotations

from typing import List, Tuple

import torch

from drox.signals.spans import right_pad
from drox.rewards.base import ScoringContext
from drox.signals.prm import split_steps


def judge_prompts(question: str, steps: List[str], template: str) -> List[str]:
    """One judge prompt per step k: ``template`` with {question} and {steps} = steps 1..k, one per line."""
    return [template.format(question=question, steps="\n".join(steps[: k + 1])) for k in range(len(steps))]


def verdict_probability(logits: torch.Tensor, good: int, bad: int) -> torch.Tensor:
    """``p(good) / (p(good) + p(bad))`` = sigmoid(z_good − z_bad) from logits [..., V] -> [...]."""
    z = logits.float()
    return torch.sigmoid(z[..., good] - z[..., bad])


def single_token(tokenizer, text: str, option: str, what: str, whose: str = "the judge's") -> int:
    """The one token id of ``text``; a clear error naming ``<option>.<what>`` when it is not one token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{option}.{what}={text!r} is {len(ids)} tokens for {whose} tokenizer; it must be one")
    return int(ids[0])


def load_judge_model(ctx: ScoringContext, path: str):
    """(model, tokenizer, engine) of a separate judge LM (``judge: model``): ``path`` is a local HF folder or hub id,
    ``embedded`` for the embedded SmolLM2-135M-Instruct, or a model name (``models.loading.model_spec``); loaded once,
    frozen, kept in ``ctx.state``. Its prompts are rendered with its own tokenizer and chat template (the policy's
    ``model.chat_template`` setting applies)."""
    held = ctx.state.get("judge/model")
    if held is not None and held["path"] == path:
        return held["model"], held["tokenizer"], held["engine"]
    if not path:
        raise ValueError("judge=model needs judge_path=<a local HF folder, a hub id, or embedded>")
    from omegaconf import OmegaConf

    from drox.models.loading import load_policy, model_spec
    from drox.rollout.hf import HFRolloutEngine

    base = getattr(ctx.engine, "model_cfg", None)
    model_cfg = OmegaConf.create(OmegaConf.to_container(base) if base is not None else {})
    model_cfg = OmegaConf.merge(OmegaConf.structured(_model_config()), model_cfg, model_spec(path, "judge_path"))
    device = next(ctx.policy.parameters()).device if ctx.policy is not None else torch.device("cpu")
    model, tokenizer = load_policy(model_cfg, device)
    model.requires_grad_(False)
    engine = HFRolloutEngine(model, tokenizer, model_cfg, batch_size=getattr(ctx.engine, "batch_size", 64),
                             decode_mm=getattr(ctx.engine, "decode_mm", True))  # the policy's rollout.decode_mm
    ctx.state["judge/model"] = {"path": path, "model": model, "tokenizer": tokenizer, "engine": engine}
    return model, tokenizer, engine


def _model_config():
    from drox.config import ModelConfig

    return ModelConfig


def judge_parts(ctx: ScoringContext, judge: str, path: str = ""):
    """(model or None = the current policy, tokenizer, engine) of the judge: ``policy`` (self-judgment), ``initial``
    (the frozen initial policy; the engine, which samples from the policy, only encodes its prompts) or ``model``
    (a separate LM, :func:`load_judge_model`)."""
    if judge == "model":
        return load_judge_model(ctx, path)
    if ctx.engine is None or ctx.tokenizer is None:
        raise ValueError("a generative judge needs the rollout engine and the tokenizer in the scoring context")
    return (ctx.reference() if judge == "initial" else None), ctx.tokenizer, ctx.engine


def check_judge(option: str, judge: str, path: str, verify_tokens: int) -> None:
    """Config-time checks of a judge's options (``option``: ``reward.prm`` / ``reward.pairwise``), one line each."""
    if judge == "initial" and verify_tokens > 0:
        raise ValueError(f"{option} judge=initial cannot write a verification (the engine samples from the policy); "
                         "set judge_verify_tokens=0 or judge=policy")
    if judge == "model" and not path:
        raise ValueError(f"{option} judge=model needs {option}.judge_path=<a local HF folder, a hub id, or embedded>")


def judge_verdicts(ctx: ScoringContext, prompts: List[str], *, judge: str, path: str, verify_tokens: int,
                   verdict_prefix: str, good_text: str, bad_text: str, option: str) -> torch.Tensor:
    """``p(good) / (p(good) + p(bad))`` of the judge after each prompt ([len(prompts)]): with ``verify_tokens`` > 0 it
    first writes that many tokens of verification (greedy; judges that sample: policy or model), then
    ``verdict_prefix``; the verdict is read at the position that predicts the next token. ``option`` names the
    config group in errors (``reward.prm`` / ``reward.pairwise``)."""
    check_judge(option, judge, path, verify_tokens)
    model, tokenizer, engine = judge_parts(ctx, judge, path)
    good = single_token(tokenizer, good_text, option, "verdict_good" if option == "reward.prm" else "verdict_a")
    bad = single_token(tokenizer, bad_text, option, "verdict_bad" if option == "reward.prm" else "verdict_b")
    verifications = [""] * len(prompts)
    if verify_tokens > 0:
        written = engine.generate(prompts, 1, max_new_tokens=int(verify_tokens), temperature=0.0)
        verifications = list(written.texts)
        ctx.counters["judge_tokens"] = ctx.counters.get("judge_tokens", 0) + float(written.response_mask.sum())
    # the judge's answer: its verification, the verdict prefix, then the good token, whose logits hold the verdict
    answers = [tokenizer(v + verdict_prefix, add_special_tokens=False)["input_ids"] + [good] for v in verifications]
    resp_ids, resp_mask = right_pad(answers, int(getattr(tokenizer, "pad_token_id", 0) or 0))
    p_ids, p_mask = engine.encode_prompts(prompts)

    def reduce(logits, ids, mask):  # [b, T', V] -> [b]: the verdict at each row's last real position
        last = mask.sum(-1).long() - 1
        return verdict_probability(logits[torch.arange(logits.shape[0]), last], good, bad)

    return ctx.forward(p_ids, p_mask, resp_ids, resp_mask, reduce, model=model)


def generative_step_scores(ctx: ScoringContext, cfg) -> List[List[Tuple[float, int]]]:
    """Per rollout, ``(s_k, step end char)`` for each step (module docstring), in batched judge passes."""

    batch, G = ctx.batch, ctx.batch.group_size
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
    scores = judge_verdicts(ctx, prompts, judge=cfg.judge, path=cfg.judge_path,
                            verify_tokens=cfg.judge_verify_tokens, verdict_prefix=cfg.verdict_prefix,
                            good_text=cfg.verdict_good, bad_text=cfg.verdict_bad, option="reward.prm")
    for (n, end), s in zip(owners, scores.tolist()):
        per_row[n].append((float(s), end))
    return per_row


__all__ = ["check_judge", "generative_step_scores", "judge_parts", "judge_prompts", "judge_verdicts", "load_judge_model",
           "single_token", "verdict_probability"]
