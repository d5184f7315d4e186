"""Claims -> verdicts for the paper comparisons: paired statistics over shared seeds and problems.

Every arm of a table is trained with the same seeds (same prompt order, same sampler streams) and evaluated on
the same held-out problems with the same eval seed, so a claim ``metric(a) - metric(b)`` is computed per seed and
summarised twice (drox.evaluation.paired):

- the **paired t-interval** of the per-seed differences. When ``b`` is the base policy (one evaluation shared by
  every seed), the seeds cannot see that evaluation's own noise: the variance of the mean over problems of the
  per-problem difference ``mean_seeds(a) - base`` (its problem-bootstrap variance) is added, with P - 1 degrees
  of freedom (Welch-Satterthwaite);
- the **hierarchical bootstrap** (seeds, then problems, paired by problem) where per-problem values exist
  (``eval/pass@k`` and ``transfer/<label>/pass@k``); for training metrics (entropy, wall time) only seeds exist.

Verdicts (docs/experiments.md says the same in prose):

- superiority claims: **reproduced** when both 95% intervals exclude 0 on the paper's side, **not reproduced**
  when both exclude it on the other side, **inconclusive** otherwise;
- equivalence claims (``direction`` 0, "matches / is close to"): TOST against the margin declared in spec.py
  (Schuirmann 1987): reproduced when both 90% intervals lie inside (-margin, margin); not reproduced when a 95%
  interval lies wholly outside it; inconclusive otherwise. Non-inferiority ("at least / keeps",
  ``direction`` +-1): the one-sided form, reproduced when ``direction * (a - b) > -margin`` at 5%;
- **not testable**, with the reason computed from the runs: the positive control did not resolve (no verdict
  is called on top of a protocol that does not train), the claim's own check (spec.py) failed, fewer than 2
  shared seeds, or both arms gave identical values everywhere.

Each claim also carries its minimum detectable effect (80% power, two-sided 5%, the design as run) and, for
pass@1 claims whose interval is wider than ``TARGET_HALF_WIDTH``, the seeds that would bring it there.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np

CLAIMS_COLUMNS = ["claim", "metric", "arm_a", "arm_b", "direction", "test", "estimate", "ci95_low", "ci95_high",
                  "mde", "n_seeds", "verdict", "reason"]
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not testable")
TARGET_HALF_WIDTH = 0.05
"""A pass@1 claim's 95% half-width the protocol aims for (issue: the fast testbed's precision target)."""
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class ArmData:
    """One arm's values of one metric: per seed, and per seed and problem where the evaluation has them."""

    values: Dict[int, float] = field(default_factory=dict)
    """seed -> the run's value (the base: key -1, one evaluation)."""
    problems: Dict[int, np.ndarray] = field(default_factory=dict)
    """seed -> [P] per-problem values, in problem_id order (eval metrics only)."""


BASE_SEED = -1


@dataclass
class ClaimResult:
    estimate: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    boot_low: float = float("nan")
    boot_high: float = float("nan")
    mde: float = float("nan")
    n_seeds: int = 0
    verdict: str = "not testable"
    reason: str = ""
    per_seed: Dict[int, float] = field(default_factory=dict)

    def row(self, claim) -> Dict[str, object]:
        return {"claim": claim.text, "metric": claim.metric, "arm_a": claim.arm_a, "arm_b": claim.arm_b,
                "direction": claim.direction, "test": claim.test, "estimate": _num(self.estimate),
                "ci95_low": _num(self.low), "ci95_high": _num(self.high), "mde": _num(self.mde),
                "n_seeds": self.n_seeds, "verdict": self.verdict, "reason": self.reason}


