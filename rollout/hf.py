"""The reference rollout engine: a KV-cached sampling loop over a HF causal LM.

Why not ``model.generate``: (1) it keeps every row of the batch decoding until the longest
one stops (docs/performance.md "Evaluation sampling"); this loop drops finished rows from the
KV cache; (2) it encodes each prompt once and repeats its KV cache G times instead of encoding G
copies; (3) it returns the behaviour log-probs and entropies it computed while sampling, so
an on-policy update needs no second forward pass to get them; (4) the vocabulary head runs
only on the last position of the prompt (``logits_to_keep=1``).

Log-probs and entropies refer to the temperature-scaled distribution softmax(z / T) without
the top-p truncation (the convention of verl and TRL, and what the trainer recomputes).
"""

from __future__ import annotations

import inspect
from typing import List, Optional, Sequence, Union

import torch
from transformers import DynamicCache

from drox.models.forward import eval_mode
from drox.models.loading import render_prompts
from drox.components import register_engine
from drox.rollout.base import RolloutBatch, build_engine, concat_batches  # noqa: F401  (build_engine: re-exported)
from drox.rollout.static_decode import StaticKVDecoder, supports_static_decode
from drox.signals.spans import left_pad
from drox.models.logprobs import entropy_from_logits, logprobs_from_logits, scaled_logits, top2_margin


