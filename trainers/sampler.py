"""The order in which training prompts are drawn: seeded epochs of permutations, resumable."""

from __future__ import annotations

from typing import Dict, List

import torch


class PromptSampler:
    """Draws prompt indices without replacement within an epoch; the cursor is checkpointed."""

    def __init__(self, num_prompts: int, seed: int):
        if num_prompts < 1:
            raise ValueError("the training split is empty; raise task.n_train or check task.path")
        self.num_prompts, self.seed = num_prompts, seed
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
        return out

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "num_prompts": self.num_prompts}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._perm = self._permutation(self.epoch)
