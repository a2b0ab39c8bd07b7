"""`lbm launch` as a real process: dry runs, queuing, bad input, and (slow) real training jobs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import yaml

from lbm.jobs.model import JobState
from lbm.launch.names import is_valid_job_name
from lbm.launch.spec import LaunchSpec
from lbm.launch.submission import plan, submit
from lbm.site import load_site

TINY = "train_diffusion_unet_keypoints_lang_tiny"
QUEUE_ONLY = ("--config-file", TINY, "--queue", "test-held", "--image-uri", "registry.example/jane:dev")
NAME = re.compile(r"^job:\s+(\S+)$", re.MULTILINE)


def launch(world, *args, timeout: float = 120, **env):
    return world.run("lbm", "launch", *args, timeout=timeout, **env)


def files_holding(root, secret: str) -> list:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_dry_run_prints_the_submission_and_queues_nothing(world):
    result = launch(world, "--config-file", TINY, "--num-epochs", "3", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert world.wandb_key not in result.stdout + result.stderr
    spec = yaml.safe_load(result.stdout)
    assert is_valid_job_name(spec["name"]) and spec["name"].startswith("main-lbm-training-")
    assert (spec["owner"], spec["queue"], spec["image_uri"]) == ("main", "test-cpu", world.main_image)
    assert spec["artifact_uri"] == f"file://{world.bucket}/outputs/main-lbm/{spec['name']}/"
    assert spec["command"] == ["lbm", "train", "--config-uri", f"{spec['artifact_uri']}config.yaml"]
    config = yaml.safe_load(spec["resolved_config"])
    assert config["training"]["num_epochs"] == 3 and config["logging"]["name"] == spec["name"]
    assert not (world.home / "jobs.sqlite").exists()
    assert world.job_names() == set() and world.bucket_files() == []


def test_no_wait_queues_the_job_and_keeps_the_key_out_of_every_file(world):
    world.fill_held_queue()
    result = launch(world, *QUEUE_ONLY, "--task-name", "PutCupOnSaucer", "--priority", "3", "--no-wait")
    assert result.returncode == 0, result.stderr
    name = NAME.search(result.stdout).group(1)
    assert name.startswith(f"{world.user}-put-cup-on-saucer-training-")
    assert "queue:     test-held (held, region local)" in result.stdout
    assert f"artifacts: file://{world.bucket}/outputs/{world.user}-single-task/{name}/" in result.stdout
    assert result.stdout.rstrip().endswith("SUBMITTED")

    job = world.backend.describe(name)
    assert job.state in (JobState.SUBMITTED, JobState.RUNNABLE)
    assert (job.owner, job.spec.priority, job.spec.task_name) == (world.user, 3, "PutCupOnSaucer")
    config = yaml.safe_load(job.spec.resolved_config)
    assert config["task"]["dataset"]["tasks"] == ["PutCupOnSaucer"] and config["logging"]["group"] == name
    # The job trains from the config stored in its artifact folder, which is the one stored with the job.
    stored = world.bucket / "outputs" / f"{world.user}-single-task" / name / "config.yaml"
    assert stored.read_text() == job.spec.resolved_config
    assert job.spec.command == ("lbm", "train", "--config-uri", f"file://{stored}")
    assert world.wandb_key not in result.stdout + result.stderr
    assert files_holding(world.home, world.wandb_key) == []
    assert files_holding(world.bucket, world.wandb_key) == []


def test_a_team_without_a_queue_uses_the_shared_one_and_says_so(world):
    result = launch(world, "--config-file", TINY, "--team", "foo", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "# note: team 'foo' has no queue of its own; using the shared queue test-cpu" in result.stdout
    assert yaml.safe_load(result.stdout)["share_identifier"] == "foo"
    spec = yaml.safe_load(launch(world, "--config-file", TINY, "--team", "vla", "--dry-run").stdout)
    assert (spec["queue"], spec["team"]) == ("test-cpu-vla", "vla")


def test_launcher_file_settings_and_flags(world):
    launcher = world.root / "work" / "held.yaml"
    launcher.write_text(
        f"config-file: {TINY}\nqueue: test-held\nimage_uri: registry.example/jane:dev\nnum_epochs: 7\n"
        "config_overrides: training.val_every=2,policy.down_dims=[16,32]\nmax_days: 0.5\n"
    )
    result = launch(world, "--launcher-file", str(launcher), "--num-epochs", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(result.stdout)
    assert spec["queue"] == "test-held" and spec["max_runtime_s"] == 43200
    config = yaml.safe_load(spec["resolved_config"])
    assert (config["training"]["val_every"], config["training"]["num_epochs"]) == (2, 2)
    assert config["policy"]["down_dims"] == [16, 32]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--region", "mars"), ["unknown region 'mars'"]),
        (("--region", "far"), ["no AWS credentials found; log in"]),
        (("--queue", "nope"), ["unknown queue or nickname 'nope'"]),
        (("--instance-type", "p9"), ["unknown instance type 'p9'", "small"]),
        (("--num-epochs", "0"), ["--num-epochs must be 1 or more, got 0"]),
        (("--batch-size", "big"), ["argument --batch-size: invalid int value"]),
        (("--priority", "10000"), ["--priority must be from 0 to 9999"]),
        (("--instance-count", "2"), ["--instance-count 2 needs a multi-machine backend (sagemaker, slurm)"]),
        (("--config-file", "nope"), ["unknown config 'nope'"]),
        (("--config-overrides", "training.nope=1"), ["training.nope"]),
        (("--config-overrides", "policy.down_dims=[64,128"), ["missing ']'"]),
        (("--config-overrides", "dataloader.batch_size=big"), ["dataloader.batch_size='big' is not valid"]),
        (("--launcher-file", "bad-launcher.yaml"), ["unknown key(s) instance_typo", "allowed: config_file"]),
        (("--launcher-file", "missing.yaml"), ["launcher file missing.yaml does not exist"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_queued_or_written(world, args, fragments):
    (world.root / "work" / "bad-launcher.yaml").write_text("instance_typo: p5\n")
    base = ("--config-file", TINY, "--image-uri", "registry.example/jane:dev", "--no-wait")
    world.assert_user_error(launch(world, *base, *args), *fragments)
    assert world.job_names() == set()
    assert world.bucket_files() == []


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ("dataloader.batch_size=-5", "dataloader.batch_size=-5 is not valid: must be >= 1"),
        ("training.max_train_steps=-3", "training.max_train_steps=-3 is not valid: must be >= 1"),
        ("optimizer.lr=-1", "optimizer.lr=-1 is not valid: must be > 0"),
        ("dataloader.num_workers=-2", "dataloader.num_workers=-2 is not valid: must be >= 0"),
        ("horizon=4", "horizon=4 is too short for n_obs_steps=2 and n_action_steps=8"),
        ("policy.obs_encoder.crop_shape=[64,64]", "policy.obs_encoder.crop_shape=[64, 64] is larger than"),
    ],
)
def test_dry_run_with_a_config_value_that_breaks_a_rule_is_one_line_exit_2(world, overrides, fragment):
    result = launch(world, "--config-file", TINY, "--config-overrides", overrides, "--dry-run")
    world.assert_user_error(result, fragment)
    assert result.stdout == ""
    assert not (world.home / "jobs.sqlite").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--num-epochs", "-1"), "--num-epochs must be 1 or more, got -1"),
        (("--batch-size", "-1"), "--batch-size must be 1 or more, got -1"),
        (("--batch-size", "0"), "--batch-size must be 1 or more, got 0"),
        (("--max-days", "0"), "--max-days must be a number of days above 0, got 0.0"),
        (("--max-days", "-2"), "--max-days must be a number of days above 0"),
        (("--max-days", "inf"), "--max-days must be a number of days above 0, got inf"),
        (("--max-days", "nan"), "--max-days must be a number of days above 0, got nan"),
        (("--instance-count", "0"), "--instance-count must be 1 or more, got 0"),
        (("--nproc-per-node", "0"), "--nproc-per-node must be 1 or more, got 0"),
        (("--priority", "-1"), "--priority must be from 0 to 9999, got -1"),
        (("--retries", "10"), "--retries must be from 0 to 9, got 10"),
        (("--retries", "-1"), "--retries must be from 0 to 9, got -1"),
        (("--retries", "1.5"), "argument --retries: invalid int value"),
    ],
)
def test_dry_run_with_a_bad_number_is_one_line_exit_2(world, args, fragment):
    result = launch(world, "--config-file", TINY, *args, "--dry-run")
    world.assert_user_error(result, fragment)
    assert result.stdout == ""


def test_without_a_config_file_the_default_needs_a_dataset_and_says_so(world):
    result = launch(world, "--dry-run")
    world.assert_user_error(
        result,
        "no --config-file given, so the default config train_diffusion_unet_clip_lang_stage_base is used",
        "it needs a dataset: add --config-overrides task.dataset_path=",
        "or choose a config that makes its own data with --config-file (",
        TINY,
    )
    result = launch(world, "--config-overrides", "task.dataset_path=s3://team/lbm.zarr", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert (
        "# note: no --config-file given: using the default config train_diffusion_unet_clip_lang_stage_base, "
        "which trains on the dataset at task.dataset_path (s3://team/lbm.zarr)"
    ) in result.stdout
    config = yaml.safe_load(yaml.safe_load(result.stdout)["resolved_config"])
    assert config["task"]["dataset_path"] == "s3://team/lbm.zarr"


def test_an_unwritable_bucket_is_a_user_error(world):
    blocker = world.root / "not-a-dir"
    blocker.write_text("a file where the bucket's folder should be")
    site = world.root / "unwritable-site.yaml"
    site.write_text(
        (world.root / "site.yaml").read_text().replace(f"file://{world.bucket}", f"file://{blocker}")
    )
    result = launch(world, *QUEUE_ONLY, "--no-wait", LBM_SITE=str(site))
    world.assert_user_error(result, f"bucket file://{blocker}/outputs is not writable")
    assert world.job_names() == set()


def gpu_site(world) -> str:
    """The world's site with two GPUs of type gpu-x, a queue of both and a queue without capacity."""
    site = world.root / "gpu-site.yaml"
    vla = "      - {name: test-cpu-vla, instanceType: cpu, capacity: 1, team: vla}\n"
    text = (
        (world.root / "site.yaml")
        .read_text()
        .replace("    prefix: outputs\n", "    prefix: outputs\n    gpuDevices: {gpu-x: [0, 1]}\n")
    )
    site.write_text(
        text.replace(
            vla,
            vla
            + "      - {name: test-gpu-two, instanceType: gpu-x, capacity: 2}\n"
            + "      - {name: test-gpu-none, instanceType: gpu-x, capacity: 0}\n",
        )
    )
    return str(site)


