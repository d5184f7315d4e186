"""Levers for the static decode step (rollout/static_decode.py), measured against its plain form in one process.

``base`` is the step with ``F.linear`` projections (``rollout.decode_mm=false``) and the head as (W h^T)^T.

* ``fused``: q/k/v as one [(H + 2 KV) * hd, D] matmul and gate/up as one [2 I, D] matmul per layer (4 matmuls
  instead of 7; the weights concatenated once per generate call);
* ``mkl``: every projection through MKL's packed GEMM (``torch.ops.mkl._mkl_linear`` on weights packed once
  with ``_mkl_reorder_linear_weight``), the route TorchInductor takes on CPU after freezing;
* ``fused+mkl``: both;
* ``decode_mm``: every projection as (W h^T)^T (``rollout.decode_mm``, the default since; models/head.linear);
* ``fused+mm``: the fused matmuls as (W h^T)^T.

SmolLM2-135M (fp32, 2 threads), a prefilled prompt repeated over ``--rows`` rows, ``--tokens`` greedy decode steps;
ms per decode step (median over ``--repeats`` passes, after one warm-up pass of every variant) and the largest
logit difference from the plain step. Prints one line per variant and the ratio to ``base``.

    python benchmarks/bench_decode_levers.py [--rows 8] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import DynamicCache

from drox.models.head import linear
from drox.models.loading import load_policy
from drox.rollout.static_decode import StaticKVDecoder, _rms, _rotate


class LeverDecoder(StaticKVDecoder):
    """StaticKVDecoder with fused projections and/or MKL-packed weights (same math, see the module docstring)."""

    def __init__(self, *args, fuse: bool, mkl: bool, rows: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fuse, self.mkl, self.rows = fuse, mkl, rows
        for w in self.layers:
            if fuse:
                w.qkv, w.gu = torch.cat([w.q, w.k, w.v]).contiguous(), torch.cat([w.gate, w.up]).contiguous()
                w.nq, w.nk, w.ni = w.q.shape[0], w.k.shape[0], w.gate.shape[0]
            if mkl:
                for name in (("qkv", "o", "gu", "down") if fuse else ("q", "k", "v", "o", "gate", "up", "down")):
                    weight = getattr(w, name)
                    setattr(w, name + "_packed", torch.ops.mkl._mkl_reorder_linear_weight(weight, rows))

    def _linear(self, w, name: str, h: torch.Tensor) -> torch.Tensor:
        if self.mkl:
            return torch.ops.mkl._mkl_linear(h, getattr(w, name + "_packed"), getattr(w, name), None, self.rows)
        return linear(h, getattr(w, name), mm=self.proj_mm)  # mm=False is F.linear

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        A, c = tokens.shape[0], self.col
        self.valid[:, c] = True
        mask = self.valid[:, None, None, : c + 1]
        cos, sin = self.cos[positions][:, None, :], self.sin[positions][:, None, :]
        x = F.embedding(tokens, self.embed)
        for i, w in enumerate(self.layers):
            h = _rms(x, w.in_norm, w.in_eps)
            if self.fuse:
                qkv = self._linear(w, "qkv", h)
                q, k, v = qkv[:, : w.nq], qkv[:, w.nq: w.nq + w.nk], qkv[:, w.nq + w.nk:]
            else:
                q, k, v = self._linear(w, "q", h), self._linear(w, "k", h), self._linear(w, "v", h)
            q = q.reshape(A, self.heads, self.head_dim)
            k, v = k.reshape(A, self.kv_heads, self.head_dim), v.reshape(A, self.kv_heads, self.head_dim)
            self.k[i, :, :, c] = _rotate(k, cos, sin)
            self.v[i, :, :, c] = v
            o = F.scaled_dot_product_attention(
                _rotate(q, cos, sin)[:, :, None], self.k[i, :, :, : c + 1], self.v[i, :, :, : c + 1],
                attn_mask=mask, scale=self.scaling, enable_gqa=self.heads != self.kv_heads)
            x = x + self._linear(w, "o", o.reshape(A, -1))
            h = _rms(x, w.post_norm, w.post_eps)
            if self.fuse:
                gu = self._linear(w, "gu", h)
                x = x + self._linear(w, "down", F.silu(gu[:, : w.ni]) * gu[:, w.ni:])
            else:
                x = x + self._linear(w, "down", F.silu(self._linear(w, "gate", h)) * self._linear(w, "up", h))
        self.col = c + 1
        return linear(_rms(x, self.final_norm_w, self.final_eps), self.head_w, self.head_b, mm=True).float()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model, tok = load_policy(OmegaConf.create({"name": "smollm2-135m", "dtype": "float32", "cache_dir": None}))
    text = "<|im_start|>user\nWhat is 87 + 67 - 12?\n\nPut the final answer in \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    prompt = tok([text] * args.rows, return_tensors="pt")
    variants = {
        "base": dict(),
        "fused": dict(fuse=True, mkl=False),
        "mkl": dict(fuse=False, mkl=True),
        "fused+mkl": dict(fuse=True, mkl=True),
        "decode_mm": dict(proj_mm=True),
        "fused+mm": dict(fuse=True, mkl=False, proj_mm=True),
    }

    def decode(opts):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            out = model(**prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        args_ = (model, cache, prompt["attention_mask"], args.tokens)
        d = (LeverDecoder(*args_, head_mm=True, rows=args.rows, **opts) if "fuse" in opts
             else StaticKVDecoder(*args_, head_mm=True, **opts))
        token, pos = out.logits[:, -1].argmax(-1), prompt["attention_mask"].sum(-1)
        logits, start = [], time.perf_counter()
        for _ in range(args.tokens):
            step_logits = d.step(token, pos)
            logits.append(step_logits)
            token, pos = step_logits.argmax(-1), pos + 1
        return (time.perf_counter() - start) / args.tokens * 1e3, torch.stack(logits)

    for opts in variants.values():  # warm-up: first-call allocations and MKL's kernel selection
        decode(opts)
    times = {name: [] for name in variants}
    reference, diffs = None, {}
    for _ in range(args.repeats):  # interleaved, so drift in the machine's speed hits every variant alike
        for name, opts in variants.items():
            ms, logits = decode(opts)
            times[name].append(ms)
            reference = logits if reference is None else reference
            diffs[name] = max(diffs.get(name, 0.0), (logits - reference).abs().max().item())
    base = statistics.median(times["base"])
    print(f"SmolLM2-135M fp32, {args.rows} rows x {args.tokens} decode steps, median of {args.repeats}")
    for name in variants:
        med = statistics.median(times[name])
        print(f"{name:10s} {med:7.1f} ms/step  base/this {base / med:5.2f}x  max|logit - base| {diffs[name]:.1e}")


if __name__ == "__main__":
    main()
