"""Actors for rollouts: a trained diffusion policy, and the baselines a skeptic tries first."""

from __future__ import annotations

import numpy as np

from lbm.envs.environment import Environment


class PolicyActor:
    """A diffusion policy (lbm.train.policy.DiffusionUnetLangPolicy) in eval mode, sampling with `seed`.

    Images go in as uint8 [B, T, 3, H, W], low-dim values in raw units; each call returns the policy's
    `n_action_steps` actions after the last observation, in raw units.
    """

    def __init__(self, policy, seed: int = 0) -> None:
        import torch

        self.policy = policy.eval()
        self.n_obs_steps = policy.n_obs_steps
        self.generator = torch.Generator(device=policy.device).manual_seed(seed)

    def __call__(self, obs: dict[str, np.ndarray], instructions: list[str], envs: list[Environment]):
        import torch

        tensors = {}
        for key, value in obs.items():
            if value.dtype == np.uint8 and value.ndim == 5:
                tensors[key] = torch.from_numpy(np.ascontiguousarray(value.transpose(0, 1, 4, 2, 3)))
            else:
                tensors[key] = torch.from_numpy(value.astype(np.float32))
        actions = self.policy.predict_action(tensors, instructions, generator=self.generator)["action"]
        return actions.float().cpu().numpy()


class HoldStill:
    """Commands the current position (`position_key` of the observation) for `n_action_steps` steps."""

    n_obs_steps = 1

    def __init__(self, position_key: str = "agent_pos", n_action_steps: int = 8) -> None:
        self.position_key, self.n_action_steps = position_key, n_action_steps

    def __call__(self, obs, instructions, envs):
        return np.repeat(obs[self.position_key][:, -1:], self.n_action_steps, axis=1)


class ConstantAction:
    """Always the same action (e.g. the dataset's mean action)."""

    n_obs_steps = 1

    def __init__(self, action: np.ndarray, n_action_steps: int = 8) -> None:
        self.action, self.n_action_steps = np.asarray(action, dtype=np.float32), n_action_steps

    def __call__(self, obs, instructions, envs):
        return np.broadcast_to(self.action, (len(envs), self.n_action_steps, len(self.action))).copy()


class RandomAction:
    """Uniform random actions between `low` and `high` (e.g. the dataset's action range), seeded."""

    n_obs_steps = 1

    def __init__(self, low: np.ndarray, high: np.ndarray, seed: int = 0, n_action_steps: int = 8) -> None:
        self.low, self.high = np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
        self.rng, self.n_action_steps = np.random.default_rng(seed), n_action_steps

    def __call__(self, obs, instructions, envs):
        return self.rng.uniform(self.low, self.high, size=(len(envs), self.n_action_steps, len(self.low)))


class ScriptedExpert:
    """The environment's own scripted expert (it sees the state a policy does not), one step at a time."""

    n_obs_steps = 1

    def __call__(self, obs, instructions, envs):
        return np.stack([env.expert_action() for env in envs])[:, None]
