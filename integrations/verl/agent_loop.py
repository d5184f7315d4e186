"""``DroxR3AgentLoop``: verl's single-turn agent loop plus DRO's reference scoring on the rollout server (needs verl).

After the ordinary generation, the loop builds DRO's teacher-forced sequence (the prompt, this rollout's reasoning,
the reference answer; :func:`drox.integrations.verl.r3.spliced_ids`) and sends it to the same vLLM server with
``prompt_logprobs`` (docs/verl.md "Scoring the reference answer for R3"): the server's weights are the policy that
sampled, so ``L[i, j] = log π(y_j | q, reasoning_i, y_<j)`` under the current policy. The row ``L[i, :]`` goes into
the trajectory's ``extra_fields["drox_L"]``, where drox's trainer (R3, :mod:`drox.integrations.verl.trainer`) and
sampler (the query filter) read it. Selected with ``rollout.agent.default_agent_loop=drox_r3`` and
``rollout.agent.agent_loop_config_path`` = this package's ``config/agent_loops.yaml``.

Costs one prefill of the whole sequence per rollout (vLLM does not read its prefix cache for ``prompt_logprobs``
requests). Only ``trainer.v1.trainer_mode=sync``/``drox_sync``: verl's asynchronous server client drops the
``prompt_logprobs`` field.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from drox.integrations.verl.r3 import L_FIELD, R3Options, reference_logprobs, scoring_request, spliced_ids
from drox.integrations.verl.rules import row_of

__all__ = ["DroxR3AgentLoop"]


class DroxR3AgentLoop(SingleTurnAgentLoop):
    """Generate as ``single_turn_agent``, then score the reference answer after this rollout's reasoning."""

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        output = await super().run(sampling_params, **kwargs)
        opts = R3Options.from_config(self.config.get("drox", None))
        reward_model = kwargs.get("reward_model") or {}
        row, _ = row_of(reward_model.get("ground_truth"), kwargs.get("extra_info"))
        reference = str(row.get(opts.reference_field, ""))
        text = await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(output.response_ids, skip_special_tokens=True))
        ids, first, n = spliced_ids(self.tokenizer, output.prompt_ids, text, reference, opts.template)
        scored = await self.server_manager.generate(request_id=uuid4().hex, prompt_ids=ids,
                                                    sampling_params=scoring_request())
        output.extra_fields[L_FIELD] = reference_logprobs(scored.extra_fields["prompt_logprobs"], first, n)
        return output
