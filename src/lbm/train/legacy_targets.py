"""Names of diffusion_policy classes and functions in users' config files, mapped to lbm's.

Torch-free: the launcher rewrites a job's config with it before anything is queued.
"""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

_DP_VISION = "diffusion_policy.model.vision"

LEGACY_TARGETS: dict[str, str] = {
    f"{_DP_VISION}.model_getter.get_resnet": "lbm.train.models.vision.get_resnet",
    f"{_DP_VISION}.model_getter.get_clip_vit_base_patch16": (
        "lbm.train.models.vision.get_clip_vit_base_patch16"
    ),
    f"{_DP_VISION}.multi_image_obs_encoder.MultiImageObsEncoder": (
        "lbm.train.models.obs_encoder.MultiImageObsEncoder"
    ),
}


def rewrite_legacy_targets(cfg: DictConfig | ListConfig) -> None:
    """Replace, in place, every `_target_` of `cfg` that names a diffusion_policy object with lbm's.

    Interpolations and missing values are left alone (they point at nodes that are visited themselves).
    """
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in keys:
        if OmegaConf.is_interpolation(cfg, key) or OmegaConf.is_missing(cfg, key):
            continue
        value = cfg[key]
        if isinstance(value, DictConfig | ListConfig):
            rewrite_legacy_targets(value)
        elif key == "_target_" and isinstance(value, str) and value in LEGACY_TARGETS:
            cfg[key] = LEGACY_TARGETS[value]
