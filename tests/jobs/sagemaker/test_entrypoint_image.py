"""The training image's Dockerfile and its build-and-push script. No Docker engine runs here, so the
Dockerfile is checked as far as it can be without building it (instructions, every COPY source present and
in the build context, the ENTRYPOINT a command that runs), and the script runs against stand-ins for the
`aws` and `docker` commands that record what they were asked."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "docker" / "Dockerfile"
SCRIPT = REPO / "scripts" / "build_and_push_image.sh"
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


def instructions(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    found, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        found.append((keyword, " ".join(rest.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def in_build_context(relative: str) -> bool:
    """Whether .dockerignore lets `relative` (a path under the repository root) into the build context."""
    included = True
    for pattern in (REPO / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(relative, pattern) or relative.startswith(pattern + "/"):
            included = negate
    return included


def test_the_dockerfile_is_well_formed():
    found = instructions(DOCKERFILE)
    assert {keyword for keyword, _ in found} <= INSTRUCTIONS
    stages = [args for keyword, args in found if keyword == "FROM"]
    declared = {
        args.split("=")[0]
        for keyword, args in found[: [k for k, _ in found].index("FROM")]
        if keyword == "ARG"
    }
    for stage in stages:
        for name in re.findall(r"\$\{?(\w+)\}?", stage):
            assert name in declared, f"FROM uses ${name}, which no ARG before the first FROM declares"
    assert any("nvidia/cuda:" in args for keyword, args in found if keyword == "ARG"), "not a CUDA base image"
    assert [k for k, _ in found][-1] == "ENTRYPOINT"


def test_every_copied_path_exists_and_is_in_the_build_context():
    copies = [shlex.split(args) for keyword, args in instructions(DOCKERFILE) if keyword == "COPY"]
    sources = [
        src for words in copies if not any(w.startswith("--from=") for w in words) for src in words[:-1]
    ]
    assert {"pyproject.toml", "requirements.lock", "src"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert in_build_context(source), f"{source} is left out of the build context by .dockerignore"
    assert not in_build_context(".venv") and not in_build_context(".git")


def test_pretrained_weights_come_from_a_build_context_and_are_where_the_models_look():
    found = instructions(DOCKERFILE)
    assert ("FROM", "scratch AS weights") in found  # empty unless `--build-context weights=DIR` replaces it
    (copy,) = [shlex.split(args) for keyword, args in found if keyword == "COPY" and "--from=weights" in args]
    destination = copy[-1].rstrip("/")
    env = " ".join(args for keyword, args in found if keyword == "ENV")
    for variable, folder in (("HF_HOME", "huggingface"), ("TORCH_HOME", "torch")):
        assert f"{variable}={destination}/{folder}" in env


def test_the_package_is_installed_from_the_lock_with_its_wandb_extra():
    runs = " ".join(args for keyword, args in instructions(DOCKERFILE) if keyword == "RUN")
    assert "--constraint requirements.lock" in runs and '".[wandb]"' in runs
    assert "wandb" in (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]


def test_the_entrypoint_is_the_sagemaker_entry_point_and_runs():
    (entrypoint,) = [
        json.loads(args) for keyword, args in instructions(DOCKERFILE) if keyword == "ENTRYPOINT"
    ]
    assert entrypoint[:2] == ["/usr/bin/tini", "--"]
    command = entrypoint[2:]
    command[0] = sys.executable if command[0] == "python" else str(Path(sys.executable).with_name(command[0]))
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: lbm sagemaker-entrypoint" in result.stdout, result.stderr


# `docker login` reads its stdin before it records its call: the end of the pipe from `aws` comes first.
STAND_IN = """#!/usr/bin/env bash
[[ "$(basename "$0") $1" == "docker login" ]] && given="$(cat)"
{{ printf '%s' "$(basename "$0")"; printf ' %s' "$@"; echo; }} >> "{calls}"
[[ -n "${{given:-}}" ]] && echo "stdin: $given" >> "{calls}"
case "$(basename "$0") $1 $2" in
  "aws sts get-caller-identity") echo 123456789012 ;;
  "aws ecr describe-repositories") exit 254 ;;
  "aws ecr get-login-password") echo ecr-password ;;
esac
exit 0
"""


@pytest.fixture
def stand_ins(tmp_path) -> tuple[dict, Path]:
    """PATH with `aws` and `docker` stand-ins first; the file where they record their calls."""
    calls, bin_dir = tmp_path / "calls", tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("aws", "docker"):
        (bin_dir / name).write_text(STAND_IN.format(calls=calls))
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", AWS_DEFAULT_REGION="us-west-2")
    return env, calls


def test_the_script_builds_logs_in_and_pushes_the_dev_image(stand_ins):
    env, calls = stand_ins
    result = subprocess.run(
        [str(SCRIPT), "--user", "Jane.Doe", "--tag", "t1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/jane-doe-sagemaker-dev"
    assert calls.read_text().splitlines() == [
        "aws sts get-caller-identity --query Account --output text --region us-west-2",
        f"docker build --platform linux/amd64 --file docker/Dockerfile --tag {image}:t1 "
        f"--tag {image}:latest .",
        "aws ecr describe-repositories --region us-west-2 --repository-names jane-doe-sagemaker-dev",
        "aws ecr create-repository --region us-west-2 --repository-name jane-doe-sagemaker-dev "
        "--image-scanning-configuration scanOnPush=true",
        "aws ecr get-login-password --region us-west-2",
        "docker login --username AWS --password-stdin 123456789012.dkr.ecr.us-west-2.amazonaws.com",
        "stdin: ecr-password",
        f"docker push {image}:t1",
        f"docker push {image}:latest",
    ]
    assert f"pushed {image}:t1" in result.stdout
    assert "ecr-password" not in result.stdout + result.stderr


def test_the_default_tag_is_the_commit(stand_ins):
    env, calls = stand_ins
    result = subprocess.run(
        [str(SCRIPT), "--user", "jdoe", "--no-push"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert re.search(rf"jdoe-sagemaker-dev:{head}(-dirty)? ", calls.read_text())
    assert "push" not in calls.read_text()


def test_weights_are_passed_as_the_weights_build_context(stand_ins, tmp_path):
    env, calls = stand_ins
    (tmp_path / "weights" / "huggingface" / "hub").mkdir(parents=True)
    result = subprocess.run(
        [str(SCRIPT), "--user", "jdoe", "--tag", "t1", "--weights", str(tmp_path / "weights"), "--no-push"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"--build-context weights={tmp_path / 'weights'} --tag " in calls.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--region", "mars"], "--region 'mars' is not an AWS region name"),
        (["--account", "1234"], "account '1234' is not a 12-digit AWS account id"),
        (["--tag", "a b"], "--tag 'a b' is not a Docker tag"),
        (["--tag"], "--tag needs a value"),
        (["--colour", "red"], "unknown argument '--colour'"),
        (["--weights", "/nonexistent"], "--weights '/nonexistent' holds neither huggingface/ nor torch/"),
    ],
)
def test_bad_arguments_are_one_line_and_nothing_runs(stand_ins, args, message):
    env, calls = stand_ins
    result = subprocess.run(
        [str(SCRIPT), "--user", "jdoe", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("build_and_push_image: error: ") and message in line
    assert not calls.exists()
