"""Training wing: synthetic data generators and simulators, training and evaluation scripts, baselines.

Imports `engine`, so what is evaluated is exactly what a worker serves; nothing imports `training`.
"""
