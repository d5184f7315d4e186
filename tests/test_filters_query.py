"""Group filters: DRO's query filter (online and offline rounds), DAPO dynamic sampling, mean_range.

Hand-computed cases; the variance σ come from a fake LM whose logits at input position p are row p
of a table and a character-level tokenizer (as in test_rewards_model.py), so no model is loaded.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from drox.filters import FILTERS
from drox.filters import query as qf
from drox.rewards import variance as var_mod
from drox.signals import r3 as r3_mod
from drox.rewards.base import REWARD_SOURCES, RewardOutput, ScoringContext, score
from doubles import CharTok, PosLM, make_batch

V = 128


def make_ctx(batch=None, rows=None, policy=None, correct=None, verifier=None, **kw):
    ctx = ScoringContext(batch=batch, rows=rows or [], task=SimpleNamespace(name="t", verifier=verifier),
                         policy=policy, tokenizer=CharTok(), **kw)
    if correct is not None:
        ctx.cache["verify"] = SimpleNamespace(correct=[bool(c) for row in correct for c in row])
    return ctx


def with_stats(sigma_max, sigma=None, ref_logprobs=None, ref_mask=None):
    """A scored batch holding this step's variance statistics in the variance reward's extras, as if it had run."""
    Q = len(sigma_max)
    stats = r3_mod.VarianceStats(
        sigma=sigma if sigma is not None else sigma_max[:, None], sigma_max=sigma_max,
        ref_mask=ref_mask if ref_mask is not None else torch.ones(Q, 1),
        ref_logprobs=ref_logprobs if ref_logprobs is not None else torch.zeros(Q, 3, 1),
        ref_ranks=torch.ones(Q, 3, 1))
    out = RewardOutput(seq=torch.zeros(Q, 3), extras=stats.as_extras())
    return SimpleNamespace(seq=out.seq, per_source={"variance": out})


def opts(name, **raw):
    return FILTERS.parse(name, raw)


# ------------------------------------------------------------------------------------------------ query: online

SIGMA = torch.tensor([0.5, 0.1, 0.0, 0.3, 0.1])  # Q = 5; groups 1 and 4 tie


def run_query(sigma_max=SIGMA, valid=None, **raw):
    valid = torch.ones(len(sigma_max), 3, dtype=torch.bool) if valid is None else valid
    ctx = make_ctx()
    return qf.query_filter(ctx, with_stats(sigma_max), valid, opts("query", **raw)), ctx


@pytest.mark.parametrize("raw, kept", [
    # threshold: drop sigma_max < 0.1 (0.1 itself stays)
    ({"threshold": 0.1, "drop_fraction": 0.0}, [1, 1, 0, 1, 1]),
    # fraction 0.4 of 5 -> 2 dropped: ranking 0(.5) 3(.3) 1(.1) 4(.1) 2(0); the tie 1/4 loses the later one, 4
    ({"drop_fraction": 0.4}, [1, 1, 0, 1, 0]),
    # default 0.25 of 5 -> floor(1.25) = 1 dropped: group 2
    ({}, [1, 1, 0, 1, 1]),
    # 0.5 of 5 -> floor(2.5) = 2 (the same two as 0.4)
    ({"drop_fraction": 0.5}, [1, 1, 0, 1, 0]),
    # both: threshold 0.2 drops 1, 2, 4; fraction 0.2 -> 1 drops 2: the union
    ({"threshold": 0.2, "drop_fraction": 0.2}, [1, 0, 0, 1, 0]),
    # everything under the threshold: min_keep restores the two best-ranked
    ({"threshold": 1.0, "drop_fraction": 0.0, "min_keep": 2}, [1, 0, 0, 1, 0]),
    ({"threshold": 1.0, "drop_fraction": 0.0, "min_keep": 0}, [0, 0, 0, 0, 0]),
])
def test_query_keeps_by_threshold_and_fraction(raw, kept):
    dec, _ = run_query(**raw)
    assert dec.keep.tolist() == [bool(k) for k in kept]
    assert torch.equal(dec.statistic, SIGMA)
    assert dec.stats["kept_frac"] == pytest.approx(sum(kept) / 5)
    assert dec.stats["statistic/min"] == 0.0 and dec.stats["statistic/max"] == 0.5
    assert dec.stats["statistic/mean"] == pytest.approx(0.2)


def test_query_all_tied_drops_the_last_positions():
    dec, _ = run_query(sigma_max=torch.zeros(4), drop_fraction=0.5)
    assert dec.keep.tolist() == [True, True, False, False]
    assert dec.stats["dropped_fraction"] == 2


def test_query_respects_valid_rollouts():
    # G = 3, J = 2. Group 0: the only spread is in rollout 2 (gated out) -> σ over valid = 0.
    # Group 1: token 0 {-1, -3, (-9)} -> valid σ = 1 (population std of {-1, -3}). Group 2: no valid rollout.
    L = torch.tensor([[[-1.0, -2.0], [-1.0, -2.0], [-6.0, -2.0]],
                      [[-1.0, -1.0], [-3.0, -1.0], [-9.0, -1.0]],
                      [[-1.0, -1.0], [-2.0, -1.0], [-3.0, -1.0]]])
    mask = torch.ones(3, 2)
    _, sigma_all, _ = r3_mod.r3_rewards(L, mask)
    valid = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    scored = with_stats(sigma_all.max(-1).values, sigma=sigma_all, ref_logprobs=L, ref_mask=mask)
    dec = qf.query_filter(make_ctx(), scored, valid, opts("query", drop_fraction=0.0, threshold=0.5))
    assert dec.statistic.tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert dec.keep.tolist() == [False, True, False]  # group 2 has no valid rollout: never kept
    assert dec.stats["eligible"] == 2
    # with every rollout valid, the recomputation equals the variance source's σ
    assert torch.allclose(qf.masked_sigma(L, mask, torch.ones(3, 3, dtype=torch.bool)), sigma_all, atol=1e-6)


TEXTS = ["ab \\boxed{7}", "abcd", "Answer: 9", "x", "yy \\boxed{1}", "zzz"]  # Q = 2, G = 3


def _fake_lm_ctx(**kw):
    torch.manual_seed(0)
    batch = make_batch(CharTok(), ["P?", "Q!"], TEXTS, 3)
    return make_ctx(batch, [{"answer": "42"}, {"answer": "7"}], PosLM(torch.randn(64, V) * 2), **kw)


def test_query_online_reuses_the_variance_reward_without_a_forward_pass():
    ctx = _fake_lm_ctx()
    combined = score(ctx, {"variance": REWARD_SOURCES.parse("variance", {})})
    passes = dict(ctx.counters)
    assert passes["forward_passes"] >= 1
    valid = torch.ones(2, 3, dtype=torch.bool)
    dec = FILTERS["query"].fn(ctx, combined, valid, opts("query", drop_fraction=0.5))
    assert ctx.counters == passes  # no extra forward pass
    assert dec.stats["extra_forward_passes"] == 0 and dec.stats["reused_variance"] == 1
    sigma_max = combined.per_source["variance"].extras["sigma_max"]
    assert torch.equal(dec.statistic, sigma_max)
    assert dec.keep.tolist() == [bool(sigma_max[0] >= sigma_max[1]), bool(sigma_max[0] < sigma_max[1])]


def test_query_online_finds_the_variance_statistics_under_another_source_name():
    # inverse of variance: the inner source's extras pass through, so the filter still needs no forward pass
    ctx = _fake_lm_ctx()
    combined = score(ctx, {"inverse": REWARD_SOURCES.parse("inverse", {"of": "variance"})})
    passes = dict(ctx.counters)
    dec = FILTERS["query"].fn(ctx, combined, torch.ones(2, 3, dtype=torch.bool), opts("query", drop_fraction=0.5))
    assert ctx.counters == passes and dec.stats["reused_variance"] == 1
    assert torch.equal(dec.statistic, combined.per_source["inverse"].extras["sigma_max"])


def test_query_online_computes_sigma_when_the_reward_is_not_active():
    ref = var_mod.variance(_fake_lm_ctx(), var_mod.VarianceConfig()).extras["sigma_max"]
    ctx = _fake_lm_ctx(forward_batch_size=64)
    comb = SimpleNamespace(seq=torch.zeros(2, 3), per_source={"outcome": RewardOutput(seq=torch.zeros(2, 3))})
    dec = FILTERS["query"].fn(ctx, comb, torch.ones(2, 3, dtype=torch.bool),
                              opts("query", variance={"reward_policy": "policy"}))
    assert ctx.counters["forward_passes"] == 1 and dec.stats["extra_forward_passes"] == 1
    assert dec.stats["reused_variance"] == 0
    assert torch.allclose(dec.statistic, ref)
    # cached within the step: a second call costs nothing
    FILTERS["query"].fn(ctx, comb, torch.ones(2, 3, dtype=torch.bool), opts("query"))
    assert ctx.counters["forward_passes"] == 1


def test_query_offline_mode_keeps_every_group_per_step():
    dec, ctx = run_query(mode="offline", valid=torch.tensor([[1, 1, 1]] * 4 + [[0, 0, 0]], dtype=torch.bool))
    assert dec.keep.tolist() == [True, True, True, True, False]
    assert ctx.counters == {}


def test_query_options_are_validated():
    with pytest.raises(ValueError, match="filter.query.mode"):
        opts("query", mode="sometimes")
    with pytest.raises(ValueError, match="drop_fraction"):
        opts("query", drop_fraction=1.0)
    with pytest.raises(ValueError, match="unknown option"):
        opts("query", thresold=0.1)
    with pytest.raises(ValueError, match="filter.query.variance: unknown option"):
        qf.OfflineScorer(None, None, opts("query", variance={"weighting": "bogus", "nope": 1}), max_new_tokens=4)


# ------------------------------------------------------------------------------------------------ ranks / hardness


def test_token_ranks_on_a_hand_made_logits_table():
    logits = torch.tensor([[[2.0, 1.0, 3.0, 1.0],    # y = 1: 2.0 and 3.0 are larger -> rank 3 (the tie 1.0 is not)
                            [0.5, 0.5, 0.1, 0.2],    # y = 0: tied with the argmax -> rank 1
                            [0.0, 1.0, 2.0, 3.0],    # y = 0: the smallest -> rank 4
                            [0.0, 1.0, 2.0, 3.0]]])  # y = 3: the argmax -> rank 1
    ids = torch.tensor([[1, 0, 0, 3]])
    assert qf.token_ranks(logits, ids).tolist() == [[3.0, 1.0, 4.0, 1.0]]


def test_worst_rank_average_and_hardness():
    # Q = 2, G = 2, J = 5; query 1 has |y| = 3 (ranks on padding are 0, as the variance source leaves them)
    ranks = torch.tensor([[[1.0, 3.0, 50.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0, 12.0]],
                          [[20.0, 30.0, 40.0, 0.0, 0.0], [9.0, 2.0, 1.0, 0.0, 0.0]]])
    mask = torch.tensor([[1.0] * 5, [1.0, 1.0, 1.0, 0.0, 0.0]])
    # ρ = 0.2: k = ceil(0.2·5) = 1 / ceil(0.6) = 1 -> the single worst rank
    assert qf.worst_rank_average(ranks, mask, 0.2).tolist() == [[50.0, 12.0], [40.0, 9.0]]
    # ρ = 0.4: k = 2 / ceil(1.2) = 2 -> (50+3)/2, (12+1)/2; (40+30)/2, (9+2)/2
    assert qf.worst_rank_average(ranks, mask, 0.4).tolist() == [[26.5, 6.5], [35.0, 5.5]]
    assert qf.hardness_ok(ranks, mask, 0.2, 10).tolist() == [False, True]  # query 0: 50 and 12 > 10
    assert qf.hardness_ok(ranks, mask, 0.4, 10).tolist() == [True, True]
    assert qf.hardness_ok(ranks, mask, 0.4, 6).tolist() == [False, True]
    # only valid traces count
    assert qf.hardness_ok(ranks, mask, 0.4, 10, valid=torch.tensor([[1, 0], [1, 1]])).tolist() == [False, True]
    # ρ·|y| that is an integer in exact arithmetic is not rounded up: 0.2·15 -> 3 tokens
    r = torch.arange(1.0, 16.0)[None, None]
    assert qf.worst_rank_average(r, torch.ones(1, 15), 0.2).item() == pytest.approx((15 + 14 + 13) / 3)


# ------------------------------------------------------------------------------------------------ offline rounds

SIG10 = [0.9, 0.1, 0.5, 0.2, 0.05, 0.7, 0.3, 0.0, 0.6, 0.4]
HARD10 = {5, 8}


class FakeScore:
    def __init__(self, sigma=SIG10, hard=HARD10):
        self.sigma, self.hard, self.chunks = sigma, hard, []

    def __call__(self, rows):
        ids = [r["id"] for r in rows]
        self.chunks.append(ids)
        return torch.tensor([self.sigma[i] for i in ids]), torch.tensor([i not in self.hard for i in ids])


ROWS10 = [{"id": i, "prompt": f"p{i}"} for i in range(10)]


def test_offline_round_drops_too_hard_then_the_lowest_fraction():
    fake = FakeScore()
    o = opts("query", mode="offline", chunk_prompts=3, drop_fraction=0.25)
    kept, stats = qf.offline_round(fake, ROWS10, o)
    # 5, 8 too hard; the other 8 ranked 0 2 9 6 3 1 4 7; floor(0.25·8) = 2 dropped: 4 (0.05) and 7 (0.0)
    assert kept == [0, 1, 2, 3, 6, 9]
    assert fake.chunks == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert stats["too_hard"] == 2 and stats["dropped_fraction"] == 2 and stats["carried"] == 0
    assert stats["kept_frac"] == pytest.approx(0.6)
    assert stats["statistic/max"] == pytest.approx(0.9) and stats["statistic/min"] == 0.0
    # a threshold adds to the cut: 3 (0.2) and 1 (0.1) go too
    kept, _ = qf.offline_round(FakeScore(), ROWS10, opts("query", mode="offline", threshold=0.25))
    assert kept == [0, 2, 6, 9]
    # ties at the cut: the later index goes
    kept, _ = qf.offline_round(FakeScore(sigma=[0.3] * 10, hard=set()), ROWS10,
                               opts("query", mode="offline", drop_fraction=0.3))
    assert kept == list(range(7))


def test_offline_round_carries_a_seeded_tenth_of_the_previous_set():
    o = opts("query", mode="offline", drop_fraction=0.25)  # carry_fraction 0.1 (the paper's)
    selected, _ = qf.offline_round(FakeScore(), ROWS10, o)
    prev = list(range(10))  # ceil(0.1·10) = 1 carried
    kept, stats = qf.offline_round(FakeScore(), ROWS10, o, previous_keep=prev, seed=3)
    again, stats2 = qf.offline_round(FakeScore(), ROWS10, o, previous_keep=prev, seed=3)
    assert kept == again and stats == stats2  # deterministic by seed
    assert stats["carried"] == 1
    g = torch.Generator().manual_seed(3)
    carried = prev[torch.randperm(10, generator=g)[0].item()]
    assert kept == sorted(set(selected) | {carried})
    assert stats["carried_new"] == float(carried not in selected)
    picks = {tuple(qf.offline_round(FakeScore(), ROWS10, o, previous_keep=prev, seed=s)[0]) for s in range(12)}
    assert len(picks) > 1  # the seed matters
    # 20% of a 4-prompt set carries ceil(0.8) = 1; an empty previous set carries none
    o2 = opts("query", mode="offline", drop_fraction=0.25, carry_fraction=0.2)
    assert qf.offline_round(FakeScore(), ROWS10, o2, previous_keep=[4, 5, 7, 8], seed=0)[1]["carried"] == 1
    assert qf.offline_round(FakeScore(), ROWS10, o2, previous_keep=[], seed=0)[1]["carried"] == 0
    with pytest.raises(ValueError, match="previous_keep"):
        qf.offline_round(FakeScore(), ROWS10, o, previous_keep=[10])


def test_offline_round_min_keep_when_everything_is_too_hard():
    with pytest.warns(UserWarning, match="selected none of 10 prompts"):
        kept, stats = qf.offline_round(FakeScore(hard=set(range(10))), ROWS10,
                                       opts("query", mode="offline", min_keep=2))
    assert kept == [0, 5] and stats["restored"] == 2  # best sigma_max: 0.9 and 0.7


def test_offline_round_due():
    on = opts("query", mode="offline", every=3)
    assert [s for s in range(10) if qf.offline_round_due(on, s)] == [0, 3, 6, 9]
    assert [s for s in range(5) if qf.offline_round_due(opts("query", mode="offline"), s)] == [0]
    assert not qf.offline_round_due(opts("query"), 0)


class FakeEngine:
    """generate(): for each prompt, G texts from a fixed table; records the calls."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def generate(self, prompts, group_size, *, max_new_tokens, temperature=1.0, top_p=1.0, seed=None, progress=False):
        self.calls.append((list(prompts), group_size, seed))
        return make_batch(CharTok(), prompts, [t for p in prompts for t in self.table[p][:group_size]], group_size)


