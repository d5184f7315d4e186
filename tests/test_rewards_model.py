"""Model-based reward sources: variance (DRO R3), confidence (Intuitor / RLSF / -entropy), prm.

Hand-computed cases use a character-level tokenizer (token id = ord(char)) and a fake LM whose
logits at input position p are row p of a given table, so every log-prob a source reads is known
in advance. Each source also runs two training steps on the tiny model.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from drox.rewards import confidence as conf_mod
from drox.rewards import prm as prm_mod
from drox.rewards import variance as var_mod
from drox.signals import r3 as r3_mod
from drox.signals import spans as spans_mod
from drox.signals.spans import final_answer_start
from drox.rewards.base import REWARD_SOURCES, ScoringContext, score
from doubles import CharTok, PosLM, make_batch
from drox.trainers import algos

V = 128  # ASCII


def make_ctx(batch, rows, policy=None, tok=None, **kw):
    return ScoringContext(batch=batch, rows=rows, task=SimpleNamespace(name="t", verifier=None), policy=policy,
                          tokenizer=tok or CharTok(), **kw)


# ------------------------------------------------------------------------------------------------ variance (R3)

# G = 3 rollouts x |y| = 3 reference tokens.  σ_j (population): token 1 all equal -> 0;
# token 2 {-2,-1,-3}: mean -2, var 2/3 -> 0.8165; token 3 {-.5,-1.5,-1}: mean -1, var 1/6 -> 0.4082.
L3 = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.5], [-1.0, -3.0, -1.0]])


def test_r3_sigma_norm_and_uniform_by_hand():
    r3, sigma, w = r3_mod.r3_rewards(L3[None], torch.ones(1, 3), "sigma_norm")
    assert sigma[0].tolist() == pytest.approx([0.0, 0.8165, 0.4082], abs=1e-4)
    # w = σ / Σσ = [0, 2/3, 1/3]; R3_1 = 2/3·(-2) + 1/3·(-0.5) = -1.5; R3_2 = -2/3 - 0.5; R3_3 = -2 - 1/3
    assert w[0].tolist() == pytest.approx([0.0, 0.6667, 0.3333], abs=1e-4)
    assert r3[0].tolist() == pytest.approx([-1.5, -1.1667, -2.3333], abs=1e-4)
    # DRO-Aggr: plain sums; rollouts 1 and 2 tie although they differ on the informative token
    r3u, _, wu = r3_mod.r3_rewards(L3[None], torch.ones(1, 3), "uniform")
    assert wu[0].tolist() == [1.0, 1.0, 1.0]
    assert r3u[0].tolist() == pytest.approx([-3.5, -3.5, -5.0], abs=1e-4)


def test_r3_softmax_and_top_p_by_hand():
    # softmax(σ): exp([0, .8165, .4082]) = [1, 2.2627, 1.5041], sum 4.7668 -> [.2098, .4747, .3155]
    r3, _, w = r3_mod.r3_rewards(L3[None], torch.ones(1, 3), "softmax", tau=1.0)
    assert w[0].tolist() == pytest.approx([0.2098, 0.4747, 0.3155], abs=1e-4)
    assert r3[0, 0].item() == pytest.approx(-0.2098 - 2 * 0.4747 - 0.5 * 0.3155, abs=2e-4)
    # top_p = 0.34 of 3 tokens -> ceil(1.02) = 2 tokens with the largest σ (2 and 3), 1/2 each
    r3, _, w = r3_mod.r3_rewards(L3[None], torch.ones(1, 3), "top_p", top_p=0.34)
    assert w[0].tolist() == [0.0, 0.5, 0.5]
    assert r3[0].tolist() == pytest.approx([-1.25, -1.25, -2.0])


def test_r3_masked_baseline_and_padding():
    base = torch.tensor([[-0.5, -1.0, -2.0]])
    # Σ_j w_j ℓ^mask_j = 2/3·(-1) + 1/3·(-2) = -4/3, subtracted from every rollout
    r3, _, _ = r3_mod.r3_rewards(L3[None], torch.ones(1, 3), "sigma_norm", baseline=base)
    assert r3[0].tolist() == pytest.approx([-0.1667, 0.1667, -1.0], abs=1e-4)
    # a second, shorter reference padded to J = 3: its padding gets σ = 0 and weight 0
    L = torch.stack([L3, torch.tensor([[-1.0, -2.0, 99.0], [-3.0, -2.0, 99.0], [-2.0, -2.0, 99.0]])])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    r3, sigma, w = r3_mod.r3_rewards(L, mask, "sigma_norm")
    assert sigma[1, 2] == 0 and w[1].tolist() == [1.0, 0.0, 0.0]
    assert r3[1].tolist() == pytest.approx([-1.0, -3.0, -2.0])


def test_length_penalty_by_hand():
    # |y| = 3, |ŷ| = 1, β = 0.5: 1 - 0.5·2/3
    out = r3_mod.length_penalty(torch.tensor([3, 3]), torch.tensor([1, 3]), 0.5)
    assert out.tolist() == pytest.approx([0.6667, 1.0], abs=1e-4)


def test_split_reasoning_and_splice_ids():
    assert spans_mod.split_reasoning("3+5=8 so \\boxed{8}.") == ("3+5=8 so ", "8")
    assert spans_mod.split_reasoning("work\nAnswer: 12\n") == ("work\n", "12")
    assert spans_mod.split_reasoning("Bob left.") == ("Bob left.", "Bob left.")
    assert final_answer_start("a \\boxed{1} b \\boxed{2") == len("a \\boxed{1} b ")  # unclosed box still counts
    tok = CharTok()
    ids, start = r3_mod.splice(tok, "ab ", [ord("x"), ord("y")], "{reasoning}\\boxed{{answer}}")
    assert ids == [97, 98, 32, 92, 98, 111, 120, 101, 100, 123, 120, 121]  # "ab \boxed{" + "xy"; no "}" fed
    assert start == 10
    ids, start = r3_mod.splice(tok, "r", [ord("z")], "{reasoning}\nAnswer: {answer}.")
    assert tok.decode(ids) == "r\nAnswer: z" and start == len("r\nAnswer: ")
    with pytest.raises(ValueError, match="template"):
        r3_mod.parse_template("{answer} {reasoning}")


def _expected_ref_logprobs(table, P, texts, ref, template="{reasoning}\\boxed{{answer}}"):
    """Independent of the source's gather: ℓ_j = log_softmax(table[P + start + j - 1])[y_j]."""
    logp = torch.log_softmax(table, -1)
    out = []
    for text in texts:
        head = template.split("{answer}")[0].replace("{reasoning}", spans_mod.split_reasoning(text)[0])
        out.append([logp[P + len(head) + j - 1, ord(c)].item() for j, c in enumerate(ref)])
    return torch.tensor(out)


