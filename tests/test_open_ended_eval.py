"""Open-ended evaluation (no verifier): ROUGE-L, reference likelihood, pairwise judge, bootstrap CIs."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from drox.config import ModelConfig, TaskConfig
from drox.evaluation.bootstrap import bootstrap_ci
from drox.evaluation.open_ended import (
    evaluate_open_ended,
    judge_choice_ids,
    judge_prompt,
    judge_win_rate,
    lcs_length,
    reference_logprob_per_token,
    rouge_l_f1,
    rouge_tokens,
)
from drox.evaluation.sampling import sample_and_verify
from drox.models.loading import load_policy, render_prompts
from drox.tasks import build_task
from drox.tasks.verify import VerifyResult


@pytest.fixture(scope="module")
def model_cfg():
    return ModelConfig(name="tiny")


@pytest.fixture(scope="module")
def policy(model_cfg):
    """(model, tokenizer): the tiny random Llama with the SmolLM2 tokenizer, built for this module."""
    return load_policy(model_cfg, "cpu")


# ------------------------------------------------------------------------------------------------ ROUGE-L


def test_rouge_l_hand_computed():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5; P = R = 5/6
    assert rouge_l_f1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6, abs=1e-12)
    # candidate inside the reference: L = 2, P = 2/2, R = 2/6 -> F1 = 2·1·(1/3) / (4/3) = 1/2
    assert rouge_l_f1("the cat", "the cat sat on the mat") == pytest.approx(0.5, abs=1e-12)
    # repeated tokens: L = 1, P = 1/3, R = 1 -> F1 = 1/2 (a set-based overlap would give 1)
    assert rouge_l_f1("the the the", "the") == pytest.approx(0.5, abs=1e-12)
    # order matters (subsequence, not bag of words): the same six words reversed-ish share only
    # "the on the" / "the sat the" in order -> L = 3, F1 = 3/6 (ROUGE-1 would give 1)
    assert rouge_l_f1("mat the on sat cat the", "the cat sat on the mat") == pytest.approx(0.5, abs=1e-12)
    assert rouge_l_f1("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l_f1("dog", "the cat") == 0.0


def test_rouge_l_empty_and_tokenisation():
    assert rouge_l_f1("", "the cat") == 0.0
    assert rouge_l_f1("the cat", "") == 0.0
    assert rouge_l_f1("", "") == 0.0
    assert rouge_l_f1("!!! ...", "the cat") == 0.0  # no alphanumeric token at all
    # lowercase, punctuation is a separator, no stemming, non-ASCII letters dropped (rouge-score's default)
    assert rouge_tokens("The CAT, sat!  On\tthe e-mail.") == ["the", "cat", "sat", "on", "the", "e", "mail"]
    assert rouge_tokens("café 42") == ["caf", "42"]
    assert rouge_l_f1("The CAT, sat!", "the cat sat") == 1.0
    assert rouge_l_f1("cats", "cat") == 0.0  # no stemmer


def _lcs_brute(a, b) -> int:
    for k in range(min(len(a), len(b)), 0, -1):
        subs_b = set(itertools.combinations(b, k))
        if any(s in subs_b for s in itertools.combinations(a, k)):
            return k
    return 0


def test_lcs_matches_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randrange(0, 7))]
        b = [rng.choice("abc") for _ in range(rng.randrange(0, 7))]
        assert lcs_length(a, b) == _lcs_brute(a, b), (a, b)
        assert lcs_length(a, b) == lcs_length(b, a)


# ------------------------------------------------------------------------------------------------ reference likelihood

PROMPTS = [
    "Rewrite concisely: Due to the fact that it rained, we stayed in.",
    "Hi",
    "Rewrite the following sentence more concisely:\n\nAt this point in time, Bob is not able to find the lamp.",
]
REFERENCES = ["Because it rained, we stayed in.", "Hello there, how can I help you today?", "Bob cannot find the lamp now."]


def _hand_ref_logprob(model, tok, model_cfg, prompt, reference) -> float:
    """Unpadded single forward pass; log_softmax by hand; mean over the reference tokens."""
    rendered = render_prompts(tok, [prompt], model_cfg)[0]
    p_ids = tok(rendered, add_special_tokens=False)["input_ids"]  # the chat template carries its own specials
    r_ids = tok(reference, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()  # [P+T, V]
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    P = len(p_ids)
    vals = [logp[P - 1 + j, r_ids[j]].item() for j in range(len(r_ids))]  # position P-1+j predicts r_j
    return sum(vals) / len(vals)


def test_reference_logprob_matches_hand_computation(policy, model_cfg):
    model, tok = policy
    assert tok.chat_template is not None  # the prompt is rendered as in the rollout engine
    got = reference_logprob_per_token(model, tok, model_cfg, PROMPTS[:1], REFERENCES[:1], batch_size=1)
    want = _hand_ref_logprob(model, tok, model_cfg, PROMPTS[0], REFERENCES[0])
    assert got[0] == pytest.approx(want, abs=1e-5)
    assert got[0] < 0


def test_reference_logprob_without_chat_template(policy):
    model, tok = policy
    cfg = ModelConfig(name="tiny", chat_template=False)
    got = reference_logprob_per_token(model, tok, cfg, PROMPTS[1:2], REFERENCES[1:2])
    assert got[0] == pytest.approx(_hand_ref_logprob(model, tok, cfg, PROMPTS[1], REFERENCES[1]), abs=1e-5)


def test_reference_logprob_independent_of_batching(policy, model_cfg):
    model, tok = policy
    model.train()  # restored afterwards; scoring itself runs in eval mode
    one = reference_logprob_per_token(model, tok, model_cfg, PROMPTS, REFERENCES, batch_size=1)
    three = reference_logprob_per_token(model, tok, model_cfg, PROMPTS, REFERENCES, batch_size=3)
    two = reference_logprob_per_token(model, tok, model_cfg, PROMPTS, REFERENCES, batch_size=2)
    assert model.training
    model.eval()
    assert len(one) == 3
    for a, b, c in zip(one, three, two):
        assert a == pytest.approx(b, abs=1e-5)
        assert a == pytest.approx(c, abs=1e-5)
    # each row is its own prompt/reference pair (not a constant or a batch mean)
    for i in range(3):
        assert one[i] == pytest.approx(_hand_ref_logprob(model, tok, model_cfg, PROMPTS[i], REFERENCES[i]), abs=1e-5)


def test_reference_logprob_rejects_bad_input(policy, model_cfg):
    model, tok = policy
    with pytest.raises(ValueError, match="empty"):
        reference_logprob_per_token(model, tok, model_cfg, ["q"], [""])
    with pytest.raises(ValueError, match="differ"):
        reference_logprob_per_token(model, tok, model_cfg, ["q", "r"], ["a"])


# ------------------------------------------------------------------------------------------------ judge

INSTRUCTIONS = ["Rewrite concisely: In order to fix the lamp, Bob went out.", "Say hi.", "Name a colour."]
CANDIDATES = ["To fix the lamp, Bob went out.", "Hello!", "The colour I would name is, after some thought, blue."]
JUDGE_REFS = ["Bob went out to fix the lamp.", "Hi.", "Red."]


def test_judge_choice_tokens_are_single_tokens_for_smollm2(policy):
    _, tok = policy  # the tiny model uses the embedded SmolLM2 tokenizer
    a_ids, b_ids = judge_choice_ids(tok)
    assert len(tok("A", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("B", add_special_tokens=False)["input_ids"]) == 1
    assert tok.decode(a_ids[0]).strip() == "A" and all(tok.decode(i).strip() == "A" for i in a_ids)
    assert all(tok.decode(i).strip() == "B" for i in b_ids)
    assert not set(a_ids) & set(b_ids)


def test_judge_swap_symmetry(policy):
    model, tok = policy
    rate, probs = judge_win_rate(model, tok, INSTRUCTIONS, CANDIDATES, JUDGE_REFS, batch_size=2)
    rate_sw, probs_sw = judge_win_rate(model, tok, INSTRUCTIONS, JUDGE_REFS, CANDIDATES, batch_size=2)
    assert len(probs) == 3
    for p, q in zip(probs, probs_sw):
        assert 0.0 <= p <= 1.0
        assert p + q == pytest.approx(1.0, abs=1e-6)
    assert rate == pytest.approx(np.mean(probs))
    assert rate + rate_sw == pytest.approx(1.0, abs=1e-6)
    # the random tiny model reads nearly the same last tokens in every judge prompt, so it is close to a
    # pure position-bias judge (P(A) ~ 0.55 in both orders) and the averaging pulls it to ~0.5; not exactly
    assert any(abs(p - 0.5) > 1e-5 for p in probs)
    # and independent of how items are batched
    _, probs_1 = judge_win_rate(model, tok, INSTRUCTIONS, CANDIDATES, JUDGE_REFS, batch_size=1)
    assert probs_1 == pytest.approx(probs, abs=1e-6)


class _ContentJudge(torch.nn.Module):
    """A judge whose verdict depends strongly on what it reads, and on where: for the real tokens x_t at
    positions t (padding ignored), z_A = Σ_t sin(0.37·x_t·(t+1)) / 4 and z_B = Σ_t cos(0.11·x_t + t) / 4."""

    def __init__(self, vocab: int, a_id: int, b_id: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.a_id, self.b_id = vocab, a_id, b_id

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **kw):
        x = input_ids.double()
        mask = torch.ones_like(x) if attention_mask is None else attention_mask.double()
        t = (mask.cumsum(-1) - 1).clamp_min(0)
        z = torch.full((x.shape[0], 1, self.vocab), -30.0, dtype=torch.float64)
        z[:, 0, self.a_id] = (torch.sin(0.37 * x * (t + 1)) * mask).sum(-1) / 4
        z[:, 0, self.b_id] = (torch.cos(0.11 * x + t) * mask).sum(-1) / 4
        return SimpleNamespace(logits=z)


def test_judge_swap_symmetry_content_sensitive_judge(policy):
    _, tok = policy
    a_ids, b_ids = judge_choice_ids(tok)
    judge = _ContentJudge(len(tok), a_ids[0], b_ids[0])
    _, probs = judge_win_rate(judge, tok, INSTRUCTIONS, CANDIDATES, JUDGE_REFS, batch_size=2)
    _, probs_sw = judge_win_rate(judge, tok, INSTRUCTIONS, JUDGE_REFS, CANDIDATES, batch_size=3)
    assert max(abs(p - 0.5) for p in probs) > 0.05  # far from indifferent
    for p, q in zip(probs, probs_sw):
        assert p + q == pytest.approx(1.0, abs=1e-6)


def test_judge_identical_texts_is_exactly_half(policy):
    model, tok = policy
    rate, probs = judge_win_rate(model, tok, INSTRUCTIONS, JUDGE_REFS, JUDGE_REFS)
    assert probs == [0.5, 0.5, 0.5] and rate == 0.5
    _, probs = judge_win_rate(model, tok, ["q"], ["  Red.\n"], ["Red."])  # whitespace around is ignored
    assert probs == [0.5]


def test_judge_matches_hand_computation(policy):
    """P(candidate better) = (P(A | cand as A) + P(B | cand as B)) / 2, from unpadded forward passes."""
    model, tok = policy
    a_ids, b_ids = judge_choice_ids(tok)

    def p_a(text):
        rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
        ids = torch.tensor([tok(rendered, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            z = model(input_ids=ids).logits[0, -1].double()
        pa, pb = torch.exp(z[a_ids]).sum(), torch.exp(z[b_ids]).sum()
        return (pa / (pa + pb)).item()

    i = 2
    want = 0.5 * (p_a(judge_prompt(INSTRUCTIONS[i], CANDIDATES[i], JUDGE_REFS[i]))
                  + 1 - p_a(judge_prompt(INSTRUCTIONS[i], JUDGE_REFS[i], CANDIDATES[i])))
    _, probs = judge_win_rate(model, tok, INSTRUCTIONS, CANDIDATES, JUDGE_REFS, batch_size=3)
    assert probs[i] == pytest.approx(want, abs=1e-6)


class _AlwaysA(torch.nn.Module):
    """A judge with pure position bias: it says "A" (or " A") whatever it reads."""

    def __init__(self, vocab: int, a_ids):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.logits = torch.zeros(vocab)
        self.logits[a_ids] = 8.0
        self.training = False

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **kw):
        B, P = input_ids.shape
        return SimpleNamespace(logits=self.logits.expand(B, 1, -1).clone())


def test_pure_position_bias_cancels(policy):
    _, tok = policy
    a_ids, _ = judge_choice_ids(tok)
    rate, probs = judge_win_rate(_AlwaysA(len(tok), a_ids), tok, INSTRUCTIONS, CANDIDATES, JUDGE_REFS)
    assert probs == pytest.approx([0.5] * 3, abs=1e-9) and rate == pytest.approx(0.5, abs=1e-9)


def test_judge_rejects_mismatched_lengths(policy):
    model, tok = policy
    with pytest.raises(ValueError, match="differ"):
        judge_win_rate(model, tok, ["q"], ["a", "b"], ["c"])
    rate, probs = judge_win_rate(model, tok, [], [], [])
    assert probs == [] and math.isnan(rate)


# ------------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_deterministic_and_contains_mean():
    values = [0.1, 0.9, 0.4, 0.35, 0.8, 0.05, 0.6, 0.5]
    a = bootstrap_ci(values, seed=3)
    assert a == bootstrap_ci(values, seed=3)
    assert a != bootstrap_ci(values, seed=4)
    low, high = a
    assert low < float(np.mean(values)) < high
    assert min(values) <= low and high <= max(values)
    # more problems from the same distribution -> a narrower interval
    low4, high4 = bootstrap_ci(values * 4, seed=3)
    assert high4 - low4 < high - low


def test_bootstrap_hand_computed_two_values():
    # resample means of [0, 1] are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5%
    # quantiles of 1000 draws are 0 and 1
    assert bootstrap_ci([0.0, 1.0], seed=0) == (0.0, 1.0)


def test_bootstrap_degenerate():
    assert bootstrap_ci([0.1] * 7, seed=0) == (0.1, 0.1)
    assert bootstrap_ci([-2.5], seed=9) == (-2.5, -2.5)
    for bad in ([], [1.0, float("nan")], [float("inf")]):
        with pytest.raises(ValueError):
            bootstrap_ci(bad, seed=0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], seed=0, n_resamples=0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], seed=0, alpha=1.0)


# ------------------------------------------------------------------------------------------------ evaluate_open_ended


@pytest.fixture(scope="module")
def revise_task():
    return build_task(TaskConfig(name="revise", n_train=8, n_test=3, prompt_suffix="", verifier="none"), "test")


def _run(policy, model_cfg, task, judge=None, **kw):
    from drox.rollout.hf import HFRolloutEngine

    model, tok = policy
    engine = HFRolloutEngine(model, tok, model_cfg, batch_size=4)  # 2 prompts x 2 samples per batch: 2 batches
    args = dict(n=2, num_problems=3, max_new_tokens=6, temperature=1.0, top_p=1.0, seed=11)
    args.update(kw)
    return evaluate_open_ended(engine, task, model=model, tokenizer=tok, model_cfg=model_cfg, judge=judge,
                               progress=False, **args)


def test_evaluate_open_ended(policy, model_cfg, revise_task):
    model, tok = policy
    summary, per_problem, records = _run(policy, model_cfg, revise_task)
    rows = revise_task.dataset.to_list()

    assert len(records) == 6 and len(per_problem) == 3
    assert summary["n"] == 2 and summary["num_problems"] == 3
    assert "win_rate" not in summary and "win_prob" not in records[0]
    assert [r["problem_id"] for r in records] == [str(row["problem_id"]) for row in rows for _ in range(2)]
    for rec in records:
        assert set(rec) == {"problem_id", "completion", "answer", "reference", "rouge_l_f1", "length", "finish_reason"}
        assert rec["answer"] == rec["completion"].strip()  # no \boxed{} / Answer: -> the whole rewrite is scored
        assert rec["rouge_l_f1"] == rouge_l_f1(rec["answer"], rec["reference"])
        assert 1 <= rec["length"] <= 6

    # per-problem reference likelihood: once per problem, equal to the direct computation
    direct = reference_logprob_per_token(model, tok, model_cfg, [r["prompt"] for r in rows],
                                         [r["answer"] for r in rows], batch_size=1)
    assert per_problem["ref_logprob_per_token"].tolist() == pytest.approx(direct, abs=1e-5)

    # summary = mean over problems of per-problem means, with bootstrap half-widths
    assert summary["rouge_l_f1"] == pytest.approx(np.mean([r["rouge_l_f1"] for r in records]))
    assert summary["mean_length"] == pytest.approx(np.mean([r["length"] for r in records]))
    assert summary["truncated_frac"] == pytest.approx(np.mean([r["finish_reason"] == "length" for r in records]))
    assert summary["ref_logprob_per_token"] == pytest.approx(np.mean(direct), abs=1e-5)
    for key in ("rouge_l_f1", "ref_logprob_per_token", "mean_length", "truncated_frac"):
        low, high = bootstrap_ci(per_problem[key], seed=11)
        assert (summary[f"{key}_ci95_low"], summary[f"{key}_ci95_high"]) == pytest.approx((low, high))
        assert summary[f"{key}_ci95_low"] <= summary[key] <= summary[f"{key}_ci95_high"]

    # deterministic: the same config gives the same samples and scores
    again, _, records2 = _run(policy, model_cfg, revise_task)
    assert records2 == records and again == summary


def test_same_samples_as_pass_at_k_evaluation(policy, model_cfg, revise_task):
    """Open-ended and pass@k evaluation share one batching/seeding scheme (sampling.sample_batches)."""
    from drox.rollout.hf import HFRolloutEngine

    model, tok = policy
    _, _, records = _run(policy, model_cfg, revise_task)

    class NeverRight:
        def __call__(self, completions, rows):
            return VerifyResult(correct=[False] * len(completions), extracted=[None] * len(completions))

    task = dataclasses.replace(revise_task, verifier=NeverRight())
    verified, _ = sample_and_verify(HFRolloutEngine(model, tok, model_cfg, batch_size=4), task, n=2, num_problems=3,
                                    max_new_tokens=6, temperature=1.0, top_p=1.0, seed=11, progress=False)
    assert [r["completion"] for r in verified] == [r["completion"] for r in records]
    assert [r["length"] for r in verified] == [r["length"] for r in records]


def test_evaluate_open_ended_with_judge(policy, model_cfg, revise_task):
    model, tok = policy
    summary, per_problem, records = _run(policy, model_cfg, revise_task, judge=(model, tok))
    probs = [r["win_prob"] for r in records]
    assert all(0.0 <= p <= 1.0 for p in probs)
    # the same numbers as calling the judge directly on (prompt, outcome, reference)
    rows = revise_task.dataset.to_list()
    _, direct = judge_win_rate(model, tok, [rows[j // 2]["prompt"] for j in range(6)], [r["answer"] for r in records],
                               [r["reference"] for r in records], batch_size=8)
    assert probs == pytest.approx(direct, abs=1e-6)
    assert per_problem["win_rate"].tolist() == pytest.approx([np.mean(probs[2 * q:2 * q + 2]) for q in range(3)])
    assert summary["win_rate"] == pytest.approx(np.mean(probs))
    assert summary["win_rate_ci95_low"] <= summary["win_rate"] <= summary["win_rate_ci95_high"]
    assert 0.0 <= summary["judge_ab_mass"] <= 1.0
