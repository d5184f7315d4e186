"""Pairwise self-judgment (``+reward=pairwise``; rewards/pairwise.py) and the separate judge LM (``judge=model``) it
shares with the generative step judge (rewards/prm_judge.py): the matchups, win probabilities and Copeland scores
by hand, the judge's prompts in both orders on a position-lookup LM, the options, and two training steps on the
tiny model with a judge loaded from a folder."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from doubles import CharTok, PosLM, encode_left_padded, make_batch

from drox.rewards import pairwise as pw
from drox.rewards.base import ScoringContext

V = 128


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_matchups_round_robin_and_cyclic():
    assert pw.matchups(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert pw.matchups(4, opponents=1) == [(0, 1), (0, 3), (1, 2), (2, 3)]  # i with i+1 mod 4
    assert pw.matchups(4, opponents=3) == pw.matchups(4)  # k >= G - 1 is the round robin


def test_win_probability_averages_both_orders():
    """v(i, j) = 0.8 (i shown first wins), v(j, i) = 0.4 (j shown first wins): P_ij = (0.8 + 1 - 0.4) / 2 = 0.7;
    a judge that always prefers the first shown (0.9 both ways) gives 0.5: no preference survives."""
    got = pw.win_probabilities(torch.tensor([0.8, 0.9]), torch.tensor([0.4, 0.9])).tolist()
    assert got == pytest.approx([0.7, 0.5])
    assert pw.win_probabilities(torch.tensor([0.8])).tolist() == pytest.approx([0.8])


def test_equal_verdicts_in_both_orders_are_exactly_a_tie():
    """Issue 28: ``(v + 1 - v) / 2`` in float32 is not exactly 0.5 for about a quarter of the v in [0, 1), and
    Copeland's sign turned that 3e-8 into a full win. Equal verdicts must give exactly 0.5, for every float32 v."""
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.rand(200_000, generator=g), torch.linspace(0, 1, 10_001),
                   torch.tensor([0.0, 1.0, 1e-30, 1 - 2**-24, 0.1, 1 / 3])])
    p = pw.win_probabilities(v, v.clone())
    assert p.dtype == torch.float32 and bool((p == 0.5).all()), v[p != 0.5][:5].tolist()
    assert bool(((v + 1.0 - v) / 2.0 != 0.5).any())  # the old formula: the values this test is about exist
    # and P_ji = 1 - P_ij still holds up to rounding for unequal verdicts
    w = torch.rand(v.shape, generator=g)
    assert torch.allclose(pw.win_probabilities(v, w) + pw.win_probabilities(w, v), torch.ones_like(v), atol=1e-6)


def test_copeland_and_win_rate_of_a_tie():
    """A tie (P = 0.5 exactly) counts 0 in Copeland (module docstring: "a tie counts 0") and 0.5 in the win rate."""
    for G in (2, 3, 4):
        pairs = pw.matchups(G)
        tie = pw.win_probabilities(torch.full((len(pairs),), 0.1), torch.full((len(pairs),), 0.1))
        assert pw.pairwise_rewards(G, pairs, tie, "copeland").tolist() == [0.0] * G
        assert pw.pairwise_rewards(G, pairs, tie).tolist() == [0.5] * G


