"""The shared-prompt pass (models/shared_prompt.py): its layout by hand, and its numbers against the plain pass."""

import copy
from types import SimpleNamespace

import pytest
import torch

from drox.models.forward import response_logprobs
from drox.models.shared_prompt import PADDING, PROMPT, attention_mask, group_spans, pack, plan

PAD = 0

# three rows: a group of two sharing prompt [5, 6] (left-padded), then a group of one with prompt [7, 8, 9]
PROMPT_IDS = torch.tensor([[PAD, 5, 6], [PAD, 5, 6], [7, 8, 9]])
PROMPT_MASK = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1]])
RESPONSE_IDS = torch.tensor([[11, 12, PAD], [13, PAD, PAD], [14, 15, 16]])
RESPONSE_MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def test_layout_by_hand():
    assert group_spans(PROMPT_IDS, PROMPT_MASK) == [(0, 2), (2, 3)]
    p = pack(PROMPT_IDS, PROMPT_MASK, RESPONSE_IDS, RESPONSE_MASK)
    # row 0: prompt 5 6, response 0 = 11 12, response 1 = 13, one padding position; row 1: 7 8 9 14 15 16
    assert p.input_ids.tolist() == [[5, 6, 11, 12, 13, 0], [7, 8, 9, 14, 15, 16]]
    # each response's positions restart right after the prompt
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2, 0], [0, 1, 2, 3, 4, 5]]
    assert p.segment.tolist() == [[PROMPT, PROMPT, 0, 0, 1, PADDING], [PROMPT] * 3 + [0, 0, 0]]
    # token 11 and token 13 are both predicted by the prompt's last position (row 0, pos 1); 12 by 11 (pos 2)
    assert list(zip(p.source_row.tolist(), p.source_pos.tolist())) == [(0, 1), (0, 2), (0, 1), (1, 2), (1, 3), (1, 4)]
    assert list(zip(p.target_row.tolist(), p.target_col.tolist())) == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert p.tokens.tolist() == [11, 12, 13, 14, 15, 16]


def test_attention_mask_by_hand():
    p = pack(PROMPT_IDS, PROMPT_MASK, RESPONSE_IDS, RESPONSE_MASK)
    m = attention_mask(p.segment)[0, 0].int()  # row 0: [5, 6, 11, 12, 13, pad]
    assert m.tolist() == [
        [1, 0, 0, 0, 0, 0],  # prompt 5
        [1, 1, 0, 0, 0, 0],  # prompt 6
        [1, 1, 1, 0, 0, 0],  # 11 (response 0)
        [1, 1, 1, 1, 0, 0],  # 12 (response 0)
        [1, 1, 0, 0, 1, 0],  # 13 (response 1) sees the prompt and itself, not response 0
        [0, 0, 0, 0, 0, 1],  # padding sees only itself (no all-masked softmax row)
    ]


def test_not_packed_when_nothing_is_shared_or_mask_has_holes():
    assert pack(PROMPT_IDS[1:], PROMPT_MASK[1:], RESPONSE_IDS[1:], RESPONSE_MASK[1:]) is None
    holes = RESPONSE_MASK.clone()
    holes[2, 1] = 0.0  # not a prefix: only the plain pass is exact
    assert pack(PROMPT_IDS, PROMPT_MASK, RESPONSE_IDS, holes) is None


def test_plan_counts_flops():
    # params 10, hidden 10, 1 layer: 2 * 10 = 20 FLOPs per position, 4 * 10 * 1 = 40 per attention pair
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=10, num_hidden_layers=1),
                            parameters=lambda: [torch.zeros(10)])
    prompt_mask, response_mask = torch.ones(4, 3), torch.ones(4, 3)
    packed_wide = SimpleNamespace(input_ids=torch.zeros(1, 15))  # 3 + 4 * 3
    # plain: 4 * (20 * 6 + 40 * 36) = 6240; packed: 20 * 15 + 40 * 225 = 9300 -> plain
    assert plan(model, prompt_mask, response_mask, packed_wide) is False
    model.parameters = lambda: [torch.zeros(1000)]
    # plain: 4 * (2000 * 6 + 40 * 36) = 53760; packed: 2000 * 15 + 9000 = 39000 -> packed
    assert plan(model, prompt_mask, response_mask, packed_wide) is True
    assert plan(model, prompt_mask, response_mask, None) is False


