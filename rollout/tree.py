"""Tree-GRPO's tree-search rollouts for single-turn text tasks (``rollout.tree``; docs/algorithms.md "Tree-GRPO:
tree-search rollouts and tree advantages").

Source: Ji et al., "Tree Search for LLM Agent Reinforcement Learning", arXiv 2509.21240, and the authors' code
(AMAP-ML/Tree-GRPO: ``search_r1/llm_agent/generation_ts.py`` builds the trees, ``tree_node.py`` picks the nodes to
expand, ``verl/trainer/ppo/ray_trainer_ts.py`` sums the two advantages). There a node is one agent step
(thought, action, observation); here a node boundary is a sampled response token whose decoded text contains
``rollout.tree.separator`` (a newline by default: a step is a line), the response's last token excepted.

For each prompt, with M = ``trees``, L = ``rounds``, N = ``branches``:

1. M independent chains are sampled from the prompt (one ``engine.generate`` call, M samples per prompt, seeded
   exactly as a flat rollout of M samples would be); chain m is the first leaf of tree m.
2. A tree's *nodes* are its root (the bare prompt) and the prefixes of its leaves that end at a boundary token.
   A leaf branched from a node shares that node and every node before it with the leaf it branched from, and adds
   the nodes of its own continuation; no node is counted twice.
3. L rounds. In each, for every tree, N nodes are drawn uniformly *with replacement* from the root and the tree's
   non-leaf nodes as they stand when the round starts (the authors' ``random.choices`` over the root plus every
   non-leaf node), and one continuation is sampled from each (one ``engine.generate_ids`` call per round for every
   tree of every prompt). The continuation's cap is ``max_new_tokens`` minus the prefix's length, so no response
   exceeds ``rollout.max_new_tokens``. The new leaf's response is the parent's sampled tokens up to and including
   the boundary token, then the continuation; its behaviour log-probs and entropies are the parent's over the shared
   prefix and the continuation's own after it, so they are exactly what the policy assigned when it sampled each
   token (the on-policy ratio stays 1).
4. Every tree then has 1 + L*N leaves; the group of prompt q is tree 0's leaves (the chain, then the branches in the
   order they were made), tree 1's, ...: G = M (1 + L N) rows, group-major as every RolloutBatch, with
   ``tree_ids`` giving each row's tree. (The authors' code can keep only k of a tree's leaves; their run scripts keep
   all of them, as drox always does.)

Seeds: the chains use the step's sampling seed itself; the node draws use a ``torch.Generator`` seeded from it, and
round r's continuations a seed derived from it (:func:`derived_seed`), so a step's trees are reproducible and a
resumed run rebuilds them exactly.

Cost: :attr:`TreeRollout.tokens_generated` counts every token the engine sampled (the chains plus the
continuations), each shared prefix once; the loop logs it as ``rollout/tokens_generated`` (flat rollouts log their
token count under the same key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from drox.components import register_shape
from drox.rollout.base import RolloutBatch, unpadded
from drox.signals.spans import pad_ids, pad_rows

__all__ = ["BoundaryTokens", "TreeLeaf", "TreeRollout", "derived_seed", "tree_rollouts"]


def derived_seed(seed: Optional[int], k: int) -> int:
    """The ``k``-th seed derived from a step's sampling seed (independent streams for node draws and each round)."""
    return ((0 if seed is None else int(seed)) * 1_000_003 + 7919 * (k + 1)) % (2**63 - 1)


