"""The embedded SmolLM2-135M-Instruct end to end (slow: converts the GGUF once per session cache)."""

from __future__ import annotations

import pytest
import torch

from drox.models.forward import response_logprobs
from drox.rollout.hf import HFRolloutEngine

pytestmark = pytest.mark.slow

PROMPTS = ["What is 2 + 3?", "Name the capital of France."]


@pytest.fixture(scope="module")
def smollm2(drox_cache):
    from drox.cli.main import compose
    from drox.models.loading import load_policy

    cfg = compose(["model=smollm2-135m", "logger.wandb_mode=disabled", "device=cpu"])
    model, tok = load_policy(cfg.model, "cpu")
    return model, tok, cfg


def test_converted_into_session_cache(smollm2, drox_cache):
    from pathlib import Path

    from drox.models.loading import SMOLLM2_DIRNAME, embedded_model_dir

    folder = embedded_model_dir()
    assert folder == Path(drox_cache) / SMOLLM2_DIRNAME
    assert (folder / "config.json").is_file()
    assert not any(p.name.startswith(f".{SMOLLM2_DIRNAME}.") for p in folder.parent.iterdir()), "temp dir left"


def test_parameters_and_tokenizer(smollm2):
    model, tok, _ = smollm2
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    assert len(tok) == model.config.vocab_size == 49152
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"
    assert tok.pad_token_id is not None


def test_sampling(smollm2):
    model, tok, cfg = smollm2
    engine = HFRolloutEngine(model, tok, cfg.model, batch_size=64)
    b = engine.generate(PROMPTS, 2, max_new_tokens=16, temperature=1.0, seed=0)
    assert b.response_ids.shape[0] == 4 and b.response_ids.shape[1] <= 16
    # the chat template was applied: every prompt holds <|im_start|> and ends with the assistant header
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert im_start != tok.unk_token_id
    for row in range(4):
        real = b.prompt_ids[row][b.prompt_mask[row] == 1].tolist()
        assert real.count(im_start) >= 2  # (system +) user + assistant turns
        assert tok.decode(real).endswith("<|im_start|>assistant\n")
    rm = b.response_mask
    assert torch.isfinite(b.logprobs).all()
    assert torch.all(b.logprobs[rm == 0] == 0) and torch.all(b.logprobs[rm == 1] <= 0)
    assert all(t.strip() for t in b.texts)
    for i, reason in enumerate(b.finish_reason):
        L = int(b.lengths[i])
        assert (reason == "eos") == (b.response_ids[i, L - 1].item() == tok.eos_token_id)
    lp, _ = response_logprobs(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask)
    assert torch.allclose(lp, b.logprobs, atol=1e-3), (lp - b.logprobs).abs().max()


def test_greedy_answers(smollm2):
    """A real instruct model, not random weights: greedy answers are right and stop at <|im_end|>."""
    model, tok, cfg = smollm2
    engine = HFRolloutEngine(model, tok, cfg.model, batch_size=64)
    b = engine.generate(PROMPTS, 1, max_new_tokens=16, temperature=0.0)
    assert b.finish_reason == ["eos", "eos"]
    assert "5" in b.texts[0]
    assert "Paris" in b.texts[1]
