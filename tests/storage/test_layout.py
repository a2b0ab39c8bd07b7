"""The artifact tree of the seed README, and the bucket write check made before anything is queued."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbm.errors import LbmError
from lbm.jobs.model import Queue
from lbm.jobs.region import Region
from lbm.storage.layout import archive_uri, artifact_uri, check_writable


def region(bucket: str, prefix: str = "sagemaker_outputs") -> Region:
    return Region("us-east-1", "sagemaker", bucket, prefix, [Queue("q", "ml.p5.48xlarge", 1)])


def test_multitask_and_single_task_trees():
    east = region("s3://robotics-manip-lbm")
    name = "main-lbm-training-2024-04-25-16-05-04-258"

    assert artifact_uri(east, "main", name) == f"s3://robotics-manip-lbm/sagemaker_outputs/main-lbm/{name}/"
    assert (
        artifact_uri(east, "usera", "usera-pick-cup-training-2024-04-25-16-05-04-258", task_name="PickCup")
        == "s3://robotics-manip-lbm/sagemaker_outputs/usera-single-task/usera-pick-cup-training-2024-04-25-16-05-04-258/"
    )
    assert (
        artifact_uri(region("file:///data/bucket/", "/outputs/"), "ann", "j")
        == "file:///data/bucket/outputs/ann-lbm/j/"
    )


def test_archive_sits_under_output():
    assert archive_uri("s3://b/p/ann-lbm/j/") == "s3://b/p/ann-lbm/j/output/output.tar.gz"


def test_writable_bucket_passes_and_leaves_nothing(tmp_path: Path):
    bucket = tmp_path / "bucket"

    check_writable(f"file://{bucket}/outputs")

    assert list(bucket.rglob("*")) == [bucket / "outputs"]


def test_unwritable_bucket_is_a_user_error(tmp_path: Path):
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("")
    url = f"file://{not_a_dir}/bucket"

    with pytest.raises(LbmError, match=rf"^bucket {url} is not writable: ") as error:
        check_writable(url)

    assert "\n" not in str(error.value)
