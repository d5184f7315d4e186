"""``+reward=distill`` (on-policy distillation, GKD arXiv 2306.13649 with the reverse KL; rewards/distill.py;
docs/algorithms.md "On-policy distillation: a teacher's per-token reverse KL"): the per-token reward against a brute
force over two tiny models' full softmax, 0 for a teacher with the policy's weights, the one-line vocabulary check,
the per-token advantage, the config checks, and short training runs alone and beside the outcome reward."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from doubles import config_error

from conftest import TINY_OVERRIDES
from drox.errors import ConfigError
from drox.rewards import distill as distill_mod
from drox.rewards.base import ScoringContext, scoring_state_dict
from drox.rollout.base import RolloutBatch

PROMPTS = ["What is 1+2?", "Compute 10 + 20, please."]  # different lengths: the shorter is left-padded
RESPONSES = ["3", "The answer is 3", "30 it is", "Thirty"]  # G = 2 per prompt, right-padded


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_policy):
    """Another tiny Llama (init_seed=1) with the policy's tokenizer, saved as a HF folder: a teacher by path."""
    from drox.config import ModelConfig
    from drox.models.loading import build_tiny

    _, tokenizer = tiny_policy
    folder = tmp_path_factory.mktemp("teacher")
    build_tiny(ModelConfig(init_seed=1), tokenizer).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def fixed_batch(tokenizer, logprobs=None) -> RolloutBatch:
    """Q=2 prompts x G=2 responses as token ids: prompts left-padded, responses right-padded."""
    pad = tokenizer.pad_token_id
    p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    r_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    P, T = max(map(len, p_ids)), max(map(len, r_ids))
    prompt_ids = torch.full((4, P), pad, dtype=torch.long)
    prompt_mask = torch.zeros(4, P, dtype=torch.long)
    for n in range(4):
        ids = p_ids[n // 2]
        prompt_ids[n, P - len(ids):], prompt_mask[n, P - len(ids):] = torch.tensor(ids), 1
    response_ids = torch.full((4, T), pad, dtype=torch.long)
    response_mask = torch.zeros(4, T)
    for n, ids in enumerate(r_ids):
        response_ids[n, : len(ids)], response_mask[n, : len(ids)] = torch.tensor(ids), 1
    return RolloutBatch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids,
                        response_mask=response_mask, logprobs=logprobs if logprobs is not None else torch.zeros(4, T),
                        entropies=torch.zeros(4, T), finish_reason=["eos"] * 4, texts=list(RESPONSES), group_size=2,
                        prompts=list(PROMPTS))


