"""What the vLLM backend needs that runs without vLLM: the weights it is sent, the trainer's recomputation of
log-probs for an engine that is not the trainer's model, and the one-line errors where vLLM or a GPU is missing.
(The conversions against vLLM's own classes: tests/vllm_suite, ``make test-vllm``.)"""

import copy

import pytest
import torch

from drox.rollout.base import RolloutBatch, concat_batches
from drox.rollout.vllm_engine import hf_weight_items


def test_plain_model_weights_are_its_checkpoint_names(tiny_policy):
    model, _ = tiny_policy
    items = dict(hf_weight_items(model))
    assert list(items) == [n for n, _ in model.named_parameters()]
    assert "model.layers.0.self_attn.q_proj.weight" in items and "model.embed_tokens.weight" in items
    assert all(items[n] is not p and torch.equal(items[n], p) for n, p in model.named_parameters())


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft's, not ours
def test_lora_weights_are_sent_merged_under_the_base_names(tiny_policy):
    peft = pytest.importorskip("peft")
    model, _ = tiny_policy
    wrapped = peft.get_peft_model(copy.deepcopy(model),
                                  peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for name, p in wrapped.named_parameters():
        if "lora_B" in name:  # a trained adapter (a fresh one has B = 0 and would hide a missing merge)
            p.data.normal_(0, 0.1)
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    items = dict(hf_weight_items(wrapped))
    merged = copy.deepcopy(wrapped).merge_and_unload()
    expected = dict(merged.named_parameters())
    assert list(items) == list(expected) == [n for n, _ in model.named_parameters()]
    for name, value in items.items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
    q = "model.layers.0.self_attn.q_proj.weight"
    base_q = dict(model.named_parameters())[q]
    assert not torch.allclose(items[q], base_q)  # the adapter is in what vLLM gets
    lora = wrapped.base_model.model.model.layers[0].self_attn.q_proj
    by_hand = base_q + (4 / 2) * lora.lora_B["default"].weight @ lora.lora_A["default"].weight
    assert torch.allclose(items[q], by_hand, atol=1e-6)
    # the trainer's modules are untouched (no merge/unmerge round trip)
    assert all(torch.equal(p, before[n]) for n, p in wrapped.named_parameters())


def _batch(lp, sampler=None):
    n, t = lp.shape
    return RolloutBatch(prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1, dtype=torch.long),
                        response_ids=torch.ones(n, t, dtype=torch.long), response_mask=torch.ones(n, t), logprobs=lp,
                        entropies=torch.zeros(n, t), finish_reason=["eos"] * n, texts=[""] * n, group_size=2,
                        prompts=["a"] * (n // 2), sampler_logprobs=sampler)


def test_sampler_logprobs_follow_group_selection_and_concatenation():
    lp = torch.arange(8.0).view(4, 2)
    b = _batch(lp, sampler=-lp)
    kept = b.select_groups(torch.tensor([False, True]))
    assert torch.equal(kept.sampler_logprobs, -lp[2:])
    short = _batch(torch.ones(2, 1), sampler=torch.full((2, 1), 5.0))
    joined = concat_batches([kept, short], pad_id=0)
    assert joined.sampler_logprobs.tolist() == [[-4.0, -5.0], [-6.0, -7.0], [5.0, 0.0], [5.0, 0.0]]
    assert concat_batches([kept, _batch(torch.ones(2, 1))], pad_id=0).sampler_logprobs is None


def test_an_inexact_engine_gets_the_trainers_logprobs_and_entropies(compose_cfg, tiny_policy):
    """The step-2 completion: the engine's log-probs move to sampler_logprobs, pi_old and entropies are the
    trainer's own forward pass (here a bf16 decode step stands in for vLLM)."""
    from types import SimpleNamespace

    from drox.models.forward import response_logprobs
    from drox.rollout.hf import HFRolloutEngine
    from drox.trainers.loop import TrainerSampling, with_trainer_logprobs

    model, tok = tiny_policy
    cfg = compose_cfg()
    engine = HFRolloutEngine(model, tok, cfg.model, dtype="bfloat16")
    assert not engine.exact_logprobs
    trainer = SimpleNamespace(engine=engine, model=model, cfg=cfg)
    raw = engine.generate(["What is 2 + 3?", "hi"], 3, max_new_tokens=6, seed=0)
    done = with_trainer_logprobs(trainer, raw)
    with torch.no_grad():
        lp, ent = response_logprobs(model, raw.prompt_ids, raw.prompt_mask, raw.response_ids, raw.response_mask,
                                    with_entropy=True)
    mask = raw.response_mask
    assert torch.equal(done.sampler_logprobs, raw.logprobs)
    assert torch.allclose(done.logprobs, lp * mask, atol=1e-6) and torch.allclose(done.entropies, ent * mask, atol=1e-6)
    assert not torch.allclose(done.logprobs, raw.logprobs)  # bf16 sampling: not the trainer's numbers
    # the offline rounds' view of the engine completes batches the same way
    again = TrainerSampling(trainer).generate(["What is 2 + 3?", "hi"], 3, max_new_tokens=6, seed=0)
    assert torch.equal(again.logprobs, done.logprobs) and torch.equal(again.sampler_logprobs, raw.logprobs)
    exact = HFRolloutEngine(model, tok, cfg.model)
    assert exact.exact_logprobs
    trainer.engine = exact
    plain = exact.generate(["hi"], 2, max_new_tokens=4, seed=0)
    assert with_trainer_logprobs(trainer, plain) is plain and plain.sampler_logprobs is None


def test_build_engine_vllm_without_vllm_is_a_config_error(tiny_policy, tiny_cfg, monkeypatch):
    import builtins

    from drox.errors import ConfigError
    from drox.rollout.hf import build_engine

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    model, tok = tiny_policy
    tiny_cfg.rollout.backend = "vllm"
    with pytest.raises(ConfigError, match=r"pip install 'drox\[vllm\]'.*rollout.backend=hf"):
        build_engine(tiny_cfg.rollout, model, tok, tiny_cfg.model)


def test_vllm_config_is_validated_in_one_line(compose_cfg, capsys):
    import typer

    with pytest.raises(typer.Exit) as exc:
        compose_cfg("rollout.vllm.gpu_memory_utilization=1.5")
    assert exc.value.exit_code == 2
    assert "rollout.vllm.gpu_memory_utilization=1.5 must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        compose_cfg("rollout.vllm.dtype=int8")
    assert "rollout.vllm.dtype=int8 is not allowed" in capsys.readouterr().err
