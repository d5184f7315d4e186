"""Sample n completions per problem from a policy, verify them, score pass@k / maj@k."""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import pandas as pd

from drox.evaluation.passk import summarize


def eval_rows(task, num_problems: int | None) -> List[Dict]:
    """The evaluated rows of ``task.dataset`` as dicts: the first ``num_problems`` (all when None)."""
    rows = task.dataset
    if num_problems is not None:
        rows = rows.select(range(min(num_problems, len(rows))))
    return rows.to_list()


def sample_batches(
    engine,
    rows: Sequence[Dict],
    *,
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    prompts_per_batch: int | None = None,
    progress: bool = True,
    margins: bool = False,
    env=None,
    multiturn=None,
) -> Iterator[Tuple[List[Dict], object]]:
    """Sample ``n`` completions of every row's ``prompt``; yields ``(expanded_rows, batch)`` per batch.

    The one sampling/seeding scheme of every evaluation (pass@k and open-ended): rows are taken in
    batches of ``prompts_per_batch`` (default: as many as fill the engine's batch,
    ``engine.batch_size // n``) and batch ``b`` is sampled with seed ``seed + b``, so the samples depend
    on nothing but the config. ``expanded_rows`` repeats each row ``n`` times (group-major, matching
    the batch's rows: ``len(expanded_rows) == batch.num_rows``). ``margins``: ask the engine for
    ``batch.margins`` (only then is the keyword passed, so engines without it still work). ``env``: a multi-turn
    task's environment (``task.env``): each sample is then an episode (rollout/multiturn.py) of at most
    ``multiturn.max_turns`` turns of ``multiturn.turn_tokens`` tokens (``rollout.multiturn``; ``max_new_tokens`` is
    not used), seeded the same way.
    """
    if env is not None:
        from drox.config import MultiTurnConfig
        from drox.rollout.multiturn import play_episodes

        multiturn = multiturn if multiturn is not None else MultiTurnConfig()
    per_batch = prompts_per_batch or max(1, getattr(engine, "batch_size", 64) // n)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # disable=None: drawn on a terminal, off in a pipe or log file (no carriage-return debris)
        bar = tqdm(total=len(rows) * n, desc="eval samples", unit="seq", disable=None)
    plain = bar is not None and bar.disable  # not a terminal: one plain line per batch instead (a log file)
    done, started = 0, time.monotonic()
    try:
        for b, start in enumerate(range(0, len(rows), per_batch)):
            batch_rows = rows[start : start + per_batch]
            if env is not None:
                batch = play_episodes(engine, engine.tokenizer, env, list(batch_rows), n,
                                      max_turns=int(multiturn.max_turns), turn_tokens=int(multiturn.turn_tokens),
                                      temperature=temperature, top_p=top_p, seed=seed + b).batch
            else:
                batch = engine.generate(
                    [r["prompt"] for r in batch_rows], n, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, seed=seed + b, **({"margins": True} if margins else {}),
                )
            expanded = [r for r in batch_rows for _ in range(n)]
            yield expanded, batch
            if bar is not None:
                bar.update(len(expanded))
            done += len(expanded)
            if plain:
                print(eval_progress_line(done, len(rows) * n, time.monotonic() - started), flush=True)
    finally:
        if bar is not None:
            bar.close()


def duration(seconds: float) -> str:
    """``2m05s``, or ``1h03m`` from an hour on (progress lines, ETAs)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def eval_progress_line(done: int, total: int, elapsed: float) -> str:
    """``eval samples 128/512 (25%)  41 s  ETA 2m03s``: what ``drox eval`` prints per batch into a log file."""
    eta = elapsed / done * (total - done) if done else float("nan")
    return (f"eval samples {done}/{total} ({done / max(total, 1):.0%})  {elapsed:.0f} s  "
            f"ETA {duration(eta) if done else '?'}")


def sample_and_verify(
    engine,
    task,
    *,
    n: int,
    num_problems: int | None,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    prompts_per_batch: int | None = None,
    progress: bool = True,
    record_fns: Dict[str, Callable] | None = None,
    multiturn=None,
) -> Tuple[List[Dict], int]:
    """One record per sample: problem_id, correct, answer (extracted), completion, finish_reason, length, and for
    each ``name: fn`` of ``record_fns`` (``fn(expanded_rows, batch) -> N floats``, a value read from the policy,
    e.g. :func:`drox.evaluation.runner.answer_span_confidence`) that value under ``name``; a ``fn`` whose
    ``reads_margins`` attribute is true gets batches with the sampler's ``margins`` where the engine gives them.
    A multi-turn task (``task.env``) is played in episodes (``multiturn``: ``rollout.multiturn``), so ``correct`` is
    "solved within the episode" and ``length`` counts the policy's tokens.

    Returns (records, verifier timeouts). Problems are sampled in batches of
    ``prompts_per_batch`` (default: as many as fill the engine's batch) with seed
    ``seed + batch index``, so the result does not depend on anything but the config.
    """
    if task.verifier is None:
        raise ValueError(
            f"task '{task.name}' has no verifier, so pass@k is undefined; evaluate a verifiable task "
            "or score samples generated elsewhere with `drox eval --samples FILE.jsonl`"
        )
    rows = eval_rows(task, num_problems)
    records: List[Dict] = []
    timeouts = 0
    for expanded, batch in sample_batches(
        engine, rows, n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
        prompts_per_batch=prompts_per_batch, progress=progress,
        margins=any(getattr(fn, "reads_margins", False) for fn in (record_fns or {}).values()),
        env=getattr(task, "env", None), multiturn=multiturn,
    ):
        result = task.verifier(batch.texts, expanded)
        timeouts += result.timeouts
        extra = {name: [float(v) for v in fn(expanded, batch)] for name, fn in (record_fns or {}).items()}
        for i, row in enumerate(expanded):
            records.append({
                "problem_id": str(row["problem_id"]),
                "correct": bool(result.correct[i]),
                "answer": result.extracted[i],
                "reference": row["answer"],
                "completion": batch.texts[i],
                "finish_reason": batch.finish_reason[i],
                "length": int(batch.policy_mask[i].sum()),
            })
            records[-1].update({name: values[i] for name, values in extra.items()})
    return records, timeouts


def evaluate(engine, task, ks: Sequence[int], n: int | None = None, *, eval_cfg, progress=True,
             record_fns: Dict[str, Callable] | None = None, multiturn=None):
    """(summary dict, per-problem DataFrame, records) for pass@k with n = max(ks) by default
    (``record_fns``, ``multiturn``: see :func:`sample_and_verify`)."""
    ks = sorted(set(int(k) for k in ks))
    n = n or max(ks)
    if max(ks) > n:
        raise ValueError(f"pass@{max(ks)} needs n >= {max(ks)} samples per problem, got n={n}; raise --n")
    records, timeouts = sample_and_verify(
        engine, task, n=n, num_problems=eval_cfg.num_problems, max_new_tokens=eval_cfg.max_new_tokens,
        temperature=eval_cfg.temperature, top_p=eval_cfg.top_p, seed=eval_cfg.seed, progress=progress,
        record_fns=record_fns, multiturn=multiturn,
    )
    summary, per_problem = summarize(records, ks)
    summary["verifier_timeouts"] = timeouts
    summary["mean_length"] = float(pd.Series([r["length"] for r in records]).mean())
    summary["truncated_frac"] = float(pd.Series([r["finish_reason"] == "length" for r in records]).mean())
    # the answer style a reward can reinforce without correctness (Spurious Rewards' format reward): the share
    # of samples from which the verifier extracted an answer at all
    summary["answered_frac"] = float(pd.Series([r["answer"] is not None for r in records]).mean())
    return summary, per_problem, records
