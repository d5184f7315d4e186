"""The order in which training prompts are drawn: seeded epochs of permutations, resumable."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch


class PromptSampler:
    """Draws prompt indices without replacement within an epoch; the cursor is checkpointed.

    ``indices``: draw only from these dataset rows (e.g. the prompts an offline query-filter
    round kept); default all ``num_prompts``.
    """

    def __init__(self, num_prompts: int, seed: int, indices: Optional[List[int]] = None):
        if num_prompts < 1:
            raise ValueError("the training split is empty; raise task.n_train or check task.path")
        if indices is not None and len(indices) == 0:
            raise ValueError("no training prompts left to sample (an offline filter round kept none)")
        self.indices = list(indices) if indices is not None else None
        self.num_prompts = len(self.indices) if self.indices is not None else num_prompts
        self.seed = seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> List[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_prompts, generator=g).tolist()

    def next(self, k: int) -> List[int]:
        out: List[int] = []
        while len(out) < k:
            if self.pos == self.num_prompts:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            take = min(k - len(out), self.num_prompts - self.pos)
            out += self._perm[self.pos : self.pos + take]
            self.pos += take
        return [self.indices[i] for i in out] if self.indices is not None else out

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "num_prompts": self.num_prompts,
                "indices": self.indices}

    def load_state_dict(self, state: Dict) -> None:
        self.indices = state.get("indices")
        self.num_prompts, self.seed = state["num_prompts"], state["seed"]
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._perm = self._permutation(self.epoch)
