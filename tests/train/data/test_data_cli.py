from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from diffusion_policy_buffer import push_t_like_episodes, write_diffusion_policy_buffer
from lbm.train.data.replay_buffer import ReplayBuffer


def lbm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lbm.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def synth(out: Path, *options: str) -> subprocess.CompletedProcess:
    return lbm("data", "synth", "--out", str(out), "--image-size", "16", *options)


def test_synth_writes_a_dataset_and_info_describes_it(tmp_path):
    out = tmp_path / "nested" / "reach.zarr"
    done = synth(out, "--tasks", "2", "--episodes-per-task", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote 6 episodes (2 tasks) to {out}"
    buffer = ReplayBuffer.open(str(out))
    assert buffer.n_episodes == 6
    assert buffer["image"].shape[1:] == (16, 16, 3)
    assert sorted(set(buffer.episode_tasks)) == ["reach_green", "reach_red"]

    info = lbm("data", "info", str(out))
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[0] == f"{out}: 6 episodes, {buffer.n_steps} steps"
    assert any(
        line.split()[:2] == ["data/image", "uint8"] and f"[{buffer.n_steps}, 16, 16, 3]" in line
        for line in lines
    )
    assert any(line.split()[:2] == ["reach_red", "3"] and "'reach the red square'" in line for line in lines)


def test_info_describes_a_diffusion_policy_buffer_and_says_where_its_tasks_go(tmp_path):
    episodes = push_t_like_episodes(num_tasks=1, episodes_per_task=2, image_size=16, seed=0)
    url = write_diffusion_policy_buffer(tmp_path / "pusht.zarr", episodes, zarr_format=2)
    info = lbm("data", "info", url)
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    n_steps = sum(len(e["action"]) for e in episodes)
    assert lines[0] == f"{url}: 2 episodes, {n_steps} steps"
    assert [line.split()[0] for line in lines[1:4]] == ["data/action", "data/img", "data/state"]
    assert lines[-1] == (
        "tasks: none stored (a diffusion_policy replay buffer); name them in task.dataset.episode_tasks"
    )


def test_same_seed_same_data_and_force_replaces(tmp_path):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    for out in (a, b):
        assert synth(out, "--tasks", "1", "--episodes-per-task", "2", "--seed", "4").returncode == 0
    np.testing.assert_array_equal(
        ReplayBuffer.open(str(a))["image"][:], ReplayBuffer.open(str(b))["image"][:]
    )

    done = synth(a, "--tasks", "3", "--episodes-per-task", "1", "--force")
    assert done.returncode == 0, done.stderr
    assert ReplayBuffer.open(str(a)).n_episodes == 3


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "ds.zarr"
    done = lbm("data", "synth", "--out", str(out), "--tasks", "0")
    assert done.returncode == 2
    assert done.stderr == "lbm data: error: tasks must be between 1 and 8 (one per goal colour), got 0\n"
    assert list(tmp_path.iterdir()) == []

    done = lbm("data", "synth", "--out", str(out), "--tasks", "x")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "invalid int value" in done.stderr
    assert list(tmp_path.iterdir()) == []

    done = lbm("data", "info", str(out))
    assert done.returncode == 2
    assert (
        done.stderr == f"lbm data: error: no replay buffer at {out}: check the path (`lbm data synth` and "
        "`lbm data metaworld` make one)\n"
    )


def test_existing_dataset_is_not_overwritten(tmp_path):
    out = tmp_path / "ds.zarr"
    assert synth(out, "--tasks", "1", "--episodes-per-task", "1").returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    done = synth(out, "--tasks", "2")
    assert done.returncode == 2
    assert (
        done.stderr == f"lbm data: error: {out} already exists; choose another path or replace it (--force)\n"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds.zarr"]


def test_lbm_data_does_not_import_torch(small_dataset: Path):
    script = (
        "import sys\n"
        "from lbm.cli.main import main\n"
        f"assert main(['data', 'info', {str(small_dataset)!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_synth_and_info_on_s3_through_the_aws_environment(s3_bucket):
    # moto_endpoint puts AWS_ENDPOINT_URL and dummy credentials in the environment the commands inherit
    bucket, _ = s3_bucket
    url = f"{bucket}/reach.zarr"
    done = lbm(
        "data", "synth", "--out", url, "--tasks", "1", "--episodes-per-task", "1", "--image-size", "16"
    )
    assert done.returncode == 0, done.stderr
    info = lbm("data", "info", url)
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith(f"{url}: 1 episodes, ")
