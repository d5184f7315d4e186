"""The vocabulary head as (W h^T)^T (models/head.py, model.lm_head_mm): the same logits and gradients as
F.linear, in every shape the forward paths pass, and a wrapped head is called as a module."""

import copy

import pytest
import torch
import torch.nn.functional as F

from drox.models.head import head_logits, lm_head


@pytest.mark.parametrize("shape", [(8, 16), (3, 5, 16), (1, 16)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_lm_head_equals_linear_with_gradients(shape, with_bias):
    torch.manual_seed(0)
    weight = torch.randn(40, 16, requires_grad=True)
    bias = torch.randn(40, requires_grad=True) if with_bias else None
    hidden = torch.randn(*shape, requires_grad=True)
    upstream = torch.randn(*shape[:-1], 40)
    grads = []
    for mm in (False, True):
        out = lm_head(hidden, weight, bias, mm=mm)
        assert out.shape == (*shape[:-1], 40) and out.is_contiguous()
        grads.append((out.detach(), *torch.autograd.grad((out * upstream).sum(),
                                                         [hidden, weight] + ([bias] if with_bias else []))))
    linear = F.linear(hidden, weight, bias).detach()
    torch.testing.assert_close(grads[0][0], linear)  # mm=False is F.linear itself
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_head_logits_uses_the_models_head_or_calls_a_wrapped_one(tiny_policy):
    model = tiny_policy[0]
    hidden = torch.randn(4, model.config.hidden_size)
    with torch.no_grad():
        ref = model.get_output_embeddings()(hidden)
        torch.testing.assert_close(head_logits(model, hidden, mm=True), ref, atol=1e-5, rtol=1e-5)
    wrapped = copy.deepcopy(model)
    calls = []

    class Scaled(torch.nn.Module):  # stands for a head that is not a plain Linear (e.g. LoRA on lm_head)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, h):
            calls.append(h.shape)
            return 2 * self.inner(h)

    wrapped.set_output_embeddings(Scaled(wrapped.get_output_embeddings()))
    with torch.no_grad():
        torch.testing.assert_close(head_logits(wrapped, hidden, mm=True), 2 * ref, atol=1e-5, rtol=1e-5)
    assert calls == [hidden.shape]


def test_lm_head_mm_is_opt_in_and_pinned_off_where_tables_need_it():
    from drox.cli.main import compose

    assert compose(["model=tiny"]).model.lm_head_mm is False  # off: a resume was not bit-identical with it on
    assert compose(["model=tiny", "model.lm_head_mm=true"]).model.lm_head_mm is True
    for name in ("one_shot", "dro_revise", "entropy_8020"):  # made with the first levers, before this one
        assert compose([f"experiment={name}"]).model.lm_head_mm is False, name