def test_win_rate_and_copeland_by_hand():
    """G = 3, P_01 = 0.7, P_02 = 0.9, P_12 = 0.4 (so P_10 = 0.3, P_20 = 0.1, P_21 = 0.6).
    win_rate: r0 = (0.7 + 0.9)/2 = 0.8, r1 = (0.3 + 0.4)/2 = 0.35, r2 = (0.1 + 0.6)/2 = 0.35.
    copeland (wins minus losses): r0 = (1 + 1)/2 = 1, r1 = (-1 - 1)/2 = -1, r2 = (-1 + 1)/2 = 0; a tie (0.5) is 0.
    One cyclic opponent (i meets i+1 mod 3): r0 = P_01 = 0.7, r1 = P_12 = 0.4, r2 = P_20 = 0.1."""
    pairs = pw.matchups(3)
    p = torch.tensor([0.7, 0.9, 0.4])
    assert pw.pairwise_rewards(3, pairs, p).tolist() == pytest.approx([0.8, 0.35, 0.35])
    assert pw.pairwise_rewards(3, pairs, p, "copeland").tolist() == pytest.approx([1.0, -1.0, 0.0])
    assert pw.pairwise_rewards(3, pairs, torch.tensor([0.5, 0.9, 0.4]), "copeland").tolist() == pytest.approx(
        [0.5, -0.5, 0.0])
    cyclic = pw.matchups(3, opponents=1)
    assert cyclic == [(0, 1), (0, 2), (1, 2)]
    got = pw.pairwise_rewards(3, cyclic, torch.tensor([0.7, 0.9, 0.4]), opponents=1).tolist()
    assert got == pytest.approx([0.7, 0.4, 0.1])


class Engine:
    def encode_prompts(self, prompts):
        return encode_left_padded(prompts)


# logits at input position p: z('A') - z('B') = 0.01 p, everything else far below
TABLE = torch.full((80, V), -30.0)
TABLE[:, ord("A")] = 0.01 * torch.arange(80, dtype=torch.float32)
TABLE[:, ord("B")] = 0.0
CFG = dict(judge_template="{question}|{a}|{b}", verdict_prefix=":", verdict_a="A", verdict_b="B")


def make_ctx(texts, G, reference=None):
    batch = make_batch(CharTok(), ["q"], texts, G)
    return ScoringContext(batch=batch, rows=[{"prompt": "q", "answer": "4"}], task=SimpleNamespace(name="t"),
                          policy=PosLM(TABLE), tokenizer=CharTok(), engine=Engine(), reference=reference)


def test_the_judge_reads_each_pair_in_both_orders():
    """Prompt "q|x|yy" (6 chars) and "q|yy|x" (6): the answer ":A" has 2 tokens, so the verdict sits at position
    P = 6: v = sigmoid(0.06) in both orders, a judge that favours the first shown. Both orders cancel it (0.5 each,
    consistency 0); with one order response 0 (always shown first) wins with sigmoid(0.06)."""
    out = pw.pairwise(make_ctx(["x", "yy"], 2), pw.PairwiseConfig(**CFG))
    assert out.seq.flatten().tolist() == pytest.approx([0.5, 0.5])
    assert out.diagnostics["judged_pairs"] == 1 and out.diagnostics["order_consistency"] == 0.0
    assert out.diagnostics["first_shown_wins"] == pytest.approx(sig(0.06), abs=1e-6)
    one = pw.pairwise(make_ctx(["x", "yy"], 2), pw.PairwiseConfig(both_orders=False, **CFG))
    assert one.seq.flatten().tolist() == pytest.approx([sig(0.06), 1 - sig(0.06)], abs=1e-6)


def test_identical_responses_get_identical_rewards_end_to_end():
    """Issue 28 end to end: two identical responses ["5", "5"], a judge with z('A') - z('B') = 0.1 everywhere, so the
    same verdict v = sigmoid(0.1) in both orders; with the old formula this v gave Copeland rewards [-1, +1]."""
    flat = torch.full((80, V), -30.0)
    flat[:, ord("A")], flat[:, ord("B")] = 0.1, 0.0
    for aggregation, expected in (("copeland", [0.0, 0.0]), ("win_rate", [0.5, 0.5])):
        ctx = make_ctx(["5", "5"], 2)
        ctx.policy = PosLM(flat)
        out = pw.pairwise(ctx, pw.PairwiseConfig(aggregation=aggregation, **CFG))
        assert out.seq.flatten().tolist() == expected, aggregation
        assert out.diagnostics["first_shown_wins"] == pytest.approx(sig(0.1), abs=1e-6)