def test_a_queue_without_capacity_takes_the_job_which_waits(world):
    site = gpu_site(world)
    result = launch(
        world,
        *QUEUE_ONLY[:2],
        "--queue",
        "test-gpu-none",
        "--nproc-per-node",
        "2",
        "--no-wait",
        LBM_SITE=site,
    )

    assert result.returncode == 0, result.stderr
    assert (
        "note: queue test-gpu-none has no capacity now; the job waits RUNNABLE until it gets some"
        in result.stdout
    )
    name = NAME.search(result.stdout).group(1)
    assert world.wait_state(name, [JobState.RUNNABLE]).attempts == []
    usage = json.loads(world.run("sagey", "usage", "--json", LBM_SITE=site).stdout)
    gpu = next(entry for entry in usage if entry["instance_type"] == "gpu-x")
    assert (gpu["running"], gpu["pending"], gpu["quota"]) == (0, 1, 2)


def test_more_gpus_than_a_queue_can_give_is_one_line_and_nothing_queued(world):
    result = launch(
        world,
        *QUEUE_ONLY[:2],
        "--queue",
        "test-gpu-two",
        "--nproc-per-node",
        "3",
        "--no-wait",
        LBM_SITE=gpu_site(world),
    )

    world.assert_user_error(
        result, "job needs 3 GPUs (--nproc-per-node 3) but queue test-gpu-two can give at most 2 gpu-x GPUs"
    )
    assert world.job_names() == set()