def _multinomial(weights: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """torch.multinomial: one index per row of non-negative weights [B, V] -> [B, 1]."""
    return torch.multinomial(weights, 1, generator=gen)


def _inverse_cdf(weights: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One index per row of non-negative weights [B, V] -> [B, 1], by inverse transform sampling: one uniform
    per row against the running sum (in float64). Same distribution as torch.multinomial, which on CPU draws an
    exponential for every vocabulary entry (measured 11 ms per decode step at 8 rows x 49k); a weight of 0 is
    never drawn (its running sum equals its left neighbour's)."""
    cdf = weights.double().cumsum(-1)  # [B, V]
    u = torch.rand(weights.shape[0], 1, generator=gen, dtype=torch.float64).to(cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max(weights.shape[-1] - 1)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator,
            draw=_multinomial) -> torch.Tensor:
    """One token per row from logits [B, V]; greedy when temperature == 0. ``draw`` picks an index per row from
    unnormalised probabilities (_multinomial, or _inverse_cdf on the static decode path)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(scaled_logits(logits, temperature), dim=-1)  # [B, V]
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the top token is always kept)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        choice = draw(sorted_p, gen)  # [B, 1]
        return order.gather(-1, choice).squeeze(-1)
    return draw(probs, gen).squeeze(-1)


def eos_token_ids(model, tokenizer) -> List[int]:
    """The token ids that end a completion: the tokenizer's EOS and the generation config's (sorted)."""
    eos = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        eos.add(gen_eos)
    elif gen_eos:
        eos.update(gen_eos)
    return sorted(e for e in eos if e is not None)


def encode_prompts(tokenizer, model_cfg, prompts: List[str]):
    """Raw user prompts -> left-padded (ids [Q, P], mask [Q, P]): the chat template where the model has one
    (then no extra special tokens), else the tokenizer's own special tokens. Every engine encodes this way."""
    texts = render_prompts(tokenizer, prompts, model_cfg)
    templated = texts != list(prompts)
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
    return enc["input_ids"], enc["attention_mask"]


def _cache_kwarg(model) -> str:
    """The keyword under which ``model.forward`` takes the KV cache.

    transformers releases after 5.10 (5.24 here) renamed the forward argument ``past_key_values``
    to ``cache``: the old name still works but warns "`past_key_values` is deprecated and will be
    removed in version 5.40.0". The verl-compatible releases 5.5-5.10 only know
    ``past_key_values``. Detected from the model's own signature, not the version: a model that
    swallows an unknown ``cache=`` into ``**kwargs`` would silently decode without a cache. A PEFT
    wrapper's forward is ``(*args, **kwargs)`` and passes them through, so its base model is asked.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class HFRolloutEngine:
    """Batched sampling from a HF causal LM (CPU or one GPU)."""

    def __init__(self, model, tokenizer, model_cfg, batch_size: int = 64, static_decode: bool = True,
                 dtype: Optional[str] = None, decode_mm: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.batch_size = batch_size
        self.static_decode = static_decode  # rollout.static_decode: taken where supports_static_decode(model)
        self.head_mm = bool(getattr(model_cfg, "lm_head_mm", True))  # model.lm_head_mm, on the static decode path
        self.decode_mm = decode_mm  # rollout.decode_mm: the static decode step's projections as (W h^T)^T
        # rollout.dtype: the decode step's precision (None = the model's own); another precision needs the static
        # decode step, which holds its own copy of the weights in that dtype
        self.decode_dtype = None if dtype is None else getattr(torch, dtype)
        if self.decode_dtype not in (None, next(model.parameters()).dtype) and not (
                static_decode and supports_static_decode(model)):
            raise ValueError(f"rollout.dtype={dtype} needs the static decode step (rollout.static_decode=true and a "
                             "Llama-architecture model without LoRA); use the model's own dtype for this model")
        self.eos_ids = torch.tensor(eos_token_ids(model, tokenizer))
        self.pad_id = tokenizer.pad_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def exact_logprobs(self) -> bool:
        """The behaviour log-probs are the trainer's own unless the decode step runs in another precision."""
        return self.decode_dtype in (None, next(self.model.parameters()).dtype)

    def policy_changed(self) -> None:
        """Nothing to refresh: this engine samples from the trainer's model itself."""

    def encode_prompts(self, prompts: List[str]):
        """Raw user prompts -> left-padded (ids [Q, P], mask [Q, P])."""
        return encode_prompts(self.tokenizer, self.model_cfg, prompts)

    @torch.no_grad()
    def generate(
        self,
        prompts: List[str],
        group_size: int,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: Optional[int] = None,
        progress: bool = False,
        margins: bool = False,
    ) -> RolloutBatch:
        """``margins``: also record each sampled position's top-2 probability margin (``RolloutBatch.margins``;
        a topk and a logsumexp over the vocabulary per decode step, about 3% of a step, hence off by default);
        None when the decode step runs in another precision than the model's."""
        margins = margins and self.exact_logprobs
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else int(seed))
        prompts_per_chunk = max(1, self.batch_size // group_size)
        chunks = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            # disable=None: drawn on a terminal, off in a pipe or log file (no carriage-return debris)
            bar = tqdm(total=len(prompts) * group_size, desc="sampling", unit="seq", leave=False, disable=None)
        with eval_mode(self.model):
            try:
                for start in range(0, len(prompts), prompts_per_chunk):
                    chunk = prompts[start : start + prompts_per_chunk]
                    ids, mask = self.encode_prompts(chunk)  # [Q, P], padded to the chunk's longest prompt
                    chunks.append(self._generate_chunk(ids, mask, group_size, max_new_tokens, temperature, top_p,
                                                       gen, margins=margins))
                    if bar is not None:
                        bar.update(len(chunk) * group_size)
            finally:
                if bar is not None:
                    bar.close()
        parts = [RolloutBatch(**c, group_size=group_size, temperature=temperature) for c in chunks]
        batch = concat_batches(parts, self.pad_id)
        batch.prompts = list(prompts)
        return batch

    @torch.no_grad()
    def generate_ids(self, prefixes: List[List[int]], group_size: int, *, max_new_tokens: Union[int, Sequence[int]],
                     temperature: float = 1.0, top_p: float = 1.0, seed: Optional[int] = None) -> RolloutBatch:
        """``group_size`` continuations of each already-tokenised prefix (a templated prompt, possibly followed by
        the start of a response: Monte-Carlo step values continue a response from each step's end). Same sampler
        and seeding as :meth:`generate`; ``batch.prompts`` is empty (there are no prompt strings).
        ``max_new_tokens``: one cap for all, or one per prefix (Tree-GRPO's branches continue responses of different
        lengths up to the same total, rollout/tree.py); a continuation that reaches its cap has finish_reason
        'length'."""
        caps = ([int(max_new_tokens)] * len(prefixes) if isinstance(max_new_tokens, int)
                else [int(c) for c in max_new_tokens])
        if len(caps) != len(prefixes) or min(caps, default=1) < 1:
            raise ValueError(f"max_new_tokens: expected one cap >= 1 per prefix ({len(prefixes)}), got {caps}")
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else int(seed))
        per_chunk = max(1, self.batch_size // group_size)
        chunks = []
        with eval_mode(self.model):
            for start in range(0, len(prefixes), per_chunk):
                rows = prefixes[start : start + per_chunk]
                ids, mask = left_pad(rows, self.pad_id)  # [Q, P], as encode_prompts pads prompts
                chunk_caps = caps[start : start + per_chunk]
                row_caps = None if len(set(chunk_caps)) == 1 else torch.tensor(chunk_caps, dtype=torch.long)
                chunks.append(self._generate_chunk(ids, mask, group_size, max(chunk_caps), temperature, top_p, gen,
                                                   row_caps=row_caps))
        parts = [RolloutBatch(**c, group_size=group_size, temperature=temperature) for c in chunks]
        batch = concat_batches(parts, self.pad_id)
        batch.prompts = []
        return batch

    def _generate_chunk(self, ids, mask, G, max_new_tokens, temperature, top_p, gen, margins: bool = False,
                        row_caps: Optional[torch.Tensor] = None):
        """``row_caps``: [Q] long, each prompt's own cap (<= max_new_tokens) on its G continuations, or None."""
        device = self.device
        ids, mask = ids.to(device), mask.to(device)  # [Q, P] left-padded
        eos_ids = self.eos_ids.to(device)
        scale = temperature if temperature > 0 else 1.0

        # Prefill each prompt once, then repeat its KV cache for the G samples. The model fills
        # ``cache`` in place, so the loop keeps using this object and never reads it back from the
        # output (``out.past_key_values`` is a deprecated alias of ``out.cache`` since the rename).
        # config=: per-layer cache types (sliding-window, KV-shared layers), as the model's own default.
        cache = DynamicCache(config=self.model.config)
        cache_kw = _cache_kwarg(self.model)
        with_cache = {cache_kw: cache, "use_cache": True}
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, **with_cache)
        if cache.get_seq_length() == 0:  # the model ignored the cache: decoding would silently go wrong
            raise RuntimeError(
                f"{type(self.model).__name__}.forward did not fill the KV cache passed as "
                f"`{cache_kw}=`; this transformers version or model is not supported by rollout.backend=hf"
            )
        logits = out.logits[:, -1, :].repeat_interleave(G, dim=0)  # [N, V]
        cache.batch_repeat_interleave(G)
        prompt_ids, prompt_mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
        # the decode steps: the lean static-cache step where the model family allows it, else HF's forward
        decoder = None
        if self.static_decode and supports_static_decode(self.model):
            decoder = StaticKVDecoder(self.model, cache, prompt_mask, max_new_tokens, dtype=self.decode_dtype,
                                      head_mm=self.head_mm, proj_mm=self.decode_mm)
            cache = with_cache = None  # the prompt's keys/values now live in the decoder's preallocated cache
        draw = _inverse_cdf if decoder is not None else _multinomial
        N = prompt_ids.shape[0]
        attn = prompt_mask.clone()
        next_pos = prompt_mask.sum(-1)  # [N] position id of the first response token

        tokens = torch.full((N, max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        logps = torch.zeros(N, max_new_tokens, device=device)
        ents = torch.zeros(N, max_new_tokens, device=device)
        gaps = torch.zeros(N, max_new_tokens, device=device) if margins else None
        lengths = torch.zeros(N, dtype=torch.long, device=device)
        hit_eos = torch.zeros(N, dtype=torch.bool, device=device)
        alive = torch.arange(N, device=device)  # rows still decoding, in cache order
        caps = None if row_caps is None else row_caps.to(device).repeat_interleave(G)  # [N]

        for t in range(max_new_tokens):
            tok = _sample(logits, temperature, top_p, gen, draw).to(device)  # [A]
            lp = logprobs_from_logits(logits[:, None, :], tok[:, None], scale)[:, 0]
            ent = entropy_from_logits(logits[:, None, :], scale)[:, 0]
            tokens[alive, t], logps[alive, t], ents[alive, t] = tok, lp, ent
            if gaps is not None:
                gaps[alive, t] = top2_margin(logits)
            lengths[alive] = t + 1
            done = torch.isin(tok, eos_ids)
            hit_eos[alive[done]] = True
            if caps is not None:  # a row at its own cap stops too (finish_reason 'length')
                done = done | (caps[alive] <= t + 1)
            if t == max_new_tokens - 1:
                break
            if done.any():  # drop finished rows from the batch and the KV cache
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    break
                if decoder is not None:
                    decoder.select(keep)
                else:
                    cache.batch_select_indices(keep)
                alive, tok, attn, next_pos = alive[keep], tok[keep], attn[keep], next_pos[keep]
            if decoder is not None:
                logits = decoder.step(tok, next_pos)
            else:
                attn = torch.cat([attn, attn.new_ones(attn.shape[0], 1)], dim=1)
                out = self.model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                                 **with_cache)
                logits = out.logits[:, -1, :]
            next_pos = next_pos + 1

        T = int(lengths.max().item()) if N else 0
        tokens, logps, ents = tokens[:, :T], logps[:, :T], ents[:, :T]
        response_mask = (torch.arange(T, device=device)[None, :] < lengths[:, None]).float()
        tokens = tokens.masked_fill(response_mask == 0, self.pad_id)
        texts = self.tokenizer.batch_decode(tokens.cpu(), skip_special_tokens=True)
        return dict(
            prompt_ids=prompt_ids.cpu(), prompt_mask=prompt_mask.cpu(), response_ids=tokens.cpu(),
            response_mask=response_mask.cpu(), logprobs=(logps * response_mask).cpu(),
            entropies=(ents * response_mask).cpu(),
            margins=None if gaps is None else (gaps[:, :T] * response_mask).cpu(),
            finish_reason=["eos" if e else "length" for e in hit_eos.tolist()], texts=texts,
        )


@register_engine("hf", verl="drox.integrations.verl.mapping:hf_engine")
def hf_engine(rollout_cfg, model, tokenizer, model_cfg, opts=None) -> HFRolloutEngine:
    """``rollout.backend=hf``: the trainer's own model samples (static KV-cache decode where the family allows)."""
    return HFRolloutEngine(model, tokenizer, model_cfg, batch_size=rollout_cfg.batch_size,
                           static_decode=rollout_cfg.static_decode, dtype=rollout_cfg.dtype,
                           decode_mm=rollout_cfg.decode_mm)