class BoundaryTokens:
    """``is_boundary(token id)``: the token's decoded text (special tokens skipped) contains ``separator``; cached per
    id, so each distinct token is decoded once."""

    def __init__(self, tokenizer, separator: str):
        if not separator:
            raise ValueError("rollout.tree.separator must be a non-empty string")
        self.tokenizer, self.separator = tokenizer, separator
        self._cache: Dict[int, bool] = {}

    def __call__(self, token: int) -> bool:
        token = int(token)
        if token not in self._cache:
            self._cache[token] = self.separator in self.tokenizer.decode([token], skip_special_tokens=True)
        return self._cache[token]

    def nodes(self, tokens: Sequence[int], start: int = 0) -> List[int]:
        """Prefix lengths ``t + 1`` of the boundary tokens ``t`` in ``tokens[start : len - 1]`` (the last token never
        ends a node: a prefix that is the whole response is a leaf)."""
        return [t + 1 for t in range(start, len(tokens) - 1) if self(tokens[t])]


@dataclass
class TreeLeaf:
    """One rollout of a tree: its tokens, behaviour log-probs and entropies (whole response), where it came from."""

    group: int  # prompt q
    tree: int  # its tree within the group, 0..M-1
    round: int  # 0: the tree's first chain; r + 1: made in expansion round r
    tokens: List[int]
    logprobs: List[float]
    entropies: List[float]
    finish_reason: str  # eos | length
    parent: Optional[int] = None  # the leaf (index in TreeRollout.leaves) whose prefix it continues; None: the root
    branch_at: int = 0  # response tokens shared with the parent (0: a fresh chain from the bare prompt)
    nodes: List[int] = field(default_factory=list)  # prefix lengths of the non-leaf nodes this leaf added to its tree


@dataclass
class TreeRollout:
    batch: RolloutBatch  # Q groups of G = M (1 + L N) leaves, group-major, with tree_ids
    leaves: List[TreeLeaf]  # every leaf, in creation order (batch rows are ``order`` of them)
    order: List[int]  # batch row -> index in ``leaves``
    tokens_generated: int  # tokens the engine sampled: the chains plus the continuations (shared prefixes once)


def _rows(batch: RolloutBatch) -> List[Tuple[List[int], List[float], List[float]]]:
    """(tokens, log-probs, entropies) of each row without the padding."""
    mask = batch.response_mask
    return list(zip(unpadded(batch.response_ids, mask), unpadded(batch.logprobs, mask),
                    unpadded(batch.entropies, mask)))