def test_offline_scorer_samples_and_scores_with_the_variance_module():
    torch.manual_seed(0)
    policy = PosLM(torch.randn(64, V) * 2)
    engine = FakeEngine({"P?": TEXTS[:3], "Q!": TEXTS[3:], "R.": ["a \\boxed{3}", "bb", "ccc \\boxed{4}"]})
    rows = [{"prompt": "P?", "answer": "42"}, {"prompt": "Q!", "answer": "7"}, {"prompt": "R.", "answer": "3"}]

    def ctx_factory(batch, chunk):
        return make_ctx(batch, chunk, policy)

    o = opts("query", mode="offline", samples=3, chunk_prompts=2, drop_fraction=0.0, top_k=V + 1)
    scorer = qf.make_offline_score_fn(engine, ctx_factory, o, max_new_tokens=8, seed=100)
    kept, stats = qf.offline_round(scorer, rows, o)
    assert [c[2] for c in engine.calls] == [100, 101] and [c[1] for c in engine.calls] == [3, 3]
    assert kept == [0, 1, 2]  # every rank is <= V
    assert stats["generated_rollouts"] == 9 and stats["forward_passes"] == 2
    want = var_mod.variance(make_ctx(make_batch(CharTok(), ["P?", "Q!"], TEXTS, 3), rows[:2], policy),
                            var_mod.VarianceConfig()).extras
    s, ok = scorer(rows[:2])
    assert torch.allclose(s, want["sigma_max"]) and ok.tolist() == [True, True]
    _, again = qf.offline_round(scorer, rows, o)  # counters are per round
    assert again["generated_rollouts"] == 9 and again["forward_passes"] == 2
    strict = qf.make_offline_score_fn(engine, ctx_factory, opts("query", mode="offline", samples=3, top_k=1, rho=1.0),
                                      max_new_tokens=8)
    _, ok1 = strict(rows[:2])
    assert ok1.tolist() == qf.hardness_ok(want["ref_ranks"], want["ref_mask"], 1.0, 1).tolist()
    assert not all(ok1.tolist())  # a random LM ranks some reference token below the argmax
    off = qf.make_offline_score_fn(engine, ctx_factory, opts("query", mode="offline", samples=3, top_k=None),
                                   max_new_tokens=8)
    assert off(rows[:2])[1].tolist() == [True, True]  # top_k: null skips the hardness rule