def test_variance_source_end_to_end_on_a_fake_lm():
    torch.manual_seed(0)
    table = torch.randn(64, V) * 2
    tok = CharTok()
    texts = ["ab \\boxed{7}", "abcd", "Answer: 9", "x", "yy \\boxed{1}", "zzz"]  # Q = 2, G = 3
    refs = ["42", "7"]
    batch = make_batch(tok, ["P?", "Q!"], texts, 3)
    ctx = make_ctx(batch, [{"answer": r} for r in refs], PosLM(table), forward_batch_size=4)
    out = var_mod.variance(ctx, var_mod.VarianceConfig(masked_baseline=True))
    L0 = _expected_ref_logprobs(table, 2, texts[:3], refs[0])
    L1 = _expected_ref_logprobs(table, 2, texts[3:], refs[1])
    assert torch.allclose(out.extras["ref_logprobs"][0], L0, atol=1e-5)
    assert torch.allclose(out.extras["ref_logprobs"][1, :, :1], L1, atol=1e-5)
    assert out.extras["ref_mask"].tolist() == [[1.0, 1.0], [1.0, 0.0]]
    # baseline rows: empty reasoning -> the reference starts right after "\boxed{"
    base0 = _expected_ref_logprobs(table, 2, [""], refs[0])[0]
    base1 = _expected_ref_logprobs(table, 2, [""], refs[1])[0]
    want0, sig0, _ = r3_mod.r3_rewards(L0[None], torch.ones(1, 2), baseline=base0[None])
    want1, _, _ = r3_mod.r3_rewards(L1[None], torch.ones(1, 1), baseline=base1[None])
    assert torch.allclose(out.seq, torch.cat([want0, want1]), atol=1e-5)
    assert torch.allclose(out.extras["sigma"][0], sig0[0], atol=1e-5)
    assert out.extras["sigma_max"].shape == (2,) and out.extras["sigma_max"][0] == pytest.approx(sig0.max().item())
    ranks = out.extras["ref_ranks"]
    assert ranks.shape == (2, 3, 2) and (ranks[0] >= 1).all() and (ranks[1, :, 1] == 0).all()
    assert ctx.counters["forward_passes"] == 2  # 6 rollouts + 2 baseline rows in chunks of 4
    assert {"r3_mean", "sigma_mean", "baseline_logprob_mean"} <= set(out.diagnostics)
    # "abcd", "x", "zzz" have no \boxed{} / Answer: container to discard before the splice
    assert out.diagnostics["no_container_frac"] == pytest.approx(3 / 6)


