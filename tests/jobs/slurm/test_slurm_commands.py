"""The Slurm commands lbm runs, against the real test cluster: one squeue/sacct call answers for all jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from slurm_test_cluster import ACCOUNTS, DEBUG_MAX_TIME, NODE_GPUS, SlurmCluster

from lbm.jobs.model import JobState
from lbm.jobs.slurm import commands
from lbm.jobs.slurm.states import job_state
from polling import wait_for

pytestmark = pytest.mark.slow


def submit(tmp_path: Path, body: str, name: str, *options: str) -> str:
    return commands.sbatch(
        f"#!/bin/bash\n{body}\n",
        [f"--job-name={name}", "--partition=debug", f"--account={ACCOUNTS[0]}",
         f"--output={tmp_path / name}.log", *options],
    )  # fmt: skip


def in_squeue(job_id: str) -> commands.SlurmJob | None:
    return next((job for job in commands.squeue_jobs(user="root") if job.job_id == job_id), None)


def ended(job_id: str) -> commands.SlurmJob | None:
    job = in_squeue(job_id)
    return job if job is not None and job_state(job.state, job.reason)[0].is_terminal else None


def test_a_finished_job_reads_the_same_from_squeue_and_sacct(slurm_cluster: SlurmCluster, tmp_path: Path):
    ok = submit(tmp_path, "echo hello", "lbm-cmd-ok")
    failed = submit(tmp_path, "exit 3", "lbm-cmd-failed")
    wait_for(lambda: ended(ok) and ended(failed), "both jobs to end", timeout=60)
    live = {job.job_id: job for job in commands.squeue_jobs(user="root")}
    assert (live[ok].name, live[ok].partition, live[ok].account) == ("lbm-cmd-ok", "debug", ACCOUNTS[0])
    assert job_state(live[ok].state, live[ok].reason, live[ok].exit_code) == (JobState.SUCCEEDED, None)
    assert job_state(live[failed].state, live[failed].reason, live[failed].exit_code) == (
        JobState.FAILED,
        "exit code 3",
    )
    assert (tmp_path / "lbm-cmd-ok.log").read_text() == "hello\n"

    def accounted():
        jobs = {job.job_id: job for job in commands.sacct_jobs("root", job_ids=[ok, failed])}
        done = all(j in jobs and jobs[j].name.startswith("lbm-cmd") for j in (ok, failed))
        return jobs if done else None

    history = wait_for(accounted, "slurmdbd to hold both ended jobs", timeout=60)
    assert (history[ok].state, history[ok].exit_code, history[ok].name) == ("COMPLETED", 0, "lbm-cmd-ok")
    assert (history[failed].state, history[failed].exit_code) == ("FAILED", 3)
    assert history[ok].start_time is not None and history[ok].end_time >= history[ok].start_time


def test_a_job_waiting_for_the_node_is_runnable_with_its_reason_and_cancels(
    slurm_cluster: SlurmCluster, tmp_path: Path
):
    blocker = submit(tmp_path, "sleep 300", "lbm-cmd-blocker", "--exclusive")
    waiting = submit(tmp_path, "true", "lbm-cmd-waiting")
    try:
        wait_for(lambda: (j := in_squeue(blocker)) and j.state == "RUNNING", "the blocker to run", timeout=60)
        job = wait_for(lambda: (j := in_squeue(waiting)) and j.reason not in (None, "None") and j, "a reason")
        assert job.state == "PENDING"
        assert job_state(job.state, job.reason) == (JobState.RUNNABLE, job.reason)
        assert job.reason in ("Resources", "Priority")
        commands.scancel(waiting)
        job = wait_for(lambda: ended(waiting), "the cancelled job to end", timeout=30)
        assert job_state(job.state, job.reason) == (JobState.FAILED, "cancelled")
        assert job.start_time is None
    finally:
        commands.scancel(blocker)
        commands.scancel(waiting)
    wait_for(lambda: ended(blocker), "the blocker to end", timeout=60)


def test_partitions_nodes_shares_and_accounts_describe_the_cluster(slurm_cluster: SlurmCluster):
    partitions = {p.name: p for p in commands.partitions()}
    debug = partitions["debug"]
    assert (debug.nodes, debug.gpus_per_node, debug.default) == ((slurm_cluster.local_node,), NODE_GPUS, True)
    assert debug.max_time_s == commands.duration_s(DEBUG_MAX_TIME) == 7200
    if slurm_cluster.namespaced:
        assert partitions["multi"].nodes == tuple(n.name for n in slurm_cluster.namespaced)
    nodes = {n.name: n for n in commands.nodes()}
    local = nodes[slurm_cluster.local_node]
    assert local.gpus == NODE_GPUS and local.address == "127.0.0.1"
    assert {s.account for s in commands.shares() if s.user == "root"} >= set(ACCOUNTS)
    assert commands.user_accounts("root") >= set(ACCOUNTS)
    assert commands.user_accounts("nobody-here") == set()


def test_slurm_refuses_an_unknown_account_with_its_own_message(slurm_cluster: SlurmCluster, tmp_path: Path):
    with pytest.raises(commands.SlurmCommandError, match="sbatch failed: .*(account|association)"):
        submit(tmp_path, "true", "lbm-cmd-bad-account", "--account=no-such-team")
