"""drox.rewards: reward sources, one module each, registered by name; see base.py for the contract.

Every module of this package is read here (not imported: drox.registry.Registry.declare_package) and the sources
it registers are declared by name, imported on first use; so a new source is one file (with
``@register_reward``); a ``conf/reward/<name>.yaml`` is optional (it documents the defaults).
"""

from drox.rewards.base import REWARD_SOURCES, Combined, RewardOutput, ScoringContext, register_reward, score

REWARD_SOURCES.declare_package(__name__, __path__[0], ("register_reward",))

__all__ = ["REWARD_SOURCES", "Combined", "RewardOutput", "ScoringContext", "register_reward", "score"]
