"""drox.rollout"""
