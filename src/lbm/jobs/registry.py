"""Which backend serves a region."""

from __future__ import annotations

from lbm.errors import LbmError
from lbm.jobs.backend import Backend
from lbm.site import Region, lbm_home


def backend_for(region: Region) -> Backend:
    """The backend for `region` (local: the embedded SQLite backend under $LBM_HOME)."""
    if region.backend == "local":
        from lbm.jobs.local.backend import LocalBackend

        return LocalBackend(lbm_home(), region)
    raise LbmError(f"backend {region.backend!r} is not available in this version (region {region.name})")
