"""lbm: train language-conditioned multitask diffusion policies, on one machine or at scale."""

__version__ = "0.1.0"
