"""``DroxRewardManager``: drox's verifiers and rule rewards inside verl's reward loop (needs verl 0.9.1).

verl loads it by path, in each ``RewardLoopWorker`` (a CPU Ray actor), with::

    reward.reward_manager.source=importlib
    reward.reward_manager.name=DroxRewardManager
    reward.reward_manager.module.path=pkg://drox.integrations.verl.reward_manager

and calls ``await run_single(data)`` once per finished trajectory while generation goes on
(docs/verl.md "The reward loop"). The answer is a scalar ``reward_score`` (verl puts it on the response's last token)
and scalar ``reward_extra_info`` (``acc`` feeds ``algorithm.filter_groups.metric=acc``; drox's dense PRM steps are
one JSON string, ``drox_steps``, since verl's validation averages every other value). The scoring itself is
:func:`rules.score_response`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from drox.integrations.verl.rules import RewardSpec, row_of, score_response

__all__ = ["DroxRewardManager"]


class DroxRewardManager(RewardManagerBase):
    """Scores one trajectory with drox's verifier and rule sources; settings from the config's ``drox:`` block
    (``drox.reward.outcome.*``, ``drox.reward.format.*``, ``drox.reward.prm.*``, ``drox.verify_timeout``;
    :class:`RewardSpec`). ``tokenizer`` is the policy's (verl's reward workers load it), which dense PRM steps need
    to find the response token where each step ends.

    ``compute_score`` (verl's ``custom_reward_function``) and the reward-model router are accepted and unused."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, **_: Any):
        super().__init__(config, tokenizer, compute_score)
        drox_node = config.get("drox", None) if config is not None and hasattr(config, "get") else None
        self.spec = RewardSpec.from_config(drox_node)
        self.reward_router_address = reward_router_address

    @staticmethod
    def response_ids(item) -> List[int]:
        """The sampled token ids of one ``DataProtoItem``'s response: its valid tokens (the response part of
        ``attention_mask``)."""
        responses = item.batch["responses"]  # [T]
        length = int(item.batch["attention_mask"][-responses.shape[-1]:].sum())
        return [int(t) for t in responses[:length].tolist()]

    def decode(self, item) -> str:
        """The response text of one ``DataProtoItem``: its valid tokens, special tokens dropped, as verl's own
        managers decode it."""
        return self.tokenizer.decode(self.response_ids(item), skip_special_tokens=True)

    def score(self, item) -> Tuple[float, Dict[str, Any]]:
        """``(reward_score, reward_extra_info)`` of one ``DataProtoItem`` (:func:`rules.score_response`)."""
        ids = self.response_ids(item)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        extra = item.non_tensor_batch
        reward_model = extra.get("reward_model") or {}
        row, verifier = row_of(reward_model.get("ground_truth"), extra.get("extra_info"))
        return score_response(text, row, verifier, self.spec, tokenizer=self.tokenizer, response_ids=ids)

    async def run_single(self, data: DataProto) -> Dict[str, Any]:
        item = data[-1:][0]  # a multi-sequence trajectory is scored on its last sequence, as verl's managers do
        score, info = await self.loop.run_in_executor(None, self.score, item)
        return {"reward_score": score, "reward_extra_info": info}
