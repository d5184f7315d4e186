"""The generative step judge (``reward.prm kind=generative``; rewards/prm_judge.py): the verdict probability by
hand, the judge's prompts and the position its verdict is read at (a position-lookup LM), the written
verification, the options, and two training steps on the tiny model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from doubles import CharTok, PosLM, encode_left_padded, make_batch

from drox.rewards import prm as prm_mod
from drox.rewards import prm_judge
from drox.rewards.base import ScoringContext

V = 128
# logits at input position p: z('Y') - z('N') = 0.01 p, everything else far below
TABLE = torch.full((80, V), -30.0)
TABLE[:, ord("Y")] = 0.01 * torch.arange(80, dtype=torch.float32)
TABLE[:, ord("N")] = 0.0


class Engine:
    def __init__(self):
        self.generated = []

    def encode_prompts(self, prompts):
        return encode_left_padded(prompts)

    def generate(self, prompts, n, *, max_new_tokens, temperature=1.0, **kw):
        self.generated.append((list(prompts), max_new_tokens, temperature))
        return SimpleNamespace(texts=["ab"] * len(prompts), response_mask=torch.ones(len(prompts), 2))


def make_ctx(engine=None, reference=None):
    batch = make_batch(CharTok(), ["q"], ["1+1=2\n2+2=4", "3+3=6"], 2)
    return ScoringContext(batch=batch, rows=[{"prompt": "q", "answer": "4"}], task=SimpleNamespace(name="t"),
                          policy=PosLM(TABLE), tokenizer=CharTok(), engine=engine or Engine(), reference=reference)


CFG = dict(kind="generative", judge_template="{question}|{steps}", verdict_prefix=":", verdict_good="Y",
           verdict_bad="N")


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_verdict_probability_by_hand():
    logits = torch.zeros(2, V)
    logits[0, ord("Y")], logits[1, ord("N")] = 2.0, 1.0
    got = prm_judge.verdict_probability(logits, ord("Y"), ord("N")).tolist()
    assert got == pytest.approx([math.e ** 2 / (math.e ** 2 + 1), 1 / (1 + math.e)])


def test_each_step_is_judged_on_the_solution_up_to_it_and_read_at_the_verdict():
    """Prompts "q|1+1=2" (7 chars), "q|1+1=2\\n2+2=4" (13), "q|3+3=6" (7); the judge's answer ":Y" has L = 2
    tokens, so the verdict (the logits predicting "Y") sits at input position P + L - 2 = P: sigmoid(0.01 P)."""
    assert prm_judge.judge_prompts("q", ["1+1=2", "2+2=4"], "{question}|{steps}") == ["q|1+1=2", "q|1+1=2\n2+2=4"]
    ctx = make_ctx()
    per_row = prm_judge.generative_step_scores(ctx, prm_mod.PRMConfig(**CFG))
    assert [[end for _, end in r] for r in per_row] == [[5, 11], [5]]
    assert [s for r in per_row for s, _ in r] == pytest.approx([sig(0.07), sig(0.13), sig(0.07)], abs=1e-6)
    assert ctx.counters["forward_passes"] == 1
    out = prm_mod.prm(make_ctx(), prm_mod.PRMConfig(aggregation="min", **CFG))
    assert out.seq.flatten().tolist() == pytest.approx([sig(0.07), sig(0.07)], abs=1e-6)


def test_a_written_verification_comes_before_the_verdict():
    """With 2 tokens of verification ("ab") the answer is "ab:Y", L = 4: the verdict moves to position P + 2."""
    engine = Engine()
    ctx = make_ctx(engine)
    per_row = prm_judge.generative_step_scores(ctx, prm_mod.PRMConfig(judge_verify_tokens=2, **CFG))
    assert [s for r in per_row for s, _ in r] == pytest.approx([sig(0.09), sig(0.15), sig(0.09)], abs=1e-6)
    (prompts, cap, temperature), = engine.generated
    assert prompts == ["q|1+1=2", "q|1+1=2\n2+2=4", "q|3+3=6"] and cap == 2 and temperature == 0.0
    assert ctx.counters["judge_tokens"] == 6


def test_the_initial_policy_can_judge():
    flat = torch.full((80, V), -30.0)
    flat[:, ord("Y")], flat[:, ord("N")] = 1.0, 1.0  # indifferent: every step 0.5
    ctx = make_ctx(reference=lambda: PosLM(flat))
    per_row = prm_judge.generative_step_scores(ctx, prm_mod.PRMConfig(judge="initial", **CFG))
    assert [s for r in per_row for s, _ in r] == pytest.approx([0.5, 0.5, 0.5])


def test_bad_options():
    with pytest.raises(ValueError, match="must contain \\{steps\\}"):
        prm_mod.PRMConfig(kind="generative", judge_template="{question}")
    with pytest.raises(ValueError, match="is 2 tokens for the judge's tokenizer"):
        prm_judge.generative_step_scores(make_ctx(), prm_mod.PRMConfig(**{**CFG, "verdict_good": "ok"}))
    from typer.testing import CliRunner

    from drox.cli.main import app

    result = CliRunner().invoke(app, ["config", "model=tiny", "+reward=prm", "reward.prm.kind=generative",
                                      "reward.prm.judge=initial", "reward.prm.judge_verify_tokens=8"])
    assert result.exit_code == 2 and "judge=initial cannot write a verification" in result.output


def test_generative_judge_trains_on_the_tiny_model(compose_cfg, tmp_path):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("rollout.max_new_tokens=8", f"run_dir={tmp_path}")
    cfg.reward = {"prm": {"kind": "generative", "judge_verify_tokens": 3, "step_separator": " "}}
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= r["reward/prm/aggregate_mean"] <= 1.0
        if r["reward/prm/no_step_frac"] < 1.0:
            assert r["scoring/forward_passes"] >= 1 and r["scoring/judge_tokens"] > 0
