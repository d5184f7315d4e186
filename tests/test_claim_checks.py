"""The claims the paper comparisons cannot test by construction: each spec.py's ``check`` functions return a
reason, computed from the runs, exactly when the design could not show the claim, and None otherwise. Hand-made
verdicts.ArmData only: nothing is trained or evaluated here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import driver  # noqa: E402
from verdicts import BASE_SEED, ArmData  # noqa: E402

OUTSIDE_FILES = tuple(stem + ".md" for stem in ("PAPERS", "DESIGN", "SCALEOUT"))
"""Notes outside the repository that a claim must not cite (the paper itself is cited instead)."""

NAMES = ["spurious", "passk_limits", "one_shot", "dro", "dro_revise", "entropy_8020", "prm_vs_variance", "dvao",
         "rubric_gate", "confidence", "rlcr", "seed_methods"]


def _values(table):
    """``values(arm, metric)`` over ``{(arm, metric): {seed: value}}``; anything else is an empty ArmData."""

    def values(arm, metric):
        return ArmData(values=dict(table.get((arm, metric), {})))

    return values


def _check(name, fn_name):
    """The check function ``fn_name`` of experiment ``name``, as its claims carry it."""
    spec = driver.load_spec(name)
    checks = {c.check.__name__: c.check for c in spec.claims if c.check is not None}
    assert fn_name in checks, f"{name}: no claim carries {fn_name} (has {sorted(checks)})"
    return checks[fn_name]


# ------------------------------------------------------------------------------------------------ every spec


@pytest.mark.parametrize("name", NAMES)
def test_every_spec_loads_with_a_valid_control_and_checks_that_tolerate_missing_data(name):
    spec = driver.load_spec(name)
    arms = {a.name for a in spec.arms} | {"base"}
    assert spec.control is None or spec.control in arms
    for claim in spec.claims:
        assert claim.arm_a in arms and claim.arm_b in arms, claim.text
        assert not any(name in claim.paper for name in OUTSIDE_FILES)
        if claim.test == "equivalence":
            assert claim.margin and claim.margin > 0
        if claim.check is not None:  # no runs, or runs without the metric: the claim stays testable
            assert claim.check(_values({})) is None, claim.text
    assert not any(name in spec.notes for name in OUTSIDE_FILES)


def test_equivalence_claims_are_registered_as_equivalence():
    """The claims the issue lists as equivalence ("close to", "matches", "at least", "keeps")."""
    close = next(c for c in driver.load_spec("dro").claims if "close to" in c.text)
    assert (close.test, close.direction, close.margin) == ("equivalence", 0, 0.05)
    close = next(c for c in driver.load_spec("seed_methods").claims if "close to" in c.text)
    assert (close.test, close.direction) == ("equivalence", 0)
    matches = next(c for c in driver.load_spec("one_shot").claims if "matches" in c.text)
    assert (matches.test, matches.direction) == ("equivalence", 0)
    matches = next(c for c in driver.load_spec("confidence").claims if "matches" in c.text)
    assert (matches.test, matches.direction, matches.arm_a, matches.arm_b) == ("equivalence", 0, "intuitor", "outcome")
    for name in ["dro", "entropy_8020", "prm_vs_variance", "rubric_gate", "rlcr", "dvao"]:
        for claim in driver.load_spec(name).claims:
            if any(word in claim.text for word in ("at least", "keeps", "costs no")):
                assert claim.test == "equivalence" and claim.direction == +1, (name, claim.text)


def test_spurious_claims_follow_the_non_qwen_expectation_and_dvao_magnitudes_are_said_of_rc():
    spurious = driver.load_spec("spurious")
    assert spurious.control == "ground_truth"
    for arm in ("random",):
        claim = next(c for c in spurious.claims if c.arm_a == arm and c.arm_b == "base")
        assert (claim.test, claim.direction) == ("equivalence", -1)  # arm - base < margin
        assert "Qwen" in claim.paper
    magnitude = next(c for c in driver.load_spec("dvao").claims if c.metric == "advantage/adv/mean_sq")
    assert (magnitude.arm_a, magnitude.arm_b, magnitude.direction) == ("rc", "dvao", +1)
    assert "RC only" in magnitude.paper
    for claim in driver.load_spec("confidence").claims:
        if "intuitor" in (claim.arm_a, claim.arm_b):
            assert "without the paper's KL" in claim.paper


# ------------------------------------------------------------------------------------------------ dro_revise


def test_dro_revise_win_rate_with_a_judge_at_chance_is_not_testable():
    check = _check("dro_revise", "check_judge_at_chance")

    def base(rate, low, high, mass=None):
        table = {("base", "eval/win_rate"): {BASE_SEED: rate}, ("base", "eval/win_rate_ci95_low"): {BASE_SEED: low},
                 ("base", "eval/win_rate_ci95_high"): {BASE_SEED: high}}
        if mass is not None:
            table[("base", "eval/judge_ab_mass")] = {BASE_SEED: mass}
        return _values(table)

    reason = check(base(0.502, 0.499, 0.505, mass=0.045))
    assert reason and "at chance" in reason and "0.502 [0.499, 0.505]" in reason and "4.5%" in reason
    assert check(base(0.30, 0.25, 0.35)) is None  # the judge prefers the reference: it can tell
    assert check(base(0.50, 0.30, 0.70)) is None  # contains 0.5 but wide: low power, not chance
    assert check(base(0.52, 0.51, 0.53)) is None  # tight but excludes 0.5
    spec = driver.load_spec("dro_revise")
    assert spec.control is None  # no verifier, so no outcome-reward arm
    assert {c.check.__name__ for c in spec.claims if c.metric == "eval/win_rate"} == {"check_judge_at_chance"}


# ------------------------------------------------------------------------------------------------ entropy_8020


def _entropy(kept, dropped, frac=0.2, threshold=0.017):
    return _values({("top20", "filter/entropy/entropy_kept"): {0: kept, 1: kept},
                    ("top20", "filter/entropy/entropy_dropped"): {0: dropped, 1: dropped},
                    ("top20", "filter/entropy/kept_frac"): {0: frac, 1: frac},
                    ("top20", "filter/entropy/threshold"): {0: threshold, 1: threshold}})


def test_entropy_top20_that_drops_only_deterministic_tokens_is_not_testable():
    check = _check("entropy_8020", "check_top20_is_all")
    # the old table: kept tokens 0.52 nats, dropped 0.003 -> the dropped 80% carry 0.8*0.003/(0.104+0.0024) = 2.3%
    reason = check(_entropy(0.52, 0.003))
    assert reason and "by construction" in reason and "2.3%" in reason and "0.672" in reason
    assert check(_entropy(1.5, 0.3)) is None  # the dropped tokens carry 44% of the entropy: the mask selects
    assert check(_entropy(0.0, 0.0)) is not None  # no entropy anywhere: nothing to select either
    claim = next(c for c in driver.load_spec("entropy_8020").claims if c.check is not None)
    assert (claim.arm_a, claim.arm_b, claim.test, claim.direction) == ("top20", "all", "equivalence", +1)


# ------------------------------------------------------------------------------------------------ dvao


def _sigmas(outcome, fmt, overlong, arms=("rc", "ac", "gdpo", "dvao")):
    table = {}
    for arm in arms:
        table[(arm, "advantage/sigma/outcome")] = {0: outcome, 1: outcome}
        table[(arm, "advantage/sigma/format")] = {0: fmt, 1: fmt}
        table[(arm, "advantage/sigma/overlong")] = {0: overlong, 1: overlong}
        table[(arm, "reward/format/mean")] = {0: 1.0, 1: 1.0}
    return _values(table)


def test_dvao_constant_format_objective_blocks_only_the_format_claim():
    format_check = _check("dvao", "check_format_constant")
    combine_check = _check("dvao", "check_combiners_can_differ")
    constant_format = _sigmas(0.45, 0.0, 0.04)
    reason = format_check(constant_format)
    assert reason and "format objective was constant within every group" in reason and "all 8 runs" in reason
    assert combine_check(constant_format) is None  # outcome and length still vary: the combiners can differ
    assert format_check(_sigmas(0.45, 0.1, 0.04)) is None
    one_left = _sigmas(0.45, 0.0, 0.0)
    reason = combine_check(one_left)
    assert reason and "only 1 objective(s) (outcome)" in reason and "format, overlong" in reason
    spec = driver.load_spec("dvao")
    assert spec.control == "outcome" and next(a for a in spec.arms if a.name == "outcome").overrides == []
    # the control is outcome GRPO alone; the combiner arms train on three objectives
    format_claim = next(c for c in spec.claims if c.metric == "reward/format/mean")
    assert format_claim.check.__name__ == format_check.__name__


# ------------------------------------------------------------------------------------------------ seed_methods


def test_seed_methods_srl_without_an_rlvr_step_is_not_testable():
    check = _check("seed_methods", "check_srl_reached_rlvr")
    reason = check(_values({("srl_rlvr", "step"): {0: 3.0, 1: 5.0}}))
    assert reason and "seed(s) 0 of 2" in reason and "srl_steps = 3" in reason
    assert check(_values({("srl_rlvr", "step"): {0: 4.0, 1: 5.0}})) is None


# ------------------------------------------------------------------------------------------------ end to end


def test_a_check_reason_becomes_the_verdict_once_the_control_resolves(monkeypatch):
    """driver.claim_results: the positive control resolves (ground truth above the base in every seed), so the
    checks run; a claim whose check gives a reason gets "not testable" with it, the others their statistics."""
    def answered_at_ceiling(values):
        base = values("base", "eval/answered_frac").values.get(BASE_SEED)
        return "the base answers in every sample" if base is not None and base >= 1.0 else None

    seeds = [0, 1, 2, 3]
    exp = driver.Experiment(
        name="made_here", arms=[driver.Arm("ground_truth"), driver.Arm("random"), driver.Arm("format")], seeds=seeds,
        metrics=["eval/pass@1"], control="ground_truth",
        claims=[driver.Claim("ground truth helps", "eval/pass@1", "ground_truth", "base", +1, "-"),
                driver.Claim("random is no better", "eval/pass@1", "random", "base", -1, "-", test="equivalence",
                             margin=0.05),
                driver.Claim("format answers more", "eval/answered_frac", "format", "base", +1, "-",
                             check=answered_at_ceiling)])
    pass1 = {"ground_truth": [0.30, 0.31, 0.32, 0.30], "random": [0.20, 0.21, 0.19, 0.20],
             "format": [0.20, 0.20, 0.20, 0.20]}
    table = {("base", "eval/pass@1"): {BASE_SEED: 0.20}, ("base", "eval/answered_frac"): {BASE_SEED: 1.0}}
    for arm, values in pass1.items():
        table[(arm, "eval/pass@1")] = dict(zip(seeds, values))
        table[(arm, "eval/answered_frac")] = {s: 1.0 for s in seeds}
    values = _values(table)
    monkeypatch.setattr(driver, "arm_data", lambda exp_, folders, base, arm, metric: values(arm, metric))
    control, blocked, results = driver.claim_results(exp, {}, None)
    assert blocked is None and control[1].verdict == "reproduced"
    verdicts = [(result.verdict, result.reason) for _, result in results]
    assert verdicts[0][0] == "reproduced" and verdicts[1][0] == "reproduced"  # random: diffs 0, .01, -.01, 0
    assert verdicts[2] == ("not testable", "the base answers in every sample")
    assert np.isclose(results[0][1].estimate, 0.1075)