def tree_rollouts(engine, tokenizer, prompts: List[str], tree_cfg, *, max_new_tokens: int, temperature: float = 1.0,
                  top_p: float = 1.0, seed: Optional[int] = None) -> TreeRollout:
    """Tree-GRPO's trees for each prompt (module docstring); ``tree_cfg``: ``rollout.tree`` (trees, rounds, branches,
    separator). ``engine`` needs ``generate``, ``generate_ids`` (with a cap per prefix) and ``pad_id``."""
    M, L, N = int(tree_cfg.trees), int(tree_cfg.rounds), int(tree_cfg.branches)
    boundary = BoundaryTokens(tokenizer, str(tree_cfg.separator))
    Q = len(prompts)
    chains = engine.generate(prompts, M, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             seed=seed)
    prompt_tokens = unpadded(chains.prompt_ids[::M], chains.prompt_mask[::M])  # [Q] the templated prompts
    leaves: List[TreeLeaf] = []
    for r, (tokens, lps, ents) in enumerate(_rows(chains)):
        leaves.append(TreeLeaf(group=r // M, tree=r % M, round=0, tokens=tokens, logprobs=lps, entropies=ents,
                               finish_reason=chains.finish_reason[r], nodes=boundary.nodes(tokens)))
    tokens_generated = sum(len(leaf.tokens) for leaf in leaves)
    members: List[List[int]] = [[r] for r in range(Q * M)]  # tree q*M + m -> its leaves, in creation order

    picks_gen = torch.Generator().manual_seed(derived_seed(seed, 0))
    for rnd in range(L):
        # the candidates of every tree as the round starts: its root (None, 0) and its non-leaf nodes (leaf, p)
        picks: List[Tuple[int, Optional[int], int]] = []  # (tree q*M + m, parent leaf or None, prefix length)
        for t, tree_leaves in enumerate(members):
            candidates = [(None, 0)] + [(i, p) for i in tree_leaves for p in leaves[i].nodes]
            for k in torch.randint(len(candidates), (N,), generator=picks_gen).tolist():
                picks.append((t, *candidates[k]))
        prefixes = [prompt_tokens[t // M] + (leaves[i].tokens[:p] if i is not None else []) for t, i, p in picks]
        caps = [max_new_tokens - p for _, _, p in picks]
        cont = engine.generate_ids(prefixes, 1, max_new_tokens=caps, temperature=temperature, top_p=top_p,
                                   seed=derived_seed(seed, rnd + 1))
        for (t, i, p), (tokens, lps, ents), reason in zip(picks, _rows(cont), cont.finish_reason):
            tokens_generated += len(tokens)
            head = leaves[i] if i is not None else None
            full = (head.tokens[:p] if head else []) + tokens
            members[t].append(len(leaves))
            leaves.append(TreeLeaf(
                group=t // M, tree=t % M, round=rnd + 1, tokens=full,
                logprobs=(head.logprobs[:p] if head else []) + lps,
                entropies=(head.entropies[:p] if head else []) + ents,
                finish_reason=reason, parent=i, branch_at=p, nodes=boundary.nodes(full, start=p)))

    order = [i for tree_leaves in members for i in tree_leaves]  # group-major: q's trees are q*M .. q*M + M - 1
    G = M * (1 + L * N)
    rows = [leaves[i] for i in order]
    response_ids, response_mask = pad_ids([leaf.tokens for leaf in rows], engine.pad_id, side="right")  # [N, T]
    response_mask = response_mask.float()
    logprobs = pad_rows([leaf.logprobs for leaf in rows], 0.0, dtype=torch.float32)
    entropies = pad_rows([leaf.entropies for leaf in rows], 0.0, dtype=torch.float32)
    prompt_rows = torch.arange(Q).repeat_interleave(G) * M  # each group's prompt, as the chains' batch padded it
    batch = RolloutBatch(
        prompt_ids=chains.prompt_ids[prompt_rows], prompt_mask=chains.prompt_mask[prompt_rows],
        response_ids=response_ids, response_mask=response_mask, logprobs=logprobs, entropies=entropies,
        finish_reason=[leaf.finish_reason for leaf in rows],
        texts=[tokenizer.decode(leaf.tokens, skip_special_tokens=True) for leaf in rows],
        group_size=G, prompts=list(prompts), temperature=chains.temperature,
        tree_ids=torch.tensor([leaf.tree for leaf in rows], dtype=torch.long))
    return TreeRollout(batch=batch, leaves=leaves, order=order, tokens_generated=int(tokens_generated))


def _tree_sizes(cfg) -> Tuple[str, int]:
    t = cfg.rollout.tree
    return (f" (Tree-GRPO: {t.trees} trees x (1 + {t.rounds} rounds x {t.branches} branches) leaves, steps end at "
            f"{t.separator!r})", int(cfg.rollout.max_new_tokens))


@register_shape("tree", when=lambda cfg: bool(cfg.rollout.tree.enabled), describe=_tree_sizes,
                verl="rollout.tree.enabled=true (Tree-GRPO): verl samples flat groups; drox.integrations.verl does "
                     "not have it yet (docs/verl.md, 'Not done')")
def tree_shape(engine, tokenizer, task, rows: List[Dict], group_size: int, rollout_cfg,
               seed: int) -> Tuple[RolloutBatch, int]:
    """``rollout.tree.enabled``: each group is the leaves of the prompt's trees (:func:`tree_rollouts`), whose shared
    prefixes were sampled, and are counted, once."""
    trees = tree_rollouts(engine, tokenizer, [row["prompt"] for row in rows], rollout_cfg.tree,
                          max_new_tokens=rollout_cfg.max_new_tokens, temperature=rollout_cfg.temperature,
                          top_p=rollout_cfg.top_p, seed=seed)
    return trees.batch, trees.tokens_generated