# ------------------------------------------------------------------------------------------------ dynamic sampling


def test_dynamic_sampling_acc_keeps_mixed_groups_only():
    correct = [[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0], [1, 1, 0], [1, 0, 1]]
    valid = torch.ones(6, 3, dtype=torch.bool)
    valid[4, 2] = False  # group 4: all correct among its valid rollouts -> dropped
    valid[5] = False  # group 5: no valid rollout -> dropped
    ctx = make_ctx(correct=correct)
    dec = FILTERS["dynamic_sampling"].fn(ctx, None, valid, opts("dynamic_sampling"))
    assert dec.keep.tolist() == [False, False, True, True, False, False]
    assert dec.statistic[:5].tolist() == pytest.approx([1.0, 0.0, 2 / 3, 1 / 3, 1.0])
    assert dec.stats["kept_frac"] == pytest.approx(2 / 6)
    assert dec.stats["all_correct_frac"] == pytest.approx(2 / 6) and dec.stats["all_wrong_frac"] == pytest.approx(1 / 6)
    assert dec.stats["statistic/min"] == 0.0 and dec.stats["statistic/max"] == 1.0
    assert FILTERS["dynamic_sampling"].meta["refill"] and opts("dynamic_sampling").max_gen_batches == 10


def test_dynamic_sampling_score_drops_zero_std_groups():
    seq = torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.2, 0.3], [0.1, 0.1, 0.1], [1.0, 1.0, 7.0], [0.0, 1.0, 0.0]])
    valid = torch.ones(5, 3, dtype=torch.bool)
    valid[3, 2] = False  # the only differing score of group 3 is gated out
    dec = FILTERS["dynamic_sampling"].fn(make_ctx(), SimpleNamespace(seq=seq), valid,
                                         opts("dynamic_sampling", metric="score"))
    assert dec.keep.tolist() == [False, True, False, False, True]
    # population std: {.1,.2,.3} -> sqrt(.02/3) = 0.08165; {0,1,0} -> sqrt(2/9) = 0.4714
    assert dec.statistic.tolist() == pytest.approx([0.0, 0.08165, 0.0, 0.0, 0.4714], abs=1e-4)
    assert dec.stats["zero_std_frac"] == pytest.approx(3 / 5)
    dec = FILTERS["dynamic_sampling"].fn(make_ctx(), SimpleNamespace(seq=seq), valid,
                                         opts("dynamic_sampling", metric="score", std_eps=0.1))
    assert dec.keep.tolist() == [False, False, False, False, True]


