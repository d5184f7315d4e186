"""drox.conf"""
