"""The KV-cached HF rollout engine on the tiny random Llama (drox.rollout.hf)."""

from __future__ import annotations

import math

import pytest
import torch

from drox.models.forward import response_logprobs
from drox.models.loading import build_tiny, render_prompts
from drox.rollout.base import RolloutBatch
from drox.rollout.hf import HFRolloutEngine, build_engine

PROMPTS = [
    "hi",
    "What is 2 + 3? Explain your steps.",
    "A much longer prompt with many more words in it, so that the batch needs left padding here.",
]
Q, G, T_MAX = len(PROMPTS), 4, 8


def _untie(model, seed: int = 1, std: float = 0.3):
    """Give the tiny model its own random output head.

    With tied embeddings a random model's argmax is the input token repeated (newline after newline), so
    greedy decoding would not depend on the KV cache or the position ids at all; an untied head
    with larger weights makes every step depend on the whole context and gives peaked
    distributions whose argmax is stable against float noise.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
        torch.nn.init.normal_(head.weight, std=std)
    model.lm_head = head
    model.config.tie_word_embeddings = False
    return model.eval()


@pytest.fixture(scope="module")
def policy(tiny_policy, model_cfg):
    """(model, tokenizer): the tiny random Llama (own copy) with an untied output head."""
    _, tok = tiny_policy
    return _untie(build_tiny(model_cfg, tok)), tok


@pytest.fixture(scope="module")
def model_cfg():
    from drox.cli.main import compose

    return compose(["model=tiny"]).model


@pytest.fixture(scope="module", params=[True, False], ids=["static-decode", "hf-forward"])
def engine(request, policy, model_cfg):
    """Both decode paths pass every contract test below (rollout.static_decode)."""
    model, tok = policy
    return HFRolloutEngine(model, tok, model_cfg, batch_size=64, static_decode=request.param)


@pytest.fixture(scope="module")
def batch(engine) -> RolloutBatch:
    return engine.generate(PROMPTS, G, max_new_tokens=T_MAX, temperature=1.0, seed=123)


def _recompute(model, b: RolloutBatch, temperature: float = 1.0, with_entropy: bool = False):
    with torch.no_grad():
        return response_logprobs(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask,
                                 temperature=temperature, with_entropy=with_entropy)


def _check_layout(b: RolloutBatch, tok, n_rows: int, max_new_tokens: int, eos_ids=None):
    """Invariants every RolloutBatch must satisfy."""
    eos_ids = set(eos_ids or {tok.eos_token_id})
    pad = tok.pad_token_id
    N, P = b.prompt_ids.shape
    T = b.response_ids.shape[1]
    assert N == n_rows and b.num_rows == n_rows
    assert b.prompt_mask.shape == (N, P) and b.response_mask.shape == (N, T)
    assert b.logprobs.shape == (N, T) and b.entropies.shape == (N, T)
    assert len(b.finish_reason) == N and len(b.texts) == N
    assert 1 <= T <= max_new_tokens
    # prompts: left padded (mask is 0...0 1...1), pad id on the padding, last column always real
    pm = b.prompt_mask
    assert set(pm.unique().tolist()) <= {0, 1}
    assert torch.all(pm[:, 1:] >= pm[:, :-1]), "prompt mask must be non-decreasing (left padding)"
    assert torch.all(pm[:, -1] == 1)
    assert torch.all(b.prompt_ids[pm == 0] == pad)
    # responses: mask contiguous from column 0, at least one token
    rm = b.response_mask
    assert rm.dtype.is_floating_point
    L = b.lengths
    assert torch.all(L >= 1)
    assert torch.equal(rm, (torch.arange(T)[None, :] < L[:, None]).to(rm.dtype))
    assert torch.all(b.response_ids[rm == 0] == pad)
    # log-probs: finite, <= 0 on tokens, exactly 0 on padding; entropies >= 0, 0 on padding
    assert torch.isfinite(b.logprobs).all() and torch.isfinite(b.entropies).all()
    assert torch.all(b.logprobs[rm == 0] == 0) and torch.all(b.entropies[rm == 0] == 0)
    assert torch.all(b.logprobs[rm == 1] <= 0)
    assert torch.all(b.entropies[rm == 1] >= -1e-5)
    for i in range(N):
        ids = b.response_ids[i, : int(L[i])].tolist()
        ends_eos = ids[-1] in eos_ids
        # EOS only ever as the last token (decoding stops there)
        assert not any(t in eos_ids for t in ids[:-1])
        assert b.finish_reason[i] == ("eos" if ends_eos else "length")
        if b.finish_reason[i] == "length":
            assert len(ids) == max_new_tokens
        assert b.texts[i] == tok.decode(ids, skip_special_tokens=True)
    assert torch.equal(b.truncated, torch.tensor([r == "length" for r in b.finish_reason]))


# ------------------------------------------------------------------ layout


def test_shapes_and_padding(batch, policy, engine):
    model, tok = policy
    _check_layout(batch, tok, Q * G, T_MAX)
    assert batch.group_size == G and batch.num_groups == Q
    assert batch.prompts == PROMPTS
    assert batch.temperature == 1.0
    # every row of a group carries its prompt, tokenised exactly as the chat template renders it
    rendered = render_prompts(tok, PROMPTS, engine.model_cfg)
    assert all("<|im_start|>" in r for r in rendered)
    lens = []
    for q, text in enumerate(rendered):
        want = tok(text, add_special_tokens=False)["input_ids"]
        lens.append(len(want))
        for g in range(G):
            row = q * G + g
            real = batch.prompt_ids[row][batch.prompt_mask[row] == 1].tolist()
            assert real == want
    assert len(set(lens)) == Q, "the prompts must have different lengths for this test to mean anything"
    assert batch.prompt_ids.shape[1] == max(lens)
    # the random model does not emit EOS in 8 tokens (checked for this seed): all rows run to the cap
    assert batch.finish_reason == ["length"] * (Q * G)
    assert batch.response_ids.shape[1] == T_MAX


def test_samples_within_group_differ(batch):
    # G samples of one prompt are independent draws, not G copies
    for q in range(Q):
        rows = {tuple(batch.response_ids[q * G + g].tolist()) for g in range(G)}
        assert len(rows) > 1


def test_seed_reproducible(engine):
    kw = dict(max_new_tokens=4, temperature=1.0)
    first = engine.generate(PROMPTS, 2, seed=123, **kw)
    again = engine.generate(PROMPTS, 2, seed=123, **kw)
    assert torch.equal(again.response_ids, first.response_ids)
    assert torch.equal(again.logprobs, first.logprobs)
    assert again.texts == first.texts
    other = engine.generate(PROMPTS, 2, seed=124, **kw)
    assert not torch.equal(other.response_ids, first.response_ids)


def test_does_not_touch_global_rng(engine):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    engine.generate(PROMPTS[:1], 2, max_new_tokens=3, seed=5)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ behaviour log-probs


def test_logprobs_match_teacher_forced_forward(policy, batch):
    """The behaviour log-probs are what the trainer recomputes: on-policy ratio == 1."""
    model, _ = policy
    lp, ent = _recompute(model, batch, with_entropy=True)
    assert torch.allclose(lp, batch.logprobs, atol=1e-4), (lp - batch.logprobs).abs().max()
    assert torch.allclose(ent, batch.entropies, atol=1e-4)
    ratio = torch.exp(lp - batch.logprobs)[batch.response_mask == 1]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3)


def test_logprobs_refer_to_temperature_without_top_p(policy, engine):
    model, _ = policy
    b = engine.generate(PROMPTS, 2, max_new_tokens=4, temperature=0.7, top_p=0.9, seed=3)
    assert b.temperature == 0.7
    lp, ent = _recompute(model, b, temperature=0.7, with_entropy=True)
    assert torch.allclose(lp, b.logprobs, atol=1e-4)
    assert torch.allclose(ent, b.entropies, atol=1e-4)
    # and not the T=1 distribution
    lp1, _ = _recompute(model, b, temperature=1.0)
    assert not torch.allclose(lp1, b.logprobs, atol=1e-2)


def test_margins_match_teacher_forced_forward(policy, engine):
    """generate(margins=True) records p_(1) - p_(2) of the temperature-1 distribution at every sampled position
    (whatever the sampling temperature), the numbers a teacher-forced pass gives; the samples are the same as
    without margins, and no margins are kept unless asked for."""
    from drox.models.forward import response_logits
    from drox.models.logprobs import top2_margin

    model, _ = policy
    plain = engine.generate(PROMPTS, 2, max_new_tokens=6, temperature=0.7, seed=5)
    b = engine.generate(PROMPTS, 2, max_new_tokens=6, temperature=0.7, seed=5, margins=True)
    assert plain.margins is None and torch.equal(b.response_ids, plain.response_ids)
    with torch.no_grad():
        logits = response_logits(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask)
    expected = top2_margin(logits) * b.response_mask
    assert torch.allclose(b.margins, expected, atol=1e-4), (b.margins - expected).abs().max()
    assert torch.all(b.margins[b.response_mask == 0] == 0) and b.margins[b.response_mask == 1].min() >= 0
    assert b.select_groups(torch.tensor([False, True, False])).margins.shape[0] == 2


# ------------------------------------------------------------------ greedy / top-p


@pytest.fixture(scope="module")
def greedy(engine) -> RolloutBatch:
    return engine.generate(PROMPTS, 2, max_new_tokens=4, temperature=0.0, seed=1)


def test_temperature_zero_is_greedy(policy, greedy):
    model, tok = policy
    b = greedy
    _check_layout(b, tok, Q * 2, 4)
    assert b.temperature == 0.0
    for q in range(Q):
        assert torch.equal(b.response_ids[2 * q], b.response_ids[2 * q + 1]), "greedy: all G samples identical"
    assert len({tuple(r) for r in b.response_ids.tolist()}) == Q
    # every token is the argmax of the teacher-forced logits
    from drox.models.forward import response_logits

    with torch.no_grad():
        logits = response_logits(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask)
    picked = logits.gather(-1, b.response_ids[..., None])[..., 0]
    assert torch.all(picked >= logits.max(-1).values - 1e-4)
    # log-probs of greedy rows refer to the T=1 distribution (temperature 0 has none)
    lp, _ = _recompute(model, b, temperature=0.0)
    assert torch.allclose(lp, b.logprobs, atol=1e-4)


def test_greedy_matches_hf_generate(policy, greedy):
    """Left padding + KV cache + position ids: same greedy continuation as HF on each prompt alone."""
    model, tok = policy
    for q in range(Q):
        row = 2 * q
        ids = greedy.prompt_ids[row][greedy.prompt_mask[row] == 1][None]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=4,
                                 pad_token_id=tok.pad_token_id)
        assert out[0, ids.shape[1]:].tolist() == greedy.response_ids[row].tolist()


def test_tiny_top_p_is_greedy(engine, greedy):
    nucleus = engine.generate(PROMPTS, 2, max_new_tokens=4, temperature=1.0, top_p=1e-6, seed=9)
    assert torch.equal(nucleus.response_ids, greedy.response_ids)
    # the log-probs are still those of the (untruncated) T=1 distribution, so the same as greedy's
    assert torch.allclose(nucleus.logprobs, greedy.logprobs, atol=1e-5)


# ------------------------------------------------------------------ chunking


def test_chunking(policy, engine, model_cfg, greedy):
    """batch_size < Q*G: prompts are decoded in chunks and re-padded into one valid batch."""
    model, tok = policy
    small = HFRolloutEngine(model, tok, model_cfg, batch_size=3,  # one prompt (2 rows) per chunk
                           static_decode=engine.static_decode)
    b = small.generate(PROMPTS, 2, max_new_tokens=4, temperature=1.0, seed=11)
    _check_layout(b, tok, Q * 2, 4)
    # the chunks' prompts (each padded only to its own length) are re-padded on the left
    assert torch.equal(b.prompt_ids, greedy.prompt_ids) and torch.equal(b.prompt_mask, greedy.prompt_mask)
    lp, _ = _recompute(model, b)
    assert torch.allclose(lp, b.logprobs, atol=1e-4)
    # greedy decoding gives the same tokens however the batch is chunked
    gs = small.generate(PROMPTS, 2, max_new_tokens=4, temperature=0.0)
    assert torch.equal(gs.response_ids, greedy.response_ids)
    assert torch.allclose(gs.logprobs, greedy.logprobs, atol=1e-4)


def test_plain_tiny_policy(tiny_policy, model_cfg):
    """The tiny model exactly as load_policy builds it (tied head): same invariants, exact log-probs."""
    model, tok = tiny_policy
    b = HFRolloutEngine(model, tok, model_cfg).generate(PROMPTS, 2, max_new_tokens=4, seed=0)
    _check_layout(b, tok, Q * 2, 4)
    lp, _ = _recompute(model, b)
    assert torch.allclose(lp, b.logprobs, atol=1e-4)


# the LM head (model.lm_head_mm) and the layers' projections (rollout.decode_mm) as F.linear or as (W h^T)^T
@pytest.mark.parametrize("head_mm,proj_mm", [(False, False), (True, False), (True, True)])
def test_static_decode_step_equals_hf_forward(policy, model_cfg, head_mm, proj_mm):
    """The static-cache step's logits equal HF's forward over the whole sequence, row by row, including after
    rows are dropped (left-padded prompts of different lengths, per-row positions)."""
    from transformers import DynamicCache

    from drox.rollout.hf import _cache_kwarg
    from drox.rollout.static_decode import StaticKVDecoder, supports_static_decode

    model, tok = policy
    assert supports_static_decode(model)
    ids, mask = HFRolloutEngine(model, tok, model_cfg).encode_prompts(PROMPTS)  # [Q, P], left-padded
    cache = DynamicCache(config=model.config)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{_cache_kwarg(model): cache})
    decoder = StaticKVDecoder(model, cache, mask, max_new_tokens=4, head_mm=head_mm, proj_mm=proj_mm)
    gen = torch.Generator().manual_seed(0)
    fed = torch.randint(100, 1000, (Q, 3), generator=gen)  # three tokens fed to every row
    rows = torch.arange(Q)
    next_pos = mask.sum(-1)
    for t in range(3):
        if t == 2:  # drop the middle row, as the engine does when a row finishes
            keep = torch.tensor([0, 2])
            decoder.select(keep)
            rows, next_pos = rows[keep], next_pos[keep]
        logits = decoder.step(fed[rows, t], next_pos)  # [A, V]
        full_ids = torch.cat([ids, fed[:, : t + 1]], 1)[rows]
        full_mask = torch.cat([mask, torch.ones(Q, t + 1, dtype=mask.dtype)], 1)[rows]
        with torch.no_grad():
            ref = model(input_ids=full_ids, attention_mask=full_mask,
                        position_ids=(full_mask.cumsum(-1) - 1).clamp_min(0)).logits[:, -1]
        assert logits.abs().max() > 1.0
        torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
        next_pos = next_pos + 1


def test_static_decode_not_taken_for_wrapped_layers(policy):
    """A projection that is not a plain nn.Linear (LoRA, quantised) means the lean step would compute
    something else: the engine falls back to HF's forward."""
    import copy

    from drox.rollout.static_decode import supports_static_decode

    model = copy.deepcopy(policy[0])
    assert supports_static_decode(model)
    layer = model.model.layers[0].mlp

    class Wrapped(torch.nn.Linear):
        pass

    wrapped = Wrapped(layer.up_proj.in_features, layer.up_proj.out_features, bias=False)
    wrapped.weight = layer.up_proj.weight
    layer.up_proj = wrapped
    assert not supports_static_decode(model)
    other = copy.deepcopy(policy[0])
    other.config.model_type = "qwen3"  # per-head q/k norms: not the Llama step
    assert not supports_static_decode(other)


