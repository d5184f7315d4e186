"""``DroxSyncTrainer``: verl 0.9.1's synchronous V1 trainer plus drox's trainer-side advantage step.

Selected with ``trainer.v1.trainer_mode=drox_sync`` (``drox verl`` sets it when the experiment needs it). The name
only picks the class: ``__init__`` sets the mode back to ``sync`` before verl's own constructor runs, because verl
tests ``trainer_mode == "sync"`` in several places (docs/verl.md "The trainer subclass"); from then on the run is
verl's sync trainer.

Only ``_compute_advantage`` is overridden. It runs verl's own step first (KL-in-reward, rollout correction, the
configured estimator, all written to TransferQueue), then reads back what drox needs, applies
:func:`drox.integrations.verl.advantage.trainer_side_advantages` (multi-objective combiners, DRO's R3 reward, dense
PRM step rewards, the 80/20 token mask) and writes ``advantages``/``returns`` (and the narrowed ``response_mask``)
back, nested per trajectory as verl stores them. Its tests run on an in-memory stand-in for TransferQueue and on the
real one (tests/verl_suite).
"""

from __future__ import annotations

import transfer_queue as tq
from omegaconf import open_dict
from tensordict import TensorDict
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_to_nested

from drox.errors import ConfigError
from drox.integrations.verl.advantage import TrainerSide, dense_steps_of, objective_table, trainer_side_advantages
from drox.integrations.verl.r3 import L_FIELD, R3Options

__all__ = ["TRAINER_MODE", "DroxSyncTrainer"]

TRAINER_MODE = "drox_sync"


@register_trainer(TRAINER_MODE)
class DroxSyncTrainer(PPOTrainerSync):
    """verl's sync trainer whose advantage step ends with drox's (options: the config's ``drox.trainer``)."""

    def __init__(self, config, *args, **kwargs):
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"
        self.drox = TrainerSide.from_config(config.get("drox"))
        self.drox_r3 = R3Options.from_config(config.get("drox"))
        if self.drox.multi_objective and config.algorithm.get("use_kl_in_reward", False):
            raise ConfigError("drox.trainer.combine replaces the reward-based advantage, so algorithm.use_kl_in_reward "
                              "would be lost; use the KL loss (actor_rollout_ref.actor.use_kl_loss) instead")
        super().__init__(config, *args, **kwargs)

    def _compute_advantage(self, batch, metrics: dict):
        batch = super()._compute_advantage(batch, metrics)
        spec = self.drox
        if not spec.active:
            return batch
        fields = ["uid", "response_mask", "advantages"]
        if spec.multi_objective or spec.r3 or spec.dense:
            fields.append("extra_fields")
        if spec.r3:
            fields.append("rm_scores")
        if spec.entropy_rho is not None:
            fields.append("entropy")
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        nested_mask = data["response_mask"]  # nested: one length per trajectory
        extra = list(data["extra_fields"]) if "extra_fields" in fields else []
        objectives = objective_table(extra, spec.objectives) if spec.multi_objective else None
        rows_L = None
        if spec.r3:
            missing = [k for k, e in zip(batch.keys, extra) if L_FIELD not in (e or {})]
            if missing:
                raise ConfigError(f"trajectory {missing[0]} has no extra_fields[{L_FIELD!r}]: R3 needs drox's R3 "
                                  "rollouts (rollout.agent.default_agent_loop=drox_r3)")
            rows_L = [e[L_FIELD] for e in extra]
        dense_steps = dense_steps_of(extra, batch.keys) if spec.dense else None  # PRM steps, (score, token) each
        padded = data.select(*[f for f in fields if f not in ("uid", "extra_fields")]).to_padded_tensor()
        advantages, mask, stats = trainer_side_advantages(
            spec, list(data["uid"]), padded["response_mask"], padded["advantages"], objectives,
            padded["entropy"] if spec.entropy_rho is not None else None,
            base_scores=padded["rm_scores"].sum(-1) if spec.r3 else None, rows_L=rows_L,
            r3_opts=self.drox_r3, dense_steps=dense_steps)  # [N, T] each
        metrics.update(stats)
        nested_adv = response_to_nested(advantages, nested_mask)
        out = {"advantages": nested_adv, "returns": nested_adv.clone()}
        if spec.entropy_rho is not None:
            out["response_mask"] = response_to_nested(mask.to(padded["response_mask"].dtype), nested_mask)
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                               fields=TensorDict(out, batch_size=len(batch)))
