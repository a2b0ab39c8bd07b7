from __future__ import annotations

import pytest
import yaml

from lbm.errors import LbmError
from lbm.launch.names import is_valid_job_name
from lbm.launch.spec import DEFAULT_CONFIG, LaunchSpec
from lbm.launch.submission import plan
from lbm.site import load_site
from lbm.site.nicknames import add_nickname

TINY = "train_diffusion_unet_keypoints_lang_tiny"


def planned(**settings):
    return plan(LaunchSpec(**{"config_file": TINY, **settings}), load_site())


def test_default_launch_runs_the_main_image_on_the_first_queue(site_file, tmp_path):
    submission = planned()
    assert submission.owner == "main"
    assert submission.region.name == "here"
    assert submission.queue.name == "here-cpu"
    assert submission.notes == []
    assert submission.artifact_uri("main-lbm-training-x") == (
        f"file://{tmp_path}/bucket/outputs/main-lbm/main-lbm-training-x/"
    )


def test_job_spec_carries_the_command_overrides_and_resolved_config(site_file, user, tmp_path):
    config_dir = tmp_path / "work" / "mine"
    config_dir.mkdir()
    submission = planned(
        image_uri="registry.example/jane:dev",
        config_dir="mine",
        config_overrides=("training.val_every=5", "policy.down_dims=[16,32]"),
        num_epochs=1,
        batch_size=4,
        task_name="PutCupOnSaucer",
        priority=7,
        max_days=1,
        retries=2,
        nproc_per_node=2,
    )
    name = "jane-doe-put-cup-on-saucer-training-2024-04-25-16-05-04-258"
    spec = submission.job_spec(name)
    assert spec.owner == user and spec.share_identifier == user
    assert spec.artifact_uri.endswith(f"/outputs/{user}-single-task/{name}/")
    # The job trains from the config the launch composed, stored in its artifact folder: nothing of the
    # user's machine (the config dir, the overrides) travels in the command.
    assert spec.command == (
        "lbm",
        "train",
        "--config-uri",
        f"{spec.artifact_uri}config.yaml",
        "--nproc-per-node",
        "2",
    )
    assert config_dir.name not in " ".join(spec.command)
    assert (spec.priority, spec.retries, spec.max_runtime_s, spec.nproc_per_node) == (7, 2, 86400.0, 2)
    assert spec.image_uri == "registry.example/jane:dev"
    assert spec.queue == "here-cpu" and spec.instance_type == "cpu" and spec.region == "here"
    config = yaml.safe_load(spec.resolved_config)
    assert config["training"]["num_epochs"] == 1
    assert config["dataloader"]["batch_size"] == 4
    assert config["policy"]["down_dims"] == [16, 32]
    assert config["task"]["dataset"]["tasks"] == ["PutCupOnSaucer"]
    assert config["logging"]["name"] == name and config["logging"]["group"] == name


def test_a_logging_group_the_user_sets_is_kept(site_file):
    spec = planned(config_overrides=("logging.group=ablation",)).job_spec("main-lbm-training-1")
    logging = yaml.safe_load(spec.resolved_config)["logging"]
    assert (logging["group"], logging["name"]) == ("ablation", "main-lbm-training-1")


def test_team_queue_and_shared_queue_note(site_file):
    assert planned(team="VLA").queue.name == "here-cpu-vla"
    submission = planned(team="foo")
    assert submission.queue.name == "here-cpu"
    assert submission.notes == ["team 'foo' has no queue of its own; using the shared queue here-cpu"]
    assert submission.job_spec("main-lbm-training-1").share_identifier == "foo"


def test_a_queue_without_capacity_is_taken_with_a_note(site_file):
    submission = planned(team="dp")
    assert submission.queue.name == "here-cpu-dp"
    assert submission.notes == [
        "queue here-cpu-dp has no capacity now; the job waits RUNNABLE until it gets some"
    ]


def test_instance_type_aliases_queues_and_nicknames(site_file):
    assert planned(instance_type="small").queue.name == "here-cpu"
    assert planned(instance_type="gpu-a100").queue.name == "here-gpu-a100"
    assert planned(queue="c").queue.name == "here-cpu"
    add_nickname(load_site().region("here"), "big", "here-gpu-a100")
    assert planned(queue="big").queue.name == "here-gpu-a100"
    with pytest.raises(LbmError, match="serves gpu-a100, not cpu"):
        planned(queue="big", instance_type="cpu")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"region": "mars"}, "unknown region 'mars'; this site has: here, there"),
        ({"queue": "nope"}, "unknown queue or nickname 'nope' in region here"),
        ({"instance_type": "p9"}, "unknown instance type 'p9' in region here"),
        ({"instance_count": 2}, "--instance-count 2 needs a multi-machine backend \\(sagemaker, slurm\\)"),
        ({"config_file": "no_such_config"}, "unknown config 'no_such_config'"),
        ({"config_overrides": ("training.nope=1",)}, "has no key '?training.nope"),
        ({"config_overrides": ("dataloader.batch_size=big",)}, "dataloader.batch_size=.big. is not valid"),
    ],
)
def test_bad_launches_are_user_errors(site_file, settings, message):
    with pytest.raises(LbmError, match=message):
        planned(**settings)


def test_instance_count_above_one_is_fine_where_the_backend_supports_it(site_file):
    assert planned(region="there", instance_count=2).queue.name == "there-p5"


def test_default_site_plans_on_this_machine(user):
    submission = planned()
    assert submission.region.name == "local" and submission.queue.team is None
    assert submission.owner == user
    assert is_valid_job_name(submission.job_spec("jane-doe-lbm-training-1").name)


def test_each_name_gets_its_own_logging_name_and_group(site_file):
    submission = planned()
    first, second = submission.job_spec("main-lbm-training-1"), submission.job_spec("main-lbm-training-2")
    for spec in (first, second):
        logging = yaml.safe_load(spec.resolved_config)["logging"]
        assert logging["name"] == logging["group"] == spec.name


def test_without_a_config_file_the_default_is_used_and_a_note_says_so(site_file):
    submission = plan(LaunchSpec(config_overrides=("task.dataset_path=s3://b/lbm.zarr",)), load_site())
    assert submission.launch.config_file == DEFAULT_CONFIG
    config = yaml.safe_load(submission.job_spec("main-lbm-training-1").resolved_config)
    assert config["task"]["dataset_path"] == "s3://b/lbm.zarr"
    assert submission.notes == [
        f"no --config-file given: using the default config {DEFAULT_CONFIG}, which trains on the dataset at "
        "task.dataset_path (s3://b/lbm.zarr)"
    ]
    assert planned().notes == []


def test_without_a_config_file_or_a_dataset_the_error_names_the_default_and_what_it_needs(site_file):
    with pytest.raises(LbmError) as raised:
        plan(LaunchSpec(), load_site())
    assert str(raised.value) == (
        f"no --config-file given, so the default config {DEFAULT_CONFIG} is used, and it needs a dataset: "
        "add --config-overrides task.dataset_path=<local path or URL of the dataset>, or choose a config "
        f"that makes its own data with --config-file (train_diffusion_unet_keypoints_lang_small, {TINY})"
    )
    with pytest.raises(LbmError, match="^task.dataset_path is required by this config"):
        plan(LaunchSpec(config_file=DEFAULT_CONFIG), load_site())
