"""The site: built-in default for this machine, the shipped SageMaker example, site files and their errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lbm.errors import LbmError
from lbm.jobs.local.fair_share import weight_factor
from lbm.jobs.local.home import lbm_home
from lbm.jobs.region import Region
from lbm.jobs.registry import backend_for
from lbm.site import load_site
from lbm.site.nicknames import resolve_queue

VALID = """\
defaultRegion: lab
instanceAliases: {small: cpu}
regions:
  lab:
    backend: local
    bucket: file://$LBM_HOME/lab-bucket
    queues:
      - {name: lab-cpu, instanceType: cpu, capacity: 2, nicknames: [c]}
      - name: lab-gpu
        instanceType: gpu-a100
        capacity: 2
        fairShare: {shareDecaySeconds: 600, computeReservation: 25, weightFactors: {main: 0.5}}
      - {name: lab-gpu-vla, instanceType: gpu-a100, capacity: 1, team: VLA}
    gpuDevices: {gpu-a100: [0, 1]}
    notifications:
      slack: {webhookUrlFile: ~/hook, states: [FAILED]}
"""


WHOLE_PERCENT = "must be a whole percentage from 0 to 99"
DECAY_SECONDS = r"must be a whole number of seconds from 0 \(the 600 s minimum\) to 604800"
WEIGHT = r"must be a number from 0\.0001 to 999\.9999"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LBM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    for name in ("LBM_SITE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def write_site(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def fake_nvidia_smi(tmp_path: Path, names: list[str]) -> None:
    """An `nvidia-smi` on PATH that reports these GPU models (for machines without GPUs)."""
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\n" + "".join(f"echo '{n}'\n" for n in names))
    script.chmod(0o755)


def test_lbm_home_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert lbm_home() == tmp_path / "home"
    monkeypatch.delenv("LBM_HOME")
    assert lbm_home().name == "lbm"


@pytest.mark.skipif(Path("/proc/driver/nvidia/gpus").is_dir(), reason="this machine has real GPUs")
def test_default_site_without_gpus_has_cpu_and_team_queues(tmp_path: Path):
    site = load_site()
    region = site.region(None)

    assert site.source is None
    assert (region.name, region.backend, region.prefix) == ("local", "local", "outputs")
    assert region.bucket == f"file://{tmp_path / 'home' / 'bucket'}"
    assert [(q.name, q.instance_type, q.capacity, q.team) for q in region.queues] == [
        ("local-cpu", "cpu", 1, None),
        ("local-cpu-mvdp", "cpu", 1, "mvdp"),
        ("local-cpu-vla", "cpu", 1, "vla"),
        ("local-cpu-dp", "cpu", 1, "dp"),
        ("local-cpu-das", "cpu", 1, "das"),
    ]
    assert region.queue_for("cpu", "DP") == (region.queue("local-cpu-dp"), None)
    queue, note = region.queue_for("cpu", "perception")
    assert queue.name == "local-cpu"
    assert note == "team 'perception' has no queue of its own; using the shared queue local-cpu"
    assert region.queue_for("cpu", None) == (queue, None)


@pytest.mark.skipif(Path("/proc/driver/nvidia/gpus").is_dir(), reason="this machine has real GPUs")
def test_default_site_has_a_queue_per_gpu_model(tmp_path: Path):
    fake_nvidia_smi(tmp_path, ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "NVIDIA A10G"])

    region = load_site().region("local")

    h100 = region.queue("local-gpu-h100-80gb-hbm3")
    assert (h100.instance_type, h100.capacity) == ("gpu-h100-80gb-hbm3", 2)
    assert region.queue("local-gpu-a10g").capacity == 1
    assert region.devices == {"gpu-h100-80gb-hbm3": (0, 1), "gpu-a10g": (2,)}
    assert region.instance_type("gpu") == "gpu-h100-80gb-hbm3"
    assert region.queue_for("gpu", "mvdp")[0].name == "local-gpu-h100-80gb-hbm3-mvdp"


def test_sagemaker_example_loads_and_lists(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LBM_SITE", "sagemaker")
    site = load_site()

    east, west = site.region(None), site.region("us-west-2")
    assert site.default_region == "us-east-1"
    assert (east.bucket, east.prefix) == ("s3://robotics-manip-lbm", "sagemaker_outputs")
    assert (west.bucket, west.prefix) == ("s3://robotics-manip-lbm-us-west-2", "sagemaker_outputs")
    assert {q.name for q in west.queues} >= {
        "fss-ml-p5-48xlarge-us-west-2",
        "fss-ml-p4de-24xlarge-us-west-2",
        "fss-ml-p4d-24xlarge-us-west-2",
    }
    assert {q.team for q in east.queues if q.team} == {"mvdp", "vla", "dp", "das"}
    assert east.instance_type("p4d") == "ml.p4d.24xlarge"
    assert east.instance_type("p4de") == "ml.p4de.24xlarge"
    assert east.instance_type("p5") == "ml.p5.48xlarge"
    assert resolve_queue(east, "p4de").name == "fss-ml-p4de-24xlarge-us-east-1"
    assert east.main_image == "lbm-sagemaker"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert site.region(None).name == "us-west-2"
    settings = backend_for(east).settings
    assert (settings.account, settings.wandb_secret_id) == ("123456789012", "lbm/wandb-api-key")
    assert resolve_queue(east, "p5").fair_share and not east.queue("mvdp-ml-p5-48xlarge-us-east-1").fair_share


def test_aws_default_region_outside_the_site_is_ignored(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert load_site().region(None).name == "local"


def test_site_file_replaces_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LBM_SITE", str(write_site(tmp_path, VALID)))

    region = load_site().region(None)

    assert region.name == "lab"
    assert region.bucket == f"file://{tmp_path / 'home' / 'lab-bucket'}"
    assert resolve_queue(region, "c").name == "lab-cpu"
    assert region.instance_type("small") == "cpu"
    gpu = region.queue("lab-gpu")
    assert (gpu.share_decay_seconds, gpu.compute_reservation, gpu.weight_factors) == (600, 25, {"main": 0.5})
    assert region.queue_for("gpu-a100", "vla")[0].name == "lab-gpu-vla"
    assert region.devices == {"gpu-a100": (0, 1)}
    assert region.slack.webhook_url_file == "~/hook" and region.slack.states == ("FAILED",)
    assert Region.from_dict(region.to_dict()) == region


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # FairsharePolicy: shareDecaySeconds 0 (the minimum window) to 604800, computeReservation 0 to 99.
        ("{shareDecaySeconds: 0, computeReservation: 0}", (0, 0, {})),
        ("{shareDecaySeconds: 604800, computeReservation: 99}", (604800, 99, {})),
        # ShareAttributes.weightFactor: 0.0001 to 999.9999; a prefix* entry beside others.
        (
            "{weightFactors: {main: 0.0001, vla*: 999.9999, dp: 2}}",
            (3600, 0, {"main": 0.0001, "vla*": 999.9999, "dp": 2}),
        ),
    ],
)
def test_fair_share_limits_of_aws_batch_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, expected: tuple
):
    old = "{shareDecaySeconds: 600, computeReservation: 25, weightFactors: {main: 0.5}}"
    monkeypatch.setenv("LBM_SITE", str(write_site(tmp_path, VALID.replace(old, policy))))

    gpu = load_site().region(None).queue("lab-gpu")

    assert (gpu.share_decay_seconds, gpu.compute_reservation, gpu.weight_factors) == expected


def test_prefix_weight_entry_covers_the_shares_that_start_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    old = "weightFactors: {main: 0.5}"
    monkeypatch.setenv(
        "LBM_SITE", str(write_site(tmp_path, VALID.replace(old, "weightFactors: {vla*: 0.25}")))
    )
    weights = load_site().region(None).queue("lab-gpu").weight_factors

    # ShareAttributes: a prefix* entry "specifies the weight factor to use for share identifiers that start
    # with that prefix"; "Share identifiers that aren't included have a default weight of 1.0."
    assert [weight_factor(share, weights) for share in ("vla", "vla-grasp", "mvdp", "v")] == [
        0.25,
        0.25,
        1.0,
        1.0,
    ]


def test_site_file_in_the_user_config_dir_is_used(tmp_path: Path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "site.yaml").write_text(VALID)

    assert list(load_site().regions) == ["lab"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("capacity: 2, nicknames", "capcity: 2, nicknames"),
            r"regions\.lab\.queues\[0\]: unknown key 'capcity'; allowed: name,",
        ),
        (
            ("backend: local", "backend: slurmy"),
            r"regions\.lab\.backend: unknown backend 'slurmy'; allowed: local, sagemaker",
        ),
        (
            ("defaultRegion: lab", "defaultRegion: moon"),
            r"defaultRegion: 'moon' is not one of the regions: lab",
        ),
        (("defaultRegion: lab", "defaultregion: lab"), r"\(top level\): unknown key 'defaultregion'"),
        (("file://$LBM_HOME/lab-bucket", "/just/a/path"), r"regions\.lab\.bucket: must be a URL"),
        (("capacity: 1, team", "capacity: -1, team"), r"queues\[2\]\.capacity: must be a whole number"),
        # FairsharePolicy.computeReservation: "The minimum value is 0 and the maximum value is 99." (Integer)
        *(
            (
                ("computeReservation: 25", f"computeReservation: {bad}"),
                rf"computeReservation: {WHOLE_PERCENT}, got {got}",
            )
            for bad, got in (("100", "100"), ("-1", "-1"), ("12.5", "12.5"), ("true", "True"))
        ),
        # FairsharePolicy.shareDecaySeconds: "A value of zero (0) indicates the default minimum time window
        # (600 seconds). The maximum supported value is 604800 (1 week)." (Integer)
        *(
            (
                ("shareDecaySeconds: 600", f"shareDecaySeconds: {bad}"),
                rf"shareDecaySeconds: {DECAY_SECONDS}, got {got}",
            )
            for bad, got in (
                ("604801", "604801"),
                ("-1", "-1"),
                ("1.5", "1.5"),
                ("1h", "'1h'"),
                (".inf", "inf"),
            )
        ),
        # ShareAttributes.weightFactor: "The smallest supported value is 0.0001, and the largest supported
        # value is 999.9999."
        *(
            (("main: 0.5", f"main: {bad}"), rf"weightFactors\.main: {WEIGHT}, got {got}")
            for bad, got in (
                ("0", "0"),
                ("0.00001", "1e-05"),
                ("1000", "1000"),
                ("-2", "-2"),
                ("yes", "True"),
            )
        ),
        # ShareAttributes.shareIdentifier: "If the string ends with an asterisk (*), this entry specifies the
        # weight factor to use for share identifiers that start with that prefix. The list of share
        # identifiers in a fair-share policy can't overlap."; and at most one prefix entry per queue.
        (
            ("{main: 0.5}", "{vla*: 0.5, dp*: 2}"),
            r"weightFactors: at most one prefix\* entry, got vla\*, dp\*$",
        ),
        (
            ("{main: 0.5}", "{vla*: 0.5, vla-a: 2}"),
            r"weightFactors: vla-a overlaps the prefix entry vla\*; drop one of them$",
        ),
        (
            ("{main: 0.5}", "{v*la: 0.5}"),
            r"weightFactors\.v\*la: only a trailing \* may mark a prefix entry$",
        ),
        (
            ("states: [FAILED]", "states: [DONE]"),
            r"slack\.states: unknown state 'DONE'; allowed: RUNNING, FAILED",
        ),
        (("webhookUrlFile: ~/hook, ", ""), r"slack: needs webhookUrlEnv"),
        (
            ("gpuDevices: {gpu-a100: [0, 1]}", "gpuDevices: {gpu-a100: zero}"),
            r"gpuDevices\.gpu-a100: must be a list",
        ),
        (("regions:", "regions: {}\nunused:"), r"unknown key 'unused'"),
    ],
)
def test_bad_site_file_names_file_key_and_what_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: tuple[str, str], message: str
):
    old, new = edit
    assert old in VALID
    path = write_site(tmp_path, VALID.replace(old, new))
    monkeypatch.setenv("LBM_SITE", str(path))

    with pytest.raises(LbmError, match=message) as error:
        load_site()

    assert str(error.value).startswith(f"site file {path}: ")
    assert "\n" not in str(error.value)


def test_unreadable_or_missing_site_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LBM_SITE", str(write_site(tmp_path, "regions: [unclosed")))
    with pytest.raises(LbmError, match="cannot read it as YAML"):
        load_site()
    monkeypatch.setenv("LBM_SITE", str(tmp_path / "absent.yaml"))
    with pytest.raises(LbmError, match="absent.yaml does not exist; give a YAML file or one of: sagemaker"):
        load_site()


def test_unknown_region_queue_and_instance_type_list_the_known_ones(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LBM_SITE", "sagemaker")
    site = load_site()
    east = site.region("us-east-1")

    with pytest.raises(LbmError, match="unknown region 'mars'; this site has: us-east-1, us-west-2"):
        site.region("mars")
    with pytest.raises(LbmError, match="unknown queue 'p9' in region us-east-1; queues: fss-ml-p5-48xlarge"):
        east.queue("p9")
    with pytest.raises(
        LbmError, match="unknown instance type 'p9' in region us-east-1; choose: p4d, p4de, p5"
    ):
        east.instance_type("p9")
    with pytest.raises(LbmError, match="unknown instance type"):
        east.queue_for("ml.g5.xlarge", None)
