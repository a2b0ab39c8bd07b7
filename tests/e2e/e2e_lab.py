"""End-to-end helpers: a user's machine (tmp LBM_HOME, data, config, site and git identity) on which the
real `lbm launch`, `sagey` and agent processes run the real tiny training workload."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

import polling
from lbm.errors import LbmError
from lbm.jobs.local.backend import LocalBackend
from lbm.jobs.local.daemon import agent_running, stop_agent
from lbm.jobs.local.home import LocalHome
from lbm.jobs.model import Job, JobState
from lbm.site import load_site

BIN = Path(sys.executable).parent
TINY = "train_diffusion_unet_keypoints_lang_tiny"
# A few small steps of the tiny config: a checkpoint every 4 steps, metrics every 2.
SMALL = (
    "task.synthesize.episodes_per_task=4,dataloader.batch_size=16,checkpoint.every_n_steps=4,"
    "training.log_every=2,training.num_epochs=1,dataloader.num_workers=0,task.env_runner.n_test=2"
)
USER = "jane-doe"
QUEUE = "e2e-cpu"
DEADLINE_S = 240.0
ENDED = (JobState.SUCCEEDED, JobState.FAILED)
CHECKPOINT = re.compile(r"^epoch_(\d+)-step_(\d+)\.ckpt$")

SITE_YAML = """\
defaultRegion: local
regions:
  local:
    backend: local
    bucket: {bucket}
    prefix: outputs
    queues:
      - {{name: {queue}, instanceType: cpu, capacity: {capacity}}}
"""


@contextlib.contextmanager
def lab_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A fresh user machine in `tmp_path` (see `Lab`), this test's environment pointing at it; its jobs and
    agent are stopped at the end."""
    gitconfig = tmp_path / "gitconfig"
    subprocess.run(
        ["git", "config", "--file", str(gitconfig), "user.email", "Jane.Doe@example.com"], check=True
    )
    (tmp_path / "work").mkdir()
    env = {
        "LBM_HOME": str(tmp_path / "home"),
        "LBM_DATA_DIR": str(tmp_path / "data"),
        "LBM_CONFIG_DIR": str(tmp_path / "config"),
        "LBM_SITE": str(tmp_path / "site.yaml"),
        "LBM_STOP_GRACE_S": "2",
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "NETRC": str(tmp_path / "no-netrc"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_API_KEY", "AWS_PROFILE", "LBM_SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path / "work")
    lab = Lab(tmp_path)
    lab.use_bucket(f"file://{lab.bucket}")
    try:
        yield lab
    finally:
        lab.clean_up()


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE_S) -> object:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    return polling.wait_for(condition, what, timeout, interval=0.1)


def overrides(max_steps: int, *more: str) -> str:
    """`--config-overrides` for a run of the tiny config that stops after `max_steps` steps."""
    return ",".join([SMALL, f"training.max_train_steps={max_steps}", *more])


def complete_checkpoints(directory: Path) -> dict[int, str]:
    """Step → name of the complete checkpoints in `directory`: those whose sidecar is written (the trainer
    writes it once the checkpoint is in place)."""
    found = {}
    for path in directory.glob("epoch_*-step_*.ckpt"):
        match = CHECKPOINT.match(path.name)
        try:
            record = json.loads(path.with_name(path.name + ".json").read_text())
        except (OSError, ValueError):
            continue
        if match and record.get("step") == int(match.group(2)) and path.exists():
            found[int(match.group(2))] = path.name
    return found


def metric_steps(text: str) -> list[int]:
    return [json.loads(line)["step"] for line in text.splitlines() if line.strip()]


class Launched:
    """An `lbm launch` process whose stdout is collected line by line as it comes (stderr goes to a file)."""

    def __init__(self, process: subprocess.Popen, stderr: Path):
        self.process = process
        self._stderr = stderr
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def name(self) -> str:
        """The job's name, once the launcher has printed it."""

        def printed() -> str | None:
            match = re.search(r"^job:\s+(\S+)$", self.output, re.MULTILINE)
            if match is None and self.process.poll() is not None:
                pytest.fail(f"lbm launch exited {self.process.returncode}:\n{self.output}{self.stderr()}")
            return match and match.group(1)

        return wait_for(printed, "lbm launch to print the job name", 120)

    def wait(self, timeout: float = DEADLINE_S) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=30)
        return code

    def stderr(self) -> str:
        return self._stderr.read_text()


