"""Evaluate one policy as a composed config says, and write the result folder.

Used by `drox eval` (a model, a checkpoint, a run's checkpoints, or a ``-m`` sweep of any of them) and by
the training loop's in-run evaluations, so every ``summary.json`` has the same keys:

* the scores: pass@k / maj@k (unbiased estimator, Chen et al. 2021 Eq. 1) with a 95% bootstrap interval over
  problems (``pass@k_ci95_low`` / ``pass@k_ci95_high``) for verifiable tasks; for tasks without a verifier
  (DRO's regime) the open-ended metrics of :mod:`drox.evaluation.open_ended`;
* with ``eval.confidence_tag`` (verifiable tasks; RLCR, arXiv 2507.16806): the calibration of the confidence each
  response states (``brier``, ``ece``, ``auroc``, ``confidence_mean``, ``accuracy_stated``,
  ``confidence_format_fail_frac``, ``calibration_n``; :func:`drox.signals.calibration.calibration_summary`),
  each sample's ``confidence`` in samples.jsonl and a reliability diagram (reliability.png / .csv); with
  ``eval.confidence_score=answer_span`` the same for RLSF's answer-span confidence read from the policy's logits
  (arXiv 2507.21931; :func:`answer_span_confidence`);
* with ``eval.effective_rank``: the mean effective rank of the samples' last-layer hidden states
  (``effective_rank/mean``, ``/correct``, ``/incorrect``; models/effective_rank.py, VERL arXiv 2509.23808);
* ``eval_config``: what produced them (model, checkpoint, task, split, n, temperature, top_p, max new tokens,
  seed, number of problems, confidence tag; for a multi-turn task the episodes' ``rollout.multiturn``), so a result
  is never separated from its protocol.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from drox.atomic import atomic_write_jsonl, atomic_write_text
from drox.components import multiturn_tasks
from drox.evaluation.report import write_eval_outputs, write_reliability

__all__ = ["eval_settings", "eval_config_record", "add_passk_intervals", "add_calibration", "calibration_pairs",
           "evaluate_policy", "answer_span_confidence", "hidden_state_effective_rank",
           "effective_rank_summary", "load_eval_policy", "write_eval_folder", "TRAINING_CAP"]

TRAINING_CAP = "rollout.max_new_tokens"


def eval_settings(cfg: DictConfig) -> DictConfig:
    """``cfg.eval`` with ``max_new_tokens`` resolved: unset means the training cap (``rollout.max_new_tokens``),
    so a policy is judged at the length it was trained to use."""
    settings = OmegaConf.create(OmegaConf.to_container(cfg.eval, resolve=True))
    if settings.max_new_tokens is None:
        settings.max_new_tokens = int(cfg.rollout.max_new_tokens)
    return settings


def eval_config_record(cfg: DictConfig, *, checkpoint: Optional[str] = None, step: Optional[int] = None,
                       n: Optional[int] = None) -> Dict[str, Any]:
    """The protocol behind a summary: model, checkpoint, task, split, n, sampling settings, seed."""
    settings = eval_settings(cfg)
    task = OmegaConf.to_container(cfg.task, resolve=True)
    multiturn = OmegaConf.select(cfg, "rollout.multiturn")
    episodes = ({"multiturn": OmegaConf.to_container(multiturn, resolve=True)}  # the episodes' turn limits
                if task.get("name") in multiturn_tasks() and multiturn is not None else {})
    return {
        "model": str(cfg.model.path or cfg.model.name),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "step": step,
        "task": task,
        "split": str(settings.split),
        "n": int(n or settings.n or max(settings.pass_at_k)),
        "pass_at_k": [int(k) for k in settings.pass_at_k],
        "temperature": float(settings.temperature),
        "top_p": float(settings.top_p),
        "max_new_tokens": int(settings.max_new_tokens),
        "seed": int(settings.seed),
        "num_problems": settings.num_problems,
        "chat_template": bool(cfg.model.chat_template),
        "confidence_tag": settings.get("confidence_tag"),
        "confidence_score": settings.get("confidence_score"),
        "effective_rank": bool(settings.get("effective_rank")),
        **episodes,
    }


def add_passk_intervals(summary: Dict[str, Any], per_problem: pd.DataFrame, ks: Sequence[int],
                        seed: int) -> None:
    """``pass@k_ci95_low`` / ``_high`` (and maj@k's) in ``summary``: a percentile bootstrap over problems
    (problems resampled with replacement, 1000 times; docs/evaluation.md). The interval describes the
    uncertainty from which problems were drawn, not from the n samples per problem."""
    from drox.evaluation.bootstrap import bootstrap_ci

    for prefix in ("pass", "maj"):
        for k in ks:
            column = f"{prefix}@{k}"
            if column in per_problem:
                low, high = bootstrap_ci(per_problem[column].to_numpy(dtype=float), seed=seed)
                summary[f"{column}_ci95_low"], summary[f"{column}_ci95_high"] = float(low), float(high)


def add_calibration(summary: Dict[str, Any], records: List[Dict[str, Any]], tag_regex: str) -> None:
    """Parse each record's stated confidence q (the last ``tag_regex`` match in its ``completion``;
    :func:`drox.signals.calibration.parse_confidence`) into ``record["confidence"]`` (None when absent or outside
    [0, 1]) and add the calibration keys of those q against the records' ``correct`` flags to ``summary``."""
    from drox.signals.calibration import calibration_summary
    from drox.signals.calibration import parse_confidence

    for record in records:
        record["confidence"] = parse_confidence(record["completion"], tag_regex)
    summary.update(calibration_summary([r["correct"] for r in records], [r["confidence"] for r in records]))


