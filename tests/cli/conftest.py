"""Fixtures for the command-line tests: a user with their own LBM_HOME, config dir, site and git identity,
the console scripts run as real processes, and the real local backend (and agent) under that home."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import polling
from lbm.errors import LbmError
from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.local.daemon import agent_running, stop_agent
from lbm.jobs.model import Job, JobSpec, JobState
from lbm.site import load_site

BIN = Path(sys.executable).parent
USER = "jane-doe"
FAKE_WANDB_KEY = "wandb-fake-key-0123456789abcdef0123456789abcdef"
MAIN_IMAGE = "registry.example/lbm:main"
DEADLINE_S = 60.0

SITE_YAML = """\
defaultRegion: local
mainImage: {main_image}
instanceAliases: {{small: cpu}}
regions:
  local:
    backend: local
    bucket: file://{bucket}
    prefix: outputs
    queues:
      - {{name: test-cpu, instanceType: cpu, capacity: 2, nicknames: [c]}}
      - {{name: test-held, instanceType: held, capacity: 1}}
      - {{name: test-cpu-vla, instanceType: cpu, capacity: 1, team: vla}}
  far:
    backend: sagemaker
    bucket: s3://far-bucket
    prefix: sagemaker_outputs
    sagemaker: {{account: "123456789012", roleArn: "arn:aws:iam::123456789012:role/lbm-training"}}
    queues:
      - {{name: far-p5, instanceType: ml.p5.48xlarge, capacity: 4}}
"""


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE_S) -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    return polling.wait_for(condition, what, timeout, interval=0.05)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The command failed as a user error: exit 2 and one stderr line holding each fragment."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@dataclass
class World:
    """One user's machine: environment, site, bucket and the local backend of region `local`."""

    root: Path
    env: dict[str, str]
    backend: LocalBackend
    user: ClassVar[str] = USER
    wandb_key: ClassVar[str] = FAKE_WANDB_KEY
    main_image: ClassVar[str] = MAIN_IMAGE
    bin: ClassVar[Path] = BIN
    wait_for = staticmethod(wait_for)
    assert_user_error = staticmethod(one_line_error)

    @property
    def home(self) -> Path:
        return Path(self.env["LBM_HOME"])

    @property
    def bucket(self) -> Path:
        return self.root / "bucket"

    def run(
        self, script: str, *args: str, timeout: float = DEADLINE_S, **env: str
    ) -> subprocess.CompletedProcess:
        """Run a console script (`lbm`, `sagey`, `batchy`) of this installation as a process."""
        return subprocess.run(
            [str(BIN / script), *args],
            env={**self.env, **env},
            cwd=self.root / "work",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, name: str, code: str, *, queue: str = "test-cpu", owner: str = USER, **fields) -> Job:
        """Queue a job whose command is a small Python program (through the backend API)."""
        spec = JobSpec(
            name=name,
            owner=owner,
            queue=queue,
            command=(sys.executable, "-c", code),
            artifact_uri=f"file://{self.bucket}/outputs/{owner}-lbm/{name}/",
            share_identifier=owner,
            instance_type=self.backend.region.queue(queue).instance_type,
            **fields,
        )
        return self.backend.submit(spec, secrets={})

    def held_program(self, tag: str, before: int = 1, after: int = 1) -> str:
        """Python code that prints `before` lines, records its pid, waits until `release(tag)`, prints
        `after` lines and exits 0."""
        pid_file, go_file = self.root / f"{tag}.pid", self.root / f"{tag}.go"
        return (
            "import os, pathlib, time\n"
            f"for i in range({before}): print(f'{tag} before {{i}}', flush=True)\n"
            f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
            f"while not os.path.exists({str(go_file)!r}): time.sleep(0.02)\n"
            f"for i in range({after}): print(f'{tag} after {{i}}', flush=True)\n"
        )

    def fill_held_queue(self) -> None:
        """Occupy the one slot of `test-held` with job `blocker`, so that jobs queued there wait."""
        self.submit("blocker", self.held_program("blocker"), queue="test-held", owner="ops")
        self.wait_state("blocker", [JobState.RUNNING])

    def release(self, tag: str) -> None:
        (self.root / f"{tag}.go").touch()

    def program_pid(self, tag: str) -> int:
        pid_file = self.root / f"{tag}.pid"
        return int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), f"{pid_file} to be written"))

    def wait_state(self, name: str, states: Iterable[JobState], timeout: float = DEADLINE_S) -> Job:
        wanted = set(states)
        return wait_for(
            lambda: (job := self.backend.describe(name)).state in wanted and job,
            f"job {name} to reach {'/'.join(sorted(wanted))}",
            timeout,
        )

    def job_names(self) -> set[str]:
        return {job.name for job in self.backend.list()}

    def bucket_files(self) -> list[Path]:
        return sorted(p for p in self.bucket.rglob("*") if p.is_file()) if self.bucket.exists() else []


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A user `jane-doe` with a fake W&B key and a site whose `local` region has a CPU queue of 2 slots,
    a queue of 1 slot (`test-held`, see `fill_held_queue`) and a team queue; jobs and the agent are
    stopped at the end."""
    gitconfig = tmp_path / "gitconfig"
    git_config = ["git", "config", "--file", str(gitconfig)]
    subprocess.run([*git_config, "user.email", "Jane.Doe@example.com"], check=True)
    site = tmp_path / "site.yaml"
    site.write_text(SITE_YAML.format(main_image=MAIN_IMAGE, bucket=tmp_path / "bucket"))
    (tmp_path / "work").mkdir()
    env = {
        "LBM_HOME": str(tmp_path / "home"),
        "LBM_CONFIG_DIR": str(tmp_path / "config"),
        "LBM_SITE": str(site),
        "LBM_DATA_DIR": str(tmp_path / "data"),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "WANDB_API_KEY": FAKE_WANDB_KEY,
        "NETRC": str(tmp_path / "no-netrc"),
        # No AWS login: the `far` (SageMaker) region's commands reach no AWS account.
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in (
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "LBM_SLACK_WEBHOOK_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path / "work")
    backend = LocalBackend(load_site().region("local"), tmp_path / "home")
    world = World(tmp_path, dict(os.environ), backend)
    yield world
    for job in backend.list(states=[s for s in JobState if not s.is_terminal]):
        with contextlib.suppress(LbmError):  # it may have ended meanwhile
            backend.stop(job.name, reason="test over")
    for job in backend.list():
        world.wait_state(job.name, [JobState.SUCCEEDED, JobState.FAILED])
    home = backend.home
    pid = stop_agent(home)
    if pid is not None:
        wait_for(lambda: not agent_running(home), f"agent {pid} to exit")
    backend.close()
