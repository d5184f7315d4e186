"""model=toy, the fast testbed's model: a character-level tokenizer built in code and a small random Llama; and
model=hf with a local path that does not exist (one line, not a hub lookup)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from drox.config import ModelConfig
from drox.models.loading import CHAR_SPECIALS, ModelError, char_vocabulary, load_policy


def _model(**fields):
    """A ModelConfig node as the composed config holds it (the schema's defaults for every other field)."""
    return OmegaConf.structured(ModelConfig(**fields))


def test_the_character_vocabulary_is_fixed():
    vocab = char_vocabulary()
    assert len(vocab) == 4 + 2 + 95  # specials, newline and tab, printable ASCII 32..126
    assert [vocab[t] for t in CHAR_SPECIALS] == [0, 1, 2, 3]
    assert vocab["\n"] == 4 and vocab[" "] == 6 and vocab["0"] == 6 + 16 and vocab["~"] == 100


def test_toy_tokenizer_is_one_token_per_character_and_round_trips(tmp_path):
    from drox.cli.main import compose

    cfg = compose(["model=toy", f"model.cache_dir={tmp_path}"]).model  # conf/model/toy.yaml's architecture
    model, tok = load_policy(cfg)
    text = "What is 23 + 45?\n\nPut the final answer in \\boxed{}.23 + 45 = 68\nThe answer is \\boxed{68}"
    enc = tok(text, return_offsets_mapping=True)
    assert len(enc["input_ids"]) == len(text)
    assert enc["offset_mapping"][:3] == [(0, 1), (1, 2), (2, 3)]
    assert tok.decode(enc["input_ids"]) == text
    assert tok.decode(enc["input_ids"] + [tok.eos_token_id], skip_special_tokens=True) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.padding_side) == (0, 1, 2, "left")
    # 2 layers of 4*64^2 attention + 3*64*128 MLP + 2 norms of 64, the final norm, 101 x 64 tied embeddings
    assert sum(p.numel() for p in model.parameters()) == 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64 + 101 * 64
    assert model.config.vocab_size == 101 and model.config.tie_word_embeddings


def test_a_local_model_path_that_does_not_exist_is_one_line(tmp_path):
    with pytest.raises(ModelError, match=r"model.path=experiments/nothing/here: no such folder"):
        load_policy(_model(name="hf", path="experiments/nothing/here", cache_dir=str(tmp_path)))
