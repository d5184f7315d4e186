"""Tree-GRPO (Ji et al., arXiv 2509.21240; rollout/tree.py, trainers/algos.tree_advantages; docs/algorithms.md
"Tree-GRPO: tree-search rollouts and tree advantages"): the tree advantage by hand, the tree construction with a
scripted engine, the spliced rows' behaviour log-probs on the tiny model, the config checks, and two training steps."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from doubles import CharTok, config_error

from drox.rollout.base import RolloutBatch, concat_batches
from drox.rollout.tree import BoundaryTokens, tree_rollouts
from drox.trainers.algos import ADVANTAGE_ESTIMATORS, compute_advantages

R3 = math.sqrt(3.0)


# ------------------------------------------------------------------------------------------------ the advantage


def test_tree_advantage_by_hand():
    """One prompt, G = 6 leaves in two trees of three; scores r = [1, 0, 0 | 1, 1, 0].

    Inter-tree (all six leaves): mean 1/2, squared deviations 6 x 1/4 = 3/2, unbiased var 3/2 / 5 = 3/10, so
    A_inter = ±(1/2) / sqrt(3/10) = ±sqrt(5/6) = ±0.912871 (+ for r = 1).
    Intra-tree, tree 0 = [1, 0, 0]: mean 1/3, squared deviations 4/9 + 1/9 + 1/9 = 2/3, unbiased var 1/3, std 1/sqrt 3:
    A = (2/3) sqrt 3 = 2/sqrt 3 = 1.154701 for the 1, (-1/3) sqrt 3 = -1/sqrt 3 = -0.577350 for each 0.
    Tree 1 = [1, 1, 0]: mean 2/3: +1/sqrt 3 for each 1, -2/sqrt 3 for the 0.
    tree = inter + intra: [0.912871 + 1.154701, -0.912871 - 0.577350, same, 0.912871 + 0.577350, same,
    -0.912871 - 1.154701] = [2.067572, -1.490221, -1.490221, 1.490221, 1.490221, -2.067572].
    tree_2norm = intra-tree GRPO of the inter-tree z-scores: z is r scaled and shifted, and the per-tree z-score is
    invariant to that, so it equals the intra term alone: [2, -1, -1, 1, 1, -2] / sqrt 3.
    """
    scores = torch.tensor([[1.0, 0, 0, 1, 1, 0]])
    trees = torch.tensor([[0, 0, 0, 1, 1, 1]])
    a = math.sqrt(5 / 6)
    expected = torch.tensor([[a + 2 / R3, -a - 1 / R3, -a - 1 / R3, a + 1 / R3, a + 1 / R3, -a - 2 / R3]])
    adv = compute_advantages(scores, "tree", tree_ids=trees)
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(adv, torch.tensor([[2.067572, -1.490221, -1.490221, 1.490221, 1.490221, -2.067572]]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(compute_advantages(scores, "tree_2norm", tree_ids=trees),
                               torch.tensor([[2.0, -1, -1, 1, 1, -2]]) / R3, atol=1e-5, rtol=0)
    # the sum of the two GRPO terms, each as the grpo estimator computes it
    inter = compute_advantages(scores, "grpo")
    intra = torch.cat([compute_advantages(scores[:, :3], "grpo"), compute_advantages(scores[:, 3:], "grpo")], 1)
    torch.testing.assert_close(adv, inter + intra)


def test_tree_advantage_with_a_gated_leaf_and_interleaved_tree_labels():
    """G = 4, trees {0, 2} and {1, 3} (labels need not be contiguous), r = [1, 1, 0, x], leaf 3 rejected by a gate.

    Inter-tree over the valid {1, 1, 0}: mean 2/3, unbiased var (1/9 + 1/9 + 4/9) / 2 = 1/3: A = +1/sqrt 3 = 0.577350
    for the 1s, -2/sqrt 3 = -1.154701 for the 0. Tree {0, 2} = [1, 0]: mean 1/2, unbiased std sqrt(1/2): ±0.707107.
    Tree {1, 3}: one valid leaf, no contrast: 0. Leaf 3 (gated): 0.
    tree = [0.577350 + 0.707107, 0.577350, -1.154701 - 0.707107, 0] = [1.284457, 0.577350, -1.861808, 0].
    """
    scores = torch.tensor([[1.0, 1.0, 0.0, float("nan")]])
    valid = torch.tensor([[True, True, True, False]])
    adv = compute_advantages(scores, "tree", valid=valid, tree_ids=torch.tensor([[0, 1, 0, 1]]))
    torch.testing.assert_close(adv, torch.tensor([[1.284457, 0.577350, -1.861808, 0.0]]), atol=1e-5, rtol=0)
    # constant scores: no contrast anywhere, exactly 0
    same = compute_advantages(torch.ones(2, 4), "tree", tree_ids=torch.tensor([[0, 0, 1, 1]] * 2))
    assert torch.equal(same, torch.zeros(2, 4))


def test_tree_estimators_need_tree_ids():
    assert ADVANTAGE_ESTIMATORS.get("tree").meta["tree_ids"] and ADVANTAGE_ESTIMATORS.get("tree_2norm").meta["tree_ids"]
    with pytest.raises(ValueError, match="needs tree_ids"):
        compute_advantages(torch.ones(1, 4), "tree")
    # an estimator without tree_ids in its meta is called as before (tree ids are not passed)
    assert torch.equal(compute_advantages(torch.tensor([[1.0, 0.0]]), "grpo", tree_ids=torch.tensor([[0, 1]])),
                       compute_advantages(torch.tensor([[1.0, 0.0]]), "grpo"))


# ------------------------------------------------------------------------------------------------ construction


def fake_logprob(context, token) -> float:
    """The scripted policy's log-prob of ``token`` after ``context`` (a function of both, so that a splice that
    misplaces a prefix's log-probs is caught)."""
    return -((sum(context) * 31 + token) % 97 + 1) / 100.0