def test_a_taken_name_moves_on_by_a_millisecond(world):
    world.fill_held_queue()
    submission = plan(
        LaunchSpec(config_file=TINY, queue="test-held", image_uri="registry.example/jane:dev"), load_site()
    )
    moment = datetime(2025, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    first = submit(submission, world.backend, {}, now=lambda: moment)
    second = submit(submission, world.backend, {}, now=lambda: moment)
    assert first.name == f"{world.user}-lbm-training-2025-01-02-03-04-05-006"
    assert second.name == f"{world.user}-lbm-training-2025-01-02-03-04-05-007"


def test_launch_imports_no_torch(world):
    code = f"from lbm.cli.main import main; main(['launch', '--config-file', {TINY!r}, '--dry-run'])"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=world.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    assert "hydra" in imported and imported.isdisjoint({"torch", "transformers", "diffusers"})


@pytest.mark.slow
def test_twenty_concurrent_launches_get_twenty_distinct_jobs(world):
    world.fill_held_queue()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: launch(world, *QUEUE_ONLY, "--no-wait"), range(20)))
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    names = {NAME.search(r.stdout).group(1) for r in results}
    assert len(names) == 20 and all(is_valid_job_name(n) for n in names)
    assert world.job_names() == names | {"blocker"}


@pytest.mark.slow
def test_launch_returns_0_once_the_job_runs(world):
    result = launch(
        world, "--config-file", TINY, "--image-uri", "registry.example/jane:dev", "--num-epochs", "50"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    name = NAME.search(result.stdout).group(1)
    states = re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\w+)", result.stdout, re.MULTILINE)
    # Every state the job went through, in order, also those that passed between two of the launcher's polls.
    assert states == ["SUBMITTED", "RUNNABLE", "STARTING", "RUNNING"]
    assert f"follow its log with: sagey logs {name}" in result.stdout
    assert world.backend.describe(name).state is JobState.RUNNING  # 50 epochs take minutes
    stopped = world.run("sagey", "stop", name)
    assert stopped.returncode == 0, stopped.stderr
    assert world.wait_state(name, [JobState.FAILED]).status_reason == "stopped by user"


