"""The end-of-job archive: which files go in, under which names, with secrets redacted."""

from __future__ import annotations

import tarfile
from pathlib import Path

from lbm.storage.archive import archive_members, upload_archive

KEY = "wandb-key-0123456789abcdef"


def make_run(output_dir: Path) -> list[Path]:
    logs = output_dir / "logs"
    logs.mkdir(parents=True)
    (logs / "attempt-0.log").write_text(f"starting with key {KEY}\n")
    (logs / "attempt-1.log").write_text("resumed\n")
    (output_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (output_dir / "wandb" / "run-1" / "files").mkdir(parents=True)
    (output_dir / "wandb" / "run-1" / "files" / "config.yaml").write_text(f"api_key: {KEY}\n")
    (output_dir / "wandb" / "run-1" / "run.wandb").write_bytes(b"\x00\xffbinary" + KEY.encode() + b"\x00")
    (output_dir / "epoch_0-step_10.ckpt").write_bytes(b"weights")
    return [logs / "attempt-0.log", logs / "attempt-1.log"]


def test_members_are_logs_metrics_and_wandb_only(tmp_path: Path):
    logs = make_run(tmp_path)

    names = [name for _, name in archive_members(tmp_path, logs)]

    assert names == [
        "logs/attempt-0.log",
        "logs/attempt-1.log",
        "metrics.jsonl",
        "wandb/run-1/files/config.yaml",
        "wandb/run-1/run.wandb",
    ]


def test_uploaded_archive_has_secrets_redacted(tmp_path: Path):
    output_dir = tmp_path / "run"
    logs = make_run(output_dir)
    artifact = f"file://{tmp_path / 'bucket' / 'ann-lbm' / 'job'}/"

    url = upload_archive(output_dir, logs, artifact, [KEY])

    assert url == f"{artifact}output/output.tar.gz"
    with tarfile.open(url.removeprefix("file://")) as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert contents["logs/attempt-0.log"] == b"starting with key [REDACTED]\n"
    assert contents["wandb/run-1/run.wandb"] == b"\x00\xffbinary[REDACTED]\x00"
    assert all(KEY.encode() not in data for data in contents.values())
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "epoch_0-step_10.ckpt",
        "logs",
        "metrics.jsonl",
        "wandb",
    ]