def test_dynamic_sampling_acc_without_a_verifier_says_what_to_do():
    ctx = make_ctx(batch=make_batch(CharTok(), ["P?"], ["a", "b"], 2), rows=[{"answer": "1"}])
    with pytest.raises(ValueError, match="metric=score"):
        FILTERS["dynamic_sampling"].fn(ctx, None, torch.ones(1, 2, dtype=torch.bool), opts("dynamic_sampling"))


# ------------------------------------------------------------------------------------------------ mean_range


def test_mean_range_bounds_are_strict():
    seq = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.998, 1.0], [0.0, 0.002], [2.0, -1.0]])
    valid = torch.ones(6, 2, dtype=torch.bool)
    valid[5, 0] = False  # group 5: mean over valid = -1
    dec = FILTERS["mean_range"].fn(make_ctx(), SimpleNamespace(seq=seq), valid, opts("mean_range"))
    assert dec.keep.tolist() == [False, True, False, True, True, False]
    assert dec.statistic.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.999, 0.001, -1.0])
    assert dec.stats["kept_frac"] == pytest.approx(0.5) and dec.stats["statistic/min"] == -1.0
    dec = FILTERS["mean_range"].fn(make_ctx(), SimpleNamespace(seq=seq), valid, opts("mean_range", lo=0.2, hi=0.8))
    assert dec.keep.tolist() == [False, True, False, False, False, False]
    assert dec.stats["below_frac"] == pytest.approx(3 / 6) and dec.stats["above_frac"] == pytest.approx(2 / 6)