@pytest.mark.slow
def test_follow_of_a_failing_job_streams_its_log_and_returns_1(world):
    result = launch(
        world,
        "--config-file",
        TINY,
        "--image-uri",
        "registry.example/jane:dev",
        "--config-overrides",
        f"task.dataset_path={world.root}/no-such-dataset.zarr,task.synthesize=null",
        "--follow",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    name = NAME.search(result.stdout).group(1)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d FAILED - exit code \d+$", result.stdout, re.MULTILINE)
    log = world.backend.home.attempt_log(name, 0).read_text()
    assert log.strip() and log.strip().splitlines()[-1] in result.stdout
    assert (
        result.stdout.rstrip().splitlines()[-1] == f"artifacts: {world.backend.describe(name).artifact_uri}"
    )


@pytest.mark.slow
def test_follow_of_a_short_training_run_ends_succeeded(world):
    result = launch(
        world,
        "--config-file",
        TINY,
        "--num-epochs",
        "1",
        "--config-overrides",
        "training.max_train_steps=2,training.log_every=1,dataloader.num_workers=0",
        "--follow",
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    name = NAME.search(result.stdout).group(1)
    assert "[metrics] step=" in result.stdout
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d SUCCEEDED$", result.stdout, re.MULTILINE)
    artifact = world.bucket / "outputs" / "main-lbm" / name
    world.wait_for(lambda: (artifact / "metrics.jsonl").exists(), "metrics.jsonl in the bucket")
    summary = world.run("batchy", "model-metrics", "test-cpu", name, "--json")
    assert summary.returncode == 0, summary.stderr
