"""Monte-Carlo step values (``reward.prm kind=monte_carlo``; Math-Shepherd arXiv 2312.08935 §3.3): by hand with a
character tokenizer and a scripted engine, the engine's ``generate_ids`` against ``generate``, and two training
steps on the tiny model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from doubles import CharTok, make_batch

from drox.rewards import prm as prm_mod
from drox.rewards.base import ScoringContext

BOX5 = "\n\\boxed{5}"
BOX4 = "\n\\boxed{4}"
# two rollouts of prompt "p" (answer 5): three steps (right) and two steps (wrong)
TEXTS = ["1+1=2\n2+3=5" + BOX5, "1+1=3" + "\n\\boxed{3}"]
# the completions the scripted engine returns from each step's end (prefix text -> 4 completions)
SCRIPT = {
    "1+1=2": [BOX5, BOX4, BOX5, BOX5],                     # 3 of 4 accepted: soft 0.75, hard 1
    "1+1=2\n2+3=5": [BOX5, BOX5, BOX5, BOX5],              # 4 of 4: 1.0
    "1+1=3": [BOX4, "\n\\boxed{3}", BOX4, "\n nothing"],   # 0 of 4: 0.0
}


class ScriptedEngine:
    """generate_ids(prefixes, k): each prefix's scripted completions, keyed by the prefix's response part."""

    def __init__(self):
        self.calls = []

    def generate_ids(self, prefixes, k, *, max_new_tokens, temperature=1.0, top_p=1.0, seed=None):
        self.calls.append((prefixes, k, max_new_tokens, temperature))
        texts = []
        for ids in prefixes:
            assert ids[0] == ord("p")  # the prompt's tokens come first
            texts += SCRIPT["".join(map(chr, ids[1:]))][:k]
        mask = torch.ones(len(texts), 3)
        return SimpleNamespace(texts=texts, response_mask=mask)


def verifier(texts, rows):
    return SimpleNamespace(correct=[t.rstrip().endswith("\\boxed{" + r["answer"] + "}") for t, r in zip(texts, rows)],
                           extracted=[None] * len(texts), timeouts=0)


def make_ctx(engine, **cfg_kw):
    batch = make_batch(CharTok(), ["p"], TEXTS, 2)
    ctx = ScoringContext(batch=batch, rows=[{"prompt": "p", "answer": "5"}], task=SimpleNamespace(name="t",
                         verifier=verifier), tokenizer=CharTok(), engine=engine, max_new_tokens=16, seed=3, step=2)
    return ctx, prm_mod.PRMConfig(kind="monte_carlo", **cfg_kw)


def test_mc_value_soft_and_hard_by_hand():
    assert prm_mod.mc_value([True, False, True, True]) == 0.75
    assert prm_mod.mc_value([True, False, True, True], "hard") == 1.0
    assert prm_mod.mc_value([False, False], "hard") == 0.0
    with pytest.raises(ValueError):
        prm_mod.mc_value([])


def test_step_values_are_the_accepted_fraction_and_the_last_step_is_the_outcome():
    engine = ScriptedEngine()
    ctx, cfg = make_ctx(engine)
    per_row = prm_mod.monte_carlo_step_scores(ctx, cfg)
    # step ends (characters): "1+1=2" ends at 5, "2+3=5" at 11, the box at len(text)
    assert per_row == [[(0.75, 5), (1.0, 11), (1.0, len(TEXTS[0]))], [(0.0, 5), (0.0, len(TEXTS[1]))]]
    (prefixes, k, cap, temperature), = engine.calls  # one batched call for every step of every rollout
    assert k == 4 and cap == 16 and temperature == 1.0
    assert ["".join(map(chr, p)) for p in prefixes] == ["p1+1=2", "p1+1=2\n2+3=5", "p1+1=3"]
    assert ctx.counters["mc_rollouts"] == 12 and ctx.counters["mc_tokens"] == 36


def test_hard_estimate_min_aggregation_and_dense_placement():
    ctx, cfg = make_ctx(ScriptedEngine(), mc_estimate="hard")
    assert prm_mod.monte_carlo_step_scores(ctx, cfg)[0][0] == (1.0, 5)
    ctx, cfg = make_ctx(ScriptedEngine(), aggregation="min")
    out = prm_mod.prm(ctx, cfg)
    assert out.seq.tolist() == [[0.75, 0.0]]
    ctx, cfg = make_ctx(ScriptedEngine(), dense=True)
    out = prm_mod.prm(ctx, cfg)
    token, tmask = out.token[0], out.token_mask[0]
    assert tmask[0].nonzero().flatten().tolist() == [4, 10, len(TEXTS[0]) - 1]  # the steps' last characters
    assert token[0, [4, 10]].tolist() == [0.75, 1.0] and tmask[1].nonzero().flatten().tolist() == [4, 14]


def test_an_engine_that_cannot_continue_token_prefixes_is_one_clear_error():
    ctx, cfg = make_ctx(SimpleNamespace(generate=lambda *a, **k: None))
    with pytest.raises(ValueError, match="use rollout.backend=hf"):
        prm_mod.monte_carlo_step_scores(ctx, cfg)


@pytest.mark.parametrize("key, value, message", [("mc_samples", 0, "mc_samples must be >= 1"),
                                                 ("mc_temperature", 0.0, "mc_temperature must be > 0")])
def test_bad_options(key, value, message):
    with pytest.raises(ValueError, match=message):
        prm_mod.PRMConfig(kind="monte_carlo", **{key: value})


def test_another_backend_is_a_config_error():
    from typer.testing import CliRunner

    from drox.cli.main import app

    result = CliRunner().invoke(app, ["config", "model=tiny", "+reward=prm", "reward.prm.kind=monte_carlo",
                                      "rollout.backend=vllm"])
    assert result.exit_code == 2
    assert "reward.prm kind=monte_carlo samples from token prefixes, which rollout.backend=vllm cannot" in result.output


def test_generate_ids_from_a_prompts_tokens_samples_what_generate_samples(tiny_policy, tiny_cfg):
    """The same sampler and seed: continuing the encoded prompt gives generate's tokens and texts exactly."""
    from drox.rollout.hf import build_engine

    model, tokenizer = tiny_policy
    engine = build_engine(tiny_cfg.rollout, model, tokenizer, tiny_cfg.model)
    prompt = "What is 2 + 3?"
    a = engine.generate([prompt], 3, max_new_tokens=6, temperature=1.0, seed=11)
    ids, mask = engine.encode_prompts([prompt])
    b = engine.generate_ids([ids[0][mask[0].bool()].tolist()], 3, max_new_tokens=6, temperature=1.0, seed=11)
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert torch.allclose(a.logprobs, b.logprobs)


def test_monte_carlo_values_train_on_the_tiny_model(compose_cfg, tmp_path):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("rollout.max_new_tokens=8", f"run_dir={tmp_path}")
    cfg.reward = {"prm": {"kind": "monte_carlo", "mc_samples": 2, "step_separator": " "}}
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        # every step but each rollout's last gets mc_samples = 2 completions; 4 rollouts per step
        non_last_steps = 4 * (r["reward/prm/steps_mean"] - 1 + r["reward/prm/no_step_frac"])
        assert r.get("scoring/mc_rollouts", 0) == pytest.approx(2 * non_last_steps)
        assert 0.0 <= r["reward/prm/aggregate_mean"] <= 1.0