def test_a_judge_that_favours_the_second_shown_and_the_initial_policy_judge():
    """The initial policy as judge (reference): z('A') = 0, z('B') = 1 everywhere, so v = sigmoid(-1) in both
    orders; again 0.5 with both orders, and 1 - ... with one: response 0 gets sigmoid(-1), response 1 the rest."""
    flat = torch.full((80, V), -30.0)
    flat[:, ord("A")], flat[:, ord("B")] = 0.0, 1.0
    ctx = make_ctx(["x", "yy", "z"], 3, reference=lambda: PosLM(flat))
    out = pw.pairwise(ctx, pw.PairwiseConfig(judge="initial", both_orders=False, **CFG))
    # pairs (0,1), (0,2), (1,2), first shown wins with sigmoid(-1) = s: r0 = s, r1 = (1 - s + s)/2, r2 = 1 - s
    s = sig(-1.0)
    assert out.seq.flatten().tolist() == pytest.approx([s, 0.5, 1 - s], abs=1e-6)
    assert ctx.counters["forward_passes"] == 1 and out.diagnostics["judged_pairs"] == 3


def test_bad_options():
    with pytest.raises(ValueError, match="must contain \\{b\\}"):
        pw.PairwiseConfig(judge_template="{question} {a}")
    with pytest.raises(ValueError, match="reward.pairwise.verdict_a='AA' is 2 tokens for the judge's tokenizer"):
        pw.pairwise(make_ctx(["x", "yy"], 2), pw.PairwiseConfig(**{**CFG, "verdict_a": "AA"}))
    from typer.testing import CliRunner

    from drox.cli.main import app

    for extra, message in ((["reward.pairwise.judge=model"], "judge=model needs reward.pairwise.judge_path"),
                           (["trainer.samples_per_prompt=1", "trainer.advantage.estimator=none"],
                            "set trainer.samples_per_prompt >= 2"),
                           (["reward.pairwise.aggregation=borda"], "aggregation")):
        result = CliRunner().invoke(app, ["config", "model=tiny", "+reward=pairwise", *extra])
        assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(app, ["config", "model=tiny", "+reward=prm", "reward.prm.kind=generative",
                                      "reward.prm.judge=model"])
    assert result.exit_code == 2 and "judge=model needs reward.prm.judge_path" in result.output


def test_pairwise_and_step_judges_from_a_separate_model_train_on_the_tiny_model(compose_cfg, tiny_policy, tmp_path):
    """A judge LM saved to a folder (the tiny model with other weights) judges both the pairs and the steps: it
    is loaded once (one model in the scoring state), frozen, and costs judge passes every step."""
    from drox.models.loading import build_tiny
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    _, tok = tiny_policy
    judge_cfg = compose_cfg("model.init_seed=7").model
    judge_dir = tmp_path / "judge"
    build_tiny(judge_cfg, tok).save_pretrained(judge_dir)
    tok.save_pretrained(judge_dir)
    run = tmp_path / "run"
    cfg = compose_cfg("rollout.max_new_tokens=8", "trainer.samples_per_prompt=4", f"run_dir={run}")
    cfg.reward = {"pairwise": {"judge": "model", "judge_path": str(judge_dir), "opponents": 1},
                  "prm": {"kind": "generative", "judge": "model", "judge_path": str(judge_dir),
                          "judge_verify_tokens": 2, "step_separator": " "}}
    loop.run_training(cfg, run, progress=False)
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    G = int(cfg.trainer.samples_per_prompt)
    for r in rows:
        assert 0.0 < r["reward/pairwise/first_shown_wins"] < 1.0
        assert r["reward/pairwise/judged_pairs"] == int(cfg.trainer.prompts_per_step) * G  # G = 4, one cyclic
        #   opponent each: the pairs (0,1), (1,2), (2,3), (0,3) per group
        assert r["scoring/forward_passes"] >= 1