def brute_force_logprobs(model, tokenizer) -> torch.Tensor:
    """[4, T]: log softmax over the whole vocabulary of one plain forward pass per row of the *unpadded* sequence
    prompt ⊕ response (default positions, no mask), read at each response token; 0 on padding."""
    p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    r_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    T = max(map(len, r_ids))
    out = torch.zeros(4, T)
    with torch.no_grad():
        for n, resp in enumerate(r_ids):
            prompt = p_ids[n // 2]
            logits = model(input_ids=torch.tensor([prompt + resp])).logits[0].double()  # [L, V]
            logp = torch.log_softmax(logits, -1)
            for t, token in enumerate(resp):
                out[n, t] = logp[len(prompt) + t - 1, token].item()
    return out


def make_ctx(policy, tokenizer, batch) -> ScoringContext:
    return ScoringContext(batch=batch, rows=[{"prompt": p, "answer": "3"} for p in PROMPTS],
                          task=SimpleNamespace(name="t", verifier=None), policy=policy, tokenizer=tokenizer)


def test_reward_is_the_teacher_minus_the_policy_log_probability_by_brute_force(tiny_policy, teacher_dir):
    from transformers import AutoModelForCausalLM

    policy, tokenizer = tiny_policy
    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir)).eval()
    batch = fixed_batch(tokenizer)
    mask = batch.response_mask
    expected = (brute_force_logprobs(teacher, tokenizer) - brute_force_logprobs(policy, tokenizer)) * mask
    assert (expected[mask.bool()] != 0).all() and mask.sum() < mask.numel()  # a real gap, and padding to mask

    ctx = make_ctx(policy, tokenizer, batch)
    out = distill_mod.distill(ctx, distill_mod.DistillConfig(teacher=str(teacher_dir), student="recompute"))
    assert out.token.shape == (2, 2, mask.shape[1]) and out.seq.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert torch.allclose(out.token.view(4, -1), expected, atol=1e-4)
    assert (out.token.view(4, -1)[~mask.bool()] == 0).all() and torch.equal(out.token_mask.view(4, -1), mask.bool())
    assert out.diagnostics["reverse_kl"] == pytest.approx(-(expected.sum() / mask.sum()).item(), abs=1e-4)
    assert out.diagnostics["teacher_seconds"] > 0
    assert ctx.counters["forward_passes"] == 2  # the teacher's pass and the policy's (student=recompute)
    # student=rollout reads the batch's recorded log-probs instead: the same reward, one pass fewer
    recorded = brute_force_logprobs(policy, tokenizer) * mask
    ctx2 = make_ctx(policy, tokenizer, fixed_batch(tokenizer, logprobs=recorded))
    out2 = distill_mod.distill(ctx2, distill_mod.DistillConfig(teacher=str(teacher_dir)))
    assert torch.allclose(out2.token.view(4, -1), expected, atol=1e-4) and ctx2.counters["forward_passes"] == 1
    # dense=false: the sum per rollout; clip bounds each r_t
    seq = distill_mod.distill(ctx2, distill_mod.DistillConfig(teacher=str(teacher_dir), dense=False))
    assert seq.token is None and torch.allclose(seq.seq.flatten(), expected.sum(-1), atol=1e-3)
    clipped = distill_mod.distill(ctx2, distill_mod.DistillConfig(teacher=str(teacher_dir), clip=0.01))
    assert clipped.token.abs().max().item() == pytest.approx(0.01)
    # the teacher is loaded once and kept, and checkpoints do not save it
    assert ctx2.state["distill/teacher"]["key"][0] == str(teacher_dir) and scoring_state_dict(ctx2.state) == {}


def test_a_teacher_with_the_policys_weights_gives_exactly_zero(tiny_policy):
    """teacher=tiny is what model=tiny loads, the same random weights as the policy here (init_seed 0)."""
    policy, tokenizer = tiny_policy
    ctx = make_ctx(policy, tokenizer, fixed_batch(tokenizer))
    out = distill_mod.distill(ctx, distill_mod.DistillConfig(teacher="tiny", student="recompute"))
    teacher = ctx.state["distill/teacher"]["model"]
    assert teacher is not policy and all(torch.equal(a, b) for a, b in zip(teacher.parameters(), policy.parameters()))
    assert torch.equal(out.token, torch.zeros_like(out.token))
    assert out.diagnostics["reverse_kl"] == 0.0 and out.diagnostics["positive_token_frac"] == 0.0


def test_a_vocabulary_mismatch_is_one_line_before_the_teacher_loads(tiny_policy):
    """model=toy's character tokenizer (101 tokens) cannot score the SmolLM2 tokenizer's ids (the tiny policy's)."""
    policy, tokenizer = tiny_policy
    ctx = make_ctx(policy, tokenizer, fixed_batch(tokenizer))
    with pytest.raises(ConfigError) as e:
        distill_mod.distill(ctx, distill_mod.DistillConfig(teacher="toy"))
    message = str(e.value)
    assert "\n" not in message and message == (
        f"reward.distill.teacher=toy has a vocabulary of 101 tokens and the policy one of {len(tokenizer)}: the "
        "teacher scores the policy's token ids, so both need the same tokenizer; choose a teacher with the policy's "
        "tokenizer (its model family), or a policy with the teacher's")
    assert "distill/teacher" not in ctx.state  # stopped before the weights were loaded

    class Tok:  # same size, other ids
        def __init__(self, vocab):
            self.vocab = vocab

        def __len__(self):
            return len(self.vocab)

        def get_vocab(self):
            return dict(self.vocab)

    with pytest.raises(ConfigError, match=r"has 2 tokens like the policy but other token ids"):
        distill_mod.check_vocabulary(Tok({"a": 0, "b": 1}), Tok({"a": 1, "b": 0}), "x")
    distill_mod.check_vocabulary(Tok({"a": 0, "b": 1}), Tok({"a": 0, "b": 1}), "x")


