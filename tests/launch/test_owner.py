from __future__ import annotations

import subprocess

import pytest

from lbm.errors import LbmError
from lbm.launch.owner import MAIN_OWNER, check_may_stop, current_user, job_owner


def test_current_user_is_the_local_part_of_the_git_email(user):
    assert current_user() == user


def test_current_user_falls_back_to_the_os_user(user, monkeypatch, tmp_path):
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("USER", "Os_User")
    monkeypatch.setenv("LOGNAME", "Os_User")
    assert current_user() == "os-user"


def test_main_image_or_no_image_is_owned_by_main(user):
    assert job_owner(None, "registry/lbm:main") == MAIN_OWNER
    assert job_owner("registry/lbm:main", "registry/lbm:main") == MAIN_OWNER
    assert job_owner("registry/jane-dev:1", "registry/lbm:main") == user


def test_without_a_main_image_the_user_owns_the_job(user):
    assert job_owner(None, None) == user


def test_only_the_owner_may_stop_without_force(user):
    check_may_stop("job-a", user, force=False)
    for other in ("bob", MAIN_OWNER):
        with pytest.raises(LbmError, match=f"belongs to '{other}'.*--force"):
            check_may_stop("job-a", other, force=False)
        check_may_stop("job-a", other, force=True)


def test_git_config_is_really_read(user, tmp_path, monkeypatch):
    other = tmp_path / "other-gitconfig"
    subprocess.run(["git", "config", "--file", str(other), "user.email", "BOB@x.org"], check=True)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(other))
    assert current_user() == "bob"
