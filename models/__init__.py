"""drox.models"""
