"""Who a job belongs to: `main` for the region's main image, otherwise the launching user.

Light on imports: `sagey stop` and `batchy cancel` use it for their owner check.
"""

from __future__ import annotations

import getpass
import subprocess

from lbm.errors import LbmError
from lbm.launch.names import dns_safe

MAIN_OWNER = "main"


def current_email() -> str | None:
    """`git config user.email` of the launching user (None when git has none)."""
    try:
        email = subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        email = ""
    return email or None


def current_user() -> str:
    """The local part of `git config user.email`, else the OS user; lower-case and DNS-safe."""
    email = current_email()
    name = dns_safe(email.split("@", 1)[0]) if email else ""
    if not name:
        try:
            name = dns_safe(getpass.getuser())
        except (OSError, KeyError):
            name = ""
    return name or "user"


def job_owner(image_uri: str | None, main_image: str | None) -> str:
    """`main` when the job runs the region's main image (the default when no image is given)."""
    if main_image and (image_uri is None or image_uri == main_image):
        return MAIN_OWNER
    return current_user()


def check_may_stop(job_name: str, owner: str, force: bool) -> None:
    """A user stops their own jobs; another user's (or a `main` job) needs `force`."""
    if force:
        return
    user = current_user()
    if owner == MAIN_OWNER or owner != user:
        raise LbmError(
            f"job {job_name} belongs to {owner!r}, not to you ({user!r}); add --force to stop it anyway"
        )