def _batch(tokenizer, G=3):
    """Two prompts of different lengths x G responses of different lengths, left/right padded."""
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(100, 1000, (n,), generator=gen) for n in (5, 9)]
    P, T = 9, 7
    rows = []
    for q, prompt in enumerate(prompts):
        for g in range(G):
            L = [7, 2, 5, 1, 4, 6][(q * G + g) % 6]
            rows.append((prompt, torch.randint(100, 1000, (L,), generator=gen)))
    N = len(rows)
    prompt_ids, prompt_mask = torch.zeros(N, P, dtype=torch.long), torch.zeros(N, P, dtype=torch.long)
    response_ids, response_mask = torch.zeros(N, T, dtype=torch.long), torch.zeros(N, T)
    for n, (prompt, resp) in enumerate(rows):
        prompt_ids[n, P - len(prompt):], prompt_mask[n, P - len(prompt):] = prompt, 1
        response_ids[n, : len(resp)], response_mask[n, : len(resp)] = resp, 1.0
    return prompt_ids, prompt_mask, response_ids, response_mask


@pytest.mark.parametrize("attn,head_mm,head_rows", [("sdpa", False, 0), ("eager", False, 0), ("sdpa", True, 0),
                                                   ("sdpa", True, 4), ("eager", False, 5)])
def test_same_logprobs_entropies_and_gradients_as_the_plain_pass(tiny_policy, attn, head_mm, head_rows):
    """head_mm: the packed pass computes the LM head as (W h^T)^T (models/head.py), the plain pass as HF does;
    head_rows: the packed pass's head, log-probs and entropies 4 or 5 positions at a time with the hand-written
    backward (models/head.chunked_head_logprobs; the batch has 28 response positions)."""
    model = copy.deepcopy(tiny_policy[0])
    model.config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.no_grad():  # the tiny model's random init is near-uniform: sharpen it so differences show
        for p in model.parameters():
            p.mul_(8.0)
    batch = _batch(tiny_policy[1])
    assert plan(model, batch[1], batch[3], pack(*batch)), "the tiny model should take the packed pass"
    advantages = torch.linspace(-1, 1, batch[0].shape[0])[:, None]

    def run(share):
        model.zero_grad(set_to_none=True)
        lp, ent = response_logprobs(model, *batch, temperature=0.7, with_entropy=True, share_prompts=share,
                                    head_mm=head_mm, head_rows=head_rows)
        ((lp * advantages).sum() + 0.3 * ent.sum()).backward()  # both outputs' gradients reach the weights
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return lp.detach(), ent.detach(), grads

    lp_plain, ent_plain, g_plain = run(False)
    lp_shared, ent_shared, g_shared = run(True)
    assert lp_plain.abs().max() > 1.0  # not a degenerate comparison
    assert torch.equal(lp_shared == 0, batch[3] == 0)  # padding is 0, every real token has a value
    torch.testing.assert_close(lp_shared, lp_plain, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent_shared, ent_plain, atol=2e-5, rtol=1e-5)
    assert all(g.abs().sum() > 0 for g in g_shared.values() if g is not None)
    for name in g_plain:
        # relative to the tensor's largest entry: float rounding differs between the two passes (sums in another
        # order), a wrong layout (a response seeing another, a prompt copy without gradient) is off by O(1)
        scale = g_plain[name].abs().max()
        # (the chunked head sums its weight gradient chunk by chunk: 1.3e-5 measured; every path is 1.4e-4 from a
        # float64 model's gradients, so none is less exact than another)
        assert (g_shared[name] - g_plain[name]).abs().max() <= (5e-5 if head_rows else 1e-5) * scale, name


def test_unsupported_family_falls_back_to_the_plain_pass(tiny_policy, monkeypatch):
    import drox.models.forward as forward

    model = copy.deepcopy(tiny_policy[0])
    batch = _batch(tiny_policy[1])
    called = []
    monkeypatch.setattr(forward, "shared_prompt_logprobs", lambda *a, **k: called.append(1))
    model.config.model_type = "gemma2"  # soft-capped logits: the plain LM head call is not the model's logits
    lp, _ = response_logprobs(model, *batch, share_prompts=True)
    assert not called and lp.shape == batch[2].shape
    model.config.model_type = "llama"
    response_logprobs(model, *batch, share_prompts=True)
    assert called == [1]
