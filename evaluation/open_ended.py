"""Evaluation of tasks without a verifier (DRO's regime, Xu et al., arXiv 2506.13351 v1 §5; docs/evaluation-open-ended.md).

A row has a ``prompt`` and a reference text ``answer`` and nothing can grade a completion exactly, so
pass@k is undefined. Instead, per problem:

* ``rouge_l_f1``: ROUGE-L F1 (Lin 2004) of each sampled outcome against the reference, averaged over the
  n samples (:func:`rouge_l_f1`);
* ``ref_logprob_per_token``: the mean per-token log-likelihood of the reference given the prompt under the
  policy, teacher-forced with no completion in between (:func:`reference_logprob_per_token`); it does
  not depend on the samples, so it is computed once per problem;
* ``win_rate`` (only with a judge model): the probability that a local judge LM prefers the sampled
  outcome to the reference, both presentation orders averaged (:func:`judge_win_rate`);
* ``mean_length`` (tokens) and ``truncated_frac`` (share of samples that hit ``max_new_tokens``).

:func:`evaluate_open_ended` samples with exactly the batching and seeding of pass@k evaluation
(:func:`drox.evaluation.sampling.sample_batches`) and reports each metric's mean over problems with a
bootstrap 95% half-width (:func:`drox.evaluation.bootstrap.bootstrap_ci`).

The scored text of a completion (its "outcome") is :func:`drox.signals.spans.split_reasoning`'s final
answer, the same rule DRO's reward uses: the content of the last ``\\boxed{}`` (else of the last
``Answer:`` line), and the whole stripped completion when it has neither (``task=revise`` asks for no
box, so there the whole rewrite is scored).
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from drox.evaluation.bootstrap import bootstrap_ci
from drox.signals.rouge import lcs_length, rouge_l_f1, rouge_tokens
from drox.evaluation.sampling import eval_rows, sample_batches
from drox.models.forward import eval_mode, response_logprobs
from drox.models.loading import render_prompts
from drox.signals.spans import encode, left_pad, pad_id, right_pad
from drox.signals.spans import split_reasoning

__all__ = [
    "JUDGE_TEMPLATE",
    "evaluate_open_ended",
    "judge_choice_ids",
    "judge_prompt",
    "judge_win_rate",
    "lcs_length",
    "reference_logprob_per_token",
    "rouge_l_f1",
    "rouge_tokens",
]

# ROUGE-L lives in drox.signals.rouge (pure Python; the rouge reward source uses it too)


# ------------------------------------------------------------------------------------------------ token helpers


def _encode_policy_prompts(tokenizer, prompts: Sequence[str], model_cfg) -> List[List[int]]:
    """Prompt ids exactly as the rollout engine encodes them (``HFRolloutEngine.encode_prompts``): the chat
    template via :func:`render_prompts` (its own special tokens, so none added), else the raw prompt with
    the tokenizer's special tokens (e.g. a BOS)."""
    texts = render_prompts(tokenizer, list(prompts), model_cfg)
    templated = texts != list(prompts)
    return [list(tokenizer(t, add_special_tokens=not templated)["input_ids"]) for t in texts]


@contextlib.contextmanager
def _eval_mode(model):
    """``torch.no_grad`` with the model in eval mode, restoring its training flag afterwards."""
    with eval_mode(model), torch.no_grad():
        yield model


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


# ------------------------------------------------------------------------------------------------ reference likelihood


def reference_logprob_per_token(
    model, tokenizer, model_cfg, prompts: Sequence[str], references: Sequence[str], batch_size: int = 8
) -> List[float]:
    """Mean per-token log-likelihood of each reference given its prompt under ``model``, teacher-forced.

    For prompt ``q`` (rendered with the chat template like the rollout engine does, so the reference sits
    exactly where the policy's completion would start) and reference tokens ``y_1..y_m`` (tokenised
    without special tokens, no EOS appended)::

        ref_logprob_per_token = (1/m) Σ_j log π(y_j | q, y_<j)      (nats per token, <= 0)

    at temperature 1 (the model's own distribution). No completion is placed between prompt and
    reference: it measures how likely the policy finds the reference answer itself (contrast DRO's R3,
    which conditions on each rollout's reasoning). The EOS after the reference is not scored, so the
    value says nothing about whether the policy would stop there.

    Shapes per batch of B rows: prompt ids [B, P] left-padded, reference ids [B, T] right-padded,
    ``logprobs  # [B, T]`` from :func:`drox.models.forward.response_logprobs` (0 on padding), then
    ``sum_t logprobs / m``  # [B]. Position ids count real tokens only, so a row's value does not depend
    on the batch it is in or its padding (up to float round-off). Runs under ``no_grad`` in eval mode
    (the model's training flag is restored). Returns one float per prompt. Raises ValueError when the
    lists differ in length or a reference has no token.
    """
    if len(prompts) != len(references):
        raise ValueError(f"prompts and references differ in length: {len(prompts)} vs {len(references)}")
    batch_size = _check_batch_size(batch_size)
    ref_rows = [encode(tokenizer, str(r)) for r in references]
    for i, r in enumerate(ref_rows):
        if not r:
            raise ValueError(f"reference {i} is empty: its per-token log-likelihood is undefined")
    prompt_rows = _encode_policy_prompts(tokenizer, prompts, model_cfg)
    pad = pad_id(tokenizer)
    out: List[float] = []
    with _eval_mode(model):
        for start in range(0, len(ref_rows), batch_size):
            p_ids, p_mask = left_pad(prompt_rows[start:start + batch_size], pad, min_width=1)  # [B, P]
            r_ids, r_mask = right_pad(ref_rows[start:start + batch_size], pad)  # [B, T]
            logprobs, _ = response_logprobs(model, p_ids, p_mask, r_ids, r_mask)  # [B, T], 0 on padding
            per_token = logprobs.double().sum(-1).cpu() / r_mask.double().sum(-1)  # [B]
            out.extend(float(v) for v in per_token)
    return out


