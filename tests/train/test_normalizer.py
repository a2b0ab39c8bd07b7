from __future__ import annotations

import numpy as np
import pytest
import torch

from lbm.train.normalizer import LinearNormalizer

STATS = {
    "action": {"min": np.array([-2.0, 10.0, 5.0]), "max": np.array([2.0, 30.0, 5.0])},
    "agent_pos": {"min": [0.0, 0.0], "max": [96.0, 48.0], "mean": [1.0, 1.0]},
}


def test_min_max_map_to_minus_one_and_one_and_back():
    normalizer = LinearNormalizer()
    normalizer.set_stats(STATS)
    x = torch.tensor([[-2.0, 10.0, 5.0], [2.0, 30.0, 5.0], [0.0, 25.0, 5.0]])
    normalized = normalizer.normalize("action", x)
    # the constant third dimension maps to 0
    torch.testing.assert_close(
        normalized, torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.5, 0.0]])
    )
    torch.testing.assert_close(normalizer.unnormalize("action", normalized), x)
    batch = torch.rand(4, 16, 2) * 2 - 1
    torch.testing.assert_close(
        normalizer.normalize("agent_pos", normalizer.unnormalize("agent_pos", batch)), batch
    )


def test_normalizer_inverts_the_datasets_normalization():
    from lbm.train.data.sequence_dataset import normalize

    stats = {
        key: {stat: np.asarray(stats[stat], dtype=np.float64) for stat in ("min", "max")}
        for key, stats in STATS.items()
    }
    raw = np.random.default_rng(0).uniform(-3, 31, size=(5, 3))
    normalizer = LinearNormalizer()
    normalizer.set_stats(stats)
    from_dataset = torch.from_numpy(normalize(raw, stats["action"]))
    torch.testing.assert_close(normalizer.normalize("action", torch.from_numpy(raw).float()), from_dataset)
    torch.testing.assert_close(normalizer.unnormalize("action", from_dataset), torch.from_numpy(raw).float())


def test_stats_travel_in_the_state_dict_into_a_fresh_normalizer():
    normalizer = LinearNormalizer()
    normalizer.set_stats(STATS)
    fresh = LinearNormalizer()
    fresh.load_state_dict(normalizer.state_dict())
    assert sorted(fresh.keys()) == ["action", "agent_pos"]
    x = torch.rand(3, 2) * 50
    torch.testing.assert_close(fresh.normalize("agent_pos", x), normalizer.normalize("agent_pos", x))
    # a strict load still refuses a state_dict that lacks the stats
    with pytest.raises(RuntimeError, match="Missing key"):
        normalizer.load_state_dict({})


def test_unknown_key_says_which_keys_exist():
    normalizer = LinearNormalizer()
    normalizer.set_stats(STATS)
    with pytest.raises(KeyError, match="gripper.*action"):
        normalizer.normalize("gripper", torch.zeros(1))
