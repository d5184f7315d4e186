"""How each drox component runs under verl: the functions its registration names with ``verl="<this module>:<fn>"``.

A component declares its verl support where it registers (``@register_reward("outcome", ..., verl=...)``, the same
keyword for filters, gates, tasks, rollout engines and shapes, objectives, advantage shapers, estimators, combiners
and policy losses):

* a *reason*, a sentence: the component cannot run under verl, and this is why;
* ``"module:function"`` (or the function itself): ``fn(opts, ctx) -> overrides``, with ``opts`` the component's
  parsed options (a task gets ``cfg.task``) and ``ctx`` a :class:`~drox.integrations.verl.launch.MapContext` (the
  config, the pipeline, :meth:`note`); it returns verl's overrides (a dict, values written by
  :func:`~drox.integrations.verl.launch.hydra_value`, or a list of ``key=value``) and raises
  :class:`~drox.integrations.verl.launch.UnsupportedError` for an option value verl cannot run.

A component that declares nothing is refused in one line listing the names of its kind that are supported
(:func:`drox.integrations.verl.launch.stage_overrides`). The functions here read options only; no verl import.
"""

from __future__ import annotations

from typing import Any, Dict

from drox.integrations.verl.launch import AGENT_LOOPS, NOT_BUILT, unsupported

__all__ = ["COMBINED_REWARDS", "PRM_KINDS", "VERL_ESTIMATORS", "combiner", "dynamic_sampling", "entropy", "estimator",
           "format_reward", "hf_engine", "nothing", "outcome", "prm", "query", "sign_estimator", "task", "variance",
           "vllm_engine"]

VERL_ESTIMATORS = {"grpo": ("grpo", True), "dr_grpo": ("grpo", False), "rloo": ("rloo", None)}
"""drox estimator -> (verl's built-in estimator, norm_adv_by_std_in_grpo or None); the same numbers for groups of
G >= 2 (tests/verl_suite checks it through verl's compute_advantage)."""
COMBINED_REWARDS = ("outcome", "format", "prm")
"""Sources whose own scores ``DroxRewardManager`` returns in ``reward_extra_info``: the objectives a combiner reads."""
PRM_KINDS = ("oracle",)
"""``reward.prm.kind`` values the verl backend runs (the rule checker, in the reward workers)."""


def nothing(opts, ctx) -> Dict[str, Any]:
    """A component verl runs as drox does with no override of its own (the flat shape, ``pg``, ``ppo_clip``)."""
    return {}


# ------------------------------------------------------------------------------------------------ task, sampling


def task(opts, ctx) -> Dict[str, Any]:
    """A single-turn task: exported to parquet (:mod:`export`), scored by its verifier in DroxRewardManager."""
    name = opts.name
    if opts.get("verifier") == "none" or (name == "revise" and opts.get("verifier") != "math"):
        raise unsupported(f"task={name} without a verifier", "DroxRewardManager scores with the task's verifier; "
                          "choose a verifiable task (or task.verifier=math)")
    return {}


def hf_engine(opts, ctx) -> Dict[str, Any]:
    ctx.note("rollout.backend=hf: verl samples with vLLM (its own gpu_memory_utilization, 0.5)")
    return {}


def vllm_engine(opts, ctx) -> Dict[str, Any]:
    vllm = ctx.cfg.rollout.vllm
    ro = "actor_rollout_ref.rollout"
    return {f"{ro}.gpu_memory_utilization": float(vllm.gpu_memory_utilization),
            f"{ro}.enforce_eager": bool(vllm.enforce_eager)}


# ------------------------------------------------------------------------------------------------ advantages


def estimator(opts, ctx) -> Dict[str, Any]:
    """grpo / dr_grpo / rloo -> verl's own (:data:`VERL_ESTIMATORS`)."""
    adv = ctx.cfg.trainer.advantage
    name = str(adv.estimator)
    if name == "grpo" and float(adv.eps) != 1e-6:
        raise unsupported(f"trainer.advantage.eps={adv.eps}", "verl's grpo adds 1e-6 to the std")
    verl_name, norm = VERL_ESTIMATORS[name]
    out: Dict[str, Any] = {"algorithm.adv_estimator": verl_name}
    if norm is not None:
        out["algorithm.norm_adv_by_std_in_grpo"] = norm
    return out


