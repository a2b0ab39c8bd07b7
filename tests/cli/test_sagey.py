"""`sagey` as a real process against the real local backend and agent."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading

from lbm.jobs.model import JobState

FINISHED = (JobState.SUCCEEDED, JobState.FAILED)


def test_ls_shows_running_queued_and_finished_jobs(world):
    world.fill_held_queue()
    world.submit("run-a", world.held_program("a"))
    world.submit("wait-b", "print('b')", queue="test-held")
    world.submit("done-c", "print('c')")
    world.wait_state("run-a", [JobState.RUNNING])
    world.wait_state("done-c", [JobState.SUCCEEDED])
    world.submit("other-d", "print('d')", queue="test-held", owner="bob")

    result = world.run("sagey", "ls")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line.strip()}
    assert rows["run-a"][1:3] == ["RUNNING", "test-cpu"]
    assert rows["wait-b"][1:3] == ["RUNNABLE", "test-held"]
    assert rows["done-c"][1] == "SUCCEEDED"
    assert rows["other-d"][3] == "bob"

    listed = json.loads(world.run("sagey", "ls", "--json").stdout)
    assert [job["name"] for job in listed] == ["other-d", "done-c", "wait-b", "run-a", "blocker"]
    done = next(job for job in listed if job["name"] == "done-c")
    assert done["state"] == "SUCCEEDED" and done["attempts"][0]["exit_code"] == 0
    assert done["owner"] == world.user and done["command"][0] == sys.executable

    mine = json.loads(world.run("sagey", "ls", "--json", "--mine").stdout)
    assert {job["name"] for job in mine} == {"run-a", "wait-b", "done-c"}
    recent = json.loads(world.run("sagey", "ls", "--json", "--limit", "0").stdout)
    assert {job["name"] for job in recent} == {"run-a", "wait-b", "other-d", "blocker"}


def test_ls_limits_the_ended_jobs_and_all_shows_every_one(world):
    for index in range(3):
        world.submit(f"done-{index}", "print(1)")
        world.wait_state(f"done-{index}", FINISHED)
    newest = json.loads(world.run("sagey", "ls", "--json", "--limit", "2").stdout)
    assert [job["name"] for job in newest] == ["done-2", "done-1"]
    every = json.loads(world.run("sagey", "ls", "--json", "--all").stdout)
    assert [job["name"] for job in every] == ["done-2", "done-1", "done-0"]
    table = world.run("sagey", "ls", "--all")
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == ["done-2", "done-1", "done-0"]


def test_usage_counts_running_pending_and_quota_per_instance_type(world):
    world.fill_held_queue()
    world.submit("run-a", world.held_program("a"))
    world.submit("wait-b", "print('b')", queue="test-held")
    world.submit("wait-c", "print('c')", queue="test-held")
    world.wait_state("run-a", [JobState.RUNNING])

    usage = {
        entry["instance_type"]: entry for entry in json.loads(world.run("sagey", "usage", "--json").stdout)
    }
    assert (usage["cpu"]["running"], usage["cpu"]["pending"], usage["cpu"]["quota"]) == (1, 0, 3)
    assert (usage["held"]["running"], usage["held"]["pending"], usage["held"]["quota"]) == (1, 2, 1)
    assert {q["queue"] for q in usage["cpu"]["queues"]} == {"test-cpu", "test-cpu-vla"}

    table = world.run("sagey", "usage").stdout.splitlines()
    assert table[0].split()[:5] == ["INSTANCE", "TYPE", "RUNNING", "PENDING", "QUOTA"]
    assert table[1].split()[:4] == ["cpu", "1", "0", "3"]
    assert table[2].split()[:4] == ["held", "1", "2", "1"]


def test_stop_of_a_running_job_kills_its_process_group(world):
    world.submit("run-a", world.held_program("a"))
    world.wait_state("run-a", [JobState.RUNNING])
    pid = world.program_pid("a")

    result = world.run("sagey", "stop", "run-a")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "run-a: RUNNING -> FAILED (stopped by user)\n"
    job = world.backend.describe("run-a")
    assert (job.state, job.status_reason) == (JobState.FAILED, "stopped by user")
    assert not _alive(pid)


def test_stop_of_a_queued_job_cancels_it(world):
    world.fill_held_queue()
    world.submit("wait-b", "print('b')", queue="test-held")
    result = world.run("sagey", "stop", "wait-b")
    assert result.stdout == "wait-b: RUNNABLE -> FAILED (cancelled in queue)\n", result.stderr
    job = world.backend.describe("wait-b")
    assert (job.state, job.status_reason) == (JobState.FAILED, "cancelled in queue")


def test_stopping_another_users_or_a_main_job_needs_force(world):
    world.fill_held_queue()
    world.submit("bobs", world.held_program("bob"), owner="bob")
    world.submit("mains", "print('m')", queue="test-held", owner="main")
    world.wait_state("bobs", [JobState.RUNNING])

    world.assert_user_error(world.run("sagey", "stop", "bobs"), "belongs to 'bob'", "--force")
    world.assert_user_error(world.run("sagey", "stop", "mains"), "belongs to 'main'", "--force")
    assert world.backend.describe("bobs").state is JobState.RUNNING
    assert world.backend.describe("mains").state is JobState.RUNNABLE

    assert world.run("sagey", "stop", "bobs", "--force").returncode == 0
    assert world.run("sagey", "stop", "mains", "--force").returncode == 0
    assert world.wait_state("bobs", FINISHED).status_reason == "stopped by user"
    assert world.backend.describe("mains").status_reason == "cancelled in queue"
    world.assert_user_error(world.run("sagey", "stop", "mains", "--force"), "already ended (FAILED)")


def test_logs_of_a_finished_job_tail_or_from_head(world):
    world.submit("chatty", "for i in range(150): print(f'line {i}')")
    world.wait_state("chatty", [JobState.SUCCEEDED])

    tail = world.run("sagey", "logs", "chatty").stdout.splitlines()
    assert tail[-1] == "line 149"
    assert "line 0" not in tail and len(tail) < 150
    head = world.run("sagey", "logs", "chatty", "--startfromhead").stdout.splitlines()
    assert head == [f"line {i}" for i in range(150)]


def test_logs_follow_a_running_job_line_by_line_until_it_ends(world):
    world.submit("live", world.held_program("live", before=2, after=3))
    world.wait_state("live", [JobState.RUNNING])
    follower = subprocess.Popen(
        [str(world.bin / "sagey"), "logs", "live", "--startfromhead"],
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True)
    reader.start()
    seen: list[str] = []

    def got(count: int) -> bool:
        while not lines.empty():
            seen.append(lines.get().rstrip("\n"))
        return len(seen) >= count

    world.wait_for(lambda: got(2), "the lines written so far")
    assert seen == ["live before 0", "live before 1"]
    assert follower.poll() is None
    world.release("live")
    assert follower.wait(timeout=60) == 0
    reader.join(timeout=10)
    got(5)
    assert seen == ["live before 0", "live before 1", "live after 0", "live after 1", "live after 2"]


def test_logs_into_a_pipe_that_closes_early(world):
    world.submit("long", "for i in range(20000): print('wandb.ai/run/x' if i == 5 else f'line {i}')")
    world.wait_state("long", [JobState.SUCCEEDED])
    result = subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"{world.bin / 'sagey'} logs long --startfromhead | grep -m1 wandb.ai",
        ],
        env=world.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "wandb.ai/run/x\n", "")


def test_describe_text_and_json(world):
    world.submit("fails", "import sys; print('oops'); sys.exit(3)", priority=5, retries=1)
    job = world.wait_state("fails", FINISHED)
    assert (job.state, job.status_reason, len(job.attempts)) == (JobState.FAILED, "exit code 3", 2)

    text = world.run("sagey", "describe", "fails").stdout
    assert "state:       FAILED - exit code 3" in text
    assert f"share:       {world.user}, priority 5" in text
    assert "ATTEMPT" in text and "attempt-1.log" in text

    record = json.loads(world.run("sagey", "describe", "fails", "--json").stdout)
    assert record["name"] == "fails" and record["state"] == "FAILED"
    assert [a["exit_code"] for a in record["attempts"]] == [3, 3]
    assert record["artifact_uri"].endswith("/outputs/jane-doe-lbm/fails/")
    assert world.wandb_key not in json.dumps(record)


def test_bad_input_is_one_line_and_exit_2(world):
    world.assert_user_error(world.run("sagey", "describe", "nope"), "no job named 'nope'")
    world.assert_user_error(world.run("sagey", "stop", "nope"), "no job named 'nope'")
    world.assert_user_error(world.run("sagey", "logs", "nope"), "no job named 'nope'")
    world.assert_user_error(world.run("sagey", "ls", "--region", "mars"), "unknown region 'mars'")
    world.assert_user_error(world.run("sagey", "ls", "--region", "far"), "no AWS credentials found; log in")
    world.assert_user_error(
        world.run("sagey", "ls", AWS_DEFAULT_REGION="far"), "no AWS credentials found; log in"
    )
    world.assert_user_error(world.run("sagey", "frobnicate"), "invalid choice")
    world.assert_user_error(
        world.run("sagey", "ls", "--limit", "-1"), "argument --limit: must be 0 or more, got -1"
    )
    world.assert_user_error(
        world.run("sagey", "ls", "--limit", "ten"), "argument --limit: must be a whole number"
    )
    world.assert_user_error(
        world.run("sagey", "ls", "--all", "--limit", "3"), "not allowed with argument --all"
    )
    assert world.run("sagey", "ls", "--profile", "sagemaker", AWS_DEFAULT_REGION="us-east-1").returncode == 0


def test_sagey_imports_no_torch_hydra_or_omegaconf(world):
    world.submit("done", "print(1)")
    world.wait_state("done", [JobState.SUCCEEDED])
    for args in (["ls"], ["usage"], ["describe", "done"], ["logs", "done"]):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"from lbm.cli.sagey import main; main({args!r})"],
            env=world.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
        assert imported.isdisjoint({"torch", "hydra", "omegaconf", "transformers", "diffusers"}), args


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
