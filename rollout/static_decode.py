"""A lean decode step for Llama-architecture models: a preallocated KV cache and one loop over the layers.

Why: after the prompt's prefill, sampling is one forward pass per token for a few rows, so the cost is reading
the weights plus the fixed cost of every op the step runs. HF's generic forward grows its KV cache with a
``torch.cat`` of the whole cache in every layer at every token, rebuilds the attention mask and the rotary
tables per step, and runs through module hooks and output records. This step reads the same weight tensors
(no copy: the next step sees the optimizer's updates) and does per layer only the math of LlamaDecoderLayer:
RMSNorm, q/k/v projections, rotary embedding, one write into the preallocated cache, attention over the
valid columns, output projection, RMSNorm, SwiGLU MLP. The prompt's prefill stays HF's forward; its KV
cache is copied in once. With ``rollout.decode_mm`` (default on) every projection, and with ``model.lm_head_mm``
the vocabulary head, is computed as ``(W h^T)^T`` (models/head.linear), for which MKL takes a faster CPU kernel
at a decode step's few rows; the values are the same up to the order of the sums.

On this path the engine also samples by inverse transform (one uniform per row against the running sum,
``rollout/hf._inverse_cdf``) instead of torch.multinomial, whose CPU kernel draws an exponential for every
vocabulary entry. The logits equal HF's to float rounding (``tests/test_rollout.py`` runs the engine's contract
tests on both paths, and compares the step's logits with HF's forward). Taken only for ``model_type == "llama"`` (SmolLM2,
the tiny test model, Llama 2/3) with plain ``nn.Linear`` projections (no PEFT/LoRA wrappers), SiLU MLPs, no
sliding window and a DynamicCache holding plain per-layer keys/values; anything else decodes through HF's
forward (``rollout.static_decode=false`` forces that).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from drox.models.head import linear


def supports_static_decode(model) -> bool:
    """Whether :class:`StaticKVDecoder` reproduces ``model``'s forward (see the module docstring)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "llama" or not hasattr(model, "model"):
        return False
    if getattr(config, "hidden_act", None) != "silu" or getattr(config, "sliding_window", None):
        return False
    layers = getattr(model.model, "layers", None)
    if not layers or not hasattr(model.model, "rotary_emb") or not hasattr(model.model, "norm"):
        return False
    linear = torch.nn.Linear
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        mods = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(m) is not linear for m in mods):  # a LoRA/quantised wrapper computes something else
            return False
    return type(model.get_output_embeddings()) is linear


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: normalise in float32, scale in the input dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding with HF's rotate_half convention: x * cos + [-x2, x1] * sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class StaticKVDecoder:
    """Decodes one token per alive row per :meth:`step`, from a prefilled HF ``DynamicCache``.

    k, v        # [layers, A, kv_heads, C, head_dim]: columns 0..P-1 the (left-padded) prompt, then one per token
    valid       # [A, C] bool: which cache columns a row may attend to (its prompt padding is False)
    """

    def __init__(self, model, cache, prompt_mask: torch.Tensor, max_new_tokens: int,
                 dtype: Optional[torch.dtype] = None, head_mm: bool = False, proj_mm: bool = False):
        config = model.config
        self.head_mm = head_mm  # the LM head as (W h^T)^T (models/head.py; model.lm_head_mm)
        self.proj_mm = proj_mm  # the layers' projections as (W h^T)^T (models/head.py; rollout.decode_mm)
        inner = model.model
        dtype = dtype or self._param_dtype(model)
        copies: Dict[int, torch.Tensor] = {}

        def cast(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            """The weight in the decode dtype: the tensor itself when it already is (no copy), else one copy per
            weight (tied embeddings/head share it), made per generate call so that it has the latest update."""
            if t is None:
                return None
            if id(t) not in copies:
                copies[id(t)] = t.detach().to(dtype)
            return copies[id(t)]

        self.dtype = dtype
        self.layers = [_LayerWeights(layer, cast) for layer in inner.layers]
        self.embed = cast(model.get_input_embeddings().weight)
        head = model.get_output_embeddings()
        self.head_w, self.head_b = cast(head.weight), cast(head.bias)
        self.final_norm_w, self.final_eps = cast(inner.norm.weight), inner.norm.variance_epsilon
        attn = inner.layers[0].self_attn
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        N, P = prompt_mask.shape
        C = P + max_new_tokens
        keys = torch.stack([layer.keys for layer in cache.layers]).to(dtype)  # [L, N, kv_heads, P, head_dim]
        values = torch.stack([layer.values for layer in cache.layers]).to(dtype)
        if keys.shape[1] != N or keys.shape[3] != P:
            raise RuntimeError(f"prefilled cache {list(keys.shape)} does not match the prompts {[N, P]}")
        self.k = keys.new_zeros(*keys.shape[:3], C, keys.shape[-1])
        self.v = values.new_zeros(*values.shape[:3], C, values.shape[-1])
        self.k[..., :P, :], self.v[..., :P, :] = keys, values
        self.valid = torch.zeros(N, C, dtype=torch.bool, device=prompt_mask.device)
        self.valid[:, :P] = prompt_mask.bool()
        self.col = P  # the next column to write
        # rotary tables for every position a row can reach (HF computes the same values per step)
        positions = torch.arange(C, device=prompt_mask.device)[None]
        cos, sin = inner.rotary_emb(keys[:1, :1, 0, :1].float(), position_ids=positions)  # [1, C, head_dim]
        self.cos, self.sin = cos[0].to(dtype), sin[0].to(dtype)

    @staticmethod
    def _param_dtype(model) -> torch.dtype:
        return next(model.parameters()).dtype

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (indices into the current rows), in that order."""
        self.k, self.v, self.valid = self.k[:, keep], self.v[:, keep], self.valid[keep]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits [A, V] (float32) after feeding ``tokens`` [A] at position ids ``positions`` [A]."""
        A, c = tokens.shape[0], self.col
        self.valid[:, c] = True
        mask = self.valid[:, None, None, : c + 1]  # [A, 1, 1, c+1]
        cos, sin = self.cos[positions][:, None, :], self.sin[positions][:, None, :]  # [A, 1, head_dim]
        x = F.embedding(tokens, self.embed)  # [A, D]
        mm = self.proj_mm
        for i, w in enumerate(self.layers):
            h = _rms(x, w.in_norm, w.in_eps)
            q = linear(h, w.q, w.q_b, mm).view(A, self.heads, self.head_dim)
            k = linear(h, w.k, w.k_b, mm).view(A, self.kv_heads, self.head_dim)
            v = linear(h, w.v, w.v_b, mm).view(A, self.kv_heads, self.head_dim)
            self.k[i, :, :, c] = _rotate(k, cos, sin)
            self.v[i, :, :, c] = v
            o = F.scaled_dot_product_attention(
                _rotate(q, cos, sin)[:, :, None], self.k[i, :, :, : c + 1], self.v[i, :, :, : c + 1],
                attn_mask=mask, scale=self.scaling, enable_gqa=self.heads != self.kv_heads)  # [A, H, 1, hd]
            x = x + linear(o.reshape(A, -1), w.o, w.o_b, mm)
            h = _rms(x, w.post_norm, w.post_eps)
            x = x + linear(F.silu(linear(h, w.gate, w.gate_b, mm)) * linear(h, w.up, w.up_b, mm), w.down, w.down_b, mm)
        self.col = c + 1
        return linear(_rms(x, self.final_norm_w, self.final_eps), self.head_w, self.head_b, mm=self.head_mm).float()


class _LayerWeights:
    """One decoder layer's weight tensors, through ``cast`` (the decode dtype)."""

    def __init__(self, layer, cast):
        attn, mlp = layer.self_attn, layer.mlp
        self.in_norm, self.in_eps = cast(layer.input_layernorm.weight), layer.input_layernorm.variance_epsilon
        self.post_norm = cast(layer.post_attention_layernorm.weight)
        self.post_eps = layer.post_attention_layernorm.variance_epsilon
        for name, mod in (("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj), ("o", attn.o_proj),
                          ("gate", mlp.gate_proj), ("up", mlp.up_proj), ("down", mlp.down_proj)):
            setattr(self, name, cast(mod.weight))
            setattr(self, f"{name}_b", cast(mod.bias))