def combiner(opts, ctx) -> Dict[str, Any]:
    """Multi-objective advantages: drox's trainer subclass (trainer.py) over the scores DroxRewardManager returns."""
    rewards = ctx.pipeline.rewards
    if len(rewards) < 2:
        return {}  # one objective: drox uses the estimator, so does verl
    combine = ctx.cfg.trainer.advantage.combine
    other = [n for n in rewards if n not in COMBINED_REWARDS]
    if other:
        raise unsupported(f"trainer.advantage.combine={combine} over +reward={other[0]}", "drox's trainer subclass "
                          f"combines the scores DroxRewardManager returns only ({', '.join(COMBINED_REWARDS)})")
    return {"trainer.v1.trainer_mode": "drox_sync", "drox.trainer.combine": str(combine),
            "drox.trainer.objectives": list(rewards), "drox.trainer.weights": [float(o.weight) for o in rewards.values()],
            "drox.trainer.eps": float(ctx.cfg.trainer.advantage.eps)}


# ------------------------------------------------------------------------------------------------ rewards


def outcome(opts, ctx) -> Dict[str, Any]:
    """The verifier's points in DroxRewardManager."""
    return {"drox.reward.outcome.weight": float(opts.weight), "drox.reward.outcome.correct": float(opts.correct),
            "drox.reward.outcome.incorrect": float(opts.incorrect)}


def format_reward(opts, ctx) -> Dict[str, Any]:
    """The final-answer container check in DroxRewardManager (nothing when its weight is 0)."""
    if not float(opts.weight):
        return {}
    out: Dict[str, Any] = {"drox.reward.format.weight": float(opts.weight)}
    if opts.pattern is not None:
        out["drox.reward.format.pattern"] = opts.pattern
    return out


def prm(opts, ctx) -> Dict[str, Any]:
    """The rule-oracle PRM in DroxRewardManager; dense step rewards also drox's trainer (their reward-to-go)."""
    if opts.kind not in PRM_KINDS:
        raise unsupported(f"reward.prm.kind={opts.kind}", "it scores steps with a model (hf: a PRM checkpoint, "
                          "generative: a judge LM, monte_carlo: the policy's completions), which needs a model server "
                          f"behind verl's reward loop, and {NOT_BUILT}; kind=oracle runs")
    p = "drox.reward.prm"
    out: Dict[str, Any] = {f"{p}.enable": True, f"{p}.weight": float(opts.weight),
                           f"{p}.aggregation": str(opts.aggregation), f"{p}.dense": bool(opts.dense),
                           f"{p}.empty_score": float(opts.empty_score), f"{p}.match_reference": bool(opts.match_reference),
                           f"{p}.correct": float(opts.correct), f"{p}.incorrect": float(opts.incorrect)}
    if opts.dense:
        dense = str(ctx.cfg.trainer.advantage.dense)
        if dense != "reward_to_go":
            raise unsupported(f"trainer.advantage.dense={dense} with reward.prm.dense=true", "drox's trainer subclass "
                              "turns dense step rewards into their reward-to-go only; use dense=reward_to_go")
        out.update({"trainer.v1.trainer_mode": "drox_sync", "drox.trainer.eps": float(ctx.cfg.trainer.advantage.eps)})
    return out


def sign_estimator(opts, ctx) -> Dict[str, Any]:
    """psr / nsr / w_reinforce -> verl's drox_psr / drox_nsr / drox_w_reinforce (estimators.py), same options;
    nsr's A-NSR schedules (``schedule`` other than constant) are refused."""
    name = str(ctx.cfg.trainer.advantage.estimator)
    schedule = getattr(opts, "schedule", "constant")  # nsr's A-NSR schedules
    if schedule != "constant":
        raise unsupported(f"trainer.advantage.nsr.schedule={schedule}", "A-NSR's schedules are not ported to "
                          "drox_nsr (exp and cosine need the training step, which verl 0.9.1 never hands an "
                          f"estimator); {NOT_BUILT}")
    out: Dict[str, Any] = {"algorithm.adv_estimator": f"drox_{name}", "algorithm.drox.scale": float(opts.scale),
                           "algorithm.drox.correct_above": float(opts.correct_above)}
    if name == "w_reinforce":
        out["algorithm.drox.lam"] = float(opts.lam)
    return out


def _r3(opts, key: str) -> Dict[str, Any]:
    """R3's rollouts: the drox_r3 agent loop scores the reference on the rollout server. What it runs: the current
    policy, no masked baseline, no length penalty."""
    if opts.reward_policy == "lagged":
        raise unsupported(f"{key}.reward_policy=lagged", "the lagged copy of the policy needs a reference model "
                          "refreshed every k steps, which verl 0.9.1 has no API for (a verl change)")
    if opts.reward_policy != "policy":
        raise unsupported(f"{key}.reward_policy={opts.reward_policy}", "scoring under the frozen initial policy needs "
                          f"the reward-model router or the reference worker, and {NOT_BUILT}")
    if opts.masked_baseline:
        raise unsupported(f"{key}.masked_baseline=true", f"the empty-reasoning baseline pass is not ported; {NOT_BUILT}")
    if opts.length_weight != 0:
        raise unsupported(f"{key}.length_weight={opts.length_weight}", f"DRO's length penalty is not ported; "
                          f"{NOT_BUILT}")
    ro = "actor_rollout_ref.rollout"
    return {f"{ro}.agent.default_agent_loop": "drox_r3", f"{ro}.agent.agent_loop_config_path": str(AGENT_LOOPS),
            "drox.r3.weight": float(opts.weight), "drox.r3.weighting": str(opts.weighting), "drox.r3.tau": float(opts.tau),
            "drox.r3.top_p": float(opts.top_p), "drox.r3.template": str(opts.template),
            "drox.r3.reference_field": str(opts.reference_field)}