def test_build_engine(policy, tiny_cfg):
    model, tok = policy
    eng = build_engine(tiny_cfg.rollout, model, tok, tiny_cfg.model)
    assert isinstance(eng, HFRolloutEngine) and eng.batch_size == tiny_cfg.rollout.batch_size


def test_restores_training_mode(policy, engine):
    model, _ = policy
    model.train()
    try:
        engine.generate(PROMPTS[:1], 1, max_new_tokens=2)
        assert model.training
    finally:
        model.eval()


# ------------------------------------------------------------------ select_groups


def test_select_groups(batch):
    keep = torch.tensor([True, False, True])
    sub = batch.select_groups(keep)
    rows = [0, 1, 2, 3, 8, 9, 10, 11]
    assert sub.num_rows == 8 and sub.num_groups == 2 and sub.group_size == G
    for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "entropies"):
        assert torch.equal(getattr(sub, name), getattr(batch, name)[rows]), name
    assert sub.texts == [batch.texts[i] for i in rows]
    assert sub.finish_reason == [batch.finish_reason[i] for i in rows]
    assert sub.prompts == [PROMPTS[0], PROMPTS[2]]
    assert sub.temperature == batch.temperature
    none = batch.select_groups(torch.zeros(Q, dtype=torch.bool))
    assert none.num_rows == 0 and none.prompts == []


