"""A throwaway lbm installation for a benchmark: a site file, $LBM_HOME, config and data dirs under `root`."""

from __future__ import annotations

import os
from pathlib import Path


def use_temporary_home(root: Path, site_yaml: str) -> dict[str, str]:
    """Write `site_yaml` to `root/site.yaml`, point this process's lbm settings under `root` (no W&B key),
    and return the environment for the processes the benchmark starts."""
    (root / "site.yaml").write_text(site_yaml)
    os.environ.update(
        LBM_HOME=str(root / "home"),
        LBM_SITE=str(root / "site.yaml"),
        LBM_CONFIG_DIR=str(root / "config"),
        LBM_DATA_DIR=str(root / "data"),
    )
    os.environ.pop("WANDB_API_KEY", None)
    return dict(os.environ)
