"""rollout.backend=vllm against a real vLLM engine: vLLM's CPU backend (the community ``vllm-cpu`` build, docs/vllm.md)
with the embedded SmolLM2-135M's real weights. ``make test-vllm``; skipped where the installed vLLM is not a CPU
build (the stand-in tests in test_vllm_engine.py cover the conversions there).

What only a real engine can get wrong, and these tests would catch: weights that do not reach the kernels (the CPU
backend repacks every linear layer after loading and keeps a packed copy of the tied LM head), a push that does not
happen, seeds that do not reproduce, R3 scores that differ from the trainer's, the trainer's thread count taken
over by the engine. One engine for the module (vLLM is built in-process once); the test that changes the weights
runs last."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="the vLLM suite runs in its own environment: make test-vllm")

from drox.config import vllm_cpu_build  # noqa: E402

if not vllm_cpu_build():
    pytest.skip("the installed vLLM is not a CPU build (make test-vllm installs vllm-cpu)", allow_module_level=True)

from drox.models.forward import response_logprobs  # noqa: E402
from drox.rollout.vllm_engine import VLLMRolloutEngine  # noqa: E402

LOGPROB_TOL = 1e-3
"""Trainer vs engine log-prob of the same sampled token, same fp32 weights, other kernels (measured: about 4e-5)."""
PROMPTS = ["What is 12 + 7?", "What is 40 - 15?"]


@pytest.fixture(scope="module")
def real_engine():
    from drox.cli.main import compose
    from drox.models.loading import load_policy

    cfg = compose(["model=smollm2-135m", "device=cpu", "rollout.backend=vllm", "rollout.vllm.cpu_kv_cache_gib=1",
                   "rollout.vllm.dtype=float32"])  # the trainer's precision: auto would take the config's bfloat16
    model, tok = load_policy(cfg.model, "cpu")
    model = copy.deepcopy(model).eval()
    torch.set_num_threads(2)
    engine = VLLMRolloutEngine(model, tok, cfg.model, cfg.rollout)
    yield model, tok, cfg, engine
    engine.close()


def _trainer_logprobs(model, batch):
    with torch.no_grad():
        lp, _ = response_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    return lp * batch.response_mask


def test_the_engine_runs_on_cpu_without_sleep_and_keeps_the_trainers_threads(real_engine):
    _, _, _, engine = real_engine
    assert engine.on_cpu and not engine.sleeps  # the CPU backend has no sleep mode
    assert torch.get_num_threads() == 2  # what the trainer set before the engine started
    torch.set_num_threads(1)  # and set_num_threads still works (vLLM's CPU worker replaces it with a no-op)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)


def test_the_trainers_logprobs_of_vllms_tokens_are_vllms(real_engine):
    model, tok, _, engine = real_engine
    batch = engine.generate(PROMPTS, 4, max_new_tokens=24, temperature=1.0, seed=0)
    assert batch.num_rows == 8 and int(batch.response_mask.sum()) > 8
    gap = (_trainer_logprobs(model, batch) - batch.logprobs).abs().max().item()
    assert gap < LOGPROB_TOL, gap
    # real weights: SmolLM2 answers in words, not the dummy initialisation's token salad
    assert any(any(ch.isdigit() for ch in text) for text in batch.texts), batch.texts


def test_per_sample_seeds_give_the_same_completions_twice(real_engine):
    _, _, _, engine = real_engine
    a = engine.generate(PROMPTS, 4, max_new_tokens=16, seed=3)
    b = engine.generate(PROMPTS, 4, max_new_tokens=16, seed=3)
    c = engine.generate(PROMPTS, 4, max_new_tokens=16, seed=4)
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert not torch.equal(a.response_ids, c.response_ids)


def test_r3_scores_through_prompt_logprobs_equal_the_trainers(real_engine):
    from types import SimpleNamespace

    from drox.rewards import variance as var_mod
    from drox.rewards.base import ScoringContext
    from drox.signals import r3 as r3_mod

    model, tok, _, engine = real_engine
    batch = engine.generate(["Revise: the cat sat.", "Revise: a dog ran."], 3, max_new_tokens=12, seed=1)
    rows = [{"prompt": "Revise: the cat sat.", "answer": "The cat sat down."},
            {"prompt": "Revise: a dog ran.", "answer": "A dog ran away."}]

    def ctx(scorer):
        return ScoringContext(batch=batch, rows=rows, task=SimpleNamespace(name="revise", verifier=None),
                              policy=model, tokenizer=tok, token_scorer=scorer)

    plain, through = ctx(None), ctx(engine.score_tokens)
    a, b = var_mod.variance(plain, var_mod.VarianceConfig()), var_mod.variance(through, var_mod.VarianceConfig())
    assert through.counters == {"engine_passes": 1}
    sa, sb = r3_mod.VarianceStats.from_extras(a.extras), r3_mod.VarianceStats.from_extras(b.extras)
    assert (sa.ref_logprobs - sb.ref_logprobs).abs().max().item() < LOGPROB_TOL
    assert torch.equal(sa.ref_ranks, sb.ref_ranks)
    assert torch.allclose(a.seq, b.seq, atol=LOGPROB_TOL)


def test_a_weight_push_reaches_the_kernels_and_a_stale_engine_would_fail(real_engine):
    """Last in the module: it changes the weights. Every linear layer and the tied head must change in vLLM."""
    model, tok, _, engine = real_engine
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02 * p.abs().mean())
    stale = engine.generate(PROMPTS, 4, max_new_tokens=16, seed=5)  # no policy_changed(): the old weights
    assert (_trainer_logprobs(model, stale) - stale.logprobs).abs().max().item() > 20 * LOGPROB_TOL
    engine.policy_changed()
    fresh = engine.generate(PROMPTS, 4, max_new_tokens=16, seed=5)
    gap = (_trainer_logprobs(model, fresh) - fresh.logprobs).abs().max().item()
    assert gap < LOGPROB_TOL, gap


def _drox(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # the module's engine holds its port
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "drox.cli.main", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_drox_train_and_eval_through_the_real_engine(tmp_path):
    """End to end in its own processes (one vLLM per process): 2 steps of LoRA training on SmolLM2 with DRO's R3
    scored through prompt_logprobs, and drox eval through the engine."""
    run = tmp_path / "run"
    out = _drox("train", "model=smollm2-135m", "device=cpu", "rollout.backend=vllm", "rollout.vllm.cpu_kv_cache_gib=1",
                "rollout.vllm.dtype=float32",
                "task=revise", "+reward=variance", "trainer.steps=2", "trainer.prompts_per_step=2",
                "trainer.samples_per_prompt=4", "rollout.max_new_tokens=24", "trainer.lora_r=8", "trainer.lr=1e-3",
                "eval.before_training=false", "trainer.eval_every=0", "logger.wandb_mode=disabled",
                f"run_dir={run}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # step 2 samples from the LoRA weights step 1 made, merged and pushed
        assert abs(r["tis/mismatch_kl"]) < 1e-3, r["tis/mismatch_kl"]
        assert r["scoring/engine_passes"] == 1
    ev = _drox("eval", "model=smollm2-135m", "rollout.backend=vllm", "device=cpu", "rollout.vllm.cpu_kv_cache_gib=1",
               "--n", "2", "--num-problems", "4", "--pass-at-k", "1,2", "--out", str(tmp_path / "eval"), cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["num_problems"] == 4 and summary["n"] == 2 and 0 <= summary["pass@1"] <= summary["pass@2"] <= 1
