"""Rubric gate, 80/20 entropy token filter and multi-objective advantage combiners (DVAO, RC, GDPO, AC):
hand-computed cases (docs/gates.md, docs/token-masks.md and docs/multi-objective.md)."""

from __future__ import annotations

import math

import pytest
import torch

from drox.filters import FILTERS
from drox.gates import GATES
from drox.filters.entropy import EntropyConfig, entropy_filter, top_k_count
from drox.gates.rubric import RubricConfig, max_ngram_count, rubric_gate
from drox.rewards.base import ScoringContext
from drox.rollout.base import RolloutBatch
from drox.tasks import MathVerifier, Task
from drox.trainers.multiobj import COMBINERS, combine_objectives


def close(a, b, tol=1e-4):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# ------------------------------------------------------------------------------------------------ registration


def test_registered_and_yaml_defaults_match():
    from drox.cli.main import compose

    assert "rubric" in GATES and FILTERS["entropy"].meta["kind"] == "token"
    assert {"dvao", "sum_then_normalize", "normalize_then_sum", "normalize_then_sum_no_batch"} <= set(COMBINERS)
    cfg = compose(["+gate=rubric", "+filter=entropy"])
    assert GATES.parse("rubric", dict(cfg.gate.rubric)) == RubricConfig()
    assert FILTERS.parse("entropy", dict(cfg.filter.entropy)) == EntropyConfig()
    # a callable check by dotted path survives a Hydra override
    cfg = compose(["+gate=rubric", f"gate.rubric.checks=[answer_present,'{__name__}:ends_with_period']"])
    assert list(cfg.gate.rubric.checks) == ["answer_present", f"{__name__}:ends_with_period"]


# ------------------------------------------------------------------------------------------------ rubric gate


def ends_with_period(text, row):
    """A user check for the dotted-path test: the response ends with '.' and the row is passed through."""
    assert "answer" in row
    return text.rstrip().endswith(".")


