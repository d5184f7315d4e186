"""``DroxReplayBuffer``: verl 0.9.1's sync replay buffer with DRO's query filter beside DAPO's (needs verl).

Loaded by path: ``trainer.v1.sampler.custom_sampler.path=pkg://drox.integrations.verl.sampler`` and ``.name=
DroxReplayBuffer``. verl's buffer evicts a finished prompt group and asks for fresh prompts in its place (sync mode:
2k for k evicted, bounded in flight) when ``_dapo_filtered_keys`` names it
(docs/verl.md "The replay buffer and refill"); this subclass names the groups that fail DRO's query filter
(v1 §4.2.2): ``max_j σ_j < sigma_threshold``, σ over the group's ``extra_fields["drox_L"]``
(:mod:`drox.integrations.verl.r3`), and, when ``dapo_metric`` is set, also verl's own all-equal DAPO groups. The
refill is verl's.

A custom sampler gets only ``sampler_kwargs`` from verl, so its settings live there:
``trainer.v1.sampler.sampler_kwargs.{sigma_threshold, dapo_metric, train_batch_size, max_inflight_gen_batches}``
(and ``data.gen_batch_size=1``, which verl sets by itself only for its own DAPO).

DRO's rank cut (``filter.query.drop_fraction``) compares the groups of a batch with each other, which a buffer
that decides group by group as they finish cannot do; only the threshold is expressed here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Optional


import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from drox.errors import ConfigError
from drox.integrations.verl import config_get
from drox.integrations.verl.r3 import L_FIELD, group_sigma_max

__all__ = ["DroxReplayBuffer", "SIGMA_METRIC", "SamplerOptions"]

SIGMA_METRIC = "drox_sigma_max"
"""What the buffer's filter metric is called when only DRO's filter runs (verl's refill needs one to be set)."""


@dataclass(frozen=True)
class SamplerOptions:
    sigma_threshold: Optional[float] = None
    dapo_metric: Optional[str] = None
    train_batch_size: Optional[int] = None
    max_inflight_gen_batches: int = 1

    @classmethod
    def from_kwargs(cls, kwargs: Any) -> "SamplerOptions":
        threshold = config_get(kwargs, "sigma_threshold")
        opts = cls(sigma_threshold=None if threshold is None else float(threshold),
                   dapo_metric=config_get(kwargs, "dapo_metric"),
                   train_batch_size=config_get(kwargs, "train_batch_size"),
                   max_inflight_gen_batches=int(config_get(kwargs, "max_inflight_gen_batches", 1)))
        if opts.sigma_threshold is None and opts.dapo_metric is None:
            raise ConfigError("DroxReplayBuffer filters nothing: set trainer.v1.sampler.sampler_kwargs.sigma_threshold "
                              "(DRO's query filter) and/or .dapo_metric (DAPO), or drop the custom sampler")
        if opts.train_batch_size is None:
            raise ConfigError("DroxReplayBuffer needs trainer.v1.sampler.sampler_kwargs.train_batch_size (= "
                              "data.train_batch_size: the prompts one batch holds)")
        return opts


class DroxReplayBuffer(ReplayBuffer):
    """verl's ReplayBuffer whose evicted groups are DRO's low-σ groups, and DAPO's when ``dapo_metric`` is set."""

    def __init__(self, trainer_mode, trainer_config, max_off_policy_threshold, max_off_policy_strategy,
                 sampler_kwargs, refill_fn=None, **kwargs):
        opts = SamplerOptions.from_kwargs(sampler_kwargs)
        super().__init__(trainer_mode, trainer_config, max_off_policy_threshold, max_off_policy_strategy,
                         sampler_kwargs, refill_fn=refill_fn, filter_groups_metric=opts.dapo_metric or SIGMA_METRIC,
                         train_batch_size=opts.train_batch_size, gen_batch_size=1,
                         max_inflight_gen_batches=opts.max_inflight_gen_batches, **kwargs)
        self.drox = opts
        self._sigma_cache: dict = defaultdict(dict)  # partition -> {uid: sigma_max}; finished groups never change

    def _dapo_filtered_keys(self, partition_id: str):
        if partition_id == "val":
            return set(), Counter()
        evicted, counts = set(), Counter()
        if self.drox.dapo_metric is not None:
            evicted, counts = super()._dapo_filtered_keys(partition_id)
        if self.drox.sigma_threshold is not None:
            sigma = self.group_sigma_max(partition_id)
            evicted |= {uid for uid, s in sigma.items() if s < self.drox.sigma_threshold}
        return evicted, counts

    def group_sigma_max(self, partition_id: str) -> dict:
        """``{uid: max_j σ_j}`` of the finished groups of ``partition_id`` (computed once per group)."""
        finished = self.finished_keys[partition_id]
        cache = self._sigma_cache[partition_id]
        for uid in cache.keys() - finished:
            del cache[uid]
        new = finished - cache.keys()
        keys = [key for key in self.partitions[partition_id] if key.split("_")[0] in new]
        rows = defaultdict(list)
        if keys:
            data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["extra_fields"])
            for key, extra in zip(keys, list(data["extra_fields"]), strict=True):
                extra = getattr(extra, "data", extra)
                if not isinstance(extra, dict) or L_FIELD not in extra:
                    raise RuntimeError(f"trajectory {key} has no extra_fields[{L_FIELD!r}]: DRO's query filter needs "
                                       "the reference log-probs from drox's R3 rollouts")
                rows[key.split("_")[0]].append(extra[L_FIELD])
        for uid in new:
            cache[uid] = group_sigma_max(rows[uid]) if rows[uid] else 0.0
        return {uid: cache[uid] for uid in finished}
