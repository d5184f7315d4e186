"""Test doubles shared by the test suite: a character tokenizer, a position-lookup LM, a batch builder.

They make teacher-forced log-probs computable by hand: token id = ``ord(char)``, and the logits
at input position p are row p of a given table, whatever the input.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import List, Optional

import torch

from drox.rollout.base import RolloutBatch


class CharTok:
    """Token id = ord(char); 0 is padding (a special token, skipped when decoding)."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        out = {"input_ids": [ord(c) for c in text]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return out

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == 0))


class PosLM(torch.nn.Module):
    """Logits at an input position = row ``position_id`` of ``table`` [max_pos, V]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **kw):
        logits = self.table[position_ids]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def make_batch(tok, prompts: List[str], texts: List[str], G: int,
               entropies: Optional[torch.Tensor] = None) -> RolloutBatch:
    """A RolloutBatch of Q = len(prompts) groups (texts group-major), unpadded prompts of equal length."""
    p_ids = [tok(p)["input_ids"] for p in prompts]
    assert len({len(p) for p in p_ids}) == 1, "prompts must tokenize to the same length"
    r_ids = [tok(t)["input_ids"] for t in texts]
    T = max(len(r) for r in r_ids)
    resp = torch.zeros(len(texts), T, dtype=torch.long)
    mask = torch.zeros(len(texts), T)
    for i, r in enumerate(r_ids):
        resp[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    prompt_ids = torch.tensor(p_ids).repeat_interleave(G, 0)
    return RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=torch.ones_like(prompt_ids), response_ids=resp, response_mask=mask,
        logprobs=torch.zeros(len(texts), T),
        entropies=entropies if entropies is not None else torch.zeros(len(texts), T),
        finish_reason=["eos"] * len(texts), texts=list(texts), group_size=G, prompts=list(prompts))


def encode_left_padded(prompts: List[str]):
    """(ids [n, P], mask [n, P]) of ``prompts`` as CharTok ids, left-padded with 0: what an engine's
    ``encode_prompts`` returns, for sources that encode prompts of their own (judges, teachers)."""
    P = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor([ord(c) for c in p])
        mask[i, P - len(p):] = 1
    return ids, mask



def config_error(capsys, overrides: List[str]) -> str:
    """Composing ``overrides`` must exit with code 2 and print exactly one ``error:`` line on stderr (no
    traceback); returns that line."""
    import pytest
    import typer

    from drox.cli.main import compose

    with pytest.raises(typer.Exit) as exc:
        compose(overrides)
    assert exc.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err
