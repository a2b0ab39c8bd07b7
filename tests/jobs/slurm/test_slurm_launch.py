"""`lbm launch`, `sagey` and `batchy` on the Slurm backend as a user runs them, on the real test cluster: a
tiny training job to SUCCEEDED with its artifact tree, logs while it runs, stop and cancel, bad input,
Slurm's fair share between two accounts, a 2-node job, and a killed attempt requeued and resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_test_cluster import ACCOUNTS, SlurmCluster

from e2e.e2e_lab import (
    Lab,
    complete_checkpoints,
    files_containing,
    lab_machine,
    metric_steps,
    overrides,
    wait_for,
)
from lbm.jobs.model import Job, JobState
from lbm.jobs.slurm import commands
from lbm.jobs.slurm.backend import SlurmBackend
from lbm.site import load_site

pytestmark = pytest.mark.slow

FAKE_WANDB_KEY = "fake-key-0123456789abcdef"
SITE = """\
defaultRegion: cluster
regions:
  cluster:
    backend: slurm
    bucket: file://{bucket}
    prefix: outputs
    queues:
      - {{name: debug, instanceType: cpu, capacity: 1, slurm: {{partition: debug}}}}
      - {{name: held, instanceType: held, capacity: 1, slurm: {{partition: held}}}}
      - {{name: multi, instanceType: multi, capacity: 2, slurm: {{partition: multi}}}}
      - {{name: nowhere, instanceType: nowhere, capacity: 1, slurm: {{partition: no-such-partition}}}}
      - name: strangers
        instanceType: strangers
        slurm: {{partition: debug, account: nobodys}}
"""


class SlurmLab:
    """The e2e user machine (`e2e_lab.Lab`) with a site whose region `cluster` is the test cluster."""

    def __init__(self, lab: Lab):
        self.lab = lab
        Path(os.environ["LBM_SITE"]).write_text(SITE.format(bucket=lab.bucket))
        self.backend = SlurmBackend(load_site().region())

    def launch(self, *args: str, env: dict[str, str] | None = None) -> str:
        """`lbm launch --no-wait ARGS`; the job's name."""
        launched = self.lab.launch(*args, "--no-wait", env=env)
        assert launched.wait() == 0, launched.output + launched.stderr()
        return launched.name()

    def wait_state(self, name: str, states: set[JobState], timeout: float = 240) -> Job:
        return wait_for(
            lambda: (job := self.backend.describe(name)).state in states and job,
            f"job {name} to reach {'/'.join(sorted(states))}",
            timeout,
        )

    def stop_all(self) -> None:
        for job in self.backend.list():
            if not job.state.is_terminal:
                self.backend.stop(job.name, reason="test over")


@pytest.fixture
def slurm_lab(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SlurmLab]:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs get it through sbatch: one torch thread a rank
    with lab_machine(tmp_path, monkeypatch) as lab:
        slurm = SlurmLab(lab)
        try:
            yield slurm
        finally:
            slurm.stop_all()


