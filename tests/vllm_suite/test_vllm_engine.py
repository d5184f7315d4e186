"""rollout.backend=vllm against vLLM's real Python classes, on CPU (``make test-vllm``; skipped where vLLM is not
installed). vLLM's SamplingParams / RequestOutput / CompletionOutput / Logprob / FlatLogprobs are the real ones;
``vllm.LLM`` itself needs a GPU and is replaced by tests/vllm_suite/standin.py, which answers with those real classes."""

import math
import sys
from pathlib import Path

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="the vLLM suite runs in its own environment: make test-vllm")

from vllm import CompletionOutput, RequestOutput, SamplingParams  # noqa: E402
from vllm.logprobs import FlatLogprobs, Logprob  # noqa: E402

from drox.rollout.vllm_engine import (  # noqa: E402
    VLLMRolloutEngine, hf_weight_items, prompt_logprobs_to_tensor, sampling_params, scoring_params, to_rollout_batch)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the stand-in beside this file
from standin import CPUStandInLLM  # noqa: E402

# ------------------------------------------------------------------------------------------------ parameters


def test_sampling_params_from_drox_settings_are_vllms_own():
    sp = sampling_params(SamplingParams, group_size=4, max_new_tokens=16, temperature=0.7, top_p=0.9, seed=10,
                         prompt_index=2, stop_token_ids=[2, 7])
    assert isinstance(sp, SamplingParams)
    assert (sp.n, sp.max_tokens, sp.seed, sp.logprobs) == (4, 16, 18, 0)  # seed + q * G: its own seeds per prompt
    assert sp.temperature == pytest.approx(0.7) and sp.top_p == pytest.approx(0.9)
    assert list(sp.stop_token_ids) == [2, 7] and sp.skip_special_tokens
    greedy = sampling_params(SamplingParams, group_size=1, max_new_tokens=4, temperature=0.0, top_p=1.0, seed=None,
                             prompt_index=0, stop_token_ids=[2])
    assert greedy.temperature == 0.0 and greedy.seed is None
    sc = scoring_params(SamplingParams)
    assert (sc.max_tokens, sc.prompt_logprobs, sc.logprobs) == (1, 0, None)


# ------------------------------------------------------------------------------------------------ conversions


def _completion(index, ids, lps, finish, flat=False):
    entries = [{t: Logprob(logprob=lp, rank=1)} for t, lp in zip(ids, lps)]
    if flat:
        flat_lp = FlatLogprobs()
        flat_lp.extend(entries)
        entries = flat_lp
    return CompletionOutput(index=index, text=f"c{index}", token_ids=ids, cumulative_logprob=sum(lps),
                            logprobs=entries, finish_reason=finish)


@pytest.mark.parametrize("flat", [False, True])
def test_request_outputs_to_a_rollout_batch_by_hand(flat):
    outs = [
        RequestOutput(request_id="0", prompt=None, prompt_token_ids=[5, 6, 7], prompt_logprobs=None, finished=True,
                      outputs=[_completion(1, [11, 12, 13], [-0.1, -0.2, -0.3], "length", flat),  # out of order
                               _completion(0, [9, 2], [-1.0, -0.5], "stop", flat)]),
        RequestOutput(request_id="1", prompt=None, prompt_token_ids=[8], prompt_logprobs=None, finished=True,
                      outputs=[_completion(0, [2], [-2.0], "stop", flat), _completion(1, [4, 4], [-3.0, -4.0],
                                                                                     "length", flat)]),
    ]
    b = to_rollout_batch(outs, group_size=2, pad_id=0, temperature=0.7, prompts=["p", "q"])
    assert b.prompt_ids.tolist() == [[5, 6, 7], [5, 6, 7], [0, 0, 8], [0, 0, 8]]
    assert b.prompt_mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert b.response_ids.tolist() == [[9, 2, 0], [11, 12, 13], [2, 0, 0], [4, 4, 0]]
    assert b.response_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]]  # the EOS token (2) is inside
    assert torch.allclose(b.logprobs, torch.tensor([[-1.0, -0.5, 0], [-0.1, -0.2, -0.3], [-2.0, 0, 0],
                                                    [-3.0, -4.0, 0]]))
    assert b.finish_reason == ["eos", "length", "eos", "length"]
    assert b.texts == ["c0", "c1", "c0", "c1"] and b.group_size == 2 and b.temperature == 0.7
    assert b.entropies.abs().sum() == 0 and b.prompts == ["p", "q"]


