"""The kernels under a CPU training step, measured alone: why decoding costs what it costs here.

* the LM head of SmolLM2 (49152 x 576) applied to 8 rows, fp32 and bf16: one decode step must read it whole,
  so its time gives the rate at which this machine streams weights (GB/s) for the matmuls of a decode step;
  and as ``(W h^T)^T`` (``models/head.linear``, ``model.lm_head_mm``), for which MKL picks another kernel;
* the memory bus itself: one sum over a 512 MB tensor (GB/s), what a weight-streaming kernel could reach;
* a 1536 x 576 projection at 8 rows (fits in cache), fp32 and bf16: the small-matmul kernels themselves;
* all 30 x 7 layer projections of SmolLM2 (q, k, v, o, gate, up, down; 425 MB, out of cache) at 8 rows, one
  decode step's worth: ``F.linear`` vs ``(W h^T)^T`` (``rollout.decode_mm``);
* sampling one token per row from 8 x 49152 probabilities: ``torch.multinomial`` vs inverse-CDF
  (``rollout/hf._inverse_cdf``);
* one AdamW step over SmolLM2-sized parameters (134.5M) with random gradients: torch's foreach vs fused.

    python benchmarks/bench_kernels.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from drox.models.head import linear


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    out: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__,
                 "transformers": __import__("transformers").__version__}
    for name, (rows, cols) in (("head", (49152, 576)), ("proj", (1536, 576))):
        w = torch.randn(rows, cols)
        x = torch.randn(8, cols)
        fp32 = timed(lambda: F.linear(x, w), 20)
        wb, xb = w.bfloat16(), x.bfloat16()
        bf16 = timed(lambda: F.linear(xb, wb), 20)
        mm = timed(lambda: linear(x, w, mm=True), 20)
        mb = rows * cols * 4 / 1e6
        out[name] = {"shape": [rows, cols], "fp32_ms": fp32 * 1e3, "bf16_ms": bf16 * 1e3, "fp32_MB": mb,
                     "fp32_GBps": mb / 1e3 / fp32, "mm_ms": mm * 1e3, "mm_GBps": mb / 1e3 / mm}
    shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
    layers = [[torch.randn(o, i) for o, i in shapes] for _ in range(30)]
    rows8 = {576: torch.randn(8, 576), 1536: torch.randn(8, 1536)}
    stack = {mm: timed(lambda: [linear(rows8[w.shape[1]], w, mm=mm) for ws in layers for w in ws], 7)
             for mm in (False, True)}
    out["layers"] = {"linear_ms": stack[False] * 1e3, "mm_ms": stack[True] * 1e3,
                     "MB": sum(w.numel() for ws in layers for w in ws) * 4 / 1e6}
    del layers
    big = torch.randn(128 * 1024 * 1024)  # 512 MB
    out["bus"] = {"sum_GBps": 0.512 / timed(big.sum, 5)}
    del big
    from drox.rollout.hf import _inverse_cdf, _multinomial

    probs = torch.softmax(torch.randn(8, 49152), -1)
    gen = torch.Generator().manual_seed(0)
    out["sample"] = {"multinomial_ms": timed(lambda: _multinomial(probs, gen), 50) * 1e3,
                     "inverse_cdf_ms": timed(lambda: _inverse_cdf(probs, gen), 50) * 1e3}
    params = [torch.zeros(n) for n in (49152 * 576, *([576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536] * 30))]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    adam = {}
    for fused in (False, True):
        opt = torch.optim.AdamW(params, lr=1e-9, fused=fused)
        adam["fused_s" if fused else "foreach_s"] = timed(opt.step, 5)
    out["adamw"] = {**adam, "params": sum(p.numel() for p in params)}
    h, p_, s, a = out["head"], out["proj"], out["sample"], out["adamw"]
    print(f"LM head 49152x576 at 8 rows: fp32 {h['fp32_ms']:.1f} ms ({h['fp32_GBps']:.1f} GB/s of weights), "
          f"bf16 {h['bf16_ms']:.1f} ms, (W h^T)^T {h['mm_ms']:.1f} ms ({h['mm_GBps']:.1f} GB/s)")
    print(f"memory bus: a sum over 512 MB reads {out['bus']['sum_GBps']:.1f} GB/s")
    print(f"projection 1536x576 at 8 rows: fp32 {p_['fp32_ms']:.3f} ms, bf16 {p_['bf16_ms']:.3f} ms")
    print(f"30 x 7 layer projections at 8 rows ({out['layers']['MB']:.0f} MB): F.linear {out['layers']['linear_ms']:.1f} ms, "
          f"(W h^T)^T {out['layers']['mm_ms']:.1f} ms")
    print(f"sampling 8 x 49152: multinomial {s['multinomial_ms']:.2f} ms, inverse CDF {s['inverse_cdf_ms']:.2f} ms")
    print(f"AdamW over {a['params'] / 1e6:.1f}M parameters: foreach {a['foreach_s']:.3f} s, fused {a['fused_s']:.3f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
