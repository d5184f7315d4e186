"""What a run prints: no deprecation warnings, no progress-bar debris in a log file; the KV-cache protocol.

``drox train`` / ``drox eval`` run as subprocesses with their output going to a pipe, as when
redirected to a log file: transformers' tqdm bars ("Loading weights", "Writing model shards")
would leave carriage returns there, and the rollout engine's old way of passing the KV cache
(``past_key_values=``, a deprecated alias of ``cache=`` in newer transformers) printed a
FutureWarning and a logged deprecation notice on every run.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import DynamicCache

from drox.rollout.hf import HFRolloutEngine, _cache_kwarg

PROMPTS = ["hi", "What is 2 + 3? Explain your steps."]
SMALL = ["model=tiny", "logger.wandb_mode=disabled", "device=cpu", "task.n_train=8", "task.n_test=4",
         "rollout.max_new_tokens=4", "rollout.batch_size=16"]
# in lower case: "deprecat" covers DeprecationWarning, "is deprecated", "deprecation"
BANNED_WORDS = ("deprecat", "futurewarning")


def _run(args, cwd):
    """``drox ARGS`` in a fresh interpreter, stdout and stderr into one pipe; (returncode, text)."""
    env = dict(os.environ)  # DROX_CACHE (the session's converted tokenizer) and OMP_NUM_THREADS=1
    for name in ("PYTHONWARNINGS", "FORCE_COLOR", "TTY_INTERACTIVE", "TTY_COMPATIBLE"):
        env.pop(name, None)  # the warnings and terminal detection a user gets by default
    cmd = [sys.executable, "-m", "drox.cli.main", *args]
    out = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=120)
    return out.returncode, out.stdout.decode("utf-8", errors="replace")


def _assert_clean(text: str) -> None:
    """No carriage return (progress-bar debris) and no deprecation / FutureWarning text."""
    bad = [line for line in text.split("\n")
           if "\r" in line or any(word in line.lower() for word in BANNED_WORDS)]
    assert not bad, "unclean output lines:\n" + "\n".join(repr(line[:300]) for line in bad[:20])


@pytest.fixture(scope="module")
def tokenizer_converted(drox_cache):
    """The embedded tokenizer converted in this process, so the subprocesses only load it."""
    from drox.models.loading import embedded_tokenizer_dir

    return embedded_tokenizer_dir()


@pytest.fixture(scope="module")
def train_run(tokenizer_converted, tmp_path_factory):
    """A 1-step ``drox train`` on the tiny model that saves a checkpoint: (returncode, output, run dir)."""
    root = tmp_path_factory.mktemp("hygiene")
    run_dir = root / "run"
    rc, text = _run(["train", *SMALL, "trainer.steps=1", "trainer.prompts_per_step=2",
                     "trainer.samples_per_prompt=2", "trainer.save_every=1", "trainer.eval_every=1",
                     "eval.before_training=false", "eval.pass_at_k=[1,2]", f"run_dir={run_dir}"], cwd=root)
    return rc, text, run_dir


def test_train_output_is_clean(train_run):
    rc, text, run_dir = train_run
    assert rc == 0, text[-3000:]
    assert (run_dir / "checkpoints" / "step-000001" / "model.safetensors").is_file()
    assert "run directory:" in text  # the output was captured at all
    _assert_clean(text)
    # the evaluation inside training prints the same plain per-batch line as `drox eval` off a terminal
    lines = [line for line in text.split("\n") if line.startswith("eval samples ")]
    assert lines and re.match(r"eval samples (\d+)/\1 \(100%\)  \d+ s  ETA 0m00s$", lines[-1]), text[-2000:]


def test_eval_of_a_checkpoint_output_is_clean(train_run, tmp_path):
    """``drox eval --checkpoint`` loads with ``from_pretrained`` (its "Loading weights" bar) and samples."""
    rc, _, run_dir = train_run
    assert rc == 0
    ckpt = run_dir / "checkpoints" / "step-000001"
    rc, text = _run(["eval", "--checkpoint", str(ckpt), "--pass-at-k", "1,2", "--num-problems", "2",
                     "logger.wandb_mode=disabled", "device=cpu", "eval.max_new_tokens=4",
                     "--out", str(tmp_path / "eval")], cwd=tmp_path)
    assert rc == 0, text[-3000:]
    assert (tmp_path / "eval" / "summary.json").is_file()
    _assert_clean(text)
    # not a terminal, so no bar: a plain progress line per batch instead, the last one at 100%
    lines = [line for line in text.split("\n") if line.startswith("eval samples ")]
    assert lines and re.match(r"eval samples (\d+)/\1 \(100%\)  \d+ s  ETA 0m00s$", lines[-1]), lines


# ------------------------------------------------------------------ progress bars in-process


def test_transformers_progress_bars_off_unless_terminal(monkeypatch):
    from transformers.utils import logging as hf_logging

    from drox.models.loading import terminal_progress_bars

    if not hf_logging.is_progress_bar_enabled():
        pytest.skip("transformers' progress bars are switched off here (HF_HUB_DISABLE_PROGRESS_BARS?)")
    monkeypatch.setattr(sys, "stderr", _FakeStream(tty=False))
    with terminal_progress_bars():
        assert not hf_logging.is_progress_bar_enabled()
        assert type(hf_logging.tqdm(range(2), desc="Loading weights")).__name__ == "EmptyTqdm"
        with terminal_progress_bars():  # nested: still off, and the outer one restores
            assert not hf_logging.is_progress_bar_enabled()
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled(), "the previous setting must be restored"
    monkeypatch.setattr(sys, "stderr", _FakeStream(tty=True))
    with terminal_progress_bars():
        assert hf_logging.is_progress_bar_enabled(), "on a terminal the bars stay"


def test_progress_bars_restored_after_an_error(monkeypatch):
    from transformers.utils import logging as hf_logging

    from drox.models.loading import terminal_progress_bars

    if not hf_logging.is_progress_bar_enabled():
        pytest.skip("transformers' progress bars are switched off here (HF_HUB_DISABLE_PROGRESS_BARS?)")
    monkeypatch.setattr(sys, "stderr", _FakeStream(tty=False))
    with pytest.raises(OSError):
        with terminal_progress_bars():
            raise OSError("no such model")
    assert hf_logging.is_progress_bar_enabled()


class _FakeStream:
    def __init__(self, tty: bool):
        self.tty, self.parts = tty, []

    def isatty(self):
        return self.tty

    def write(self, s):
        self.parts.append(s)

    def flush(self):
        pass


# ------------------------------------------------------------------ the KV-cache protocol


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_cache_protocol_matches_full_forward(tiny_policy):
    """The engine's cache calls on a fresh DynamicCache, step by step, against forwards without a cache.

    Prefill the prompts once (left padded), repeat the cache per sample, drop rows, decode one
    token: the logits must equal a full forward over the same tokens. Runs on whatever
    transformers is installed (``cache=`` or ``past_key_values=``), with no deprecation warning.
    """
    model, tok = tiny_policy
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    G = 3
    hf_log = logging.getLogger("transformers")
    collect = _Collect()
    hf_log.addHandler(collect)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            kw = _cache_kwarg(model)
            assert kw == ("cache" if "cache" in _forward_params(model) else "past_key_values")
            cache = DynamicCache(config=model.config)
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1,
                        use_cache=True, **{kw: cache})
            assert cache.get_seq_length() == ids.shape[1]
            cache.batch_repeat_interleave(G)
            keep = torch.tensor([0, 2, 3, 5])  # rows of both prompts
            cache.batch_select_indices(keep)
            rows = torch.arange(len(PROMPTS)).repeat_interleave(G)[keep]
            nxt = out.logits[:, -1].argmax(-1)[rows]  # [4]
            attn = torch.cat([mask[rows], mask.new_ones(len(rows), 1)], dim=1)
            step = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=mask[rows].sum(-1)[:, None],
                         use_cache=True, **{kw: cache}).logits[:, -1]
            assert cache.get_seq_length() == ids.shape[1] + 1
            full_ids = torch.cat([ids[rows], nxt[:, None]], dim=1)
            full = model(input_ids=full_ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp_min(0),
                         use_cache=False).logits[:, -1]
    finally:
        hf_log.removeHandler(collect)
    assert torch.allclose(step, full, atol=1e-5), (step - full).abs().max()
    assert not [m for m in collect.messages if "deprecated" in m], collect.messages


def _forward_params(model):
    import inspect

    return inspect.signature(model.forward).parameters


def test_engine_emits_no_deprecation_warning(tiny_policy, capfd):
    from drox.cli.main import compose

    model, tok = tiny_policy
    engine = HFRolloutEngine(model, tok, compose(["model=tiny"]).model)
    hf_log = logging.getLogger("transformers")
    collect = _Collect()
    hf_log.addHandler(collect)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            b = engine.generate(PROMPTS, 2, max_new_tokens=3, seed=0)
    finally:
        hf_log.removeHandler(collect)
    assert b.response_ids.shape[0] == 4
    assert not [m for m in collect.messages if "deprecated" in m], collect.messages
    _assert_clean(capfd.readouterr().err)


def test_engine_refuses_a_model_that_ignores_the_cache(tiny_policy):
    """A forward that swallows the cache argument into **kwargs must fail loudly, not decode without context."""
    from drox.cli.main import compose

    model, tok = tiny_policy

    class Swallow(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **kwargs):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              logits_to_keep=logits_to_keep, use_cache=False)

    engine = HFRolloutEngine(Swallow(model), tok, compose(["model=tiny"]).model)
    with pytest.raises(RuntimeError, match="did not fill the KV cache"):
        engine.generate(PROMPTS[:1], 1, max_new_tokens=2, seed=0)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft's, not ours
def test_engine_with_a_peft_model(tiny_policy):
    """LoRA training samples from a PeftModel, whose forward is (*args, **kwargs): the base model is asked."""
    import copy

    peft = pytest.importorskip("peft")
    from drox.cli.main import compose

    model, tok = tiny_policy
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert _cache_kwarg(wrapped) == _cache_kwarg(model)
    # a fresh LoRA adapter is the identity (B = 0): sampling through the wrapper gives the base's samples
    model_cfg = compose(["model=tiny"]).model
    kw = dict(max_new_tokens=3, seed=0)
    # both through HF's forward: the wrapped model cannot take the static decode step (its projections are
    # LoRA layers), and the two paths draw from the generator differently
    from drox.rollout.static_decode import supports_static_decode

    assert supports_static_decode(model) and not supports_static_decode(wrapped)
    base = HFRolloutEngine(model, tok, model_cfg, static_decode=False).generate(PROMPTS, 2, **kw)
    lora = HFRolloutEngine(wrapped, tok, model_cfg).generate(PROMPTS, 2, **kw)
    assert torch.equal(lora.response_ids, base.response_ids)
    assert torch.allclose(lora.logprobs, base.logprobs, atol=1e-5)
