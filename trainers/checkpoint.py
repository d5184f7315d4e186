"""Checkpoints that a killed run can never leave half-written, and exact resume.

A checkpoint is a folder ``checkpoints/step-000010/`` holding the HF ``save_pretrained``
model and tokenizer plus ``trainer_state.pt`` (optimizer, scheduler, RNG states, step, data
cursor). It is built under a temp name and renamed when whole, so any folder matching
``step-*`` is complete; resume takes the highest.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from drox.atomic import atomic_write_dir
from drox.errors import check_weights_finite
from drox.models.loading import terminal_progress_bars

STATE_FILE = "trainer_state.pt"
_NAME = re.compile(r"^step-(\d+)$")


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_pretrained(model, tokenizer, folder: Path) -> None:
    """``save_pretrained`` of model and tokenizer into ``folder`` (HF layout: weights, config, tokenizer files)."""
    with terminal_progress_bars():  # no "Writing model shards" bar debris in a log file
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))


def save_checkpoint(ckpt_root: Path, step: int, model, tokenizer, trainer_state: Dict[str, Any], keep: int) -> Path:
    """Write ``ckpt_root/step-NNNNNN/`` whole or not at all; refuses non-finite weights (NonFiniteError)."""
    check_weights_finite(model.parameters(), step, "at checkpoint time (nothing written)")
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:06d}"

    def write(folder: Path) -> None:
        save_pretrained(model, tokenizer, folder)
        torch.save(trainer_state, folder / STATE_FILE)

    # re-saving the same step (e.g. after a resume) replaces it whole
    atomic_write_dir(final, write, tmp_prefix=f".tmp-step-{step:06d}-")
    _prune(ckpt_root, keep)
    return final


def _prune(ckpt_root: Path, keep: int) -> None:
    ckpts = list_checkpoints(ckpt_root)
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-step-*"):  # left by a run killed mid-save
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def damaged(ckpt: Path) -> Optional[str]:
    """Why the checkpoint folder cannot be resumed from (a missing or truncated file), or None when it is whole.

    Folders are renamed into place only when complete, so damage comes from outside drox (a disk, a copy, a
    hand); this reads the safetensors headers (which must cover their files exactly) and unpickles nothing."""
    import zipfile

    from safetensors import safe_open

    state = ckpt / STATE_FILE
    if not state.is_file():
        return f"{STATE_FILE} is missing"
    try:
        with zipfile.ZipFile(state) as archive:  # torch.save writes a zip: a truncated one has no directory
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        return f"{STATE_FILE} is damaged ({e})"
    weights = sorted(ckpt.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    for path in weights:
        try:
            with safe_open(str(path), "pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error type for a short or corrupt file
            return f"{path.name} is damaged ({str(e).splitlines()[0]})"
    return None


def resumable_checkpoint(ckpt_root: Path) -> tuple[Optional[Path], list[tuple[Path, str]]]:
    """(the newest whole checkpoint or None, [(newer damaged folder, why)]), newest first."""
    skipped = []
    for ckpt in reversed(list_checkpoints(ckpt_root)):
        why = damaged(ckpt)
        if why is None:
            return ckpt, skipped
        skipped.append((ckpt, why))
    return None, skipped


def latest_checkpoint(ckpt_root: Path) -> Optional[Path]:
    ckpts = list_checkpoints(ckpt_root)
    return ckpts[-1] if ckpts else None


def load_trainer_state(ckpt: Path) -> Dict[str, Any]:
    return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
