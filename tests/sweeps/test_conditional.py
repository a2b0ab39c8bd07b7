"""Conditional config files merged over the run's config as the seed describes (a node whose `_target_`
changes is replaced), and the seed's three example sweeps run as written."""

from __future__ import annotations

import pytest
from sweep_lab import jobs, resolved, run_sweep, sweep_runs

from e2e.e2e_lab import TINY, Lab
from lbm.sweeps.conditional import conditional_overrides
from lbm.train.compose import compose_config

CLIP = "lbm.train.models.vision.get_clip_vit_base_patch16"
RESNET = "lbm.train.models.vision.get_resnet"


def merged(addon: dict, *base_overrides: str) -> dict:
    base = compose_config(TINY, list(base_overrides))
    return compose_config(TINY, [*base_overrides, *conditional_overrides(base, addon)])


def test_a_node_whose_target_changes_is_replaced():
    addon = {
        "policy": {
            "obs_encoder": {"rgb_model": {"_target_": CLIP, "pretrained": False}, "crop_shape": [24, 24]}
        }
    }
    config = merged(addon)
    assert dict(config.policy.obs_encoder.rgb_model) == {"_target_": CLIP, "pretrained": False}
    assert list(config.policy.obs_encoder.crop_shape) == [24, 24]
    assert config.policy.obs_encoder.share_rgb_model is False  # the rest of the node is kept


def test_a_node_whose_target_stays_is_merged_and_legacy_names_count_as_lbms():
    addon = {
        "policy": {
            "obs_encoder": {
                "rgb_model": {
                    "_target_": "diffusion_policy.model.vision.model_getter.get_resnet",
                    "name": "resnet34",
                }
            }
        }
    }
    # The tiny config's image model switched to a ResNet, so that the addon's (legacy-named) target stays.
    config = merged(addon, f"policy.obs_encoder.rgb_model._target_={RESNET}")
    rgb_model = dict(config.policy.obs_encoder.rgb_model)
    assert {key: rgb_model[key] for key in ("_target_", "name", "weights")} == {
        "_target_": RESNET,
        "name": "resnet34",
        "weights": None,
    }


def test_new_keys_are_added():
    config = merged({"training": {"lr_scale_for_grouped_params": {"text_encoder": 0.5}}})
    assert dict(config.training.lr_scale_for_grouped_params) == {"obs_encoder": 1.0, "text_encoder": 0.5}


@pytest.mark.slow
def test_the_seeds_conditional_sweep_swaps_the_encoder_in_the_runs_configs(lab: Lab):
    done = run_sweep(lab, "example_sweep_conditional.yaml", "--max-agents", "2", "--name", "c")

    assert done.returncode == 0, done.stdout + done.stderr
    runs = {r["parameters"]["conditional"]: r for r in sweep_runs("c")}
    assert sorted(runs) == ["example_clip_addon", "example_resnet"]
    configs = {j.name: resolved(j) for j in jobs(lab)}
    clip = configs[runs["example_clip_addon"]["job"]]
    assert clip["policy"]["obs_encoder"]["rgb_model"] == {"_target_": CLIP}  # replaced: no ResNet keys left
    assert clip["policy"]["obs_encoder"]["crop_shape"] == [224, 224]
    assert clip["policy"]["obs_encoder"]["resize_shape"] == [256, 342]
    assert clip["policy"]["obs_encoder"]["share_rgb_model"] is True
    assert clip["training"]["lr_scale_for_grouped_params"] == {"obs_encoder": 0.1}
    resnet = configs[runs["example_resnet"]["job"]]
    assert resnet["policy"]["obs_encoder"]["rgb_model"] == {
        "_target_": RESNET,
        "name": "resnet18",
        "weights": "IMAGENET1K_V1",
    }
    # Pretrained weights load from local caches only; without them a run fails, and counts as failed.
    assert all(r["state"] in ("succeeded", "failed") for r in runs.values())


@pytest.mark.slow
def test_the_seeds_basic_sweep_runs(lab: Lab):
    done = run_sweep(lab, "example_sweep.yaml", "--max-runs", "2", "--max-agents", "2", "--name", "b")

    assert done.returncode == 0, done.stdout + done.stderr
    runs = sweep_runs("b")
    assert [r["state"] for r in runs] == ["succeeded", "succeeded"]
    assert all(1e-5 <= r["parameters"]["optimizer.lr"] <= 1e-3 and r["value"] > 0 for r in runs)
    assert all(resolved(j)["logging"]["project"] == "diffusion_sweep" for j in jobs(lab))  # the file's
    assert sorted(resolved(j)["optimizer"]["lr"] for j in jobs(lab)) == sorted(
        r["parameters"]["optimizer.lr"] for r in runs
    )


@pytest.mark.slow
def test_the_combined_sweep_runs_with_every_parameter_in_the_config(lab: Lab):
    done = run_sweep(
        lab, "example_sweep_combined.yaml", "--max-runs", "2", "--max-agents", "2", "--name", "m"
    )

    assert done.returncode == 0, done.stdout + done.stderr
    runs = sweep_runs("m")
    assert len(runs) == 2 and len(jobs(lab)) == 2
    by_job = {j.name: resolved(j) for j in jobs(lab)}
    for run in runs:
        config, p = by_job[run["job"]], run["parameters"]
        assert config["optimizer"]["lr"] == p["optimizer.lr"]
        assert config["optimizer"]["weight_decay"] == p["optimizer.weight_decay"]
        assert config["dataloader"]["batch_size"] == p["dataloader.batch_size"]
        assert config["training"]["lr_warmup_steps"] == p["training.lr_warmup_steps"]
        wanted = CLIP if p["conditional"] == "example_clip_addon" else RESNET
        assert config["policy"]["obs_encoder"]["rgb_model"]["_target_"] == wanted