def test_variance_reward_policy_copies_and_length_penalty():
    torch.manual_seed(1)
    tok = CharTok()
    policy = PosLM(torch.randn(64, V))
    batch = make_batch(tok, ["P?"], ["ab \\boxed{7}", "abcd \\boxed{12}"], 2)
    rows = [{"answer": "12"}]
    state = {}
    cfg = var_mod.VarianceConfig(reward_policy="lagged", lag_steps=2)
    first = var_mod.variance(make_ctx(batch, rows, policy, step=1, state=state), cfg).seq
    with torch.no_grad():
        policy.table.add_(torch.randn_like(policy.table))
    same = var_mod.variance(make_ctx(batch, rows, policy, step=2, state=state), cfg).seq
    assert torch.equal(first, same)  # the lagged copy is one step old
    current = var_mod.variance(make_ctx(batch, rows, policy, step=2), var_mod.VarianceConfig()).seq
    refreshed = var_mod.variance(make_ctx(batch, rows, policy, step=3, state=state), cfg).seq
    assert torch.allclose(refreshed, current) and not torch.allclose(refreshed, first)
    # length penalty: |y| = 2 ("12"); ŷ = "7" (1 token) and "12" (2 tokens); β = 0.5, weight 2
    plain = var_mod.variance(make_ctx(batch, rows, policy), var_mod.VarianceConfig()).seq
    pen = var_mod.variance(make_ctx(batch, rows, policy),
                           var_mod.VarianceConfig(length_weight=2.0, length_beta=0.5)).seq
    assert (pen - plain)[0].tolist() == pytest.approx([2 * 0.75, 2 * 1.0])


# ------------------------------------------------------------------------------------------------ confidence


def test_self_certainty_matches_the_closed_form():
    torch.manual_seed(2)
    z = torch.randn(2, 5, 11) * 3
    got = conf_mod.self_certainty_tokens(z)
    uniform = torch.distributions.Categorical(probs=torch.full((11,), 1 / 11))
    via_dist = torch.distributions.kl_divergence(uniform, torch.distributions.Categorical(logits=z))
    p = torch.softmax(z.double(), -1)
    explicit = ((1 / 11) * (math.log(1 / 11) - p.log())).sum(-1)  # Σ_j U_j log(U_j / p_j)
    assert torch.allclose(got, via_dist, atol=1e-5)
    assert torch.allclose(got.double(), explicit, atol=1e-5)


def test_self_certainty_source_is_the_mean_kl_over_response_tokens():
    torch.manual_seed(3)
    table = torch.randn(32, V) * 2
    tok = CharTok()
    batch = make_batch(tok, ["Hi"], ["abc", "de"], 2)
    ctx = make_ctx(batch, [{"answer": "x"}], PosLM(table))
    out = conf_mod.confidence(ctx, conf_mod.ConfidenceConfig(kind="self_certainty"))
    uniform = torch.distributions.Categorical(probs=torch.full((V,), 1 / V))
    kl = torch.distributions.kl_divergence(uniform, torch.distributions.Categorical(logits=table))  # [32]
    # response token t is predicted at position P + t - 1 = 1 + t
    want = [kl[1:4].mean().item(), kl[1:3].mean().item()]
    assert out.seq[0].tolist() == pytest.approx(want, abs=1e-5)
    assert ctx.counters["forward_passes"] == 1


