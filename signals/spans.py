"""Text <-> token helpers shared by the model-based reward sources (variance, confidence, prm, delta_belief),
the query filter, open-ended evaluation and the verl backend.

Where a response's final answer starts, and which sampled token holds a given character, are
needed by DRO's splice (variance), RLSF's answer span (confidence) and step-end positions (prm).
The final-answer patterns are the ones :func:`drox.tasks.verify.extract_answer` uses, so "the
final answer" means the same thing to the verifier and to these sources.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

# the verifier's own patterns: one definition of "final answer" across drox
from drox.tasks.verify import _ANSWER_LINE, _BOXED, extract_answer


def final_answer_start(text: str) -> int:
    """Character index where the response's final answer begins (``len(text)`` when it has none).

    The start of the last ``\\boxed{`` (closed or not: a truncated box is still the answer attempt),
    else the start of the last line with a non-empty ``Answer: ...``, else ``len(text)``.
    The text before this index is the reasoning (DRO's CoT ``ĉ_i``, step 1 of
    docs/algorithms.md "R3: DRO's reasoning reflection reward").
    """
    boxes = list(_BOXED.finditer(text))
    if boxes:
        return boxes[-1].start()
    starts, pos = [], 0
    for line in text.splitlines(keepends=True):
        starts.append((pos, line))
        pos += len(line)
    for start, line in reversed(starts):
        m = _ANSWER_LINE.search(line)
        if m and m.group(1).strip().strip("*").strip().rstrip(".").strip():
            return start
    return len(text)


def split_reasoning(text: str) -> Tuple[str, str]:
    """(reasoning, final answer) of a response; see :func:`final_answer_start`.

    The reasoning is the text before the last ``\\boxed{`` (else before the last ``Answer:`` line); the
    whole response when it has neither, and then the final answer is the whole response as well
    (open-ended tasks: the rewrite itself is the outcome). The final answer is
    :func:`drox.tasks.verify.extract_answer` of the tail (``""`` when that finds nothing).
    """
    cut = final_answer_start(text)
    if cut >= len(text):
        return text, text.strip()
    return text[:cut], extract_answer(text[cut:]) or ""


def encode(tokenizer, text: str) -> List[int]:
    """Token ids of ``text`` without special tokens (BOS/EOS): pieces that are concatenated later."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class TokenCharMap:
    """Which sampled token holds a character of ``decode(ids)``, found by decoding prefixes.

    Sampled ids need not be the tokenizer's canonical tokenisation of the decoded text, so the
    text cannot simply be re-tokenised with offsets; instead ``end(k) = len(decode(ids[:k+1]))``
    (non-decreasing in k) is binary-searched, about ``log2(T)`` decodes per lookup. Exact for
    byte-level BPE (SmolLM2, Llama-3, Qwen) except inside a multi-byte character split across
    tokens; approximate where decoding is not prefix-stable (SentencePiece's leading space).
    Decoding skips special tokens, as the rollout engine does when it makes ``batch.texts``.
    """

    def __init__(self, tokenizer, ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.ids = [int(i) for i in ids]
        self._ends: Dict[int, int] = {}

    def end(self, k: int) -> int:
        """Number of characters decoded from ``ids[:k+1]``."""
        if k not in self._ends:
            self._ends[k] = len(self.tokenizer.decode(self.ids[: k + 1], skip_special_tokens=True))
        return self._ends[k]

    def token_of(self, char: int) -> Optional[int]:
        """Index of the token whose decoded text contains character ``char`` (None past the end)."""
        n = len(self.ids)
        if n == 0 or char < 0 or self.end(n - 1) <= char:
            return None
        lo, hi = 0, n - 1  # smallest k with end(k) > char
        while lo < hi:
            mid = (lo + hi) // 2
            if self.end(mid) > char:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def span(self, start: int, stop: int) -> Optional[Tuple[int, int]]:
        """Token range ``[first, last]`` (inclusive) covering characters ``[start, stop)``; None if empty."""
        if stop <= start:
            return None
        first, last = self.token_of(start), self.token_of(stop - 1)
        if first is None or last is None:
            return None
        return first, last


def response_ids(batch, n: int) -> List[int]:
    """The sampled token ids of rollout row ``n`` without padding."""
    length = int(batch.response_mask[n].sum().item())
    return batch.response_ids[n, :length].tolist()


def pad_rows(rows: Sequence[Sequence], fill, *, side: str = "right", dtype: torch.dtype = torch.long,
             min_width: int = 0) -> torch.Tensor:
    """Ragged rows (lists or 1-D tensors) -> one ``[n, W]`` tensor of ``dtype``, ``W = max(min_width, longest row)``,
    each row's values at its right end (``side="left"``) or its left end (``side="right"``), ``fill`` elsewhere.

    Example: ``pad_rows([[5, 6], [7]], 0, side="left")`` -> ``[[5, 6], [0, 7]]``.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(max((len(r) for r in rows), default=0), min_width)
    out = torch.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        n = len(r)
        if n:
            values = torch.as_tensor(r if isinstance(r, torch.Tensor) else list(r), dtype=dtype)
            if side == "left":
                out[i, width - n:] = values
            else:
                out[i, :n] = values
    return out


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, *, side: str = "right",
            min_width: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ragged token-id rows -> ``(ids [n, W] long, mask [n, W] long)``: :func:`pad_rows` with ``pad_id``, and 1 in
    ``mask`` where a row's own ids are. Left padding (``side="left"``) is how prompts are batched for generation
    (every prompt ends at the last column, where the first sampled token follows); right padding keeps each row's
    tokens at positions ``0..len-1``.

    Example: ``pad_ids([[5, 6], [7]], 0, side="left")`` -> ``([[5, 6], [0, 7]], [[1, 1], [0, 1]])``.
    """
    ids = pad_rows(rows, int(pad_id), side=side, dtype=torch.long, min_width=min_width)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)[:, None]  # [n, 1]
    cols = torch.arange(ids.shape[1])[None, :]  # [1, W]
    mask = (cols >= ids.shape[1] - lengths) if side == "left" else (cols < lengths)
    return ids, mask.long()


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, min_width: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ragged id lists -> ``(ids [n, W] long left-padded with pad_id, mask [n, W] long)``; see :func:`pad_ids`."""
    return pad_ids(rows, pad_id, side="left", min_width=min_width)


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ragged id lists -> (ids [n, T'] long right-padded with ``pad_id``, mask [n, T'] float), at least one column."""
    ids, mask = pad_ids(rows, pad_id, side="right", min_width=1)
    return ids, mask.float()


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id (its EOS when it has none; 0 as a last resort). Padding is masked."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0