def answer_span_confidence(model, tokenizer, task):
    """``fn(expanded_rows, batch) -> [N] floats`` (``record_fns["confidence"]`` of
    :func:`drox.evaluation.sampling.sample_and_verify`): each sample's RLSF answer-span confidence (mean
    p_top1 - p_top2 over its final answer's tokens, 0 without an answer) under ``model``, computed by the very
    reward source ``reward.confidence kind=answer_span`` trains on (:func:`drox.rewards.confidence.confidence`), so
    the confidence a run optimises is the one whose calibration is measured.

    When the sampler recorded each position's margin (``batch.margins``: the HF engine in the model's own
    precision), the span mean is taken over those, which are the same numbers up to float rounding (the KV-cached
    decode step vs one teacher-forced pass); this skips a second full pass over every sample, which costs as much
    as sampling them. Otherwise (vLLM, another decode precision) the reward source's teacher-forced pass runs."""
    from drox.rewards.base import ScoringContext
    from drox.rewards.confidence import ConfidenceConfig, answer_spans, confidence, span_mean

    options = ConfidenceConfig(kind="answer_span")

    def score(expanded_rows, batch) -> List[float]:
        if batch.margins is not None:
            return span_mean(batch.margins, answer_spans(tokenizer, batch)).tolist()
        G = batch.group_size
        ctx = ScoringContext(batch=batch, rows=list(expanded_rows)[::G], task=task, policy=model, tokenizer=tokenizer)
        return confidence(ctx, options).seq.flatten().tolist()

    score.reads_margins = True
    return score


def hidden_state_effective_rank(model):
    """``fn(expanded_rows, batch) -> [N] floats`` for :func:`drox.evaluation.sampling.sample_and_verify`: the
    effective rank of each sample's last-layer hidden states under ``model`` (models/effective_rank.py; VERL,
    arXiv 2509.23808), nan for an empty response."""
    from drox.models.effective_rank import response_effective_ranks

    def score(expanded_rows, batch) -> List[float]:
        return response_effective_ranks(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                        batch.response_mask).tolist()

    return score


