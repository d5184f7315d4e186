"""drox.filters"""