def test_per_token_advantages_are_the_scores_themselves():
    """trainer.advantage.dense=per_token: Â_{i,t} = r_{i,t} (no normalisation, discount 0), plus the broadcast
    sequence advantage of the other sources; 0 on padding and on rejected rollouts."""
    from drox.trainers.algos import token_advantages

    r = torch.tensor([[[0.5, -1.0, 0.0], [2.0, 0.25, 0.0]]])  # [Q=1, G=2, T=3]
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    placed = torch.tensor([[[True, True, False], [True, True, True]]])
    adv = token_advantages(None, r, mask, reward_mask=placed, dense="per_token")
    assert adv.tolist() == [[0.5, -1.0, 0.0], [2.0, 0.25, 0.0]]
    seq = torch.tensor([[1.0, -1.0]])
    adv = token_advantages(seq, r, mask, reward_mask=placed, dense="per_token", valid=torch.tensor([[True, False]]))
    assert adv.tolist() == [[1.5, 0.0, 0.0], [-1.0, -1.0, -1.0]]
    # reward_to_go (the default) normalises and sums from each token to the end: different numbers
    assert not torch.equal(token_advantages(None, r, mask, reward_mask=placed), token_advantages(
        None, r, mask, reward_mask=placed, dense="per_token"))
    with pytest.raises(ValueError, match="dense='x'; choose one of: reward_to_go, per_token"):
        token_advantages(None, r, mask, dense="x")


@pytest.mark.parametrize("extra, message", [
    ([], "reward.distill.teacher is required: a model name (tiny, toy, smollm2-135m), a local HF model folder or a "
         "hub id"),
    (["reward.distill.teacher=./no/such/teacher"], "reward.distill.teacher=./no/such/teacher: no such folder"),
    (["reward.distill.teacher=tiny", "rollout.temperature=0.7"],
     "reward.distill.student=rollout reads the log-probs recorded while sampling, which at rollout.temperature=0.7"),
    (["reward.distill.teacher=tiny", "reward.distill.device=gpu"], "reward.distill.device=gpu: choose policy"),
])
def test_config_errors_are_one_line(capsys, extra, message):
    assert message in config_error(capsys, [*TINY_OVERRIDES, "+reward=distill", *extra])


def test_the_option_file_selects_per_token_advantages(compose_cfg):
    cfg = compose_cfg("+reward=distill", "reward.distill.teacher=tiny", "rollout.temperature=0.7",
                      "reward.distill.student=recompute")
    assert cfg.trainer.advantage.dense == "per_token" and cfg.reward.distill.teacher == "tiny"
    assert compose_cfg().trainer.advantage.dense == "reward_to_go"


def _metrics(tmp_path):
    from drox.trainers.metrics import read_metrics

    return read_metrics(tmp_path / "metrics.jsonl")


def test_distill_trains_two_steps_with_a_teacher_folder(compose_cfg, tmp_path, teacher_dir):
    from drox.trainers import loop

    cfg = compose_cfg("+reward=distill", f"reward.distill.teacher={teacher_dir}", "rollout.max_new_tokens=6",
                      f"run_dir={tmp_path}")
    loop.run_training(cfg, tmp_path, progress=False)
    rows = _metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["reward/distill/reverse_kl"]) and r["reward/distill/reverse_kl"] != 0
        assert r["reward/distill/teacher_seconds"] > 0 and r["scoring/forward_passes"] >= 1
        assert r["scoring/forward_tokens"] > 0


def test_distill_composes_beside_the_outcome_reward(compose_cfg, tmp_path, teacher_dir):
    from drox.trainers import loop

    cfg = compose_cfg("+reward=[outcome,distill]", f"reward.distill.teacher={teacher_dir}",
                      "reward.distill.weight=0.5", "trainer.steps=1", "rollout.max_new_tokens=6",
                      f"run_dir={tmp_path}")
    loop.run_training(cfg, tmp_path, progress=False)
    (row,) = _metrics(tmp_path)
    assert "reward/outcome/mean" in row and math.isfinite(row["reward/distill/reverse_kl"])
    assert row["scoring/forward_passes"] >= 1
