"""Environments a policy is evaluated in, and closed-loop rollouts of a policy in them.

An environment suite (`synthetic_reach.SyntheticReachSuite`, `meta_world.MetaWorldSuite`) has `tasks` and
makes one environment per task; see `environment.Environment` for what an environment does. Nothing here
imports the trainer.
"""
