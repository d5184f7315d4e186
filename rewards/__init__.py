"""drox.rewards: reward sources (one module each) registered by name; see base.py for the contract."""

from drox.rewards import outcome  # noqa: F401  (registers the source)
from drox.rewards.base import REWARD_SOURCES, Combined, RewardOutput, ScoringContext, register_reward, score

__all__ = ["REWARD_SOURCES", "Combined", "RewardOutput", "ScoringContext", "register_reward", "score"]