# ------------------------------------------------------------------------------------------------ pairwise judge

JUDGE_TEMPLATE = (
    "You are comparing two outputs written for the same instruction. Decide which output follows the "
    "instruction better: correct, complete, faithful to the given text, and no longer than needed. "
    "The order in which the outputs are shown does not matter.\n\n"
    "## Instruction\n{instruction}\n\n"
    "## Output A\n{output_a}\n\n"
    "## Output B\n{output_b}\n\n"
    "Which output is better? Answer A or B."
)
"""The pairwise judge prompt, AlpacaEval-style (instruction, two outputs, one-letter verdict). [ours]"""

_CHOICES = ("A", "B")


def judge_prompt(instruction: str, output_a: str, output_b: str) -> str:
    """:data:`JUDGE_TEMPLATE` filled in (the user message the judge sees)."""
    return JUDGE_TEMPLATE.format(instruction=instruction, output_a=output_a, output_b=output_b)


def judge_choice_ids(tokenizer) -> Tuple[List[int], List[int]]:
    """Token ids that spell the verdicts: ``(ids of "A", ids of "B")``.

    Each list holds the single-token encodings of the bare letter and of the letter after a space
    (``"A"``, ``" A"``): after a chat template's assistant header the bare letter is the natural next
    token, after ``"Answer:"`` the spaced one. A spelling that is not one token is left out; the bare
    letter must be one token (it is for byte-level BPE tokenizers such as SmolLM2's, GPT-2's, Llama-3's)
    and the two lists must not share an id, else ValueError.
    """
    ids = []
    for letter in _CHOICES:
        bare = encode(tokenizer, letter)
        if len(bare) != 1:
            raise ValueError(f"the judge tokenizer spells {letter!r} as {len(bare)} tokens; a one-token verdict is needed")
        spaced = encode(tokenizer, " " + letter)
        ids.append(sorted({bare[0], *(spaced if len(spaced) == 1 else [])}))
    if set(ids[0]) & set(ids[1]):
        raise ValueError("the judge tokenizer maps 'A' and 'B' to the same token")
    return ids[0], ids[1]