def test_mean_range_acc_uses_the_verifier():
    correct = [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    dec = FILTERS["mean_range"].fn(make_ctx(correct=correct), None, torch.ones(4, 4, dtype=torch.bool),
                                   opts("mean_range", metric="acc", lo=0.2, hi=0.8))
    assert dec.statistic.tolist() == [1.0, 0.25, 0.75, 0.0]
    assert dec.keep.tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="lo must be < hi"):
        opts("mean_range", lo=1.0, hi=0.5)


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("name", ["query", "dynamic_sampling", "mean_range"])
def test_option_files_nest_under_their_name_and_validate(name):
    from pathlib import Path

    import drox

    raw = OmegaConf.to_container(OmegaConf.load(Path(drox.__file__).parent / "conf" / "filter" / f"{name}.yaml"))
    assert list(raw) == [name]
    cfg = FILTERS.parse(name, raw[name])
    assert cfg == FILTERS[name].options()  # the files hold the dataclass defaults


def test_filters_compose_together_from_the_command_line():
    from drox.cli.main import compose

    cfg = compose(["model=tiny", "+filter=[query,dynamic_sampling,mean_range]", "filter.query.threshold=0.2",
                   "filter.dynamic_sampling.metric=score", "+filter.query.variance.reward_policy=reference"])
    raw = OmegaConf.to_container(cfg.filter, resolve=True)
    assert set(raw) == {"query", "dynamic_sampling", "mean_range"}
    q = FILTERS.parse("query", raw["query"])
    assert q.threshold == 0.2 and q.variance == {"reward_policy": "reference"}
    assert FILTERS.parse("dynamic_sampling", raw["dynamic_sampling"]).metric == "score"
