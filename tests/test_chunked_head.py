"""models/head.chunked_head_logprobs: the vocabulary head, log-probs and entropies computed a chunk of rows at a
time with a hand-written backward. Checked against autograd through the unfused path (linear -> logprobs_from_logits
/ entropy_from_logits) and on a case computed by hand."""

from __future__ import annotations

import pytest
import torch

from drox.models.head import chunked_head_logprobs, linear
from drox.models.logprobs import entropy_from_logits, logprobs_from_logits


def _case(m=7, h=5, v=11, bias=True, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(m, h, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=dtype, requires_grad=True) if bias else None
    tokens = torch.randint(0, v, (m,), generator=g)
    return hidden, weight, b, tokens


def _reference(hidden, weight, bias, tokens, temperature, mm):
    logits = linear(hidden, weight, bias, mm=mm)[None]  # [1, M, V]
    return (logprobs_from_logits(logits, tokens[None], temperature)[0],
            entropy_from_logits(logits, temperature)[0])


@pytest.mark.parametrize("rows", [1, 3, 7, 100])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("mm", [True, False])
def test_values_and_gradients_match_the_unfused_path(rows, temperature, mm):
    hidden, weight, bias, tokens = _case()
    g = torch.Generator().manual_seed(1)
    up_lp, up_h = torch.randn(7, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)
    ref_lp, ref_h = _reference(hidden, weight, bias, tokens, temperature, mm)
    ref_grads = torch.autograd.grad((ref_lp * up_lp).sum() + (ref_h * up_h).sum(), (hidden, weight, bias),
                                    retain_graph=True)
    lp, ent = chunked_head_logprobs(hidden, weight, bias, tokens, temperature, rows=rows, with_entropy=True, mm=mm)
    grads = torch.autograd.grad((lp * up_lp).sum() + (ent * up_h).sum(), (hidden, weight, bias))
    # the forward is float32 (like logprobs_from_logits): 1e-5 on values of order 1-10
    assert torch.allclose(lp.double(), ref_lp.double(), atol=1e-5) and torch.allclose(ent.double(), ref_h.double(), atol=1e-5)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # log-probs alone: no entropy output, the same log-prob gradient
    lp2, none = chunked_head_logprobs(hidden, weight, bias, tokens, temperature, rows=rows, mm=mm)
    assert none is None and torch.equal(lp2, lp)
    ref_only = torch.autograd.grad((ref_lp * up_lp).sum(), (hidden, weight, bias))
    for got, want in zip(torch.autograd.grad((lp2 * up_lp).sum(), (hidden, weight, bias)), ref_only):
        assert torch.allclose(got, want, atol=1e-5)


def test_a_hand_computed_case():
    """One row, H = 1, V = 2, weight [[1], [0]], hidden [[ln 3]]: logits (ln 3, 0), p = (3/4, 1/4), token 0:
    log p = ln 3/4; d log p / d hidden = (1 - 3/4) * 1 + (0 - 1/4) * 0 = 1/4; entropy -(3/4 ln 3/4 + 1/4 ln 1/4)."""
    import math

    hidden = torch.tensor([[math.log(3.0)]], dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    lp, ent = chunked_head_logprobs(hidden, weight, None, torch.tensor([0]), with_entropy=True)
    assert abs(lp.item() - math.log(0.75)) < 1e-6
    assert abs(ent.item() + (0.75 * math.log(0.75) + 0.25 * math.log(0.25))) < 1e-6
    (grad,) = torch.autograd.grad(lp.sum(), hidden)
    assert abs(grad.item() - 0.25) < 1e-6


def test_bad_arguments_are_one_clear_error():
    hidden, weight, bias, tokens = _case()
    with pytest.raises(ValueError, match="rows must be >= 1"):
        chunked_head_logprobs(hidden, weight, bias, tokens, rows=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        chunked_head_logprobs(hidden, weight, bias, tokens, temperature=0.0)
