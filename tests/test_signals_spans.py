"""drox.signals.spans padding helpers: every expected tensor written out by hand."""

from __future__ import annotations

import pytest
import torch

from drox.signals.spans import left_pad, pad_ids, pad_rows, right_pad


def test_left_pad_puts_each_row_at_the_right_end():
    ids, mask = left_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == torch.long and mask.dtype == torch.long


def test_right_pad_puts_each_row_at_the_left_end_with_a_float_mask():
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [8, 2, 2]]
    assert mask.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert mask.dtype == torch.float32
    ids, mask = right_pad([[], []], pad_id=2)  # at least one column, all padding
    assert ids.tolist() == [[2], [2]] and mask.tolist() == [[0.0], [0.0]]


def test_min_width_and_empty_batches():
    ids, mask = left_pad([[1], [2, 3]], pad_id=9, min_width=4)
    assert ids.tolist() == [[9, 9, 9, 1], [9, 9, 2, 3]]
    assert mask.tolist() == [[0, 0, 0, 1], [0, 0, 1, 1]]
    ids, mask = pad_ids([], pad_id=0)
    assert ids.shape == (0, 0) and mask.shape == (0, 0)
    ids, mask = left_pad([[], []], pad_id=0)
    assert ids.shape == (2, 0)


def test_pad_rows_takes_tensors_and_float_values():
    out = pad_rows([torch.tensor([0.5, -1.25]), [3.0]], 0.0, dtype=torch.float32)
    assert out.tolist() == [[0.5, -1.25], [3.0, 0.0]]
    labels = pad_rows([[4, 5], [6]], -100)
    assert labels.tolist() == [[4, 5], [6, -100]]
    with pytest.raises(ValueError, match="side"):
        pad_rows([[1]], 0, side="middle")