def test_a_request_with_too_few_completions_or_no_logprobs_is_refused():
    short = RequestOutput(request_id="7", prompt=None, prompt_token_ids=[1], prompt_logprobs=None, finished=True,
                          outputs=[_completion(0, [2], [-1.0], "stop")])
    with pytest.raises(ValueError, match="1 completions for request 7, expected n=2"):
        to_rollout_batch([short], group_size=2, pad_id=0, temperature=1.0)
    bare = CompletionOutput(index=0, text="", token_ids=[3], cumulative_logprob=None, logprobs=None,
                            finish_reason="length")
    no_lp = RequestOutput(request_id="8", prompt=None, prompt_token_ids=[1], prompt_logprobs=None, finished=True,
                          outputs=[bare])
    with pytest.raises(ValueError, match="logprobs=0"):
        to_rollout_batch([no_lp], group_size=1, pad_id=0, temperature=1.0)


def test_prompt_logprobs_give_each_response_tokens_logprob_and_rank():
    # row 0: prompt [1, 2] + response [3, 4]; row 1: prompt [1] + response [5]
    plp0 = [None, {2: Logprob(-0.7, rank=2)}, {3: Logprob(-1.5, rank=4)}, {4: Logprob(-0.2, rank=1)}]
    plp1 = [None, {5: Logprob(-3.0, rank=9)}]
    outs = [RequestOutput(request_id=str(i), prompt=None, prompt_token_ids=ids, prompt_logprobs=plp, finished=True,
                          outputs=[])
            for i, (ids, plp) in enumerate([([1, 2, 3, 4], plp0), ([1, 5], plp1)])]
    got = prompt_logprobs_to_tensor(outs, [2, 1], [[3, 4], [5]])
    assert torch.allclose(got, torch.tensor([[[-1.5, 4.0], [-0.2, 1.0]], [[-3.0, 9.0], [0.0, 0.0]]]))
    with pytest.raises(ValueError, match="prompt_logprobs=0"):
        prompt_logprobs_to_tensor(outs, [1, 1], [[3, 4], [5]])


# ------------------------------------------------------------------------------------------------ the engine


@pytest.fixture
def vllm_setup(tiny_policy, compose_cfg):
    import copy

    model, tok = tiny_policy
    model = copy.deepcopy(model)
    cfg = compose_cfg("rollout.backend=vllm")
    llm = CPUStandInLLM(model, tok)
    return model, tok, cfg, llm


def _weights_equal(llm, model):
    mine = dict(llm.model.named_parameters())
    return all(torch.equal(mine[n], w) for n, w in hf_weight_items(model))


def test_engine_pushes_weights_sleeps_and_samples(vllm_setup):
    from drox.models.forward import response_logprobs

    model, tok, cfg, llm = vllm_setup
    assert not _weights_equal(llm, model)
    engine = VLLMRolloutEngine(model, tok, cfg.model, cfg.rollout, llm=llm)
    assert _weights_equal(llm, model) and engine.weight_pushes == 1
    assert [e[0] for e in llm.events] == ["load_weights", "reset_prefix_cache", "sleep"]
    n_params = len(list(model.parameters()))
    assert llm.events[0] == ("load_weights", n_params)

    llm.events.clear()
    b = engine.generate(["What is 2 + 3?", "What is 2 + 3?", "hi"], 2, max_new_tokens=6, temperature=1.0, seed=5)
    # level-2 sleep dropped the weights: pushed again between the two wake-ups, then asleep again
    assert [e[0] for e in llm.events] == ["wake_up", "load_weights", "reset_prefix_cache", "wake_up", "generate",
                                          "sleep"]
    assert llm.events[0] == ("wake_up", ("weights",)) and llm.events[3] == ("wake_up", ("kv_cache",))
    assert b.num_rows == 6 and b.group_size == 2 and not engine.exact_logprobs
    # every sample its own seed: the same prompt twice gives different samples
    assert not torch.equal(b.response_ids[0:2], b.response_ids[2:4])
    # token alignment: the trainer's teacher-forced log-probs of vLLM's tokens are vLLM's log-probs (same fp32 weights)
    with torch.no_grad():
        lp, _ = response_logprobs(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask)
    assert torch.allclose(lp * b.response_mask, b.logprobs, atol=1e-4)
    assert b.texts == tok.batch_decode(b.response_ids * b.response_mask.long() + tok.pad_token_id *
                                       (1 - b.response_mask.long()), skip_special_tokens=True)