def effective_rank_summary(records: List[Dict[str, Any]]) -> Dict[str, float]:
    """``effective_rank/mean`` over the samples (empty responses, nan, left out), and the same split by
    correctness (``/correct``, ``/incorrect``; nan where no sample is in the class)."""
    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return float(sum(values) / len(values)) if values else math.nan

    ranks = [(float(r["effective_rank"]), bool(r["correct"])) for r in records]
    return {"effective_rank/mean": mean([v for v, _ in ranks]),
            "effective_rank/correct": mean([v for v, c in ranks if c]),
            "effective_rank/incorrect": mean([v for v, c in ranks if not c])}


def calibration_pairs(records: List[Dict[str, Any]]) -> Tuple[List[bool], List[float]]:
    """``(correct, q)``: the aligned lists of the records that state a confidence (``record["confidence"]``)."""
    stated = [r for r in records if r.get("confidence") is not None]
    return [bool(r["correct"]) for r in stated], [float(r["confidence"]) for r in stated]


def load_eval_policy(cfg: DictConfig, device: str = "cpu"):
    """(model, tokenizer) for ``cfg.model``, with the LoRA adapter at ``eval.checkpoint`` merged in when that
    folder holds one (a full-model checkpoint is loaded through ``model=hf model.path=...`` instead)."""
    from drox.models.loading import load_policy

    model, tokenizer = load_policy(cfg.model, device)
    checkpoint = cfg.eval.get("checkpoint")
    if checkpoint and (Path(checkpoint) / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(checkpoint)).merge_and_unload().eval()
    return model, tokenizer


def evaluate_policy(cfg: DictConfig, engine, task, *, model=None, tokenizer=None, judge=None,
                    progress: bool = True):
    """Score ``engine``'s policy on ``task`` per ``cfg.eval``: (summary, per_problem, records).

    Verifiable tasks get pass@k/maj@k with bootstrap intervals; tasks without a verifier get the open-ended
    metrics (reference log-likelihood per token, ROUGE-L F1, length, and the judge's win rate when a judge is
    given), which need the policy's ``model``/``tokenizer`` for the teacher-forced reference likelihood.
    With ``eval.confidence_tag`` set, a verifiable task's summary also gets the calibration of the stated
    confidences (:func:`add_calibration`), with ``eval.confidence_score`` that of the answer-span confidence
    (:func:`answer_span_confidence`, which needs ``model``/``tokenizer``), with ``eval.effective_rank`` the mean
    hidden-state effective rank (:func:`hidden_state_effective_rank`, needs ``model``); a task without a
    verifier has no correctness to calibrate against, so ``confidence_tag`` is ignored there.
    """
    from drox.evaluation.sampling import evaluate

    settings = eval_settings(cfg)
    ks = sorted({int(k) for k in settings.pass_at_k})
    if task.verifier is None:
        from drox.evaluation.open_ended import evaluate_open_ended

        return evaluate_open_ended(
            engine, task, n=int(settings.n or max(ks)), num_problems=settings.num_problems,
            max_new_tokens=int(settings.max_new_tokens), temperature=float(settings.temperature),
            top_p=float(settings.top_p), seed=int(settings.seed), model=model, tokenizer=tokenizer,
            model_cfg=cfg.model, judge=judge, progress=progress)
    record_fns = {}
    for option, name, reads in (("confidence_score", "confidence", "logits"),
                                ("effective_rank", "effective_rank", "hidden states")):
        if settings.get(option) and model is None:
            raise ValueError(f"eval.{option} reads the policy's {reads}, but no model was given to "
                             f"evaluate_policy; pass it, or turn eval.{option} off")
    if settings.get("confidence_score"):
        if tokenizer is None:
            raise ValueError("eval.confidence_score=answer_span needs the tokenizer; pass it to evaluate_policy")
        record_fns["confidence"] = answer_span_confidence(model, tokenizer, task)
    if settings.get("effective_rank"):
        record_fns["effective_rank"] = hidden_state_effective_rank(model)
    summary, per_problem, records = evaluate(engine, task, ks, settings.n, eval_cfg=settings, progress=progress,
                                             record_fns=record_fns,
                                             multiturn=OmegaConf.select(cfg, "rollout.multiturn"))
    add_passk_intervals(summary, per_problem, ks, seed=int(settings.seed))
    if settings.get("confidence_tag"):
        add_calibration(summary, records, str(settings.confidence_tag))
    elif "confidence" in record_fns:
        from drox.signals.calibration import calibration_summary

        summary.update(calibration_summary([r["correct"] for r in records], [r["confidence"] for r in records]))
    if "effective_rank" in record_fns:
        summary.update(effective_rank_summary(records))
    return summary, per_problem, records