def _probs_row(pairs):
    """A probability vector over V with the given {char: p}; the rest shares what is left."""
    rest = (1.0 - sum(pairs.values())) / (V - len(pairs))
    p = torch.full((V,), rest)
    for c, v in pairs.items():
        p[ord(c)] = v
    return p


def test_answer_span_confidence_on_a_hand_made_distribution():
    tok = CharTok()
    texts = ["x \\boxed{42}", "hello"]
    P = 2
    table = torch.zeros(32, V)  # uniform elsewhere
    i4, i2 = texts[0].index("4"), texts[0].index("2")
    table[P + i4 - 1] = _probs_row({"4": 0.6, "7": 0.3}).log()  # top1 - top2 = 0.3
    table[P + i2 - 1] = _probs_row({"1": 0.9, "2": 0.05}).log()  # top1 - top2 = 0.85; p(sampled '2') = p2
    batch = make_batch(tok, ["Hi"], texts, 2)
    assert conf_mod.answer_token_span(tok, batch.response_ids[0].tolist(), texts[0]) == (i4, i2)
    out = conf_mod.confidence(make_ctx(batch, [{"answer": "42"}], PosLM(table)),
                              conf_mod.ConfidenceConfig(kind="answer_span"))
    assert out.seq[0].tolist() == pytest.approx([(0.3 + 0.85) / 2, 0.0], abs=1e-5)  # no answer in "hello": 0
    assert out.diagnostics["span_found_frac"] == 0.5
    # RLSF code's variant: p(sampled) - p2 = 0.6 - 0.3 and 0.05 - 0.05
    out = conf_mod.confidence(make_ctx(batch, [{"answer": "42"}], PosLM(table)),
                              conf_mod.ConfidenceConfig(kind="answer_span", disparity="token"))
    assert out.seq[0, 0].item() == pytest.approx(0.15, abs=1e-5)
    gated = conf_mod.confidence(make_ctx(batch, [{"answer": "42"}], PosLM(table)),
                                conf_mod.ConfidenceConfig(kind="answer_span", threshold=0.6))
    assert gated.seq[0].tolist() == [0.0, 0.0] and gated.diagnostics["gated_frac"] == 1.0


def test_neg_entropy_uses_the_rollout_entropies():
    ent = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.5, 0.5]])
    batch = make_batch(CharTok(), ["Hi"], ["ab", "abc"], 2, entropies=ent)
    out = conf_mod.confidence(make_ctx(batch, [{"answer": "1"}]), conf_mod.ConfidenceConfig(kind="neg_entropy"))
    assert out.seq[0].tolist() == pytest.approx([-1.5, -0.5])
    assert conf_mod.gate(torch.tensor([0.2, 0.9]), 0.5).tolist() == [0.0, pytest.approx(0.9)]


# ------------------------------------------------------------------------------------------------ prm


