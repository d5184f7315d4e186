"""The vocabulary head as (W h^T)^T (models/head.py, model.lm_head_mm): the same logits and gradients as
F.linear, in every shape the forward paths pass, and a wrapped head is called as a module."""

import copy

import pytest
import torch
import torch.nn.functional as F

from drox.models.head import head_logits, linear


@pytest.mark.parametrize("shape", [(8, 16), (3, 5, 16), (1, 16)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_mm_orientation_equals_f_linear_with_gradients(shape, with_bias):
    torch.manual_seed(0)
    weight = torch.randn(40, 16, requires_grad=True)
    bias = torch.randn(40, requires_grad=True) if with_bias else None
    hidden = torch.randn(*shape, requires_grad=True)
    upstream = torch.randn(*shape[:-1], 40)
    grads = []
    for mm in (False, True):
        out = linear(hidden, weight, bias, mm=mm)
        assert out.shape == (*shape[:-1], 40) and out.is_contiguous()
        grads.append((out.detach(), *torch.autograd.grad((out * upstream).sum(),
                                                         [hidden, weight] + ([bias] if with_bias else []))))
    reference = F.linear(hidden, weight, bias).detach()
    torch.testing.assert_close(grads[0][0], reference)  # mm=False is F.linear itself
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


TOY_TABLES = ("positive_control", "nsr", "passk_limits", "one_shot", "entropy_8020", "dro", "dvao", "rubric_gate", "prm_vs_variance")
"""The tables rerun on the fast testbed (conf/experiment_scale/common_toy.yaml): no pins, every lever on."""


def test_lm_head_mm_is_on_and_pinned_off_with_unaligned_weights_where_results_need_it():
    from drox.cli.main import compose

    cfg = compose(["model=tiny"]).model
    assert cfg.lm_head_mm is True and cfg.aligned_weights is True
    for name in ("dro_revise",  # made with the first levers, before this one
                 "demo"):  # made before any lever
        model = compose([f"experiment={name}"]).model
        assert model.lm_head_mm is False and model.aligned_weights is False, name
    assert compose(["experiment=base_policy"]).model.aligned_weights is False  # the committed base policy
    for name in TOY_TABLES:  # rerun on the fast testbed with every lever at its default
        model = compose([f"experiment={name}"]).model
        assert model.lm_head_mm is True and model.aligned_weights is True, name


def test_decode_mm_is_on_and_pinned_off_for_the_tables_made_before_it():
    """rollout.decode_mm (the static decode step's projections as (W h^T)^T) changes float rounding, so every
    committed table that decodes through the static step pins it off and regenerates exactly."""
    from drox.cli.main import compose

    assert compose(["model=tiny"]).rollout.decode_mm is True
    for name in ("dro_revise",  # the first levers (pinned_head.yaml pulls it in)
                 "confidence", "seed_methods"):  # the head lever
        rollout = compose([f"experiment={name}"]).rollout
        assert rollout.static_decode is True and rollout.decode_mm is False, name
    for name in ("positive_control_smollm2", "rlcr", "spurious"):  # the SmolLM2 paired protocol: every lever on
        rollout = compose([f"experiment={name}"]).rollout
        assert rollout.static_decode is True and rollout.decode_mm is True, name
    for name in ("demo",):  # made before any lever: HF's forward decodes
        assert compose([f"experiment={name}"]).rollout.static_decode is False, name
    for name in TOY_TABLES:
        rollout = compose([f"experiment={name}"]).rollout
        assert rollout.static_decode is True and rollout.decode_mm is True, name


def test_align_weights_moves_only_unaligned_tensors_and_keeps_ties_and_values(tiny_policy, tmp_path):
    from drox.models.loading import ALIGNMENT, align_weights

    model = copy.deepcopy(tiny_policy[0])
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    assert align_weights(model) == 0  # torch allocated these: already aligned
    proj = model.model.layers[0].self_attn.q_proj
    values = proj.weight.detach().clone()
    storage = torch.empty(values.numel() + 16)
    proj.weight.data = storage[10:10 + values.numel()].view_as(values).copy_(values)  # 40 bytes past a boundary
    embed = model.get_input_embeddings().weight
    embed_values = embed.detach().clone()
    buf = torch.empty(embed.numel() + 16)
    embed.data = buf[2:2 + embed.numel()].view_as(embed).copy_(embed)  # 8 bytes past
    assert proj.weight.data_ptr() % ALIGNMENT == 40
    assert align_weights(model) == 2  # the tied pair is one Parameter
    assert proj.weight.data_ptr() % ALIGNMENT == 0 and torch.equal(proj.weight, values)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() % ALIGNMENT == 0
    assert torch.equal(model.get_output_embeddings().weight, embed_values)


def test_a_model_read_from_a_checkpoint_sits_in_aligned_memory(tiny_policy, tmp_path):
    """safetensors leaves tensors at the file's offsets; load_policy re-homes them (what exact resume needs with
    the (W h^T)^T head, whose kernel rounds differently at other alignments)."""
    from omegaconf import OmegaConf

    from drox.cli.main import compose
    from drox.models.loading import ALIGNMENT, load_policy

    model, tokenizer = tiny_policy
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    base = compose(["model=hf", f"model.path={tmp_path}"]).model
    unaligned, _ = load_policy(OmegaConf.merge(base, {"aligned_weights": False}))
    assert any(p.data_ptr() % ALIGNMENT for p in unaligned.parameters())  # what the fix is for
    aligned, _ = load_policy(base)
    assert all(p.data_ptr() % ALIGNMENT == 0 for p in aligned.parameters())
    for (n, a), (_, b) in zip(aligned.named_parameters(), unaligned.named_parameters()):
        assert torch.equal(a, b), n