def _judge_inputs(tokenizer, texts: Sequence[str]) -> List[List[int]]:
    """Judge prompt ids: the user message in the tokenizer's chat template with the assistant header
    (``add_generation_prompt``) when it has one, else the text followed by ``"\\nAnswer:"`` with the
    tokenizer's special tokens."""
    if getattr(tokenizer, "chat_template", None) is not None:
        rendered = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                  add_generation_prompt=True) for t in texts]
        return [list(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in rendered]
    return [list(tokenizer(t + "\nAnswer:")["input_ids"]) for t in texts]


def _judge_prob_a(judge_model, judge_tokenizer, texts: Sequence[str], batch_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """For each judge prompt: (P(A) renormalised over {A, B}, the next-token mass on {A, B} at all).

    ``next_logits  # [B, V]`` at each row's last prompt token (left padding, so column -1);
    ``P(A) = Σ_{a∈A} p_a / (Σ_{a∈A} p_a + Σ_{b∈B} p_b) = sigmoid(lse(z_A) − lse(z_B))``, computed in
    float64 from the logits (the softmax normaliser cancels). Returns two arrays [M].
    """
    a_ids, b_ids = judge_choice_ids(judge_tokenizer)
    rows = _judge_inputs(judge_tokenizer, texts)
    pad = pad_id(judge_tokenizer)
    device = next(judge_model.parameters()).device
    p_a, mass = [], []
    with _eval_mode(judge_model):
        for start in range(0, len(rows), batch_size):
            ids, mask = left_pad(rows[start:start + batch_size], pad, min_width=1)  # [B, P]
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            out = judge_model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                              use_cache=False, logits_to_keep=1)
            z = out.logits[:, -1, :].double().cpu()  # [B, V]
            lse_a = torch.logsumexp(z[:, a_ids], -1)  # [B]
            lse_b = torch.logsumexp(z[:, b_ids], -1)
            p_a.append(torch.sigmoid(lse_a - lse_b).numpy())
            mass.append(torch.exp(torch.logaddexp(lse_a, lse_b) - torch.logsumexp(z, -1)).numpy())
    if not p_a:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(p_a), np.concatenate(mass)


def _is_tie(candidate: str, reference: str) -> bool:
    return candidate.strip() == reference.strip()


def _judge_items(judge_model, judge_tokenizer, prompts, candidates, references, batch_size) -> Tuple[List[float], List[float]]:
    """Per item (P(candidate better), mass on the verdict tokens averaged over both orders; NaN for ties)."""
    if not len(prompts) == len(candidates) == len(references):
        raise ValueError(f"prompts, candidates and references differ in length: "
                         f"{len(prompts)}, {len(candidates)}, {len(references)}")
    batch_size = _check_batch_size(batch_size)
    probs: List[float] = [0.5] * len(prompts)
    masses: List[float] = [math.nan] * len(prompts)
    judged = [i for i in range(len(prompts)) if not _is_tie(candidates[i], references[i])]
    texts = []
    for i in judged:  # both orders of an item next to each other, so they share a forward pass
        texts.append(judge_prompt(prompts[i], candidates[i], references[i]))  # candidate as A
        texts.append(judge_prompt(prompts[i], references[i], candidates[i]))  # candidate as B
    p_a, mass = _judge_prob_a(judge_model, judge_tokenizer, texts, 2 * batch_size)
    for j, i in enumerate(judged):
        # P(candidate better) = mean of P(A | candidate is A) and P(B | candidate is B) = 1 - P(A | ...)
        probs[i] = float(0.5 * (p_a[2 * j] + (1.0 - p_a[2 * j + 1])))
        masses[i] = float(0.5 * (mass[2 * j] + mass[2 * j + 1]))
    return probs, masses


def judge_win_rate(
    judge_model, judge_tokenizer, prompts: Sequence[str], candidates: Sequence[str], references: Sequence[str],
    batch_size: int = 8,
) -> Tuple[float, List[float]]:
    """Pairwise win rate of ``candidates`` against ``references`` judged by a local causal LM.

    For item i the judge reads :func:`judge_prompt` (instruction = ``prompts[i]``) twice, with the
    candidate as output A and the reference as B, and swapped. In each order the verdict is the judge's
    next-token distribution at the start of its answer, restricted to the verdict tokens and renormalised
    (:func:`judge_choice_ids`): ``p_AB = P(A) / (P(A) + P(B))``. The item's win probability averages the
    two orders to cancel position bias::

        win_prob_i = ( P(A | cand = A) + P(B | cand = B) ) / 2,      win_rate = mean_i win_prob_i

    Swapping candidates and references gives ``1 − win_prob_i`` per item (up to float round-off). A
    candidate identical to its reference (after stripping whitespace) is a tie and scores exactly 0.5
    without asking the judge. The judge sees no reference as a third text: the reference IS the opponent.

    ``batch_size`` items (2·batch_size prompts: both orders of an item always share a forward pass) per
    judge forward. Returns ``(win_rate, per_item_probs)``; ``win_rate`` is NaN for no items.

    Weakness: the judge is whatever local model is passed; the embedded SmolLM2-135M-Instruct is far too
    weak to judge quality (measured near chance on ``task=revise``: a word-shuffled reference still wins
    about half the time), so results obtained with it measure the protocol, not the outputs, and must be
    reported as such (docs/evaluation-open-ended.md).
    """
    probs, _ = _judge_items(judge_model, judge_tokenizer, prompts, candidates, references, batch_size)
    return (float(np.mean(probs)) if probs else math.nan), probs


# ------------------------------------------------------------------------------------------------ the evaluation

# summary key -> per-problem column; each gets "<key>_ci95_low" / "<key>_ci95_high" (bootstrap over problems,
# the same keys pass@k's intervals have)
_METRICS = {
    "rouge_l_f1": "rouge_l_f1",
    "ref_logprob_per_token": "ref_logprob_per_token",
    "mean_length": "mean_length",
    "truncated_frac": "truncated_frac",
    "win_rate": "win_rate",
}


def evaluate_open_ended(
    engine,
    task,
    *,
    n: int,
    num_problems: Optional[int],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    model,
    tokenizer,
    model_cfg,
    judge: Optional[Tuple[object, object]] = None,
    progress: bool = True,
    score_batch_size: int = 8,
) -> Tuple[Dict, pd.DataFrame, List[Dict]]:
    """Sample ``n`` completions for each of the first ``num_problems`` problems and score them against the
    reference (``row["answer"]``); no verifier is needed. Returns ``(summary, per_problem, records)``.

    Sampling: :func:`drox.evaluation.sampling.sample_batches`, the batching and per-batch seeds
    (``seed + batch index``) of pass@k evaluation, so the same config samples the same completions.
    ``model``/``tokenizer``/``model_cfg`` are the policy behind ``engine`` (for the reference likelihood);
    ``judge`` is a loaded ``(judge_model, judge_tokenizer)`` pair or None (no ``win_rate``).
    ``score_batch_size``: rows per teacher-forced / judge forward pass.

    records (one per completion, group-major): problem_id, completion, answer (the scored outcome, see
    the module docstring), reference, rouge_l_f1, length (tokens), finish_reason, and win_prob with a judge.

    per_problem (one row per problem, in dataset order): problem_id, n, rouge_l_f1 (mean over its n
    samples), mean_length, truncated_frac, ref_logprob_per_token (once per problem: it does not depend on
    the samples), win_rate (mean win_prob; with a judge).

    summary: ``rouge_l_f1``, ``ref_logprob_per_token``, ``mean_length``, ``truncated_frac``, ``win_rate``
    (with a judge) = the mean over problems of the per-problem column (every problem has n samples, so
    this is also the mean over completions), each with ``<key>_ci95_low`` / ``<key>_ci95_high``, the 95%
    percentile-bootstrap interval over problems (:func:`drox.evaluation.bootstrap.bootstrap_ci`: 1000
    resamples, ``numpy.random.default_rng(seed)``); with a judge also ``judge_ab_mass``, the judge's mean
    next-token probability on the verdict tokens over non-tied items (how far it follows the "Answer A or
    B" format at all; NaN when every item was a tie); ``n``; ``num_problems``.
    """
    if n < 1:
        raise ValueError(f"open-ended evaluation needs n >= 1 samples per problem, got n={n}")
    rows = eval_rows(task, num_problems)
    if not rows:
        raise ValueError(f"task '{task.name}' has no problems to evaluate")
    records: List[Dict] = []
    for expanded, batch in sample_batches(
        engine, rows, n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
        progress=progress,
    ):
        for i, row in enumerate(expanded):
            reference = str(row["answer"])
            answer = split_reasoning(batch.texts[i])[1]
            records.append({
                "problem_id": str(row["problem_id"]),
                "completion": batch.texts[i],
                "answer": answer,
                "reference": reference,
                "rouge_l_f1": rouge_l_f1(answer, reference),
                "length": int(batch.lengths[i]),
                "finish_reason": batch.finish_reason[i],
            })

    ref_lp = reference_logprob_per_token(model, tokenizer, model_cfg, [r["prompt"] for r in rows],
                                         [str(r["answer"]) for r in rows], score_batch_size)
    masses: List[float] = []
    if judge is not None:
        judge_model, judge_tokenizer = judge
        probs, masses = _judge_items(judge_model, judge_tokenizer, [rows[j // n]["prompt"] for j in range(len(records))],
                                     [r["answer"] for r in records], [r["reference"] for r in records],
                                     score_batch_size)
        for rec, p in zip(records, probs):
            rec["win_prob"] = p

    per_rows = []
    for q, row in enumerate(rows):  # records are group-major: problem q owns records q*n .. q*n+n-1
        own = records[q * n:(q + 1) * n]
        entry = {
            "problem_id": str(row["problem_id"]),
            "n": len(own),
            "rouge_l_f1": float(np.mean([r["rouge_l_f1"] for r in own])),
            "mean_length": float(np.mean([r["length"] for r in own])),
            "truncated_frac": float(np.mean([r["finish_reason"] == "length" for r in own])),
            "ref_logprob_per_token": ref_lp[q],
        }
        if judge is not None:
            entry["win_rate"] = float(np.mean([r["win_prob"] for r in own]))
        per_rows.append(entry)
    per_problem = pd.DataFrame(per_rows)

    summary: Dict = {}
    for key, column in _METRICS.items():
        if column not in per_problem:
            continue
        values = per_problem[column].to_numpy(dtype=np.float64)
        summary[key] = float(values.mean())
        low, high = bootstrap_ci(values, seed)
        summary[f"{key}_ci95_low"], summary[f"{key}_ci95_high"] = float(low), float(high)
    if judge is not None:
        judged = [m for m in masses if not math.isnan(m)]
        summary["judge_ab_mass"] = float(np.mean(judged)) if judged else math.nan
    summary["n"] = int(n)
    summary["num_problems"] = len(rows)
    return summary, per_problem, records
