"""drox.trainers"""