class LineTok(CharTok):
    """CharTok; token id = ord(char), 0 = pad/EOS."""


class ScriptedTreeEngine:
    """``generate``: sample j of prompt p is the three lines ``p j a / p j b / p j c``; ``generate_ids``: each
    prefix's continuation is the two lines ``x<s><k> / y<s><k>`` (s: the call's seed mod 10, k: the prefix's index in
    the call), cut at the prefix's cap (then finish_reason 'length'). Log-probs: :func:`fake_logprob`."""

    pad_id = 0

    def __init__(self):
        self.calls = []

    def _rows(self, contexts, texts, caps):
        T = max(min(len(t), c) for t, c in zip(texts, caps))
        n = len(texts)
        ids, mask = torch.zeros(n, T, dtype=torch.long), torch.zeros(n, T)
        lps, ents = torch.zeros(n, T), torch.zeros(n, T)
        reasons, out_texts = [], []
        for r, (ctx, text, cap) in enumerate(zip(contexts, texts, caps)):
            toks = [ord(c) for c in text][:cap]
            reasons.append("length" if len(text) > cap else "eos")
            out_texts.append("".join(map(chr, toks)))
            for t, tok in enumerate(toks):
                ids[r, t], mask[r, t] = tok, 1
                lps[r, t] = fake_logprob(ctx + toks[:t], tok)
                ents[r, t] = 0.5 + t / 100
        return ids, mask, lps, ents, reasons, out_texts

    def generate(self, prompts, G, *, max_new_tokens, temperature=1.0, top_p=1.0, seed=None):
        contexts = [[ord(c) for c in p] for p in prompts for _ in range(G)]
        texts = [f"{p}{j}a\n{p}{j}b\n{p}{j}c" for p in prompts for j in range(G)]
        ids, mask, lps, ents, reasons, out = self._rows(contexts, texts, [max_new_tokens] * len(texts))
        prompt_ids = torch.tensor(contexts)
        return RolloutBatch(prompt_ids=prompt_ids, prompt_mask=torch.ones_like(prompt_ids), response_ids=ids,
                            response_mask=mask, logprobs=lps, entropies=ents, finish_reason=reasons, texts=out,
                            group_size=G, prompts=list(prompts), temperature=temperature)

    def generate_ids(self, prefixes, k, *, max_new_tokens, temperature=1.0, top_p=1.0, seed=None):
        assert k == 1
        self.calls.append(([list(p) for p in prefixes], list(max_new_tokens), seed))
        texts = [f"x{seed % 10}{i}\ny{seed % 10}{i}" for i in range(len(prefixes))]
        ids, mask, lps, ents, reasons, out = self._rows([list(p) for p in prefixes], texts, max_new_tokens)
        return SimpleNamespace(response_ids=ids, response_mask=mask, logprobs=lps, entropies=ents,
                               finish_reason=reasons, texts=out)


