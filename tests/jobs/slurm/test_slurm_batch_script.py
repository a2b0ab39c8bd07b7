"""The batch script on the real test cluster: torchrun through srun on one node or two (each in its own
network namespace), one set of checkpoints and metrics, and a killed attempt requeued and resumed."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from slurm_test_cluster import ACCOUNTS, SlurmCluster

from e2e.e2e_lab import TINY, complete_checkpoints, metric_steps, overrides
from lbm.jobs.model import JobState
from lbm.jobs.slurm import commands
from lbm.jobs.slurm.script import CHECKPOINT_SIGNAL, BatchJob, batch_script, training_step
from lbm.jobs.slurm.states import job_state
from polling import wait_for

pytestmark = pytest.mark.slow
DEADLINE_S = 240


def submit_training(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    *,
    nodes: int,
    max_steps: int,
    retries: int = 0,
) -> tuple[str, BatchJob]:
    """sbatch the batch script of a tiny training run (its dataset made first, as `lbm launch` does)."""
    from lbm.train.compose import compose_config

    data = tmp_path / "data"
    monkeypatch.setenv("LBM_DATA_DIR", str(data))
    train_overrides = overrides(max_steps).split(",")
    compose_config(TINY, train_overrides)
    run_dir = tmp_path / name
    job = BatchJob(
        name=name,
        step=training_step(
            ["--config-file", TINY, "--output-dir", str(run_dir / "output"), *train_overrides], 1
        ),
        retries=retries,
        run_dir=str(run_dir),
        env={"LBM_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"},
    )
    options = [
        f"--job-name={name}", f"--partition={'multi' if nodes > 1 else 'debug'}", f"--account={ACCOUNTS[0]}",
        f"--nodes={nodes}", "--ntasks-per-node=1", f"--output={run_dir}.log", "--open-mode=append",
        "--requeue", f"--signal={CHECKPOINT_SIGNAL}",
    ]  # fmt: skip
    return commands.sbatch(batch_script(job), options), job


def live(job_id: str) -> commands.SlurmJob | None:
    return next((job for job in commands.squeue_jobs() if job.job_id == job_id), None)


def wait_ended(job_id: str) -> commands.SlurmJob:
    def ended():
        job = live(job_id)
        return job if job and job_state(job.state, job.reason)[0].is_terminal else None

    return wait_for(ended, f"job {job_id} to end", timeout=DEADLINE_S)


def test_two_nodes_in_their_own_namespaces_train_one_run_through_srun(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    if not slurm_cluster.namespaced:
        pytest.skip(slurm_cluster.multi_node_problem)
    job_id, job = submit_training(tmp_path, monkeypatch, "lbm-two-nodes", nodes=2, max_steps=4)
    ended = wait_ended(job_id)
    run_dir = Path(job.run_dir)
    assert job_state(ended.state, ended.reason, ended.exit_code)[0] is JobState.SUCCEEDED, Path(
        f"{run_dir}.log"
    ).read_text()
    first, second = (n.name for n in slurm_cluster.namespaced)
    assert ended.nodes == commands.run(["scontrol", "show", "hostlist", f"{first},{second}"]).strip()
    logs = {path.name: path.read_text() for path in (run_dir / "logs").iterdir()}
    assert set(logs) == {f"attempt-0-{first}.log", f"attempt-0-{second}.log"}
    # Rank 0 (the first node) reports for the run; the second node's rank trained in the same DDP group.
    assert "finished at step 4" in logs[f"attempt-0-{first}.log"]
    assert "finished at step" not in logs[f"attempt-0-{second}.log"]
    output = run_dir / "output"
    assert sorted(complete_checkpoints(output)) == [4]
    assert metric_steps((output / "metrics.jsonl").read_text()) == [2, 4]


def test_an_attempt_killed_on_its_node_is_requeued_and_resumes_from_its_checkpoint(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    job_id, job = submit_training(tmp_path, monkeypatch, "lbm-requeued", nodes=1, max_steps=8, retries=1)
    output = Path(job.run_dir) / "output"
    wait_for(lambda: complete_checkpoints(output), "the first complete checkpoint", timeout=DEADLINE_S)
    commands.scancel(f"{job_id}.0", signal="KILL")
    before_kill = complete_checkpoints(output)
    killed_at = max(before_kill)
    assert killed_at < 8, "the run ended before it could be killed mid-way"

    ended = wait_ended(job_id)
    batch_log = Path(f"{job.run_dir}.log").read_text()
    assert job_state(ended.state, ended.reason, ended.exit_code)[0] is JobState.SUCCEEDED, batch_log
    assert ended.restart_count == 1
    assert f"attempt 0 ended with exit status {128 + signal.SIGKILL}" in batch_log
    assert "requeueing for attempt 1" in batch_log
    second = (Path(job.run_dir) / "logs" / f"attempt-1-{slurm_cluster.local_node}.log").read_text()
    assert f"resuming from {before_kill[killed_at]} at step {killed_at}" in second
    steps = metric_steps((output / "metrics.jsonl").read_text())
    assert steps == list(range(2, 9, 2))
