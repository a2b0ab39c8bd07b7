"""`batchy` as a real process against the real local backend and agent."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from lbm.jobs.model import JobState

FINISHED = (JobState.SUCCEEDED, JobState.FAILED)


def test_list_queues_table_and_json(world):
    world.run("batchy", "add-nickname", "hq", "test-held")
    queues = {q["name"]: q for q in json.loads(world.run("batchy", "list-queues", "--json").stdout)}
    assert list(queues) == ["test-cpu", "test-held", "test-cpu-vla"]
    assert queues["test-cpu"]["capacity"] == 2 and queues["test-cpu"]["nicknames"] == ["c"]
    assert queues["test-held"]["nicknames"] == ["hq"]
    assert queues["test-cpu-vla"]["team"] == "vla"

    rows = [line.split() for line in world.run("batchy", "list-queues").stdout.splitlines()]
    assert next(r for r in rows if r and r[0] == "test-cpu")[:4] == ["test-cpu", "cpu", "2", "shared"]
    assert next(r for r in rows if r and r[0] == "test-cpu-vla")[:4] == ["test-cpu-vla", "cpu", "1", "vla"]


def test_ls_shows_running_then_waiting_jobs_of_one_queue(world):
    world.fill_held_queue()
    world.submit("wait-1", "print(1)", queue="test-held")
    world.submit("wait-2", "print(2)", queue="test-held", owner="bob", priority=9)
    world.submit("elsewhere", "print(3)")
    world.wait_state("elsewhere", FINISHED)

    jobs = json.loads(world.run("batchy", "ls", "test-held", "--json").stdout)
    assert [(j["name"], j["state"]) for j in jobs] == [
        ("blocker", "RUNNING"),
        ("wait-1", "RUNNABLE"),
        ("wait-2", "RUNNABLE"),
    ]
    table = world.run("batchy", "ls", "test-held").stdout.splitlines()
    assert "test-held: 1 running, 2 in queue" in table[0]
    rows = [line.split() for line in table[2:]]
    assert [r[:5] for r in rows] == [
        ["blocker", "RUNNING", "ops", "ops", "0"],
        ["wait-1", "RUNNABLE", "jane-doe", "jane-doe", "0"],
        ["wait-2", "RUNNABLE", "bob", "bob", "9"],
    ]


def test_completed_jobs_newest_first_with_reason(world):
    world.submit("ok", "print('fine')")
    world.wait_state("ok", FINISHED)
    world.submit("bad", "import sys; sys.exit(4)")
    world.wait_state("bad", FINISHED)
    world.submit("running", world.held_program("r"))
    world.wait_state("running", [JobState.RUNNING])

    jobs = json.loads(world.run("batchy", "completed-jobs", "test-cpu", "--json").stdout)
    assert [(j["name"], j["state"], j["status_reason"]) for j in jobs] == [
        ("bad", "FAILED", "exit code 4"),
        ("ok", "SUCCEEDED", None),
    ]
    assert [
        j["name"]
        for j in json.loads(world.run("batchy", "completed-jobs", "c", "--json", "--limit", "1").stdout)
    ] == ["bad"]
    rows = [
        line.split() for line in world.run("batchy", "completed-jobs", "test-cpu").stdout.splitlines()[2:]
    ]
    assert [r[:2] for r in rows] == [["bad", "FAILED"], ["ok", "SUCCEEDED"]]
    assert rows[0][-3:] == ["exit", "code", "4"]


def test_cancel_a_queued_job_and_the_force_rule(world):
    world.fill_held_queue()
    world.submit("mine", "print(1)", queue="test-held")
    world.submit("bobs", "print(2)", queue="test-held", owner="bob")

    world.assert_user_error(
        world.run("batchy", "cancel", "test-cpu", "mine"), "job mine is in queue test-held, not test-cpu"
    )
    result = world.run("batchy", "cancel", "test-held", "mine")
    assert result.returncode == 0, result.stderr
    assert "mine: RUNNABLE -> FAILED (cancelled in queue)" in result.stdout
    assert world.backend.describe("mine").status_reason == "cancelled in queue"

    world.assert_user_error(
        world.run("batchy", "cancel-job", "test-held", "bobs"), "belongs to 'bob'", "--force"
    )
    assert world.backend.describe("bobs").state is JobState.RUNNABLE
    assert world.run("batchy", "cancel-job", "test-held", "bobs", "--force").returncode == 0
    assert world.backend.describe("bobs").state is JobState.FAILED

    world.assert_user_error(
        world.run("batchy", "cancel", "test-held", "blocker", "--force"), "is RUNNING", "sagey stop blocker"
    )
    world.assert_user_error(world.run("batchy", "cancel", "test-held", "mine"), "already ended (FAILED)")
    assert world.backend.describe("blocker").state is JobState.RUNNING


def test_model_metrics_from_the_artifact_metrics_jsonl(world):
    job = world.submit("trained", "print('trained')")
    world.wait_state("trained", FINISHED)
    artifact = world.bucket / "outputs" / "jane-doe-lbm" / "trained"
    artifact.mkdir(parents=True, exist_ok=True)  # the job may have written its archive there already
    records = []
    for step in range(0, 200, 10):
        record = {"step": step, "epoch": step // 50, "train_loss": 1.0 / (1 + step), "lr": 1e-4}
        if step % 50 == 0:
            record["val_loss"] = 0.5 + abs(step - 100) / 1000
        records.append(record)
    (artifact / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 2')
    assert job.artifact_uri == f"file://{artifact}/"

    summary = json.loads(world.run("batchy", "model-metrics", "test-cpu", "trained", "--json").stdout)
    assert summary["records"] == 20
    assert summary["final"] == {"step": 190, "epoch": 3, "train_loss": 1 / 191, "val_loss": 0.55}
    assert summary["best"]["val_loss"] == {"value": 0.5, "step": 100, "epoch": 2}
    assert summary["best"]["train_loss"] == {"value": 1 / 191, "step": 190, "epoch": 3}
    curve = summary["curve"]["train_loss"]["line"]
    assert len(curve) == 20 and curve[0] == "█" and curve[-1] == "▁"
    assert summary["curve"]["val_loss"]["line"] == "█▅▁▅"  # 0.6, 0.55, 0.5, 0.55

    text = world.run("batchy", "model-metrics", "c", "trained").stdout
    assert "final:   step 190, epoch 3" in text
    assert any(line.split()[:5] == ["val_loss", "0.55", "0.5", "100", "2"] for line in text.splitlines())
    assert f"train_loss  {curve}" in text


def test_model_metrics_show_the_success_rate_of_rollouts_beside_the_losses(world):
    world.submit("rolled", "print('rolled')")
    world.wait_state("rolled", FINISHED)
    artifact = world.bucket / "outputs" / "jane-doe-lbm" / "rolled"
    artifact.mkdir(parents=True, exist_ok=True)  # the job may have written its archive there already
    records = [
        {"step": 50, "epoch": 1, "train_loss": 0.2, "val_loss": 0.3},
        {
            "step": 100,
            "epoch": 2,
            "train_loss": 0.1,
            "val_loss": 0.2,
            "test_mean_score": 0.9,
            "test_success_reach_red": 1.0,
            "test_success_reach_blue": 0.8,
        },
        {
            "step": 150,
            "epoch": 3,
            "train_loss": 0.05,
            "val_loss": 0.25,
            "test_mean_score": 0.7,
            "test_success_reach_red": 0.6,
            "test_success_reach_blue": 0.8,
        },
    ]
    (artifact / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    summary = json.loads(world.run("batchy", "model-metrics", "test-cpu", "rolled", "--json").stdout)
    assert summary["best"]["test_mean_score"] == {"value": 0.9, "step": 100, "epoch": 2}
    assert summary["best"]["val_loss"]["value"] == 0.2
    assert summary["final"]["test_mean_score"] == 0.7 and summary["final"]["rollout_step"] == 150
    assert summary["final"]["task_success"] == {"reach_red": 0.6, "reach_blue": 0.8}

    text = world.run("batchy", "model-metrics", "test-cpu", "rolled").stdout
    assert any(
        line.split()[:5] == ["test_mean_score", "0.7", "0.9", "100", "2"] for line in text.splitlines()
    )
    assert "success: 70% at step 150 (reach_red 60%, reach_blue 80%)" in text


def test_model_metrics_without_metrics_is_a_clear_error(world):
    world.submit("fresh", "print(1)")
    world.wait_state("fresh", FINISHED)
    world.assert_user_error(
        world.run("batchy", "model-metrics", "test-cpu", "fresh"), "no metrics at file://", "metrics.jsonl"
    )


def test_nicknames_persist_and_work_for_every_queue_command(world):
    result = world.run("batchy", "add-nickname", "p5", "test-held")
    assert result.returncode == 0, result.stderr
    saved = world.root / "config" / "nicknames.yaml"
    assert yaml.safe_load(saved.read_text()) == {"p5": "test-held"}
    assert world.run("batchy", "add-queue", "vla", "test-cpu-vla").returncode == 0
    assert yaml.safe_load(saved.read_text()) == {"p5": "test-held", "vla": "test-cpu-vla"}

    world.fill_held_queue()
    assert [j["name"] for j in json.loads(world.run("batchy", "ls", "p5", "--json").stdout)] == ["blocker"]
    assert json.loads(world.run("batchy", "ls", "vla", "--json").stdout) == []

    before = saved.read_text()
    world.assert_user_error(
        world.run("batchy", "add-nickname", "x", "no-such-queue"), "unknown queue or nickname 'no-such-queue'"
    )
    world.assert_user_error(world.run("batchy", "ls", "nope"), "unknown queue or nickname 'nope'", "test-cpu")
    assert saved.read_text() == before


def test_bad_input_is_one_line_and_exit_2(world):
    world.assert_user_error(
        world.run("batchy", "completed-jobs", "test-cpu", "--limit", "-5"),
        "argument --limit: must be 0 or more",
    )
    world.assert_user_error(world.run("batchy", "model-metrics", "test-cpu", "ghost"), "no job named 'ghost'")
    world.assert_user_error(world.run("batchy", "cancel", "test-cpu", "ghost"), "no job named 'ghost'")
    world.assert_user_error(world.run("batchy", "list-queues", "--region", "mars"), "unknown region 'mars'")
    world.assert_user_error(
        world.run("batchy", "ls", "far-p5", "--region", "far"), "no AWS credentials found; log in"
    )
    world.assert_user_error(  # the queues come from AWS
        world.run("batchy", "list-queues", "--json", AWS_DEFAULT_REGION="far"), "no AWS credentials found"
    )


def test_batchy_imports_no_torch_hydra_or_omegaconf(world):
    world.submit("done", "print(1)")
    world.wait_state("done", FINISHED)
    for args in (["list-queues"], ["ls", "test-cpu"], ["completed-jobs", "test-cpu"]):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"from lbm.cli.batchy import main; main({args!r})"],
            env=world.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
        assert imported.isdisjoint({"torch", "hydra", "omegaconf", "transformers", "diffusers"}), args
