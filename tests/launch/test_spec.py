from __future__ import annotations

import pytest

from lbm.errors import LbmError
from lbm.launch.spec import LaunchSpec, launch_spec, read_launcher_file


def test_defaults():
    spec = launch_spec({}, {})
    assert spec.config_file is None  # plan() uses DEFAULT_CONFIG and says so
    assert (spec.instance_count, spec.nproc_per_node, spec.priority, spec.retries) == (1, 1, 0, 0)
    assert spec.max_runtime_s is None


def test_flags_override_the_launcher_file(tmp_path):
    path = tmp_path / "p4d.yaml"
    path.write_text(
        "instance-type: p4d\ninstance_count: 2\nconfig_file: from_file\nnum_epochs: 3\n"
        "config_overrides: training.val_every=5,policy.down_dims=[64,128]\nconfig_dir: configs\n"
    )
    settings = read_launcher_file(path)
    spec = launch_spec(
        settings,
        {"config_file": "from_flag", "instance_count": None, "config_overrides": ["training.val_every=7"]},
    )
    assert spec.config_file == "from_flag"
    assert spec.instance_type == "p4d"
    assert spec.instance_count == 2
    assert spec.config_dir == str(tmp_path / "configs")
    assert spec.config_overrides == ("policy.down_dims=[64,128]", "training.val_every=7")
    assert spec.flag_overrides() == [
        "policy.down_dims=[64,128]",
        "training.val_every=7",
        "training.num_epochs=3",
    ]


def test_launcher_file_overrides_may_be_a_list(tmp_path):
    path = tmp_path / "l.yaml"
    path.write_text("config_overrides: ['a=1', 'b=[1,2]']\n")
    assert read_launcher_file(path)["config_overrides"] == ("a=1", "b=[1,2]")


def test_flags_become_overrides_and_replace_the_same_key():
    spec = LaunchSpec(
        config_overrides=("training.num_epochs=50", "x=1"), num_epochs=2, batch_size=8, task_name="PutCup's"
    )
    assert spec.flag_overrides() == [
        "x=1",
        "training.num_epochs=2",
        "dataloader.batch_size=8",
        "task.dataset.tasks=['PutCup\\'s']",
    ]


def test_unknown_launcher_keys_are_named_with_the_allowed_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("instance_type: p4d\ninstance_typo: p5\nepochs: 3\n")
    with pytest.raises(LbmError) as error:
        read_launcher_file(path)
    message = str(error.value)
    assert "unknown key(s) epochs, instance_typo" in message
    assert "allowed: config_file, config_dir" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("instance_count: two\n", "instance_count must be a whole number, got 'two'"),
        ("priority: true\n", "priority must be a whole number"),
        ("max_days: soon\n", "max_days must be a number"),
        ("config_overrides: {a: 1}\n", "config_overrides must be a string"),
        ("config_overrides: 'a=[1'\n", "missing ']'"),
        ("- a\n- b\n", "must be a mapping of settings, got list"),
        ("a: [\n", "cannot read it as YAML"),
    ],
)
def test_bad_launcher_values(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LbmError, match=message.replace("[", r"\[")):
        read_launcher_file(path)


def test_missing_launcher_file(tmp_path):
    with pytest.raises(LbmError, match="does not exist"):
        read_launcher_file(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_epochs": 0}, "--num-epochs must be 1 or more, got 0"),
        ({"num_epochs": -3}, "--num-epochs must be 1 or more, got -3"),
        ({"batch_size": 0}, "--batch-size must be 1 or more"),
        ({"instance_count": 0}, "--instance-count must be 1 or more"),
        ({"nproc_per_node": 0}, "--nproc-per-node must be 1 or more"),
        ({"priority": 10000}, "--priority must be from 0 to 9999"),
        ({"priority": -1}, "--priority must be from 0 to 9999"),
        ({"retries": -1}, "--retries must be from 0 to 9"),
        ({"max_days": 0}, "--max-days must be a number of days above 0, got 0"),
        ({"max_days": float("inf")}, "--max-days must be a number of days above 0, got inf"),
        ({"task_name": ""}, "--task-name must not be empty"),
    ],
)
def test_bad_values_are_user_errors(changes, message):
    with pytest.raises(LbmError, match=message):
        launch_spec({}, changes)


def test_max_days_becomes_seconds():
    assert LaunchSpec(max_days=0.5).max_runtime_s == 43200