def test_policy_changed_pushes_once_before_the_next_request(vllm_setup):
    model, tok, cfg, llm = vllm_setup
    cfg.rollout.vllm.sleep = False
    engine = VLLMRolloutEngine(model, tok, cfg.model, cfg.rollout, llm=llm)
    engine.generate(["hi"], 2, max_new_tokens=3, seed=0)
    assert engine.weight_pushes == 1 and not any(e[0] == "sleep" for e in llm.events)  # awake, weights current
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    assert not _weights_equal(llm, model)
    engine.policy_changed()
    engine.generate(["hi"], 2, max_new_tokens=3, seed=0)
    engine.generate(["hi"], 2, max_new_tokens=3, seed=0)
    assert engine.weight_pushes == 2 and _weights_equal(llm, model)


def test_r3_through_prompt_logprobs_equals_the_trainers_forward_pass(vllm_setup):
    from types import SimpleNamespace

    from drox.rewards import variance as var_mod
    from drox.signals import r3 as r3_mod
    from drox.rewards.base import ScoringContext

    model, tok, cfg, llm = vllm_setup
    engine = VLLMRolloutEngine(model, tok, cfg.model, cfg.rollout, llm=llm)
    batch = engine.generate(["Revise: the cat sat.", "Revise: a dog ran."], 3, max_new_tokens=6, seed=1)
    rows = [{"prompt": "Revise: the cat sat.", "answer": "The cat sat down."},
            {"prompt": "Revise: a dog ran.", "answer": "A dog ran away."}]

    def ctx(scorer):
        return ScoringContext(batch=batch, rows=rows, task=SimpleNamespace(name="revise", verifier=None),
                              policy=model, tokenizer=tok, token_scorer=scorer)

    plain, through = ctx(None), ctx(engine.score_tokens)
    opts = var_mod.VarianceConfig()
    a, b = var_mod.variance(plain, opts), var_mod.variance(through, opts)
    assert through.counters == {"engine_passes": 1} and plain.counters["forward_passes"] >= 1
    assert torch.allclose(a.seq, b.seq, atol=1e-4)
    sa, sb = r3_mod.VarianceStats.from_extras(a.extras), r3_mod.VarianceStats.from_extras(b.extras)
    assert torch.allclose(sa.ref_logprobs, sb.ref_logprobs, atol=1e-4)
    # ranks among ~49k near-equal log-probs of a random model: float rounding may move a token past a neighbour
    assert (sa.ref_ranks - sb.ref_ranks).abs().max() <= 2 and (sa.ref_ranks != sb.ref_ranks).float().mean() < 0.2


def test_training_through_the_vllm_engine(vllm_setup, compose_cfg, tmp_path, monkeypatch):
    """Two steps with rollout.backend=vllm: the trainer recomputes pi_old, weights tokens by TIS, and the engine
    samples step 2 from the weights step 1 produced."""
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    _, tok, _, _ = vllm_setup
    engines = []

    def build(rollout_cfg, model, tokenizer, model_cfg, *options):  # options: the engine's own (rollout.vllm)
        engines.append(VLLMRolloutEngine(model, tokenizer, model_cfg, rollout_cfg, llm=CPUStandInLLM(model, tokenizer)))
        return engines[-1]

    monkeypatch.setattr(loop, "check_environment", lambda cfg: None)  # no GPU here: the engine is the stand-in
    monkeypatch.setattr(loop, "build_engine", build)
    cfg = compose_cfg("rollout.backend=vllm", "task=revise", f"run_dir={tmp_path}")
    cfg.reward = {"variance": {}}
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # the same fp32 weights on both sides: weights 1, no mismatch, ratio 1 on the one pass
        assert r["tis/weight_mean"] == pytest.approx(1.0, abs=1e-3)
        assert abs(r["tis/mismatch_kl"]) < 1e-4 and r["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
        assert r["scoring/engine_passes"] == 1 and math.isfinite(r["reward/variance/r3_mean"])
    engine = engines[0]
    assert engine.weight_pushes >= 2  # the start, and after step 1's optimizer step
    engine._wake_and_push()
    assert _weights_equal(engine.llm, engine.model)