def make_ctx(texts, group_size, token_ids=None):
    """A scoring context over ``texts`` (group-major); ``token_ids``: each completion's ids (default one per word)."""
    n = len(texts)
    if token_ids is None:
        token_ids = [[hash(w) % 1000 + 1 for w in t.split()] or [0] for t in texts]
    T = max(len(t) for t in token_ids)
    ids = torch.zeros(n, T, dtype=torch.long)
    mask = torch.zeros(n, T)
    for i, t in enumerate(token_ids):
        ids[i, :len(t)] = torch.tensor(t)
        mask[i, :len(t)] = 1
    z = torch.zeros(n, 2, dtype=torch.long)
    batch = RolloutBatch(prompt_ids=z, prompt_mask=torch.ones_like(z), response_ids=ids, response_mask=mask,
                         logprobs=torch.zeros(n, T), entropies=torch.zeros(n, T), finish_reason=["eos"] * n,
                         texts=list(texts), group_size=group_size)
    rows = [{"problem_id": f"p{q}", "prompt": f"q{q}", "answer": "3"} for q in range(n // group_size)]
    return ScoringContext(batch=batch, rows=rows, task=Task("test", None, MathVerifier()))


def gate(texts, G, token_ids=None, **opts):
    return rubric_gate(make_ctx(texts, G, token_ids), GATES.parse("rubric", opts))


def test_rubric_default_checks_mask_and_stats():
    texts = ["so \\boxed{3}.", "the answer is 3", "\\boxed{}", "no idea",
             "\\boxed{3", "Answer: 4", "\\boxed{1} then \\boxed{x}", "nothing here"]
    res = gate(texts, 4)
    # answer_present: boxed, last number, none (empty box, no number), none | last number 3, Answer line, boxed, none
    # format_valid:   boxed only (an unclosed or empty box does not count)
    assert res.passed.tolist() == [[True, False, False, False], [False, False, True, False]]
    assert res.stats["pass/answer_present"] == 5 / 8
    assert res.stats["pass/format_valid"] == 2 / 8
    assert res.stats["pass_rate"] == 2 / 8
    assert res.stats["pass_incorrect"] == 1 / 8  # "\boxed{1} then \boxed{x}" passes the rubric, answers x != 3
    assert res.stats["all_fail_groups"] == 0.0
    assert gate(["x", "y"], 2).stats["all_fail_groups"] == 1.0


def test_rubric_reward_scores_the_gates_checks_and_counts_hacking():
    from drox.rewards import REWARD_SOURCES

    texts = ["so \\boxed{3}.", "the answer is 3", "\\boxed{}", "no idea",
             "\\boxed{3", "Answer: 4", "\\boxed{1} then \\boxed{x}", "nothing here"]
    src = REWARD_SOURCES.get("rubric")
    out = src.fn(make_ctx(texts, 4), REWARD_SOURCES.parse("rubric", {}))
    # same verdicts as the gate test above: all checks pass for rollouts 0 and 6 only
    assert out.seq.tolist() == [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    assert out.diagnostics == {"pass_rate": 2 / 8, "pass_incorrect": 1 / 8}
    # fraction: answer_present and format_valid per rollout (1,1) (1,0) (0,0) (0,0) | (1,0) (1,0) (1,1) (0,0)
    out = src.fn(make_ctx(texts, 4), REWARD_SOURCES.parse("rubric", {"score": "fraction"}))
    assert out.seq.tolist() == [[1.0, 0.5, 0.0, 0.0], [0.5, 0.5, 1.0, 0.0]]
    # the reward's own option names in its errors
    with pytest.raises(ValueError, match=r"reward.rubric: check 'length' needs min_tokens"):
        REWARD_SOURCES.parse("rubric", {"checks": ["length"]})
    with pytest.raises(ValueError, match=r"reward.rubric.score=sum is not allowed; choose one of: all, fraction"):
        REWARD_SOURCES.parse("rubric", {"score": "sum"})


def test_rubric_reward_at_weight_zero_only_measures(compose_cfg):
    cfg = compose_cfg("+reward=[outcome,rubric]", "reward.rubric.weight=0")
    assert cfg.reward.rubric.weight == 0 and cfg.reward.outcome.weight == 1


def test_rubric_length_regex_and_ngrams():
    texts = ["a b c \\boxed{12}", "a \\boxed{-7}", "a b c d e f \\boxed{5}", "\\boxed{x+1}"]
    res = gate(texts, 2, checks=["length"], min_tokens=2, max_tokens=4)  # one token per word: 4, 2, 7, 1
    assert res.passed.tolist() == [[True, True], [False, False]]
    res = gate(texts, 2, checks=["regex"], regex=r"^-?\d+$")  # on the extracted answer, anchored
    assert res.passed.tolist() == [[True, True], [True, False]]
    res = gate(texts, 2, checks=["regex"], regex=r"a b", regex_on="response")
    assert res.passed.tolist() == [[True, False], [True, False]]
    # n-grams over token ids (padding excluded): [1,2,3,1,2,3,1,2,3] has the 3-gram (1,2,3) three times
    ids = [[1, 2, 3, 1, 2, 3, 1, 2, 3], [1, 2, 3, 1, 2, 3], [4, 4, 4, 4], [5]]
    assert max_ngram_count(ids[0], 3) == 3 and max_ngram_count(ids[2], 2) == 3 and max_ngram_count(ids[3], 2) == 0
    res = gate(["t"] * 4, 2, token_ids=ids, checks=["no_repeat_ngram"], ngram_n=3, max_repeats=2)
    assert res.passed.tolist() == [[False, True], [True, True]]
    res = gate(["t"] * 4, 2, token_ids=ids, checks=["no_repeat_ngram"], ngram_n=2, max_repeats=2)
    assert res.passed.tolist() == [[False, True], [False, True]]
    # words: "go go go go" has the word 2-gram (go, go) three times
    res = gate(["go go go go", "go go go"], 2, checks=["no_repeat_ngram"], ngram_n=2, max_repeats=2,
               ngram_unit="words")
    assert res.passed.tolist() == [[False, True]]


def test_rubric_callable_by_dotted_path():
    texts = ["\\boxed{3}.", "\\boxed{3}", "It is 3.", "x"]
    res = gate(texts, 2, checks=["answer_present", f"{__name__}:ends_with_period"])
    assert res.passed.tolist() == [[True, False], [True, False]]
    assert res.stats[f"pass/{__name__}:ends_with_period"] == 0.5


@pytest.mark.parametrize("path, fragment", [
    ("no_such_module_xyz:check", "no module named 'no_such_module_xyz'"),
    (f"{__name__}:no_such_function", "has no attribute 'no_such_function'"),
    (f"{__name__}:", "give 'file.py:function' or 'module:function'"),
    (f"{__name__}:math", "is not callable"),
])
def test_rubric_bad_dotted_path_is_one_line_error(path, fragment):
    with pytest.raises(ValueError) as e:
        GATES.parse("rubric", {"checks": [path]})
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("opts, fragment", [
    ({"checks": ["bogus"]}, "unknown check 'bogus'"),
    ({"on_fail": "drop"}, "on_fail=drop is not allowed"),
    ({"checks": ["length"]}, "needs min_tokens and/or max_tokens"),
    ({"checks": ["regex"]}, "needs gate.rubric.regex"),
    ({"checks": ["regex"], "regex": "("}, "bad regex"),
    ({"nope": 1}, "unknown option(s) nope"),
])
def test_rubric_config_errors(opts, fragment):
    with pytest.raises(ValueError, match=None) as e:
        GATES.parse("rubric", opts)
    assert fragment in str(e.value)


# ------------------------------------------------------------------------------------------------ entropy filter

# 3 rollouts x 5 positions; mask leaves 10 valid tokens (row 0: 4, row 1: 5, row 2: 1)
H = torch.tensor([[0.9, 0.1, 2.0, 0.5, 7.0],
                  [1.5, 0.2, 0.3, 3.0, 0.4],
                  [0.7, 9.0, 9.0, 9.0, 9.0]])
M = torch.tensor([[1, 1, 1, 1, 0],
                  [1, 1, 1, 1, 1],
                  [1, 0, 0, 0, 0]], dtype=torch.float32)


def ent(entropies, mask, **opts):
    return entropy_filter(entropies, mask, FILTERS.parse("entropy", opts))


def test_entropy_keeps_exactly_ceil_rho_n_highest():
    new, stats = ent(H, M)  # rho 0.2: ceil(0.2 * 10) = 2 -> 3.0 (1,3) and 2.0 (0,2); padding (9.0, 7.0) ignored
    expect = torch.zeros_like(M)
    expect[1, 3] = expect[0, 2] = 1
    assert torch.equal(new, expect) and new.dtype == M.dtype
    assert stats["n_kept"] == 2 and stats["kept_frac"] == 0.2 and stats["threshold"] == 2.0
    assert close(stats["entropy_kept"], 2.5) and close(stats["entropy_dropped"], 4.6 / 8)
    new, _ = ent(H, M, rho=0.25)  # ceil(2.5) = 3 -> + 1.5 (1,0)
    assert new.sum() == 3 and new[1, 0] == 1
    assert [top_k_count(0.2, n) for n in (1, 5, 10, 11, 15, 100)] == [1, 1, 2, 3, 3, 20]  # 0.2*15 is 3.0000000000000004


def test_entropy_ties_broken_by_position():
    h = torch.tensor([[1.0, 5.0, 5.0], [5.0, 5.0, 0.0]])
    m = torch.ones(2, 3)
    new, stats = ent(h, m, rho=0.4)  # k = ceil(2.4) = 3 of four tied 5.0s: the first three in row-major order
    assert new.tolist() == [[0, 1, 1], [1, 0, 0]]
    assert stats["threshold"] == 5.0 and stats["ties_dropped"] == 1  # ">= threshold" would have kept 4
    new, stats = ent(h, m, rho=0.4, invert=True)  # the complement: bottom 1-rho, again exactly N - k
    assert new.tolist() == [[1, 0, 0], [0, 1, 1]] and stats["n_kept"] == 3


def test_entropy_invert_is_the_complement_and_edge_cases():
    top, _ = ent(H, M, rho=0.3)
    bottom, stats = ent(H, M, rho=0.3, invert=True)
    assert torch.equal(top + bottom, M) and stats["n_kept"] == 7
    assert stats["entropy_kept"] < stats["entropy_dropped"]
    new, _ = ent(H, M, rho=1.0)
    assert torch.equal(new, M)
    new, stats = ent(H, torch.zeros_like(M))
    assert new.sum() == 0 and stats["n_valid"] == 0
    with pytest.raises(ValueError, match="rho must be in"):
        FILTERS.parse("entropy", {"rho": 0})
    with pytest.raises(ValueError, match="scope=global is not allowed"):
        FILTERS.parse("entropy", {"scope": "global"})


# ------------------------------------------------------------------------------------------------ combiners

# one group, G = 4 rollouts, K = 2 objectives
R = torch.tensor([[[1.0, 0.5], [0.0, 0.5], [1.0, 1.0], [0.0, 0.0]]])


def test_dvao_hand_values_4x2():
    # obj 0: mu 0.5, x = [.5,-.5,.5,-.5], population sigma 0.5
    # obj 1: mu 0.5, x = [0, 0, .5, -.5], population sigma sqrt(0.5/4) = 0.353553
    # A = sum_k x_k / (0.5 + 0.353553) = [.5, -.5, 1, -1] / 0.853553
    adv, stats = combine_objectives(R, [1.0, 1.0], "dvao", names=["outcome", "format"])
    assert close(adv, [[0.5858, -0.5858, 1.1716, -1.1716]])  # 0.5858 = 2 - sqrt(2)
    assert close(stats["weight/outcome"], 0.5858) and close(stats["weight/format"], 0.4142)
    assert close(stats["sigma/format"], 0.3536)
    # base weights b = [2, 1]: A = [1, -1, 1.5, -1.5] / (1 + 0.353553)
    adv, stats = combine_objectives(R, [2.0, 1.0], "dvao")
    assert close(adv, [[0.7388, -0.7388, 1.1082, -1.1082]])
    assert close(stats["weight/0"], 1 / 1.353553) and adv.dtype == torch.float32


def test_dvao_bounded_by_sqrt_g_minus_1():
    gen = torch.Generator().manual_seed(0)
    for G in (2, 3, 5, 8, 16):
        table = torch.randn(64, G, 3, generator=gen) * torch.tensor([1.0, 10.0, 0.1])
        table[:8, :, 1] = (table[:8, :, 1] > 0).float()  # some binary objectives too
        w = torch.rand(3, generator=gen)
        adv, stats = combine_objectives(table, w, "dvao")
        assert adv.abs().max() <= math.sqrt(G - 1) + 1e-5
        valid = torch.rand(64, G, generator=gen) > 0.3
        adv, _ = combine_objectives(table, w, "dvao", valid=valid)
        n = valid.sum(-1, keepdim=True).float()
        assert (adv.abs() <= (n - 1).clamp_min(0).sqrt() + 1e-5).all() and (adv[~valid] == 0).all()
    # the bound is attained by a single outlier: r = [1, 0, 0, 0] -> A_0 = 0.75 / (sqrt(3)/4) = sqrt(3)
    adv, _ = combine_objectives(torch.tensor([[[1.0], [0.0], [0.0], [0.0]]]), [1.0], "dvao")
    assert close(adv[0, 0], math.sqrt(3), 1e-5)


def test_dvao_zero_variance_objective_gets_zero_weight():
    table = R.clone()
    table[..., 1] = 0.7  # objective 1 constant within the group
    adv, stats = combine_objectives(table, [1.0, 3.0], "dvao")
    assert stats["weight/1"] == 0.0 and close(stats["weight/0"], 1.0)
    assert close(adv, [[1.0, -1.0, 1.0, -1.0]])  # = x_0 / sigma_0: objective 0 alone
    # every objective constant, or G = 1: A = 0, never NaN
    adv, stats = combine_objectives(torch.ones(2, 4, 2), [1.0, 1.0], "dvao")
    assert (adv == 0).all() and stats["zero_groups"] == 1.0 and stats["weight/0"] == 0.0
    assert (combine_objectives(torch.rand(3, 1, 2), [1.0, 1.0], "dvao")[0] == 0).all()


# two groups, G = 4, K = 2; weights [1, 0.5]
T2 = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]],
                   [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
W2 = [1.0, 0.5]


def test_rc_sum_then_normalize_hand_values():
    # group 0: R = [1.5, 1, 0, .5], mean .75, unbiased std sqrt(1.25/3) = 0.645497 (TRL eps 1e-4)
    # group 1: R = [1.5, 1.5, 1, 1], mean 1.25, unbiased std sqrt(0.25/3) = 0.288675 -> 0.25 / 0.288775
    adv, _ = combine_objectives(T2, W2, "sum_then_normalize", eps=1e-4)
    assert close(adv, [[1.1617, 0.3872, -1.1617, -0.3872], [0.8657, 0.8657, -0.8657, -0.8657]])


def test_gdpo_and_ac_hand_values():
    # per-objective z-scores (unbiased std): group 0 obj 0 [1,1,0,0] -> +-0.866025, obj 1 [1,0,0,1] -> +-0.866025;
    # group 1 obj 0 constant -> 0, obj 1 [1,1,0,0] -> +-0.866025. AC = z_0 + 0.5 z_1:
    ac, _ = combine_objectives(T2, W2, "normalize_then_sum_no_batch")
    z = math.sqrt(3) / 2
    assert close(ac, [[1.5 * z, 0.5 * z, -1.5 * z, -0.5 * z], [0.5 * z, 0.5 * z, -0.5 * z, -0.5 * z]])
    # GDPO: batch mean 0, unbiased batch std sqrt((2 * 1.6875 + 6 * 0.1875) / 7) = 0.801784
    adv, stats = combine_objectives(T2, W2, "normalize_then_sum")
    assert close(adv, [[1.6202, 0.5401, -1.6202, -0.5401], [0.5401, 0.5401, -0.5401, -0.5401]])
    assert close(stats["batch_std"], 0.8018) and close(stats["batch_mean"], 0.0)


def test_valid_rows_leave_the_statistics():
    # row 3 of group 0 gated out (its NaN score never read): every mode equals the 3-row group without it
    table = T2.clone()
    table[0, 3] = float("nan")
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[0, 3] = False
    for mode in COMBINERS:
        adv, _ = combine_objectives(table, W2, mode, valid=valid)
        assert adv[0, 3] == 0 and torch.isfinite(adv).all()
        if mode != "normalize_then_sum":  # batch normalisation couples the groups
            sub, _ = combine_objectives(T2[:1, :3], W2, mode)
            assert close(adv[0, :3], sub[0])
    with pytest.raises(ValueError, match="NaN/inf"):
        combine_objectives(table, W2, "dvao")
    with pytest.raises(ValueError, match="unknown multi-objective combiner"):
        combine_objectives(T2, W2, "mean")
    with pytest.raises(ValueError, match="weights for K = 2"):
        combine_objectives(T2, [1.0], "dvao")
    with pytest.raises(ValueError, match="non-negative"):
        combine_objectives(T2, [1.0, -1.0], "dvao")
