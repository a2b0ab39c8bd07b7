"""The training workload: configs, data, models, policy and trainer (run inside every job)."""
