"""Hyperparameter sweeps from W&B sweep files: validation, sampling, conditional configs, the Optuna engine,
hyperband stopping and the controller that runs the agents."""
