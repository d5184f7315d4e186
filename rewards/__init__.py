"""drox.rewards: reward sources, one module each, registered by name; see base.py for the contract.

Every module of this package is imported here, so a new source is one file (with
``@register_reward``); a ``conf/reward/<name>.yaml`` is optional (it documents the defaults).
"""

import importlib
import pkgutil

from drox.rewards.base import REWARD_SOURCES, Combined, RewardOutput, ScoringContext, register_reward, score

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "base" and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["REWARD_SOURCES", "Combined", "RewardOutput", "ScoringContext", "register_reward", "score"]