def _num(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def _paired_problems(a: ArmData, b: ArmData, seeds: Sequence[int], b_is_base: bool):
    """[S, P] and [S or 1, P] per-problem arrays for the shared seeds, or None when any is missing."""
    if not seeds or any(s not in a.problems for s in seeds):
        return None
    rows_a = np.stack([a.problems[s] for s in seeds])
    if b_is_base:
        if BASE_SEED not in b.problems:
            return None
        rows_b = b.problems[BASE_SEED][None, :]
    else:
        if any(s not in b.problems for s in seeds):
            return None
        rows_b = np.stack([b.problems[s] for s in seeds])
    if rows_a.shape[1] != rows_b.shape[1]:
        return None
    return rows_a, rows_b


def evaluate_claim(claim, a: ArmData, b: ArmData, b_is_base: bool, blocked: Optional[str] = None,
                   a_is_base: bool = False) -> ClaimResult:
    """The paired statistics and the verdict of one claim (see the module docstring). The base may be on either
    side: ``base - arm`` with direction d is ``arm - base`` with direction -d, negated back for the report."""
    if a_is_base:
        mirrored = dataclasses.replace(claim, arm_a=claim.arm_b, arm_b=claim.arm_a, direction=-claim.direction)
        out = evaluate_claim(mirrored, b, a, b_is_base=True, blocked=blocked)
        out.estimate, out.low, out.high = -out.estimate, -out.high, -out.low
        out.boot_low, out.boot_high = -out.boot_high, -out.boot_low
        out.per_seed = {s: -v for s, v in out.per_seed.items()}
        return out
    from drox.evaluation.paired import (hierarchical_bootstrap_diff, minimum_detectable_effect, paired_t_interval,
                                        seeds_needed, tost)

    out = ClaimResult()
    seeds = sorted(a.values) if b_is_base else sorted(set(a.values) & set(b.values))
    if b_is_base and BASE_SEED not in b.values:
        seeds = []
    out.n_seeds = len(seeds)
    if seeds:
        base_value = b.values.get(BASE_SEED)
        out.per_seed = {s: a.values[s] - (base_value if b_is_base else b.values[s]) for s in seeds}
        out.estimate = float(np.mean(list(out.per_seed.values())))
    if blocked:
        out.reason = blocked
        return out
    if len(seeds) < 2:
        out.reason = f"{len(seeds)} seed(s) with a value on both sides: a paired interval needs at least 2"
        return out
    diffs = [out.per_seed[s] for s in seeds]
    problems = _paired_problems(a, b, seeds, b_is_base)
    extra_var, extra_df = 0.0, None
    if b_is_base and problems is not None:
        per_problem_diff = problems[0].mean(axis=0) - problems[1][0]  # [P]
        if per_problem_diff.size > 1:
            extra_var = float(per_problem_diff.var(ddof=1)) / per_problem_diff.size
            extra_df = per_problem_diff.size - 1
    t95 = paired_t_interval(diffs, extra_var=extra_var, extra_df=extra_df if extra_var > 0 else None)
    out.estimate, out.low, out.high = t95.mean, t95.low, t95.high
    out.mde = minimum_detectable_effect(t95.se, t95.df)
    boot95 = boot90 = None
    if problems is not None:
        boot95 = hierarchical_bootstrap_diff(problems[0], problems[1], seed=BOOTSTRAP_SEED,
                                             n_resamples=BOOTSTRAP_RESAMPLES, b_shared=b_is_base)
        out.boot_low, out.boot_high = boot95[1], boot95[2]
    if t95.se == 0 and (boot95 is None or boot95[1] == boot95[2]):
        out.reason = (f"{claim.arm_a} and {claim.arm_b} gave the same {claim.metric} in every seed"
                      + (" and problem" if boot95 is not None else "") + f" ({out.estimate:+.4g}): no spread to test")
        return out
    lows = [out.low] + ([out.boot_low] if boot95 is not None else [])
    highs = [out.high] + ([out.boot_high] if boot95 is not None else [])
    if claim.test == "superiority":
        if all(lo > 0 for lo in lows) or all(hi < 0 for hi in highs):
            side = +1 if all(lo > 0 for lo in lows) else -1
            out.verdict = "reproduced" if side == claim.direction else "not reproduced"
            out.reason = "both 95% intervals exclude 0" + ("" if side == claim.direction else
                                                           ", on the side opposite to the paper's")
        else:
            out.verdict = "inconclusive"
            out.reason = f"a 95% interval contains 0 (MDE {out.mde:.3g} at 80% power)"
    else:
        m = float(claim.margin)
        t90 = tost(t95.mean, t95.se, t95.df, m)
        b90 = None
        if problems is not None:
            b90 = hierarchical_bootstrap_diff(problems[0], problems[1], seed=BOOTSTRAP_SEED,
                                              n_resamples=BOOTSTRAP_RESAMPLES, confidence=0.90, b_shared=b_is_base)
        lows90 = [t90.low] + ([b90[1]] if b90 is not None else [])
        highs90 = [t90.high] + ([b90[2]] if b90 is not None else [])
        if claim.direction == 0:  # two-sided equivalence
            inside = all(-m < lo for lo in lows90) and all(hi < m for hi in highs90)
            outside = all(lo > m for lo in lows) or all(hi < -m for hi in highs)
            what = f"|{claim.arm_a} - {claim.arm_b}| < {m:g}"
        else:  # non-inferiority: direction * (a - b) > -m
            sign = claim.direction
            inside = all((lo if sign > 0 else -hi) > -m for lo, hi in zip(lows90, highs90))
            outside = all((hi if sign > 0 else -lo) < -m for lo, hi in zip(lows, highs))
            what = (f"{claim.arm_a} - {claim.arm_b} > -{m:g}" if sign > 0 else f"{claim.arm_a} - {claim.arm_b} < {m:g}")
        if inside:
            out.verdict, out.reason = "reproduced", f"TOST: the 90% intervals show {what} (margin declared in spec.py)"
        elif outside:
            out.verdict, out.reason = "not reproduced", f"a 95% interval lies wholly beyond the margin {m:g}"
        else:
            out.verdict = "inconclusive"
            out.reason = f"the 90% intervals do not show {what} (MDE {out.mde:.3g} at 80% power)"
    if claim.metric.endswith("pass@1") and (out.high - out.low) / 2 > TARGET_HALF_WIDTH:
        sd = float(np.std(diffs, ddof=1))
        need = seeds_needed(sd, TARGET_HALF_WIDTH, base_var=extra_var)
        more = (f"about {need} seeds would give ±{TARGET_HALF_WIDTH:g}" if need is not None else
                f"the base's evaluation alone is wider than ±{TARGET_HALF_WIDTH:g}: more problems are needed")
        out.reason += f"; half-width {(out.high - out.low) / 2:.3f} > {TARGET_HALF_WIDTH:g}: {more}"
    return out


def control_status(arm: ArmData, base: ArmData, result: ClaimResult) -> Optional[str]:
    """None when the positive control resolved (the arm above the base in every seed and the claim reproduced);
    else the reason every other claim of the table is not testable."""
    if BASE_SEED not in base.values or not arm.values:
        return "the positive control has no values"
    below = [s for s, v in sorted(arm.values.items()) if not v > base.values[BASE_SEED]]
    if below or result.verdict != "reproduced":
        what = (f"seed(s) {', '.join(map(str, below))} ended at or below the base" if below else
                f"its interval does not exclude 0 ({result.reason})")
        return f"the positive control did not resolve: {what}"
    return None