# ------------------------------------------------------------------ EOS handling


class _EosHead(torch.nn.Module):
    """Wraps lm_head so that P(EOS) == p_eos at every position (p_eos=1 -> EOS always wins)."""

    def __init__(self, head, eos_id: int, p_eos: float):
        super().__init__()
        self.head, self.eos_id, self.p_eos = head, eos_id, p_eos

    def forward(self, h):
        z = self.head(h)
        others = z.clone()
        others[..., self.eos_id] = -math.inf
        lse = torch.logsumexp(others, dim=-1)
        z = z.clone()
        z[..., self.eos_id] = 1e4 if self.p_eos >= 1 else lse + math.log(self.p_eos / (1 - self.p_eos))
        return z


def _eos_model(tiny_cfg, tok, p_eos):
    model = build_tiny(tiny_cfg.model, tok)
    model.lm_head = _EosHead(model.lm_head, tok.eos_token_id, p_eos)
    return model.eval()


def test_eos_always(policy, tiny_cfg):
    _, tok = policy
    model = _eos_model(tiny_cfg, tok, 1.0)
    eng = HFRolloutEngine(model, tok, tiny_cfg.model)
    b = eng.generate(PROMPTS, 2, max_new_tokens=8, seed=0)
    _check_layout(b, tok, Q * 2, 8)
    assert b.finish_reason == ["eos"] * (Q * 2)
    assert b.response_ids.shape[1] == 1
    assert torch.all(b.response_ids[:, 0] == tok.eos_token_id)
    assert torch.all(b.response_mask == 1), "the EOS token is part of the response"
    assert b.texts == [""] * (Q * 2)
    assert torch.all(b.lengths == 1) and not b.truncated.any()