def test_a_tiny_launch_runs_to_succeeded_with_its_logs_while_running_and_its_artifact_tree(
    slurm_lab: SlurmLab, slurm_cluster: SlurmCluster
):
    node = slurm_cluster.local_node
    name = slurm_lab.launch("--config-overrides", overrides(8), env={"WANDB_API_KEY": FAKE_WANDB_KEY})
    job = slurm_lab.backend.describe(name)
    assert job.engine_id and job.queue == "debug"
    slurm_lab.wait_state(name, {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED})

    def logged_while_running() -> str | None:
        result = slurm_lab.lab.run("sagey", "logs", name, "--no-follow", "--startfromhead")
        assert result.returncode == 0, result.stderr
        running = slurm_lab.backend.describe(name).state is JobState.RUNNING
        return result.stdout if f"{node}: " in result.stdout and running else None

    lines = wait_for(logged_while_running, "sagey logs to show the node's output while the job runs", 240)
    assert all(line.startswith((f"{node}: ", "batch: ")) for line in lines.splitlines())
    followed = slurm_lab.lab.run("sagey", "logs", name, "--startfromhead", timeout=240)  # returns at the end
    assert followed.returncode == 0 and f"{node}: finished at step 8" in followed.stdout, followed.stderr

    job = slurm_lab.backend.describe(name)
    assert job.state is JobState.SUCCEEDED, "\n".join(slurm_lab.backend.logs(name, from_head=True))
    assert [a.index for a in job.attempts] == [0] and job.attempts[0].host == node
    artifact = Path(job.artifact_uri.removeprefix("file://"))
    assert artifact == slurm_lab.lab.bucket / "outputs" / "jane-doe-lbm" / name
    assert (artifact / "config.yaml").is_file()
    assert max(complete_checkpoints(artifact)) == 8
    assert metric_steps((artifact / "metrics.jsonl").read_text()) == [2, 4, 6, 8]
    with tarfile.open(artifact / "output" / "output.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"logs/attempt-0-{node}.log", "logs/batch.log", "metrics.jsonl"} <= names
    assert files_containing([slurm_lab.backend.state_dir, slurm_lab.lab.bucket], FAKE_WANDB_KEY) == []

    listed = slurm_lab.lab.run("sagey", "ls")
    assert listed.returncode == 0 and name in listed.stdout and "SUCCEEDED" in listed.stdout
    described = slurm_lab.lab.run("sagey", "describe", name, "--json")
    assert described.returncode == 0 and job.engine_id in described.stdout


def test_sagey_stop_checkpoints_and_archives_a_running_job_and_batchy_cancel_ends_a_waiting_one(
    slurm_lab: SlurmLab,
):
    running = slurm_lab.launch("--config-overrides", overrides(100000))
    waiting = slurm_lab.launch("--queue", "held", "--config-overrides", overrides(2))
    slurm_lab.wait_state(running, {JobState.RUNNING})
    artifact = Path(slurm_lab.backend.describe(running).artifact_uri.removeprefix("file://"))
    wait_for(lambda: complete_checkpoints(artifact) or None, "the job's first checkpoint", 240)
    job = slurm_lab.backend.describe(waiting)
    assert (job.state, job.status_reason) == (JobState.RUNNABLE, "PartitionDown")

    stopped = slurm_lab.lab.run("sagey", "stop", running)
    cancelled = slurm_lab.lab.run("batchy", "cancel", "held", waiting)
    assert stopped.returncode == 0 and cancelled.returncode == 0, stopped.stderr + cancelled.stderr

    job = slurm_lab.wait_state(running, {JobState.SUCCEEDED, JobState.FAILED})
    assert (job.state, job.status_reason) == (JobState.FAILED, "stopped by user")
    job = slurm_lab.wait_state(waiting, {JobState.SUCCEEDED, JobState.FAILED})
    assert (job.state, job.status_reason, job.started_at) == (JobState.FAILED, "cancelled in queue", None)
    slurm = {j.job_id: j for j in commands.squeue_jobs()}
    stopped_job = slurm[slurm_lab.backend.describe(running).engine_id]
    assert (stopped_job.state, stopped_job.exit_code) == ("FAILED", 143)  # its script ended it, not requeued
    assert slurm[job.engine_id].state == "CANCELLED"
    with tarfile.open(artifact / "output" / "output.tar.gz") as tar:
        batch_log = tar.extractfile("logs/batch.log").read().decode()
        node_log = tar.extractfile(next(n for n in tar.getnames() if n.startswith("logs/attempt-0-"))).read()
    assert "lbm: stop requested: checkpointing" in batch_log and "requeueing" not in batch_log
    stopped = re.search(rb"stopped at step (\d+)", node_log)
    assert stopped, node_log.decode()[-3000:] + batch_log
    stopped_at = int(stopped.group(1))
    assert stopped_at in complete_checkpoints(artifact)  # the trainer saved where it stopped


def test_a_dry_run_prints_the_sbatch_request_without_secrets_and_queues_nothing(slurm_lab: SlurmLab):
    result = slurm_lab.lab.run(
        "lbm", "launch", "--config-file", "train_diffusion_unet_keypoints_lang_tiny", "--max-days", "0.01",
        "--team", ACCOUNTS[1], "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout[result.stdout.index("{") :])
    assert request["sbatch"][:2] == ["sbatch", "--parsable"]
    assert {
        "--partition=debug",
        f"--account={ACCOUNTS[1]}",
        "--time=15",
        "--requeue",
        "--gpus-per-node=1",
    } <= set(request["sbatch"])
    assert "srun" in request["script"] and "torch.distributed.run" in request["script"]
    assert slurm_lab.backend.list() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queue", "nowhere"], "partition 'no-such-partition' is not on this cluster"),
        (["--queue", "strangers"], "Slurm account 'nobodys' is not one that user"),
        (["--max-days", "1"], "--max-days 1 is beyond the time limit of partition debug"),
        (
            ["--queue", "multi", "--instance-count", "3"],
            "--instance-count 3 is more than partition multi has",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_submitted(slurm_lab: SlurmLab, args, message):
    before = len(commands.squeue_jobs())
    result = slurm_lab.lab.run(
        "lbm", "launch", "--config-file", "train_diffusion_unet_keypoints_lang_tiny", *args
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert len(commands.squeue_jobs()) == before
    assert slurm_lab.backend.list() == []
    assert not list(slurm_lab.lab.bucket.rglob("config.yaml"))


def test_the_account_with_less_usage_goes_first(slurm_lab: SlurmLab, tmp_path: Path):
    """Slurm's fair share decides, seen through our commands: team-a has used the node and team-b has not,
    so when the node frees up team-b's job starts though team-a's was queued first (each needs the node's
    two GPUs, so only one fits)."""
    node = ["--partition=debug", "--exclusive", f"--output={tmp_path}/%j.log", f"--account={ACCOUNTS[0]}"]
    used = commands.sbatch("#!/bin/bash\nsleep 4\n", node)
    wait_for(
        lambda: not [j for j in commands.squeue_jobs() if j.job_id == used and j.end_time is None], "use"
    )

    def charged() -> dict[str, commands.Share] | None:
        figures = {s.account: s for s in commands.shares() if s.user == "root"}
        a, b = figures[ACCOUNTS[0]], figures[ACCOUNTS[1]]
        return (
            figures
            if a.fair_share is not None and b.fair_share is not None and a.fair_share < b.fair_share
            else None
        )

    # slurmctld recomputes fair-share factors once a PriorityCalcPeriod (1 minute here).
    wait_for(charged, "team-a's fair share to fall below team-b's", 150)
    blocker = commands.sbatch("#!/bin/bash\nsleep 600\n", node)
    wait_for(lambda: any(j.job_id == blocker and j.state == "RUNNING" for j in commands.squeue_jobs()), "run")
    both = ("--nproc-per-node", "2", "--config-overrides", overrides(2))
    first = slurm_lab.launch("--team", ACCOUNTS[0], *both)
    second = slurm_lab.launch("--team", ACCOUNTS[1], *both)
    for name in (first, second):
        assert slurm_lab.backend.describe(name).state is JobState.RUNNABLE
    commands.scancel(blocker)

    started = wait_for(
        lambda: [n for n in (first, second) if slurm_lab.backend.describe(n).state is not JobState.RUNNABLE],
        "one of the waiting jobs to start",
        120,
    )
    assert started == [second]
    assert slurm_lab.backend.describe(first).state is JobState.RUNNABLE
    listed = slurm_lab.lab.run("sagey", "ls", "--json")
    states = {job["name"]: job["state"] for job in json.loads(listed.stdout)}
    assert states[first] == "RUNNABLE" and states[second] in ("STARTING", "RUNNING", "SUCCEEDED")
    # batchy list-queues shows the figures Slurm decided by: team-a's fair-share factor below team-b's.
    queues = json.loads(slurm_lab.lab.run("batchy", "list-queues", "--json").stdout)
    shown = {(f["account"], f["user"]): f["fair_share"] for f in queues[0]["fair_share"]}
    assert shown[(ACCOUNTS[0], "root")] < shown[(ACCOUNTS[1], "root")]
    assert "fair share in the slurm engine" in slurm_lab.lab.run("batchy", "list-queues").stdout


def test_lbm_site_slurm_is_the_cluster_with_a_queue_per_partition(
    slurm_lab: SlurmLab, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LBM_SITE", "slurm")
    site = load_site()
    region = site.region()
    assert (site.default_region, region.backend) == (slurm_cluster.cluster_name, "slurm")
    assert region.bucket == f"file://{os.environ['LBM_HOME']}/bucket"
    expected = [("debug", 1), ("held", 1)] + ([("multi", 2)] if slurm_cluster.namespaced else [])
    assert [(q.name, q.capacity) for q in region.queues] == expected
    listed = slurm_lab.lab.run("batchy", "list-queues", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [q["name"] for q in json.loads(listed.stdout)] == [name for name, _ in expected]
    usage = slurm_lab.lab.run("sagey", "usage", "--json")
    assert usage.returncode == 0, usage.stderr


def test_a_two_node_launch_trains_one_run_across_two_hosts_of_their_own(
    slurm_lab: SlurmLab, slurm_cluster: SlurmCluster
):
    """Two slurmd, each in its own network namespace with its own address and hostname: torchrun on both
    through srun, the rendezvous on the first; one set of checkpoints and metrics."""
    if not slurm_cluster.namespaced:
        pytest.skip(slurm_cluster.multi_node_problem)
    name = slurm_lab.launch("--queue", "multi", "--instance-count", "2", "--config-overrides", overrides(4))
    job = slurm_lab.wait_state(name, {JobState.SUCCEEDED, JobState.FAILED})
    assert job.state is JobState.SUCCEEDED, "\n".join(slurm_lab.backend.logs(name, from_head=True))
    first, second = (node.name for node in slurm_cluster.namespaced)
    logs = {p.name: p.read_text() for p in (slurm_lab.backend.run_dir(name) / "logs").iterdir()}
    assert set(logs) == {f"attempt-0-{first}.log", f"attempt-0-{second}.log"}
    # Rank 0 (on the first node) reports for the run; the second node's rank trained in the same DDP group.
    assert "finished at step 4" in logs[f"attempt-0-{first}.log"]
    assert "finished at step" not in logs[f"attempt-0-{second}.log"]
    printed = slurm_lab.lab.run("sagey", "logs", name, "--no-follow", "--startfromhead").stdout
    assert f"{first}: finished at step 4" in printed and f"{second}: " in printed
    artifact = Path(job.artifact_uri.removeprefix("file://"))
    assert max(complete_checkpoints(artifact)) == 4
    assert metric_steps((artifact / "metrics.jsonl").read_text()) == [2, 4]


def test_an_attempt_killed_on_its_node_is_requeued_and_resumes_from_its_checkpoint(slurm_lab: SlurmLab):
    name = slurm_lab.launch("--retries", "1", "--config-overrides", overrides(8))
    job = slurm_lab.wait_state(name, {JobState.RUNNING})
    output = slurm_lab.backend.run_dir(name) / "output"
    before_kill = wait_for(lambda: complete_checkpoints(output), "the first complete checkpoint")
    commands.scancel(f"{job.engine_id}.0", signal="KILL")  # the training step, on its node
    killed_at = max(before_kill)
    assert killed_at < 8, "the run ended before it could be killed mid-way"

    job = slurm_lab.wait_state(name, {JobState.SUCCEEDED, JobState.FAILED})
    logs = "\n".join(slurm_lab.backend.logs(name, from_head=True))
    assert job.state is JobState.SUCCEEDED, logs
    assert [a.index for a in job.attempts] == [0, 1]
    assert f"batch: lbm: attempt 0 ended with exit status {128 + signal.SIGKILL}" in logs
    assert "batch: lbm: requeueing for attempt 1" in logs
    resumed = f"resuming from {before_kill[killed_at]} at step {killed_at}"
    run_logs = slurm_lab.backend.run_dir(name) / "logs"
    assert resumed in next(run_logs.glob("attempt-1-*.log")).read_text()
    assert "resuming from" not in next(run_logs.glob("attempt-0-*.log")).read_text()
    artifact = Path(job.artifact_uri.removeprefix("file://"))
    assert metric_steps((artifact / "metrics.jsonl").read_text()) == [2, 4, 6, 8]
