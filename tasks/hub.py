"""Hub datasets (need a network): GSM8K, MATH-500 by short name, or any dataset id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from drox.components import register_task

from .common import Task, TaskError, check_split
from .files import records_to_dataset
from .verify import MathVerifier


@dataclass(frozen=True)
class _Known:
    repo: str
    config: Optional[str]
    prompt_field: str
    answer_field: str
    id_field: Optional[str]
    splits: tuple[str, ...]
    fix_answer: Optional[Callable[[str], str]] = None
    raw_answer_as: Optional[str] = None  # keep the unprocessed answer in this column


def _gsm8k_answer(text: str) -> str:
    # GSM8K answers are a worked solution ending in "#### 1,234".
    return text.split("####")[-1].strip().replace(",", "")


KNOWN = {
    "gsm8k": _Known("openai/gsm8k", "main", "question", "answer", None, ("train", "test"), _gsm8k_answer, "solution"),
    "math500": _Known("HuggingFaceH4/MATH-500", None, "problem", "answer", "unique_id", ("test",)),
}


def _load(repo: str, config: Optional[str], split: str):
    import datasets

    try:
        return datasets.load_dataset(repo, config, split=split)
    except ValueError as e:  # e.g. an unknown split: not a network problem
        raise TaskError(f"task=hub: cannot load {repo} split '{split}' ({e})") from None
    except Exception as e:  # noqa: BLE001 - offline shows up as many different types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TaskError(
            f"task=hub needs network access to download {repo}; use task=jsonl with a local copy "
            f"({type(e).__name__}: {reason})"
        ) from None


@register_task("hub", verl="drox.integrations.verl.mapping:task")
def build(cfg: Any, split: str) -> Task:
    """``task=hub``: ``task.hub_name`` is gsm8k, math500 or a dataset id (fields from
    task.prompt_field / task.answer_field / task.id_field)."""
    check_split(split)
    name = cfg.hub_name
    if not name:
        raise TaskError("task=hub needs task.hub_name (gsm8k, math500 or a dataset id)")
    known = KNOWN.get(str(name))
    if known is None:
        ds = _load(str(name), None, split)
        records = ((f"{name}[{split}] row {i}", row) for i, row in enumerate(ds, start=1))
        return Task("hub", records_to_dataset(records, f"{name}[{split}]", cfg), MathVerifier(float(cfg.verify_timeout)))

    if split not in known.splits:
        raise TaskError(
            f"task.hub_name={name} has only the {'/'.join(known.splits)} split; "
            f"train on another task (e.g. task.hub_name=gsm8k) and evaluate on {name}"
        )
    ds = _load(known.repo, known.config, split)

    def records():
        for i, row in enumerate(ds, start=1):
            row = dict(row)
            raw = row.get(known.answer_field)
            if known.fix_answer is not None and raw is not None:
                if known.raw_answer_as:
                    row[known.raw_answer_as] = raw
                row[known.answer_field] = known.fix_answer(str(raw))
            yield f"{known.repo}[{split}] row {i}", row

    fields = _FieldView(cfg, known)
    return Task("hub", records_to_dataset(records(), f"{known.repo}[{split}]", fields), MathVerifier(float(cfg.verify_timeout)))


class _FieldView:
    """``cfg`` with the field names of a known dataset (the user's defaults would not fit)."""

    def __init__(self, cfg: Any, known: _Known):
        self._cfg = cfg
        self.prompt_field = known.prompt_field
        self.answer_field = known.answer_field
        self.id_field = known.id_field

    def __getattr__(self, item):
        return getattr(self._cfg, item)
