"""drox.evaluation"""
