"""A broken $LBM_HOME (a file, not writable, read-only) is one clear line; lookups create nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
# Root may write anywhere: a root test drops the capabilities that let it, so permissions apply to it too.
AS_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []

COMMANDS = (
    ("sagey", "ls"),
    ("sagey", "describe", "ann-nope"),
    ("sagey", "stop", "ann-nope"),
    ("lbm", "agent"),
    ("lbm", "launch", "--config-file", "train_diffusion_unet_keypoints_lang_tiny", "--no-wait"),
)


def run(*argv: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [*(prefix or []), str(BIN / argv[0]), *argv[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mounted read-only (skipped where mounting is not permitted)."""
    point = tmp_path / "mnt"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_home_that_is_a_file(isolated_env: Path, command: tuple[str, ...]):
    home = Path(os.environ["LBM_HOME"])
    home.write_text("not a folder\n")

    one_line_error(run(*command), f"the lbm home {home} is a file, not a folder")

    assert home.read_text() == "not a folder\n"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_home_that_is_not_writable(isolated_env: Path, command: tuple[str, ...]):
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot apply")
    home = Path(os.environ["LBM_HOME"])
    home.mkdir(mode=0o555)

    one_line_error(run(*command, prefix=AS_USER), f"the lbm home {home} is not writable by you")

    assert tree(home) == []


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_home_on_a_read_only_mount(
    isolated_env: Path, mount_point: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
):
    monkeypatch.setenv("LBM_HOME", str(mount_point / "home"))

    one_line_error(run(*command), f"the lbm home {mount_point / 'home'} is on a read-only mount")

    assert tree(mount_point) == []


@pytest.mark.parametrize("existing", [False, True], ids=["no home", "empty home"])
def test_looking_up_a_job_that_does_not_exist_creates_nothing(isolated_env: Path, existing: bool):
    home = Path(os.environ["LBM_HOME"])
    if existing:
        home.mkdir()

    for command in (("describe",), ("logs",), ("stop",)):
        one_line_error(run("sagey", *command, "ann-nope"), "no job named 'ann-nope'")
    listed = run("sagey", "ls")
    usage = run("sagey", "usage")

    assert listed.returncode == 0 and usage.returncode == 0, listed.stderr + usage.stderr
    assert "ann-nope" not in listed.stdout
    assert home.exists() == existing
    assert not existing or tree(home) == []
