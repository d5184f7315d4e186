"""Rollout throughput: drox's KV-cached engine vs. the TRL-style `model.generate` baseline.

Both sides produce what an on-policy RL step needs: G sampled completions per prompt and the
behaviour log-prob of every sampled token.

* drox: ``HFRolloutEngine.generate`` (prefills each prompt once, repeats its KV cache G times,
  drops finished rows, returns the log-probs it computed while sampling).
* baseline: ``model.generate(do_sample=True, num_return_sequences=G, output_logits=True)`` (every
  row decodes until the longest one stops), then one teacher-forced forward pass over prompt +
  completion to get the log-probs (what TRL's GRPO trainer does).

Same prompts (the chat-templated eval prompts of the arithmetic task), same sampling
distribution (temperature T, no top-k / top-p truncation), same max_new_tokens. Prints the
median seconds per rollout batch, the ratio baseline / drox and generated tokens per second.

    python benchmarks/bench_rollout.py [--model tiny|smollm2-135m] [--repeats 3]

``--eval``: the sampling of ``drox eval`` (n samples per problem, no training, no log-prob pass needed) vs HF
``generate`` at batch 8, i.e. n / 8 calls of ``num_return_sequences=8`` per prompt, the way a plain harness
samples n completions. drox decodes the n samples of a prompt together (``rollout.batch_size = n``) from one
prefill. Compared as completion tokens per second (tokens up to and including EOS; HF's padding after EOS is
not counted as output).

    python benchmarks/bench_rollout.py --eval --samples 64 [--prompts 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


HF_EVAL_BATCH = 8  # --eval: the baseline's rows per generate call


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def baseline_rollout(model, tokenizer, ids, mask, G, max_new_tokens, temperature, eos_ids, seed):
    """HF generate + one extra forward pass for the behaviour log-probs. Returns (tokens, mean logp)."""
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, num_return_sequences=G,
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=0, top_p=1.0,
        output_logits=True, return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
    )
    P = ids.shape[1]
    response = out.sequences[:, P:]  # [N, T]: every row padded to the longest one
    is_eos = torch.isin(response, eos_ids)
    # keep tokens up to and including the first EOS
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0
    resp_mask = (~after_eos).long()
    prompt_ids, prompt_mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    input_ids = torch.cat([prompt_ids, response], 1)
    attn = torch.cat([prompt_mask, resp_mask], 1)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    T = response.shape[1]
    logits = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=False,
                   logits_to_keep=T + 1).logits[:, :T].float() / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, response[..., None])[..., 0] * resp_mask
    n_tokens = int(resp_mask.sum())
    return n_tokens, float(logp.sum()) / max(n_tokens, 1), T


@torch.no_grad()
def hf_generate_tokens(model, tokenizer, ids, mask, n, batch, max_new_tokens, temperature, eos_ids, seed) -> int:
    """n samples of each prompt through HF ``generate`` in calls of ``batch`` rows; the completion tokens made."""
    torch.manual_seed(seed)
    made = 0
    for q in range(ids.shape[0]):
        keep = mask[q] != 0
        prompt = ids[q : q + 1, keep]
        for _ in range(0, n, batch):
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                 num_return_sequences=batch, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_k=0, top_p=1.0, pad_token_id=tokenizer.pad_token_id)
            response = out[:, prompt.shape[1]:]
            is_eos = torch.isin(response, eos_ids)
            made += int(((is_eos.cumsum(-1) - is_eos.long()) == 0).sum())  # up to and including the first EOS
    return made


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["tiny", "smollm2-135m"])
    parser.add_argument("--prompts", type=int, default=2, help="Q: prompts per batch")
    parser.add_argument("--samples", type=int, default=8, help="G: samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (after one warm-up)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--eval", action="store_true",
                        help="eval sampling: n = --samples per prompt decoded together vs HF generate at batch 8")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a drox config override (repeatable), e.g. rollout.static_decode=false")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)

    from drox.cli.main import compose
    from drox.models.loading import load_policy, resolve_device
    from drox.rollout.hf import HFRolloutEngine
    from drox.tasks import build_task

    cfg = compose([f"model={args.model}", "logger.wandb_mode=disabled", *args.set])
    device = resolve_device(args.device)
    model, tok = load_policy(cfg.model, device)
    per_batch = args.samples if args.eval else args.prompts * args.samples
    engine = HFRolloutEngine(model, tok, cfg.model, batch_size=per_batch, static_decode=cfg.rollout.static_decode,
                            decode_mm=cfg.rollout.decode_mm)
    task = build_task(cfg.task, split="test")
    prompts = [task.dataset[i]["prompt"] for i in range(args.prompts)]
    ids, mask = engine.encode_prompts(prompts)
    ids, mask = ids.to(device), mask.to(device)
    eos_ids = engine.eos_ids.to(device)
    G, T, temp = args.samples, args.max_new_tokens, args.temperature

    def run_drox(seed):
        b = engine.generate(prompts, G, max_new_tokens=T, temperature=temp, seed=seed)
        n = int(b.response_mask.sum())
        return n, float(b.logprobs.sum()) / max(n, 1), b.response_ids.shape[1]

    def run_base(seed):
        if args.eval:
            return hf_generate_tokens(model, tok, ids, mask, G, HF_EVAL_BATCH, T, temp, eos_ids, seed), 0.0, T
        return baseline_rollout(model, tok, ids, mask, G, T, temp, eos_ids, seed)

    results = {}
    for name, fn in (("drox", run_drox), ("baseline", run_base)):
        fn(10_000)  # warm-up (allocator, kernels, first-call overheads)
        times, tokens, logps, widths = [], [], [], []
        for r in range(args.repeats):
            _sync(device)
            t0 = time.perf_counter()
            n, lp, width = fn(r)
            _sync(device)
            times.append(time.perf_counter() - t0)
            tokens.append(n)
            logps.append(lp)
            widths.append(width)
        med = statistics.median(times)
        results[name] = {
            "median_s": med, "times_s": times, "tokens": tokens,
            "tokens_per_s": sum(tokens) / sum(times), "mean_logprob": statistics.mean(logps),
            "decode_steps": widths,
        }

    if args.eval:  # throughput, since the two sides may make different numbers of tokens
        ratio = results["drox"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    else:
        ratio = results["baseline"]["median_s"] / results["drox"]["median_s"]
    summary = {
        "model": args.model, "device": str(device), "threads": torch.get_num_threads(),
        "mode": "eval" if args.eval else "rollout", "drox_overrides": list(args.set),
        "Q": args.prompts, "G": G, "max_new_tokens": T, "temperature": temp, "repeats": args.repeats,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__, **results,
        "speedup": ratio, "speedup_is": "tokens/s drox / HF generate" if args.eval else "seconds baseline / drox",
    }
    print(f"{args.model} on {device} ({torch.get_num_threads()} threads): {args.prompts} prompts x {G} samples x "
          f"<= {T} new tokens, T={temp}, {args.repeats} repeats"
          + (f" (eval sampling; HF generate at batch {HF_EVAL_BATCH})" if args.eval else ""))
    for name in ("drox", "baseline"):
        r = results[name]
        times = ", ".join(f"{t:.2f}" for t in r["times_s"])
        print(f"  {name:9s} median {r['median_s']:7.3f} s  [{times}]  {r['tokens_per_s']:8.1f} tok/s  "
              f"tokens/run {r['tokens']}  mean logp {r['mean_logprob']:.3f}")
    print(f"  drox / HF generate tokens/s = {ratio:.2f}x" if args.eval else f"  baseline / drox = {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