def write_eval_folder(out: Path, cfg: DictConfig, summary: Dict[str, Any], per_problem: pd.DataFrame,
                      records: List[Dict[str, Any]], *, title: str, checkpoint: Optional[str] = None,
                      step: Optional[int] = None, with_config: bool = True) -> Dict[str, Path]:
    """summary.json (scores + ``eval_config``), per_problem.csv, passk.png, samples.jsonl, reliability.png/.csv
    (when some record states a confidence: ``eval.confidence_tag``) and (``with_config``; off inside a training
    run, whose own config.yaml holds it) config.yaml."""
    summary = dict(summary)
    summary["eval_config"] = eval_config_record(cfg, checkpoint=checkpoint, step=step, n=summary.get("n"))
    ks = sorted({int(k) for k in cfg.eval.pass_at_k})
    Path(out).mkdir(parents=True, exist_ok=True)
    paths = {}
    correct, q = calibration_pairs(records)
    if q:
        paths.update(write_reliability(out, correct, q, title=title))
    atomic_write_jsonl(out / "samples.jsonl", records)
    if with_config:
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    paths.update(write_eval_outputs(out, summary, per_problem, ks, title=title))  # summary.json last: "finished"
    return paths


def load_judge(cfg: DictConfig, device: str = "cpu"):
    """(model, tokenizer) of ``eval.judge.model`` (``embedded`` = the embedded SmolLM2-135M), or None."""
    name = cfg.eval.judge.model
    if not name:
        return None
    from drox.config import ModelConfig
    from drox.models.loading import load_policy

    judge_cfg = OmegaConf.structured(ModelConfig(name="smollm2-135m") if str(name) == "embedded"
                                     else ModelConfig(name="hf", path=str(name)))
    return load_policy(judge_cfg, device)


def evaluate_to(cfg: DictConfig, out: Path, *, title: str, step: Optional[int] = None,
                progress: bool = True) -> Dict[str, Any]:
    """Build the eval split, load the policy (and judge), evaluate, write ``out``; returns the summary.

    Raises the task/model loaders' one-line errors (TaskError, ModelError, ValueError) for the caller to show.
    """
    from drox.rollout.hf import build_engine
    from drox.tasks import build_task

    task = build_task(cfg.task, split=cfg.eval.split)  # before any model loads: a missing split fails fast
    model, tokenizer = load_eval_policy(cfg, cfg.device)
    engine = build_engine(cfg.rollout, model, tokenizer, cfg.model)
    judge = load_judge(cfg, cfg.device) if task.verifier is None else None
    summary, per_problem, records = evaluate_policy(cfg, engine, task, model=model, tokenizer=tokenizer,
                                                    judge=judge, progress=progress)
    write_eval_folder(Path(out), cfg, summary, per_problem, records, title=title,
                      checkpoint=cfg.eval.get("checkpoint"), step=step)
    summary["eval_config"] = eval_config_record(cfg, checkpoint=cfg.eval.get("checkpoint"), step=step,
                                                n=summary.get("n"))
    return summary