def test_eos_mixed_lengths_drop_finished_rows(policy, tiny_cfg):
    """Rows that stop early leave the KV cache; the survivors' log-probs must stay exact."""
    _, tok = policy
    model = _eos_model(tiny_cfg, tok, 0.3)
    eng = HFRolloutEngine(model, tok, tiny_cfg.model, batch_size=64)
    b = eng.generate(PROMPTS, 6, max_new_tokens=6, seed=4)
    _check_layout(b, tok, Q * 6, 6)
    reasons = set(b.finish_reason)
    assert reasons == {"eos", "length"}, reasons
    assert len(set(b.lengths.tolist())) >= 4
    eos_rows = [i for i, r in enumerate(b.finish_reason) if r == "eos"]
    for i in eos_rows:
        L = int(b.lengths[i])
        assert b.response_ids[i, L - 1] == tok.eos_token_id and b.response_mask[i, L - 1] == 1
    lp, _ = _recompute(model, b)
    assert torch.allclose(lp, b.logprobs, atol=1e-4), (lp - b.logprobs).abs().max()
    eos_lp = torch.stack([b.logprobs[i, int(b.lengths[i]) - 1] for i in eos_rows])
    assert torch.allclose(eos_lp, torch.full_like(eos_lp, math.log(0.3)), atol=1e-4)


