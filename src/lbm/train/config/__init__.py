"""Hydra training configs shipped with lbm (the diffusion_policy structure)."""