def test_step_aggregations_by_hand():
    s = torch.tensor([[0.9, 0.5, 0.8], [0.7, 0.0, 0.0], [0.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert prm_mod.aggregate_steps(s, m, "min", 0.25).tolist() == pytest.approx([0.5, 0.7, 0.25])
    assert prm_mod.aggregate_steps(s, m, "last", 0.25).tolist() == pytest.approx([0.8, 0.7, 0.25])
    assert prm_mod.aggregate_steps(s, m, "prod", 0.25).tolist() == pytest.approx([0.36, 0.7, 0.25])
    assert prm_mod.aggregate_steps(s, m, "mean", 0.25).tolist() == pytest.approx([0.7333, 0.7, 0.25], abs=1e-4)


ORACLE_TEXTS = ["3 + 5 = 8\n8 * 2 = 16\nThe answer is \\boxed{16}",  # both steps right
                "3 + 5 = 9\n9 * 2 = 18.",  # first wrong; second right arithmetic, wrong vs reference
                "I think it is 16",  # no step
                "3+5=8, then 8 × 2 = 15"]  # right, wrong
ORACLE_ROWS = [{"answer": "16", "steps": ["3 + 5 = 8", "8 * 2 = 16"], "prompt": "What is (3 + 5) * 2?"}]


def test_oracle_step_checker_and_aggregations():
    assert prm_mod.check_steps(ORACLE_TEXTS[1]) == [(False, 9), (True, 20)]
    assert prm_mod.check_steps(ORACLE_TEXTS[1], ORACLE_ROWS[0]["steps"]) == [(False, 9), (False, 20)]
    assert [ok for ok, _ in prm_mod.check_steps(ORACLE_TEXTS[3])] == [True, False]
    batch = make_batch(CharTok(), ["Hi"], ORACLE_TEXTS, 4)
    want = {"min": [1, 0, 0, 0], "last": [1, 1, 0, 0], "prod": [1, 0, 0, 0], "mean": [1, 0.5, 0, 0.5]}
    for how, expected in want.items():
        out = prm_mod.prm(make_ctx(batch, ORACLE_ROWS), prm_mod.PRMConfig(aggregation=how))
        assert out.seq[0].tolist() == pytest.approx(expected), how
    out = prm_mod.prm(make_ctx(batch, ORACLE_ROWS), prm_mod.PRMConfig(aggregation="last", match_reference=True))
    assert out.seq[0].tolist() == pytest.approx([1, 0, 0, 0])
    assert out.extras["step_counts"][0].tolist() == [2, 2, 0, 2]


def test_oracle_dense_scores_sit_at_step_end_tokens_and_zero_steps_count(tiny_policy):
    _, tok = tiny_policy  # the real SmolLM2 tokenizer: '8' is token 6 and '6' of "16" token 15
    texts = [ORACLE_TEXTS[0], "3 + 5 = 9\n9 * 2 = 16"]
    batch = make_batch(tok, ["Hi"], texts, 2)
    ctx = make_ctx(batch, ORACLE_ROWS, tok=tok)
    out = prm_mod.prm(ctx, prm_mod.PRMConfig(dense=True))
    assert out.seq.tolist() == [[0.0, 0.0]]  # dense: the steps are not counted twice
    assert out.token_mask[0, 0].nonzero().flatten().tolist() == [6, 15]
    assert out.token[0, 0, [6, 15]].tolist() == [1.0, 1.0]
    assert out.token_mask[0, 1].nonzero().flatten().tolist() == [6, 15]
    assert out.token[0, 1, [6, 15]].tolist() == [0.0, 0.0]  # 3+5=9 wrong, 9*2=16 wrong
    # through the combiner: the incorrect (0) steps keep their positions, so advantages are not all 0
    combined = score(make_ctx(batch, ORACLE_ROWS, tok=tok), {"prm": REWARD_SOURCES.parse("prm", {"dense": True})})
    assert torch.equal(combined.token_mask, out.token_mask)
    adv = algos.token_advantages(None, combined.token, batch.response_mask, group_size=2,
                                 reward_mask=combined.token_mask)
    assert adv[0, 0] > 0 and adv[1, 0] < 0


def _save_tiny(tmp_path, tok, head):
    from transformers import (LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification,
                              LlamaForTokenClassification)

    cls = {"token_classification": LlamaForTokenClassification, "causal_lm": LlamaForCausalLM,
           "sequence_classification": LlamaForSequenceClassification}[head]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=2, pad_token_id=tok.pad_token_id)
    torch.manual_seed(4)
    path = tmp_path / head
    cls(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def test_hf_prm_token_classifier_scores_step_end_positions(tiny_policy, tmp_path):
    from transformers import AutoModelForTokenClassification

    _, tok = tiny_policy
    path = _save_tiny(tmp_path, tok, "token_classification")
    texts = ["3 + 5 = 8\n8 * 2 = 16", "no steps\n\n  \nreally"]  # 2 and 2 steps (blank pieces dropped)
    batch = make_batch(tok, ["Hi"], texts, 2)
    ctx = make_ctx(batch, [{"prompt": "What is 8*2?", "answer": "16"}], tok=tok)
    cfg = prm_mod.PRMConfig(kind="hf", model_path=str(path), aggregation="last", dense=True, step_tag=" ки")
    out = prm_mod.prm(ctx, cfg)
    assert out.seq.shape == (1, 2) and out.token.shape == (1, 2, batch.response_ids.shape[1])
    assert out.token_mask[0, 0].nonzero().flatten().tolist() == [6, 15]  # the step ends in the response
    # independently: the PRM text, and each step end's token found by re-tokenising the prefix
    prm_text = "What is 8*2?\n3 + 5 = 8 ки\n8 * 2 = 16 ки"
    ends = [prm_text.index(" ки") + 3, len(prm_text)]
    pos = [len(tok(prm_text[:e])["input_ids"]) - 1 for e in ends]
    model = AutoModelForTokenClassification.from_pretrained(str(path))
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([tok(prm_text)["input_ids"]])).logits[0], -1)[:, 1]
    assert out.token[0, 0, [6, 15]].tolist() == pytest.approx(probs[pos].tolist(), abs=1e-5)
    assert out.extras["aggregate"][0, 0].item() == pytest.approx(probs[pos[1]].item(), abs=1e-5)
    assert ctx.state["prm/hf"]["model"] is not None and ctx.counters["forward_passes"] == 1


@pytest.mark.parametrize("head", ["causal_lm", "sequence_classification"])
def test_hf_prm_other_heads_plumbing(tiny_policy, tmp_path, head):
    _, tok = tiny_policy
    path = _save_tiny(tmp_path, tok, head)
    batch = make_batch(tok, ["Hi"], ["3 + 5 = 8\n8 * 2 = 16", "one step"], 2)
    ctx = make_ctx(batch, [{"prompt": "What is 8*2?", "answer": "16"}], tok=tok)
    out = prm_mod.prm(ctx, prm_mod.PRMConfig(kind="hf", model_path=str(path), head=head, aggregation="prod"))
    assert out.seq.shape == (1, 2) and ((out.seq > 0) & (out.seq < 1)).all()
    assert out.extras["step_counts"][0].tolist() == [2, 1]
    if head == "sequence_classification":
        assert ctx.counters["forward_passes"] == 1  # 3 step prefixes in one chunk


# ------------------------------------------------------------------------------------------------ trainer runs


def _train(compose_cfg, tmp_path, reward, *extra):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg(*extra, f"run_dir={tmp_path}")
    cfg.reward = reward
    loop.run_training(cfg, tmp_path, progress=False)
    return read_metrics(tmp_path / "metrics.jsonl")


def test_variance_trains_on_revise_with_a_lagged_reward_policy(compose_cfg, tmp_path):
    rows = _train(compose_cfg, tmp_path, {"variance": {"reward_policy": "lagged", "lag_steps": 1,
                                                        "masked_baseline": True}}, "task=revise")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["reward/variance/r3_mean"]) for r in rows)
    assert rows[0]["scoring/forward_passes"] >= 1 and "reward/variance/sigma_mean" in rows[0]