def test_inverse_cdf_draws_the_right_distribution():
    """The static path's sampler: frequencies match the weights (unnormalised), zero weights are never drawn,
    and the same generator seed gives the same draws."""
    from drox.rollout.hf import _inverse_cdf

    weights = torch.tensor([[0.0, 2.0, 0.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([_inverse_cdf(weights, gen) for _ in range(4000)], 1)  # [2, 4000]
    counts = torch.stack([(draws[0] == v).sum() for v in range(5)]).float() / 4000
    # expected 0, .5, 0, .25, .25; binomial std at n=4000 is <= 0.008, so 0.03 is ~4 sigma
    assert counts[0] == 0 and counts[2] == 0
    assert torch.allclose(counts[[1, 3, 4]], torch.tensor([0.5, 0.25, 0.25]), atol=0.03)
    assert (draws[1] == 0).all()
    again = torch.cat([_inverse_cdf(weights, torch.Generator().manual_seed(0)) for _ in range(1)], 1)
    assert torch.equal(again, draws[:, :1])


def test_eval_mode_restores_the_training_flag_also_on_error():
    from drox.models.forward import eval_mode

    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    with eval_mode(model) as m:
        assert m is model and not model.training and not model[0].training
    assert model.training and model[0].training  # was training: restored
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training  # was in eval: stays in eval
    model.train()
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert model.training
