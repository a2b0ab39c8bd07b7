"""Checkpoint files: atomic, checksummed, corrupt ones skipped, top-k by val_loss plus latest kept."""

from __future__ import annotations

import torch

from lbm.train import checkpoint as ckpt


def state(step: int, epoch: int = 0) -> dict:
    return {"step": step, "epoch": epoch, "weights": torch.full((4,), float(step))}


def test_written_checkpoint_is_complete_and_loads(tmp_path):
    info = ckpt.write_checkpoint(state(10), tmp_path / "epoch_0-step_10.ckpt", val_loss=0.5)
    assert ckpt.read_info(info.path) == info
    loaded = ckpt.load_checkpoint(info.path, info.sha256)
    assert torch.equal(loaded["weights"], torch.full((4,), 10.0))
    assert not list(tmp_path.glob(".*partial"))


def test_corrupt_or_truncated_newest_is_skipped_for_the_previous(tmp_path, caplog):
    ckpt.write_checkpoint(state(10), tmp_path / "epoch_0-step_10.ckpt", None)
    newest = ckpt.write_checkpoint(state(20), tmp_path / "epoch_0-step_20.ckpt", None)
    data = newest.path.read_bytes()
    newest.path.write_bytes(data[: len(data) // 2])
    chosen = ckpt.latest_complete(tmp_path)
    assert chosen is not None and chosen.step == 10
    assert "epoch_0-step_20.ckpt" in caplog.text


def test_checkpoint_without_sidecar_is_incomplete(tmp_path):
    info = ckpt.write_checkpoint(state(30), tmp_path / "epoch_1-step_30.ckpt", None)
    info.sidecar.unlink()
    assert ckpt.latest_complete(tmp_path) is None


def test_keeper_keeps_topk_by_val_loss_plus_latest(tmp_path):
    written, removed = [], []
    keeper = ckpt.CheckpointKeeper(
        tmp_path,
        topk=2,
        on_written=lambda i: written.append(i.step),
        on_removed=lambda p: removed.append(p.name),
    )
    for step, val_loss in [(10, 0.9), (20, 0.3), (30, 0.5), (40, 0.8), (50, None)]:
        keeper.save(ckpt.snapshot(state(step)), val_loss)
    keeper.wait()
    kept = sorted(int(ckpt.CHECKPOINT_PATTERN.match(p.name).group(2)) for p in ckpt.checkpoints_in(tmp_path))
    assert kept == [20, 30, 50]
    assert written == [10, 20, 30, 40, 50]
    assert sorted(removed) == ["epoch_0-step_10.ckpt", "epoch_0-step_40.ckpt"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "epoch_0-step_20.ckpt.json",
        "epoch_0-step_30.ckpt.json",
        "epoch_0-step_50.ckpt.json",
    ]


def test_snapshot_is_not_changed_by_later_updates():
    weights = torch.zeros(3)
    copy = ckpt.snapshot({"w": weights, "nested": [weights]})
    weights.add_(1.0)
    assert torch.equal(copy["w"], torch.zeros(3)) and torch.equal(copy["nested"][0], torch.zeros(3))


def test_keeper_monitoring_a_success_rate_keeps_the_highest_and_survives_a_restart(tmp_path):
    keeper = ckpt.CheckpointKeeper(tmp_path, topk=2, monitor_key="test_mean_score", mode="max")
    for step, score in [(10, 0.2), (20, 0.9), (30, 0.5), (40, 0.7), (50, None)]:
        keeper.save(ckpt.snapshot(state(step)), val_loss=0.1, score=score)
    keeper.wait()
    assert sorted(ckpt.step_of(p.name) for p in ckpt.checkpoints_in(tmp_path)) == [20, 40, 50]
    assert ckpt.read_info(tmp_path / "epoch_0-step_20.ckpt").score == 0.9
    # A new keeper (a resumed run) ranks the checkpoints already there by their saved scores.
    again = ckpt.CheckpointKeeper(tmp_path, topk=2, monitor_key="test_mean_score", mode="max")
    again.save(ckpt.snapshot(state(60)), val_loss=0.1, score=0.8)
    again.wait()
    assert sorted(ckpt.step_of(p.name) for p in ckpt.checkpoints_in(tmp_path)) == [20, 60]


def test_keeper_removes_a_write_that_a_killed_run_left_unfinished(tmp_path):
    done = ckpt.write_checkpoint(state(10), tmp_path / "epoch_0-step_10.ckpt", None)
    unfinished = tmp_path / ".epoch_0-step_20.ckpt.partial"
    unfinished.write_bytes(b"half a checkpoint")
    ckpt.CheckpointKeeper(tmp_path, topk=1)
    assert not unfinished.exists()
    assert ckpt.latest_complete(tmp_path) == done
