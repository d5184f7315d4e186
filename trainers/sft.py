"""Supervised fine-tuning (`drox sft`): teacher-forced cross-entropy on (prompt, response) pairs.

Two uses (docs/sft.md): a base policy for ``drox train`` (e.g. arithmetic's worked solutions), and the
distillation arm of Yue et al. 2025 (responses written by a stronger model, given as ``sft.data=FILE.jsonl``).
:func:`run_sft`, top to bottom:

1. :func:`validate_sft`: the ``sft`` values, before anything loads (one :class:`ConfigError` line each);
2. :func:`load_pairs`: (prompt, response) pairs from the task's training split (column
   ``sft.response_field``, default ``solution``) or from ``sft.data`` (JSONL; a bad line is one error naming
   the file and line), also before anything loads;
3. the policy and tokenizer, loaded as ``drox train`` loads them (:func:`drox.models.loading.load_policy`);
4. :func:`tokenize_pairs`: each prompt encoded by the rollout engine's own
   :meth:`~drox.rollout.hf.HFRolloutEngine.encode_prompts` (chat template, system prompt, special tokens),
   so SFT prompts are token for token the prompts RL samples from; then the response tokens and the
   tokenizer's EOS, which the engine always stops on (SmolLM2: ``<|im_end|>``, the chat template's end of
   turn), so a fine-tuned model stops after its answer. :func:`build_example` labels the prompt -100 and
   applies ``sft.max_length``;
5. every step, :func:`sft_step`: ``batch_size`` examples from seeded epochs of permutations
   (:class:`~drox.trainers.sampler.PromptSampler`, ``seed``), right-padded by :func:`collate` and split into
   ``grad_accum`` micro-batches; :func:`sft_loss` is the summed -log p of the response tokens over the number
   of response tokens in the whole batch (a token mean, exact under accumulation); clip, AdamW, schedule;
6. the step's metrics to ``metrics.jsonl`` (+ W&B), a progress line to ``sft.log``, and the console (a bar
   on a terminal, plain lines every ``sft.log_every`` steps in a pipe);
7. :func:`save_model`: ``run_dir/model`` (safetensors, tokenizer, chat template), built in a temp folder
   and renamed, so a folder named ``model`` is always whole. ``drox train model=hf model.path=run_dir/model``
   and ``drox eval --checkpoint run_dir/model`` load it.

Same seed and config give the same weights (on CPU; GPU kernels may differ in the last bits).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from drox.atomic import atomic_write_dir, atomic_write_text
from drox.config import validate_sft
from drox.errors import ConfigError, check_finite
from drox.models.loading import load_policy, resolve_device
from drox.rollout.base import unpadded
from drox.rollout.hf import HFRolloutEngine
from drox.signals.spans import pad_ids, pad_rows
from drox.tasks import TaskError, build_task
from drox.tasks.files import read_jsonl
from drox.trainers.checkpoint import save_pretrained
from drox.trainers.setup import build_scheduler, seed_everything
from drox.trainers.metrics import MetricsLogger
from drox.trainers.run_folder import lock_run_dir
from drox.trainers.sampler import PromptSampler

IGNORE = -100  # label of a position the loss skips (the prompt, padding): torch's cross_entropy default
TASK_RESPONSE_FIELD, DATA_RESPONSE_FIELD = "solution", "response"
ENCODE_CHUNK = 256  # prompts encoded together (the engine pads a chunk to its longest prompt)

# ------------------------------------------------------------------------------------------------ 1. validate
# validate_sft lives in drox.config, with every other check of plain values (`drox config` runs it too)



# ------------------------------------------------------------------------------------------------ 2. data


def load_pairs(cfg) -> Tuple[List[Tuple[str, str]], str]:
    """``([(prompt, response), ...], description of the source)``; TaskError (one line) on bad data."""
    s = cfg.sft
    prompt_field = str(s.prompt_field)
    if s.data:
        path = os.path.expanduser(str(s.data))
        if not os.path.exists(path):
            raise TaskError(f"sft.data: no such file: {path}")
        if not os.path.isfile(path):
            raise TaskError(f"sft.data: not a file: {path}")
        response_field = str(s.response_field or DATA_RESPONSE_FIELD)
        pairs = [(_text(obj, prompt_field, "prompt_field", where), _text(obj, response_field, "response_field", where))
                 for where, obj in read_jsonl(path)]
        if not pairs:
            raise TaskError(f"sft.data: {path} holds no examples")
        return pairs, path
    task = build_task(cfg.task, split="train")
    response_field = str(s.response_field or TASK_RESPONSE_FIELD)
    columns = list(task.dataset.column_names)
    for name, option in ((prompt_field, "prompt_field"), (response_field, "response_field")):
        if name not in columns:
            raise TaskError(f"task '{task.name}' has no column '{name}' for sft.{option}; its columns: "
                            f"{', '.join(columns)} (set sft.{option}=<column>, or give sft.data=FILE.jsonl)")
    rows = task.dataset.select_columns([prompt_field, response_field])
    suffixes = response_suffixes(str(s.response_suffix or ""), [str(v) for v in s.suffix_values], len(rows),
                                 int(cfg.seed))
    pairs = [(_text(row, prompt_field, "prompt_field", f"task '{task.name}' train row {i}"),
              _text(row, response_field, "response_field", f"task '{task.name}' train row {i}") + suffixes[i])
             for i, row in enumerate(rows)]
    described = ""
    if s.response_suffix:
        values = f" with {{value}} from {list(s.suffix_values)}" if s.suffix_values else ""
        described = f" + {str(s.response_suffix)!r}{values}"
    return pairs, f"task {task.name} (train split, column '{response_field}'{described})"


def response_suffixes(suffix: str, values: List[str], n: int, seed: int) -> List[str]:
    """The suffix of each of ``n`` responses: ``suffix`` itself, or with ``{value}`` replaced by a value drawn
    uniformly from ``values`` by ``random.Random(seed)`` (one draw per example, in order)."""
    if "{value}" not in suffix or not values:
        return [suffix] * n
    rng = random.Random(seed)
    return [suffix.replace("{value}", rng.choice(values)) for _ in range(n)]


def _text(obj: Dict[str, Any], name: str, option: str, where: str) -> str:
    if name not in obj:
        have = ", ".join(map(str, obj)) or "none"
        raise TaskError(f"{where}: missing field '{name}' (set sft.{option}=...; fields here: {have})")
    value = obj[name]
    if not isinstance(value, str):
        raise TaskError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------------ 4. tokenize


@dataclass
class Example:
    """One tokenized pair: ``input_ids`` = prompt + response + end token; ``labels`` = the same with the
    prompt (and the first position, which nothing predicts) set to -100."""

    input_ids: List[int]
    labels: List[int]


def build_example(prompt_ids: Sequence[int], response_ids: Sequence[int], end_id: int,
                  max_length: int) -> Tuple[Optional[Example], bool]:
    """``(example, truncated)``; ``(None, False)`` when the prompt alone has ``max_length`` tokens or more.

    Labels are aligned with the inputs (the model shifts them: position t's logits predict token t+1).
    Truncation cuts the end of the response (the end token goes first).
    """
    prompt_ids, response_ids = list(prompt_ids), list(response_ids)
    if len(prompt_ids) >= max_length:
        return None, False
    input_ids = prompt_ids + response_ids + [end_id]
    labels = [IGNORE] * len(prompt_ids) + response_ids + [end_id]
    truncated = len(input_ids) > max_length
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    labels[0] = IGNORE  # no position predicts the first token (matters only for an empty prompt)
    return Example(input_ids, labels), truncated


def encode_prompts(engine: HFRolloutEngine, prompts: Sequence[str]) -> List[List[int]]:
    """The token ids the rollout engine feeds the policy for each prompt (its left padding removed)."""
    out: List[List[int]] = []
    for start in range(0, len(prompts), ENCODE_CHUNK):
        ids, mask = engine.encode_prompts(list(prompts[start:start + ENCODE_CHUNK]))
        out += unpadded(ids, mask)
    return out


def tokenize_pairs(pairs: Sequence[Tuple[str, str]], engine: HFRolloutEngine, max_length: int):
    """``(examples, stats)``: stats counts the examples kept, truncated and dropped (prompt too long)."""
    tokenizer = engine.tokenizer
    end_id = tokenizer.eos_token_id
    if end_id is None:
        raise TaskError("the tokenizer has no EOS token, so a fine-tuned model would never learn to stop; "
                        "use a model whose tokenizer defines one")
    prompt_ids = encode_prompts(engine, [p for p, _ in pairs])
    response_ids = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    examples, truncated, dropped = [], 0, 0
    for p, r in zip(prompt_ids, response_ids):
        example, cut = build_example(p, r, end_id, max_length)
        if example is None:
            dropped += 1
            continue
        examples.append(example)
        truncated += int(cut)
    if not examples:
        raise ConfigError(f"sft.max_length={max_length}: every prompt has at least that many tokens, so no example "
                          "is left; raise sft.max_length")
    stats = {"examples": len(examples), "truncated": truncated, "dropped": dropped,
             "response_tokens": sum(sum(1 for x in e.labels if x != IGNORE) for e in examples)}
    return examples, stats


# ------------------------------------------------------------------------------------------------ 5. step


def collate(examples: Sequence[Example], pad_id: int):
    """Right-padded ``(input_ids, attention_mask, labels)``, each ``[B, L]``; padding is labelled -100."""
    ids, mask = pad_ids([e.input_ids for e in examples], pad_id, side="right")
    labels = pad_rows([e.labels for e in examples], IGNORE, side="right")
    return ids, mask, labels


def sft_loss(model, input_ids, attention_mask, labels, num_tokens: int) -> torch.Tensor:
    """Summed -log p of the labelled tokens divided by ``num_tokens`` (the labelled tokens of the whole batch,
    so that micro-batch losses add up to the batch's token mean).

    The vocabulary projection runs only from the position before the first labelled column on
    (``logits_to_keep``): prompt positions predict nothing the loss sees.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask, labels = input_ids.to(device), attention_mask.to(device), labels.to(device)
    first = int((labels != IGNORE).any(0).nonzero()[0])  # >= 1: labels[:, 0] is always -100
    keep = input_ids.shape[1] - first + 1
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep)
    logits = out.logits[:, :-1, :]  # positions first-1 .. L-2, predicting tokens first .. L-1
    targets = labels[:, first:]
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                          ignore_index=IGNORE, reduction="sum")
    return nll / num_tokens