def test_confidence_trains(compose_cfg, tmp_path):
    rows = _train(compose_cfg, tmp_path, {"confidence": {"kind": "self_certainty"}})
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["reward/confidence/mean"] > 0


def test_prm_oracle_dense_trains(compose_cfg, tmp_path):
    rows = _train(compose_cfg, tmp_path, {"prm": {"dense": True}, "outcome": {}})
    assert [r["step"] for r in rows] == [1, 2] and "reward/prm/steps_mean" in rows[0]


def test_r3_sigma_ignores_rollouts_a_gate_rejected():
    # G=3, J=2. Over the two accepted rollouts sigma = [pop std(-1,-3), pop std(-2,-2)] = [1, 0],
    # so all weight sits on token 0 and R3_i = L[i, 0]; the rejected third rollout would move both.
    L = torch.tensor([[[-1.0, -2.0], [-3.0, -2.0], [-10.0, -4.0]]])
    mask = torch.ones(1, 2)
    r3, sigma, w = r3_mod.r3_rewards(L, mask, "sigma_norm", valid=torch.tensor([[True, True, False]]))
    assert torch.allclose(sigma, torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(w, torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(r3, torch.tensor([[-1.0, -3.0, -10.0]]))
    _, sigma_all, _ = r3_mod.r3_rewards(L, mask, "sigma_norm")
    assert sigma_all[0, 1] > 0.9  # pop std(-2, -2, -4) = 0.9428