def tree_cfg(trees=2, rounds=2, branches=2, separator="\n"):
    return SimpleNamespace(trees=trees, rounds=rounds, branches=branches, separator=separator)


def build(seed=3, max_new_tokens=64, prompts=("P", "Q"), **kw):
    engine = ScriptedTreeEngine()
    out = tree_rollouts(engine, LineTok(), list(prompts), tree_cfg(**kw), max_new_tokens=max_new_tokens, seed=seed)
    return engine, out


def test_trees_have_g_leaves_whose_branches_share_their_parents_prefix():
    engine, out = build()
    M, L, N, Q = 2, 2, 2, 2
    G = M * (1 + L * N)  # 10
    b, leaves = out.batch, out.leaves
    assert b.num_rows == Q * G and b.group_size == G and b.num_groups == Q
    assert b.tree_ids.tolist() == ([0] * 5 + [1] * 5) * Q
    assert len(leaves) == Q * G and sorted(out.order) == list(range(Q * G))
    assert len(engine.calls) == L and all(len(p) == Q * M * N for p, _, _ in engine.calls)
    assert [sum(leaf.round == r for leaf in leaves) for r in range(L + 1)] == [Q * M, Q * M * N, Q * M * N]
    prefixes = [p for call, _, _ in engine.calls for p in call]
    branched = [leaf for leaf in leaves if leaf.round > 0]
    for leaf, prefix in zip(branched, prefixes):
        prompt = [ord("PQ"[leaf.group])]
        assert prefix == prompt + leaf.tokens[:leaf.branch_at]  # the engine continued exactly the shared prefix
        if leaf.parent is None:  # a fresh chain from the root (the bare prompt)
            assert leaf.branch_at == 0
            continue
        parent = leaves[leaf.parent]
        assert (parent.group, parent.tree) == (leaf.group, leaf.tree) and parent.round < leaf.round
        assert leaf.tokens[:leaf.branch_at] == parent.tokens[:leaf.branch_at]
        assert leaf.logprobs[:leaf.branch_at] == parent.logprobs[:leaf.branch_at]
        assert leaf.branch_at in parent.nodes  # a non-leaf node of the parent's: it ends with a newline ...
        assert chr(leaf.tokens[leaf.branch_at - 1]) == "\n" and leaf.branch_at < len(parent.tokens)  # before its end
    assert any(leaf.parent is not None for leaf in branched) and any(leaf.parent is None for leaf in branched)
    # each leaf's nodes lie in its own part (shared nodes belong to the leaf that made them): none repeated
    for leaf in leaves:
        assert all(p > leaf.branch_at and chr(leaf.tokens[p - 1]) == "\n" for p in leaf.nodes)
    # rows: the leaves of tree 0 then tree 1 of each prompt, the chain first; texts decode the spliced tokens
    for n, i in enumerate(out.order):
        leaf = leaves[i]
        assert (n // G, b.tree_ids[n].item()) == (leaf.group, leaf.tree)
        assert b.texts[n] == "".join(map(chr, leaf.tokens)) and b.lengths[n].item() == len(leaf.tokens)
        assert b.response_ids[n, :len(leaf.tokens)].tolist() == leaf.tokens
    assert [leaves[i].round for i in out.order[:5]] == [0, 1, 1, 2, 2]
    # cost: the chains plus the continuations; every shared prefix once
    assert out.tokens_generated == int(b.response_mask.sum()) - sum(leaf.branch_at for leaf in leaves)
    assert out.tokens_generated < int(b.response_mask.sum())


def test_spliced_behaviour_logprobs_are_the_policys_for_the_whole_response():
    """Every row's log-prob at position t is the scripted policy's for that token after prompt + tokens[:t]."""
    _, out = build()
    b = out.batch
    for n in range(b.num_rows):
        ctx = b.prompt_ids[n][b.prompt_mask[n].bool()].tolist()
        toks = b.response_ids[n, : b.lengths[n]].tolist()
        expected = [fake_logprob(ctx + toks[:t], tok) for t, tok in enumerate(toks)]
        torch.testing.assert_close(b.logprobs[n, : len(toks)], torch.tensor(expected))
        assert torch.all(b.logprobs[n, len(toks):] == 0) and torch.all(b.entropies[n, len(toks):] == 0)


def test_branch_choices_are_seeded():
    _, a = build(seed=11)
    _, b = build(seed=11)
    assert [(x.parent, x.branch_at, x.tokens) for x in a.leaves] == [(y.parent, y.branch_at, y.tokens)
                                                                      for y in b.leaves]
    assert torch.equal(a.batch.response_ids, b.batch.response_ids) and a.batch.texts == b.batch.texts
    picks = {tuple((x.parent, x.branch_at) for x in build(seed=s)[1].leaves) for s in range(5)}
    assert len(picks) > 1  # the draws depend on the step's seed


def test_continuations_respect_the_length_cap_and_no_separator_means_fresh_chains():
    _, out = build(max_new_tokens=9)  # chains "Pja\nPjb\nPjc" cut at 9; a branch keeps prefix + continuation <= 9
    assert int(out.batch.lengths.max()) <= 9
    for leaf in out.leaves:
        assert len(leaf.tokens) <= 9
        if leaf.round > 0:  # the continuation "xsk\nysk" (7 tokens) fits after the prefix, or is cut there
            assert leaf.finish_reason == ("length" if leaf.branch_at + 7 > 9 else "eos")
            assert len(leaf.tokens) == min(leaf.branch_at + 7, 9)
    _, out = build(separator="|")  # no token ends a step: every expansion restarts from the root
    assert all(leaf.parent is None and leaf.branch_at == 0 for leaf in out.leaves)
    assert out.tokens_generated == int(out.batch.response_mask.sum())


def test_boundary_tokens_are_decoded_once_and_the_last_token_never_ends_a_node():
    tok = LineTok()
    tok.decode = lambda ids, skip_special_tokens=True, _d=tok.decode: (calls.append(ids), _d(ids))[1]
    calls = []
    bt = BoundaryTokens(tok, "\n")
    ids = [ord(c) for c in "a\nb\n"]
    assert bt.nodes(ids) == [2]  # the final newline is the response's last token: a leaf, not a node
    assert bt.nodes(ids + [ord("c")]) == [2, 4]
    assert bt.nodes(ids + [ord("c")], start=2) == [4]
    assert len(calls) == 3  # 'a', '\n', 'b' (later lookups hit the cache)


def test_select_groups_and_concat_carry_tree_ids():
    _, out = build()
    b = out.batch
    sub = b.select_groups(torch.tensor([False, True]))
    assert torch.equal(sub.tree_ids, b.tree_ids[10:])
    both = concat_batches([sub, b], pad_id=0)
    assert torch.equal(both.tree_ids, torch.cat([b.tree_ids[10:], b.tree_ids]))
    plain = dataclasses.replace(sub, tree_ids=None)  # a flat batch: no tree ids after joining it
    assert concat_batches([sub, plain], pad_id=0).tree_ids is None


# ------------------------------------------------------------------------------------------------ the tiny model


@pytest.mark.parametrize("static_decode", [True, False], ids=["static-decode", "hf-forward"])
def test_spliced_rows_match_teacher_forced_logprobs_on_tiny(tiny_policy, tiny_cfg, static_decode):
    """The on-policy ratio stays 1: the tree's behaviour log-probs and entropies (the parent's over the shared prefix,
    the continuation's after it) equal a teacher-forced forward pass of the spliced rows within 1e-4. The random tiny
    model rarely samples a newline, so a step here ends at a token containing a space."""
    from drox.models.forward import response_logprobs
    from drox.rollout.hf import HFRolloutEngine

    model, tok = tiny_policy
    engine = HFRolloutEngine(model, tok, tiny_cfg.model, batch_size=16, static_decode=static_decode)
    out = tree_rollouts(engine, tok, ["What is 2 + 3?", "hi"], tree_cfg(trees=2, rounds=1, branches=2,
                                                                       separator=" "),
                        max_new_tokens=8, seed=5)
    b = out.batch
    assert b.num_rows == 2 * 6 and b.tree_ids.tolist() == [0, 0, 0, 1, 1, 1] * 2
    assert any(leaf.branch_at > 0 for leaf in out.leaves), "no branch continued a response prefix"
    with torch.no_grad():
        lp, ent = response_logprobs(model, b.prompt_ids, b.prompt_mask, b.response_ids, b.response_mask,
                                    temperature=1.0, with_entropy=True)
    assert torch.allclose(lp, b.logprobs, atol=1e-4), (lp - b.logprobs).abs().max()
    assert torch.allclose(ent, b.entropies, atol=1e-4)
    assert int(b.lengths.max()) <= 8
    for n, i in enumerate(out.order):
        leaf = out.leaves[i]
        assert b.texts[n] == tok.decode(leaf.tokens, skip_special_tokens=True)
        assert b.finish_reason[n] == leaf.finish_reason and (leaf.finish_reason == "eos" or len(leaf.tokens) == 8)
        if leaf.parent is not None:
            assert leaf.tokens[:leaf.branch_at] == out.leaves[leaf.parent].tokens[:leaf.branch_at]


# ------------------------------------------------------------------------------------------------ config


def _error(capsys, overrides):
    return config_error(capsys, overrides)


def test_config_errors_name_the_numbers_to_change(capsys):
    err = _error(capsys, ["model=tiny", "rollout.tree.enabled=true", "trainer.samples_per_prompt=6"])
    assert err == ("error: rollout.tree: trees x (1 + rounds x branches) = 2 x (1 + 1 x 3) = 8 leaves per prompt, but "
                   "trainer.samples_per_prompt=6; set trainer.samples_per_prompt=8, or rollout.tree.branches=2 to keep "
                   "G=6")
    err = _error(capsys, ["model=tiny", "rollout.tree.enabled=true", "rollout.tree.trees=3"])
    assert "= 12 leaves per prompt, but trainer.samples_per_prompt=8; set trainer.samples_per_prompt=12" in err
    err = _error(capsys, ["model=tiny", "rollout.tree.enabled=true", "rollout.backend=vllm"])
    assert "rollout.tree.enabled=true continues token prefixes" in err and "use rollout.backend=hf" in err
    err = _error(capsys, ["model=tiny", "rollout.tree.enabled=true", "rollout.tree.rounds=0"])
    assert "rollout.tree.rounds=0 must be a positive integer" in err
    err = _error(capsys, ["model=tiny", "trainer.advantage.estimator=tree"])
    assert err == ("error: trainer.advantage.estimator=tree normalises among the leaves of each rollout tree, which "
                   "flat rollouts do not have: set rollout.tree.enabled=true (Tree-GRPO) or choose estimator=grpo")
    # off by default, and the defaults fit the default G = 8
    from drox.cli.main import compose

    cfg = compose(["model=tiny"])
    assert cfg.rollout.tree.enabled is False
    t = cfg.rollout.tree
    assert t.trees * (1 + t.rounds * t.branches) == cfg.trainer.samples_per_prompt
    compose(["model=tiny", "rollout.tree.enabled=true", "rollout.backend=vllm", "rollout.tree.enabled=false"])


# ------------------------------------------------------------------------------------------------ training


def test_two_tree_grpo_steps_on_the_tiny_model(compose_cfg, tmp_path):
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose_cfg("rollout.tree.enabled=true", "rollout.tree.trees=2", "rollout.tree.rounds=1",
                      "rollout.tree.branches=1", "rollout.tree.separator=' '", "trainer.samples_per_prompt=4",
                      "trainer.advantage.estimator=tree", "+reward=random",  # the random tiny model solves nothing
                      f"run_dir={tmp_path}")
    loop.run_training(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 < r["rollout/tokens_generated"] <= r["tokens"]  # shared prefixes counted once
        assert math.isfinite(r["loss"]) and r["advantage/std"] > 0
    assert any(r["rollout/tokens_generated"] < r["tokens"] for r in rows)  # some branch continued a prefix
    assert rows[1]["rollout/tokens_generated_total"] == rows[0]["rollout/tokens_generated"] + \
        rows[1]["rollout/tokens_generated"]
    flat = compose_cfg(f"run_dir={tmp_path / 'flat'}", "trainer.steps=1")
    loop.run_training(flat, tmp_path / "flat", progress=False)
    row = read_metrics(tmp_path / "flat" / "metrics.jsonl")[0]
    assert row["rollout/tokens_generated"] == row["tokens"]  # a flat rollout: every token sampled once