def sft_step(model, optimizer, scheduler, batch: Sequence[Example], sft_cfg, pad_id: int,
             step: int) -> Dict[str, float]:
    """One optimizer step on ``batch`` (``grad_accum`` micro-batches); returns loss, tokens, lr, grad_norm."""
    num_tokens = sum(sum(1 for x in e.labels if x != IGNORE) for e in batch)
    lr = scheduler.get_last_lr()[0]  # the rate this step uses
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for rows in torch.arange(len(batch)).chunk(sft_cfg.grad_accum):
        ids, mask, labels = collate([batch[i] for i in rows.tolist()], pad_id)
        loss = sft_loss(model, ids, mask, labels, num_tokens)
        check_finite("loss", loss.detach(), step)
        loss.backward()
        total += loss.item()
    params = [p for p in model.parameters() if p.requires_grad]
    if sft_cfg.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, sft_cfg.max_grad_norm)
    else:
        grad_norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimizer.step()
    scheduler.step()
    model.eval()
    return {"loss": total, "tokens": num_tokens, "lr": lr, "grad_norm": float(grad_norm)}


# ------------------------------------------------------------------------------------------------ 7. save


def save_model(model, tokenizer, final: Path) -> Path:
    """``save_pretrained`` of model and tokenizer into a temp folder beside ``final``, renamed when whole
    (an existing ``final`` from an earlier run into the same folder is replaced)."""
    return atomic_write_dir(final, lambda folder: save_pretrained(model, tokenizer, folder))


