from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SITE_YAML = """\
defaultRegion: here
mainImage: registry.example/lbm:main
instanceAliases: {small: cpu}
regions:
  here:
    backend: local
    bucket: file://{bucket}
    prefix: outputs
    queues:
      - {name: here-cpu, instanceType: cpu, capacity: 1, nicknames: [c]}
      - {name: here-gpu-a100, instanceType: gpu-a100, capacity: 2}
      - {name: here-cpu-vla, instanceType: cpu, capacity: 1, team: vla}
      - {name: here-cpu-dp, instanceType: cpu, capacity: 0, team: dp}
  there:
    backend: sagemaker
    bucket: s3://some-bucket
    prefix: sagemaker_outputs
    sagemaker: {account: "123456789012", roleArn: "arn:aws:iam::123456789012:role/lbm-training"}
    queues:
      - {name: there-p5, instanceType: ml.p5.48xlarge, capacity: 4}
"""


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A user `jane-doe` (git user.email) with their own LBM_HOME and config dir, outside any git repo."""
    gitconfig = tmp_path / "gitconfig"
    subprocess.run(
        ["git", "config", "--file", str(gitconfig), "user.email", "Jane.Doe@example.com"], check=True
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("LBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LBM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("LBM_SITE", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return "jane-doe"


@pytest.fixture
def site_file(user: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A two-region site: `here` (local backend, main image set) and `there` (sagemaker)."""
    path = tmp_path / "site.yaml"
    path.write_text(SITE_YAML.replace("{bucket}", str(tmp_path / "bucket")))
    monkeypatch.setenv("LBM_SITE", str(path))
    return path
