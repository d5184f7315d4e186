"""drox.cli"""