# ------------------------------------------------------------------------------------------------ the run


def run_sft(cfg: DictConfig, run_dir: str | Path, progress: bool = True) -> Dict[str, Any]:
    """Fine-tune per ``cfg`` (steps 1-7 of the module docstring), writing under ``run_dir``.

    Returns ``{"model_dir": ..., "data": stats of the examples, "metrics": the last step's metrics}``.
    """
    s = cfg.sft
    validate_sft(cfg)  # 1
    pairs, source = load_pairs(cfg)  # 2
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = lock_run_dir(run_dir)  # one writer per folder (two sft runs into one folder: the second gets one line)
    try:
        return _sft_in_claimed(cfg, run_dir, pairs, source, progress)
    finally:
        os.close(fd)


def _sft_in_claimed(cfg: DictConfig, run_dir: Path, pairs, source: str, progress: bool) -> Dict[str, Any]:
    """:func:`run_sft` once ``run_dir`` is this process's."""
    s = cfg.sft
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run into an old folder starts a fresh record
    console = Console()
    log = open(run_dir / "sft.log", "w", encoding="utf-8")

    def say(line: str) -> None:
        log.write(line + "\n")
        log.flush()
        console.print(line, highlight=False, soft_wrap=True)

    seed_everything(cfg.seed)
    model, tokenizer = load_policy(cfg.model, resolve_device(cfg.device))  # 3
    engine = HFRolloutEngine(model, tokenizer, cfg.model)  # its prompt encoding, never its sampling
    examples, data = tokenize_pairs(pairs, engine, int(s.max_length))  # 4
    say(f"sft data: {source}: {data['examples']} examples, {data['response_tokens']} response tokens"
        f" ({data['truncated']} truncated and {data['dropped']} dropped at sft.max_length={s.max_length})")
    say(f"per step: {s.batch_size} examples in {s.grad_accum} micro-batch(es); {s.steps} steps = "
        f"{s.steps * s.batch_size / len(examples):.2f} epochs")
    if data["truncated"] or data["dropped"]:
        Console(stderr=True).print(f"[yellow]sft.max_length={s.max_length}: {data['truncated']} responses cut "
                                   f"(they lose their end token), {data['dropped']} examples dropped (prompt too "
                                   "long)", highlight=False)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
    scheduler = build_scheduler(optimizer, s, s.steps)
    sampler = PromptSampler(len(examples), cfg.seed)
    logger = MetricsLogger(run_dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True))
    metrics: Dict[str, Any] = {}
    elapsed, seen = 0.0, 0
    on_terminal = progress and console.is_terminal
    columns = [TextColumn("sft"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}")]
    try:
        with Progress(*columns, console=console, disable=not on_terminal, transient=False) as bar:
            job = bar.add_task("sft", total=s.steps, info="")
            for step in range(1, s.steps + 1):  # 5
                t0 = time.perf_counter()
                batch = [examples[i] for i in sampler.next(s.batch_size)]
                metrics = sft_step(model, optimizer, scheduler, batch, s, tokenizer.pad_token_id, step)
                dt = time.perf_counter() - t0
                elapsed, seen = elapsed + dt, seen + len(batch)
                metrics.update({"examples_seen": seen, "epoch": seen / len(examples), "time/step": dt,
                                "time/elapsed": elapsed})
                logger.log(step, metrics)  # 6
                line = (f"step {step}/{s.steps}  loss {metrics['loss']:.4f}  tokens {metrics['tokens']}  "
                        f"lr {metrics['lr']:.2e}  {dt:.2f}s/step")
                due = step == 1 or step == s.steps or step % s.log_every == 0
                if due:
                    log.write(line + "\n")
                    log.flush()
                if on_terminal:
                    bar.update(job, advance=1, info=f"loss {metrics['loss']:.4f}  {dt:.2f}s/step")
                elif due and progress:
                    console.print(line, highlight=False, soft_wrap=True)
        model_dir = save_model(model, tokenizer, run_dir / "model")  # 7
    finally:
        logger.close()
        log.close()
    console.print(f"model: {model_dir}  (use it with: drox train model=hf model.path={model_dir})", highlight=False,
                  soft_wrap=True)
    console.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    return {"model_dir": model_dir, "data": data, "metrics": metrics}