def variance(opts, ctx) -> Dict[str, Any]:
    """DRO's R3 reward: the drox_r3 agent loop (agent_loop.py) and R3 in drox's trainer (trainer.py)."""
    adv = ctx.cfg.trainer.advantage
    return {**_r3(opts, "reward.variance"), "trainer.v1.trainer_mode": "drox_sync", "drox.trainer.r3": True,
            "drox.trainer.estimator": str(adv.estimator), "drox.trainer.eps": float(adv.eps)}


# ------------------------------------------------------------------------------------------------ filters


def dynamic_sampling(opts, ctx) -> Dict[str, Any]:
    """DAPO's group filter: verl's filter_groups, or drox's sampler's eviction when the query filter is on."""
    if opts.metric == "score" and opts.std_eps > 0:
        raise unsupported(f"filter.dynamic_sampling.std_eps={opts.std_eps}", "verl's filter_groups drops "
                          "groups whose reward std is exactly 0; use std_eps=0")
    ctx.note("filter dynamic_sampling: verl's V1 trainer refills evicted groups without a max_gen_batches cap "
             "(algorithm.filter_groups.max_inflight_gen_batches bounds what is in flight)")
    metric = "acc" if opts.metric == "acc" else "reward"
    if any(f.name == "query" for f in ctx.pipeline.group_filters):  # drox's sampler evicts DAPO's groups too
        return {"trainer.v1.sampler.sampler_kwargs.dapo_metric": metric}
    return {"algorithm.filter_groups.enable": True, "algorithm.filter_groups.metric": metric,
            "algorithm.filter_groups.max_num_gen_batches": int(opts.max_gen_batches)}


def query(opts, ctx) -> Dict[str, Any]:
    """DRO's query filter with a threshold, online: drox's replay buffer (sampler.py) on R3's rollouts."""
    if opts.mode != "online":
        raise unsupported("filter.query.mode=offline", f"DRO's offline filter rounds are not ported; {NOT_BUILT}")
    if opts.drop_fraction > 0 or opts.threshold is None:
        raise unsupported(f"filter.query.drop_fraction={opts.drop_fraction}", "verl's replay buffer decides "
                          "group by group as they finish, so DRO's rank cut within a batch has no "
                          "counterpart; use a threshold: filter.query.drop_fraction=0 "
                          "filter.query.threshold=<sigma_max>")
    variance_opts = ctx.pipeline.rewards.get("variance")
    out = _r3(opts.variance_options, "filter.query.variance") if variance_opts is None else {}
    s = "trainer.v1.sampler"
    out.update({f"{s}.custom_sampler.path": "pkg://drox.integrations.verl.sampler",
                f"{s}.custom_sampler.name": "DroxReplayBuffer", f"{s}.sampler_kwargs.sigma_threshold": float(opts.threshold),
                f"{s}.sampler_kwargs.train_batch_size": int(ctx.cfg.trainer.prompts_per_step),
                "data.gen_batch_size": 1})  # exact refills: one prompt per fetch
    return out


def entropy(opts, ctx) -> Dict[str, Any]:
    """The 80/20 token mask in drox's trainer subclass (trainer.py), over the whole batch."""
    if getattr(opts, "scope", "batch") == "micro_batch":
        raise unsupported("filter.entropy.scope=micro_batch", "verl splits the batch into its own mini- and "
                          "micro-batches; drox's trainer subclass masks over the whole batch (scope=batch)")
    for key in ("kl_coef", "entropy_coef"):
        value = ctx.cfg.trainer[key]
        if value > 0:
            raise unsupported(f"+filter=entropy with trainer.{key}={value}", "verl applies the KL and entropy "
                              "terms on the same mask as the policy loss, so the 80/20 mask would narrow them "
                              "too (drox keeps them on every token)")
    return {"trainer.v1.trainer_mode": "drox_sync", "drox.trainer.entropy.rho": float(opts.rho),
            "drox.trainer.entropy.invert": bool(opts.invert)}

