"""Datasets of the training workload: the replay buffer format, a synthetic dataset, sequence sampling.

`replay_buffer` and `synthetic` do not import torch (the CLI uses them); `sequence_dataset` does.
"""