@dataclass
class Lab:
    """One user's machine: `jane-doe` with a tmp LBM_HOME, data and config dirs, a site whose one region
    `local` has a 1-slot CPU queue, and a bucket (a local folder unless `use_bucket` names another)."""

    root: Path
    _backend: LocalBackend | None = field(default=None, repr=False)
    launched: list[Launched] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The test's environment (with what its fixtures, e.g. the S3 server's, put there)."""
        return dict(os.environ)

    @property
    def home(self) -> LocalHome:
        return LocalHome(Path(self.env["LBM_HOME"]))

    @property
    def bucket(self) -> Path:
        return self.root / "bucket"

    @property
    def backend(self) -> LocalBackend:
        if self._backend is None:
            self._backend = LocalBackend(load_site().region(), self.home.root)
        return self._backend

    def use_bucket(self, url: str, capacity: int = 1) -> None:
        """Make `url` the bucket of region `local`, whose queue runs `capacity` jobs at once (before the
        first launch)."""
        Path(self.env["LBM_SITE"]).write_text(SITE_YAML.format(bucket=url, queue=QUEUE, capacity=capacity))

    def launch(self, *args: str, env: dict[str, str] | None = None) -> Launched:
        """Start `lbm launch --config-file <tiny> ARGS` as a process."""
        stderr = self.root / f"launch-{len(self.launched)}.stderr"
        with open(stderr, "wb") as errors:
            process = subprocess.Popen(
                [str(BIN / "lbm"), "launch", "--config-file", TINY, *args],
                env={**self.env, **(env or {})},
                cwd=self.root / "work",
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        launched = Launched(process, stderr)
        self.launched.append(launched)
        return launched

    def run(self, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a console script (`lbm`, `sagey`, `batchy`) of this installation to its end."""
        return subprocess.run(
            [str(BIN / script), *args],
            env=self.env,
            cwd=self.root / "work",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def job(self, name: str) -> Job:
        """The job as the store has it (reading it never starts an agent)."""
        return self.backend.store.job(name)

    def wait_state(self, name: str, states: Iterable[JobState], timeout: float = DEADLINE_S) -> Job:
        wanted = set(states)
        return wait_for(
            lambda: (job := self.job(name)).state in wanted and job,
            f"job {name} to reach {'/'.join(sorted(wanted))}",
            timeout,
        )

    def training_process(self, name: str) -> psutil.Process:
        """The running `lbm train` process of the job's current attempt (the child of its runner)."""

        def find() -> psutil.Process | None:
            active = self.backend.store.active_attempts(name)
            if not active or active[0].pid is None:
                return None
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(active[0].pid).children():
                    with contextlib.suppress(psutil.Error):
                        if "train" in child.cmdline():
                            return child
            return None

        return wait_for(find, f"the training process of {name}", 120)

    def output_dir(self, name: str) -> Path:
        return self.home.output_dir(name)

    def attempt_log(self, name: str, attempt: int) -> str:
        return self.home.attempt_log(name, attempt).read_text()

    def clean_up(self) -> None:
        for launched in self.launched:
            if launched.process.poll() is None:
                launched.process.kill()
            launched.wait(timeout=30)
        if not self.home.db.exists():  # nothing was ever queued here, so no agent was started
            return
        for job in self.backend.list(states=[s for s in JobState if not s.is_terminal]):
            with contextlib.suppress(LbmError):  # it may have ended meanwhile
                self.backend.stop(job.name, reason="test over")
        for job in self.backend.list():
            self.wait_state(job.name, ENDED, timeout=60)
        pid = stop_agent(self.home)
        if pid is not None:
            wait_for(lambda: not agent_running(self.home), f"agent {pid} to exit", 60)
        self.backend.close()


def files_containing(roots: list[Path], secret: str) -> list[str]:
    """Files under `roots` holding `secret`, looking inside .tar.gz archives too."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            if path.name.endswith(".tar.gz"):
                with tarfile.open(path) as tar:
                    data += b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
            if secret.encode() in data:
                found.append(str(path))
    return found
