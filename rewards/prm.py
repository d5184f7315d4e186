"""``prm``: step-level process rewards (docs/algorithms.md "PRM rewards and step aggregation").

``kind``:

* ``oracle`` — a rule-based step checker for tasks whose solutions are chains of ``a op b = c``
  (``task=arithmetic``; its ``steps`` column holds e.g. ``["3 + 5 = 8", "8 * 2 = 16"]``). Every
  ``a op b = c`` in the response (``op`` in ``+ - * ×``; integers) is a step, correct iff the
  arithmetic holds and, with ``match_reference``, ``c`` also equals the result of the reference step
  at the same index (steps beyond the reference's count are then incorrect). Step score
  ``correct`` / ``incorrect`` (1 / 0). [ENG: our checker; the papers' PRMs are learned.]
* ``hf`` — a HF PRM checkpoint at ``model_path`` (Math-Shepherd / Qwen-PRM style). The
  response is split into steps at ``step_separator`` (empty pieces dropped); the PRM input is
  ``input_template`` with ``{question}`` = the prompt and ``{steps}`` = the steps, each followed by
  ``step_tag``, joined by ``step_separator``. Step score = P(positive) at the step-end token (the last
  token of the step's tag; of the step itself when the tag is empty):
  ``head: token_classification`` softmax(logits)[positive_label] (sigmoid for one label; Qwen-PRM's
  ``<extra_0>`` two-way head); ``causal_lm`` softmax over the logits of [good_token, bad_token]
  (Math-Shepherd: "+"/"-" after the "ки" tag; an empty ``bad_token`` = the full softmax);
  ``sequence_classification`` one pass per step prefix (question + steps 1..k), P(positive) of the
  pooled output. Token positions come from the PRM tokenizer's offset mapping (re-tokenising the
  text prefix when the tokenizer has no offsets).
* ``monte_carlo`` — Math-Shepherd's automatic step labels (Wang et al., arXiv 2312.08935, §3.3) used directly
  as rewards, with no trained PRM: the response is split into steps at ``step_separator``; from the end of
  each step but the last, the current policy samples ``mc_samples`` completions (``rollout.backend=hf``); the
  step's value is the fraction of them the task's verifier accepts (``mc_estimate: soft``, Math-Shepherd's SE)
  or 1 if any is accepted (``hard``, HE). The last step's value is the verifier's verdict on the response
  itself. Cost: ``scoring/mc_rollouts`` and ``scoring/mc_tokens`` (completions and tokens sampled).

Aggregation to a sequence score (``aggregation``; docs/algorithms.md): ``min`` (Math-Shepherd
§3.4, default), ``last`` (Snell et al.), ``prod`` (PRM800K / Lightman et al.), ``mean`` (GenPRM
App. A.1 PRM-Avg). A response with no step scores ``empty_score`` [ENG].

``dense: true`` (DeepSeekMath §4.1.3 process supervision; docs/algorithms.md
"Process supervision: dense step rewards and reward-to-go"): step scores are placed at
the response token where each step ends, as ``token [Q, G, T]`` with ``token_mask`` marking them
(so a step score of exactly 0 still counts); the trainer turns them into group-normalised
reward-to-go advantages (:func:`drox.trainers.algos.dense_process_advantages`). The sequence score is
then 0 (the aggregate is only logged) so the steps are not counted twice. A step's end in the
response is mapped to the sampled token holding its last character by decoding prefixes of the
sampled ids (:class:`drox.signals.spans.TokenCharMap`); two steps ending in one token keep the later.

The options (:class:`PRMConfig`), the oracle checker and the step splitter live in :mod:`drox.signals.prm` (torch-free,
shared with the judges and the verl backend); this module holds the scoring.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from drox.rewards.base import RewardOutput, ScoringContext, register_reward
from drox.signals.prm import AGGREGATIONS, PRMConfig, check_steps, parse_steps, split_steps
from drox.signals.spans import TokenCharMap, pad_ids, response_ids


# ------------------------------------------------------------------------------------------------ pure functions


def aggregate_steps(scores: torch.Tensor, mask: torch.Tensor, how: str = "min", empty: float = 0.0) -> torch.Tensor:
    """Step scores -> one score per response (docs/algorithms.md "PRM rewards and step aggregation").

    scores  # [N, S] step scores (anything on padding)
    mask    # [N, S] 1 on real steps (the first n_i entries of row i)
    returns # [N]: min | last | prod | mean over the real steps; ``empty`` for a row with none.
    """
    m = mask.bool()
    s = scores.float()
    count = m.sum(-1)
    if how == "min":
        out = torch.where(m, s, torch.full_like(s, float("inf"))).min(-1).values
    elif how == "last":
        last = (count - 1).clamp_min(0)
        out = s.gather(-1, last[:, None]).squeeze(-1) if s.shape[-1] else torch.zeros(s.shape[0])
    elif how == "prod":
        out = torch.where(m, s, torch.ones_like(s)).prod(-1)
    elif how == "mean":
        out = torch.where(m, s, torch.zeros_like(s)).sum(-1) / count.clamp_min(1)
    else:
        raise ValueError(f"reward.prm.aggregation={how!r}; choose one of: {', '.join(AGGREGATIONS)}")
    return torch.where(count > 0, out, torch.full_like(out, float(empty)))


def build_prm_input(question: str, steps: Sequence[str], template: str, separator: str, tag: str
                    ) -> Tuple[str, List[int]]:
    """(PRM input text, character index just past each step's tag) for ``input_template``."""
    if template.count("{steps}") != 1:
        raise ValueError(f"reward.prm.input_template must contain {{steps}} once: {template!r}")
    head, tail = template.split("{steps}")
    text = head.replace("{question}", question)
    ends = []
    for k, step in enumerate(steps):
        if k:
            text += separator
        text += step + tag
        ends.append(len(text))
    return text + tail.replace("{question}", question), ends


def char_to_token_positions(tokenizer, text: str, char_ends: Sequence[int], add_special_tokens: bool = True
                            ) -> Tuple[List[int], List[int]]:
    """(input ids of ``text``, index of the token holding character ``end - 1`` for each end).

    Uses the tokenizer's offset mapping (the last token starting before ``end``); a tokenizer without
    offsets re-tokenises each prefix ``text[:end]`` (the prefix's last token).
    """
    try:
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        enc, offsets = tokenizer(text, add_special_tokens=add_special_tokens), None
    ids = list(enc["input_ids"])
    if offsets is not None:
        starts = [(s if e > s else -1) for s, e in offsets]  # special tokens without text never match
        positions = [max(i for i, s in enumerate(starts) if s < end) for end in char_ends]
    else:
        positions = [len(tokenizer(text[:end], add_special_tokens=add_special_tokens)["input_ids"]) - 1
                     for end in char_ends]
    return ids, positions


# ------------------------------------------------------------------------------------------------ hf PRM


def load_prm(ctx: ScoringContext, cfg: PRMConfig):
    """(model, tokenizer) of the PRM, loaded once and kept in ``ctx.state``."""
    key = (cfg.model_path, cfg.head, cfg.dtype, cfg.trust_remote_code)
    held = ctx.state.get("prm/hf")
    if held is not None and held["key"] == key:
        return held["model"], held["tokenizer"]
    import transformers

    if not cfg.model_path:
        raise ValueError("reward.prm kind=hf needs reward.prm.model_path=<PRM checkpoint>")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    auto = {"token_classification": transformers.AutoModelForTokenClassification,
            "sequence_classification": transformers.AutoModelForSequenceClassification,
            "causal_lm": transformers.AutoModelForCausalLM}[cfg.head]
    kwargs = dict(dtype=dtypes[cfg.dtype], trust_remote_code=cfg.trust_remote_code)
    try:
        model = auto.from_pretrained(cfg.model_path, **kwargs)
    except ValueError:
        if not cfg.trust_remote_code:
            raise
        model = transformers.AutoModel.from_pretrained(cfg.model_path, **kwargs)  # e.g. Qwen2ForProcessRewardModel
    tokenizer = transformers.AutoTokenizer.from_pretrained(cfg.model_path, trust_remote_code=cfg.trust_remote_code)
    device = next(ctx.policy.parameters()).device if ctx.policy is not None else torch.device("cpu")
    model.to(device).eval().requires_grad_(False)
    if getattr(model.config, "pad_token_id", None) is None:  # sequence classifiers find the last token by it
        pad = tokenizer.pad_token_id
        model.config.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
    ctx.state["prm/hf"] = {"key": key, "model": model, "tokenizer": tokenizer}
    return model, tokenizer


def positive_probability(logits: torch.Tensor, head: str, positive_label: int = 1,
                         label_ids: Optional[Tuple[int, Optional[int]]] = None) -> torch.Tensor:
    """P(step correct) from PRM logits at the scored positions.

    logits  # [k, C] (classification heads) or [k, V] (causal_lm) -> [k]
    classification: softmax(logits)[positive_label], sigmoid when C == 1; causal_lm: softmax over
    ``[good, bad]`` logits -> P(good) (Math-Shepherd), full softmax when ``bad`` is None.
    """
    z = logits.float()
    if head == "causal_lm":
        good, bad = label_ids
        if bad is None:
            return torch.softmax(z, -1)[:, good]
        return torch.softmax(z[:, [good, bad]], -1)[:, 0]
    if z.shape[-1] == 1:
        return torch.sigmoid(z[:, 0])
    return torch.softmax(z, -1)[:, positive_label]


def _prm_forward(ctx: ScoringContext, model, tokenizer, inputs: List[List[int]], positions: List[List[int]],
                 cfg: PRMConfig) -> List[List[float]]:
    """Chunked PRM passes: for each input, P(positive) at each of its positions (one per step)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    label_ids = None
    if cfg.head == "causal_lm":
        from drox.rewards.prm_judge import single_token

        label_ids = (single_token(tokenizer, cfg.good_token, "reward.prm", "good_token", "the PRM's"),
                     single_token(tokenizer, cfg.bad_token, "reward.prm", "bad_token", "the PRM's")
                     if cfg.bad_token else None)
    out: List[List[float]] = []
    bs = max(1, ctx.forward_batch_size)
    for start in range(0, len(inputs), bs):
        chunk, pos = inputs[start : start + bs], positions[start : start + bs]
        ids, attn = pad_ids(chunk, pad, side="right")  # [b, W]: real tokens keep positions 0..len-1
        with torch.no_grad():
            res = model(input_ids=ids.to(device), attention_mask=attn.to(device))
        logits = res.logits if hasattr(res, "logits") else res[0]
        ctx.counters["forward_passes"] = ctx.counters.get("forward_passes", 0) + 1
        ctx.counters["forward_tokens"] = ctx.counters.get("forward_tokens", 0) + float(attn.sum().item())
        for i, p in enumerate(pos):
            if cfg.head == "sequence_classification":
                picked = logits[i : i + 1]  # [1, C]: the model pools its own last token
            else:
                picked = logits[i, torch.tensor(p, dtype=torch.long, device=logits.device)]  # [k, C|V]
            out.append(positive_probability(picked, cfg.head, cfg.positive_label, label_ids).cpu().tolist())
    return out


def hf_step_scores(ctx: ScoringContext, cfg: PRMConfig) -> List[List[Tuple[float, int]]]:
    """``[(P(correct), end_char in the response)]`` per rollout from the HF PRM."""
    model, tokenizer = load_prm(ctx, cfg)
    G = ctx.batch.group_size
    inputs, positions, owners, ends_per_row = [], [], [], []
    for n, text in enumerate(ctx.batch.texts):
        spans = split_steps(text, cfg.step_separator)
        ends_per_row.append([e for _, e in spans])
        if not spans:
            continue
        steps = [text[s:e] for s, e in spans]
        question = str(ctx.rows[n // G]["prompt"])
        if cfg.head == "sequence_classification":  # one input per step prefix
            for k in range(len(steps)):
                prm_text, _ = build_prm_input(question, steps[: k + 1], cfg.input_template, cfg.step_separator,
                                              cfg.step_tag)
                ids = tokenizer(prm_text, add_special_tokens=cfg.add_special_tokens)["input_ids"]
                inputs.append(list(ids))
                positions.append([len(ids) - 1])
                owners.append(n)
        else:
            prm_text, char_ends = build_prm_input(question, steps, cfg.input_template, cfg.step_separator,
                                                  cfg.step_tag)
            ids, pos = char_to_token_positions(tokenizer, prm_text, char_ends, cfg.add_special_tokens)
            inputs.append(ids)
            positions.append(pos)
            owners.append(n)
    probs = _prm_forward(ctx, model, tokenizer, inputs, positions, cfg) if inputs else []
    per_row: List[List[float]] = [[] for _ in ctx.batch.texts]
    for n, p in zip(owners, probs):
        per_row[n].extend(p)
    return [list(zip(per_row[n], ends_per_row[n])) for n in range(len(per_row))]


def mc_value(accepted: Sequence[bool], estimate: str = "soft") -> float:
    """A step's Monte-Carlo value from its completions' verdicts: soft = mean, hard = any (Math-Shepherd §3.3)."""
    if not accepted:
        raise ValueError("a Monte-Carlo step value needs at least one completion")
    return float(any(accepted)) if estimate == "hard" else sum(map(bool, accepted)) / len(accepted)


def monte_carlo_step_scores(ctx: ScoringContext, cfg: PRMConfig) -> List[List[Tuple[float, int]]]:
    """Per rollout, ``(value, step end char)`` for each step (``kind=monte_carlo``; module docstring)."""
    batch, G = ctx.batch, ctx.batch.group_size
    engine = ctx.engine
    if engine is None or not hasattr(engine, "generate_ids"):
        raise ValueError("reward.prm kind=monte_carlo samples completions from token prefixes, which the rollout "
                         "engine here cannot do; use rollout.backend=hf")
    if ctx.tokenizer is None:
        raise ValueError("reward.prm kind=monte_carlo needs the tokenizer in the scoring context")
    outcome = ctx.verify().correct
    per_row: List[List[Tuple[Any, int]]] = []  # (value, or the index of its prefix in `prefixes`; end char)
    prefixes: List[List[int]] = []
    prefix_text: List[str] = []
    prefix_row: List[int] = []
    for n, text in enumerate(batch.texts):
        spans = split_steps(text, cfg.step_separator)
        ids = response_ids(batch, n)
        prompt = batch.prompt_ids[n][batch.prompt_mask[n].bool()].tolist()
        cmap = TokenCharMap(ctx.tokenizer, ids)
        steps: List[Tuple[Any, int]] = []
        for j, (_, end) in enumerate(spans):
            t = None if j == len(spans) - 1 else cmap.token_of(end - 1)
            if t is None or t + 1 >= len(ids):  # the last step (or one ending in the last token): the response
                steps.append((float(bool(outcome[n])), end))
                continue
            steps.append((len(prefixes), end))
            prefixes.append(prompt + ids[: t + 1])
            prefix_text.append(ctx.tokenizer.decode(ids[: t + 1], skip_special_tokens=True))
            prefix_row.append(n)
        per_row.append(steps)
    if prefixes:
        k = int(cfg.mc_samples)
        cont = engine.generate_ids(prefixes, k, max_new_tokens=int(cfg.mc_max_new_tokens or ctx.max_new_tokens or 64),
                                   temperature=float(cfg.mc_temperature),
                                   seed=(int(ctx.seed) * 1_000_003 + int(ctx.step)) * 101 + int(ctx.gen_batch))
        expanded = ctx.expanded_rows
        texts = [prefix_text[i // k] + cont.texts[i] for i in range(len(prefixes) * k)]
        verdict = ctx.task.verifier(texts, [expanded[prefix_row[i // k]] for i in range(len(texts))]).correct
        values = [mc_value(verdict[i * k:(i + 1) * k], cfg.mc_estimate) for i in range(len(prefixes))]
        ctx.counters["mc_rollouts"] = ctx.counters.get("mc_rollouts", 0) + len(texts)
        ctx.counters["mc_tokens"] = ctx.counters.get("mc_tokens", 0) + float(cont.response_mask.sum().item())
        per_row = [[(values[v] if isinstance(v, int) else v, end) for v, end in steps] for steps in per_row]
    return per_row


# ------------------------------------------------------------------------------------------------ the source


def check_backend(opts: PRMConfig, cfg) -> None:
    """Config-time check: Monte-Carlo completions continue token prefixes, which only the hf engine does."""
    if opts.kind == "generative":
        from drox.rewards.prm_judge import check_judge

        check_judge("reward.prm", opts.judge, opts.judge_path, opts.judge_verify_tokens)
    if opts.kind == "monte_carlo" and cfg.rollout.backend != "hf":
        raise ValueError(f"reward.prm kind=monte_carlo samples from token prefixes, which rollout.backend="
                         f"{cfg.rollout.backend} cannot; use rollout.backend=hf")


@register_reward("prm", PRMConfig, check=check_backend, verl="drox.integrations.verl.mapping:prm")
def prm(ctx: ScoringContext, cfg: PRMConfig) -> RewardOutput:
    batch = ctx.batch
    Q, G, T = batch.num_groups, batch.group_size, batch.response_ids.shape[1]

    if cfg.kind == "oracle":
        per_row: List[List[Tuple[float, int]]] = []
        for n, text in enumerate(batch.texts):
            ref = None
            if cfg.match_reference:
                row = ctx.rows[n // G]
                if "steps" not in row:
                    raise ValueError(f"reward.prm match_reference=true needs a 'steps' column; task "
                                     f"'{getattr(ctx.task, 'name', '?')}' has none")
                ref = list(row["steps"])
            per_row.append([(cfg.correct if ok else cfg.incorrect, end) for ok, end in check_steps(text, ref)])
    elif cfg.kind == "monte_carlo":
        per_row = monte_carlo_step_scores(ctx, cfg)
    elif cfg.kind == "generative":
        from drox.rewards.prm_judge import generative_step_scores

        per_row = generative_step_scores(ctx, cfg)
    else:
        per_row = hf_step_scores(ctx, cfg)

    S = max((len(r) for r in per_row), default=0)
    scores = torch.zeros(len(per_row), max(S, 1))
    smask = torch.zeros(len(per_row), max(S, 1))
    for n, row in enumerate(per_row):
        for k, (s, _) in enumerate(row):
            scores[n, k], smask[n, k] = s, 1.0
    agg = aggregate_steps(scores, smask, cfg.aggregation, cfg.empty_score)  # [N]
    counts = smask.sum(-1)
    diagnostics: Dict[str, Any] = {
        "aggregate_mean": agg.mean().item(),
        "steps_mean": counts.mean().item(),
        "no_step_frac": (counts == 0).float().mean().item(),
        "step_score_mean": (scores.sum() / smask.sum().clamp_min(1)).item(),
    }
    extras = {"aggregate": agg.view(Q, G), "step_counts": counts.view(Q, G)}
    if not cfg.dense:
        return RewardOutput(seq=agg.view(Q, G), diagnostics=diagnostics, extras=extras)

    if ctx.tokenizer is None:
        raise ValueError("reward.prm dense=true needs the tokenizer in the scoring context (step-end tokens)")
    token = torch.zeros(len(per_row), T)
    token_mask = torch.zeros(len(per_row), T, dtype=torch.bool)
    placed = 0
    for n, row in enumerate(per_row):
        if not row:
            continue
        cmap = TokenCharMap(ctx.tokenizer, response_ids(batch, n))
        for s, end in row:
            t = cmap.token_of(end - 1)
            if t is not None:
                token[n, t], token_mask[n, t] = s, True
                placed += 1
    diagnostics["steps_placed_frac"] = placed / max(float(smask.sum().item()), 1.0)
    return RewardOutput(seq=torch.zeros(Q, G), token=token.view(Q, G, T), token_mask=token_mask.view(Q, G, T),
                        diagnostics=diagnostics, extras=extras)


__all__ = ["PRMConfig", "aggregate_steps", "build_prm_input", "char_to_token_positions", "check_steps",
           "hf_step_scores", "load_prm", "mc_value", "monte_carlo_step_scores", "parse_steps", "positive_probability",
           "prm", "split_steps"]
