"""``sdpo``: self-distillation with a feedback-conditioned teacher, as a dense reward (docs/algorithms.md "SDPO").

The teacher is the policy itself, shown feedback it could not have had while answering: the reference answer
(``feedback: answer``) or the verifier's verdict on this very response (``feedback: verdict``). For response
``y`` to prompt ``x`` with feedback ``f``, each token's reward is how much more likely the informed teacher finds
it than the uninformed policy did:

    r_t = log pi(y_t | x ⊕ f, y_<t) − log pi(y_t | x, y_<t)

(Hübotter et al., "Reinforcement Learning via Self-Distillation", arXiv 2601.20802, SDPO; there the same gap
drives a distillation loss: here it is a dense reward, as issue 14 of this project frames it). Tokens the teacher
endorses after seeing the answer get positive credit, tokens it disowns negative, which gives a signal on problems
where every rollout fails. ``dense: true`` places r_t at every response token (reward-to-go advantages, as the
dense PRM); ``dense: false`` gives the sum, log pi(y | x ⊕ f) − log pi(y | x), one score per rollout.

Choices [ENG]: the feedback is appended to the user prompt through ``template`` and the chat template (the paper
puts it in the context; its exact wording is not reproduced here); both passes are teacher-forced under the
current weights at temperature 1 (``teacher: current``) or the teacher reads the frozen initial policy
(``teacher: initial``); ``clip`` bounds each r_t. Cost: two teacher-forced passes per rollout (``scoring/forward_*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Optional

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.signals.logprob_gap import gap_diagnostics, token_gaps

FEEDBACKS = ("answer", "verdict")
TEACHERS = ("current", "initial")


@dataclass
class SDPOConfig:
    weight: float = 1.0
    """Weight of this source in the combined reward."""
    feedback: Literal[FEEDBACKS] = "answer"
    """answer: the teacher sees the reference answer | verdict: it sees whether this response was right."""
    template: str = "{prompt}\n\nFeedback: {feedback}"
    """The teacher's user prompt; {prompt} = the task prompt, {feedback} = answer_text or verdict_text. [ENG]"""
    answer_text: str = "the correct final answer is {answer}."
    """feedback=answer: {answer} = the task's reference answer."""
    verdict_text: str = "a previous attempt answered {extracted}, which is {verdict}."
    """feedback=verdict: {extracted} = this response's extracted answer, {verdict} = correct | incorrect."""
    teacher: Literal[TEACHERS] = "current"
    """current: the policy being trained (self-distillation) | initial: the frozen initial policy."""
    dense: bool = True
    """true: r_t at every response token (reward-to-go) | false: the sum over tokens as one score."""
    clip: Optional[float] = None
    """Bound each r_t to [-clip, clip]; null = unbounded. [ENG]"""

    def __post_init__(self):
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"reward.sdpo.clip must be > 0 or null, got {self.clip}")
        if "{prompt}" not in self.template or "{feedback}" not in self.template:
            raise ValueError(f"reward.sdpo.template must contain {{prompt}} and {{feedback}}, got {self.template!r}")


def teacher_prompts(ctx: ScoringContext, cfg: SDPOConfig) -> List[str]:
    """The N teacher prompts: each rollout's prompt with its feedback (the same within a group for ``answer``)."""
    batch, G = ctx.batch, ctx.batch.group_size
    prompts = list(batch.prompts) if batch.prompts else [row["prompt"] for row in ctx.rows]
    if cfg.feedback == "answer":
        notes = [cfg.answer_text.format(answer=row["answer"]) for row in ctx.rows for _ in range(G)]
    else:
        verdict = ctx.verify()
        notes = [cfg.verdict_text.format(extracted=verdict.extracted[n] or "nothing",
                                         verdict="correct" if verdict.correct[n] else "incorrect")
                 for n in range(batch.num_rows)]
    return [cfg.template.format(prompt=prompts[n // G], feedback=notes[n]) for n in range(batch.num_rows)]


@register_reward("sdpo", SDPOConfig, verl="it calls the policy inside the reward, and drox.integrations.verl does "
                                          "not have it yet (docs/verl.md, 'Not done')")
def sdpo(ctx: ScoringContext, cfg: SDPOConfig) -> RewardOutput:
    batch = ctx.batch
    Q, G, T = batch.num_groups, batch.group_size, batch.response_ids.shape[1]
    if ctx.engine is None or not hasattr(ctx.engine, "encode_prompts"):
        raise ValueError("reward.sdpo needs the rollout engine to encode the teacher's prompts")
    mask = batch.response_mask.float()
    t_ids, t_mask = ctx.engine.encode_prompts(teacher_prompts(ctx, cfg))  # [N, P'] left-padded
    teacher_model = ctx.reference() if cfg.teacher == "initial" else None
    teacher = ctx.logprobs(t_ids, t_mask, batch.response_ids, batch.response_mask, model=teacher_model)
    student = ctx.logprobs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    gaps = token_gaps(teacher, student, mask, cfg.clip)  # [N, T]
    diagnostics = gap_diagnostics(gaps, mask)
    if not cfg.dense:
        return RewardOutput(seq=gaps.sum(-1).view(Q, G), diagnostics=diagnostics)
    return RewardOutput(seq=torch.zeros(Q, G), token=gaps.view(Q, G, T), token_mask=mask.bool().view(Q, G, T),
                        diagnostics=diagnostics)


__all__ = ["SDPOConfig", "sdpo", "teacher_prompts"]
