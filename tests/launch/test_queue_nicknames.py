"""lbm.site.nicknames (kept beside the launch tests, which share its fixtures)."""

from __future__ import annotations

import pytest
import yaml

from lbm.errors import LbmError
from lbm.site import load_site
from lbm.site.nicknames import add_nickname, nicknames_for, nicknames_path, resolve_queue, user_nicknames


@pytest.fixture
def region(site_file):
    return load_site().region("here")


def test_nicknames_are_saved_in_the_config_dir_and_resolve(region, tmp_path):
    path = add_nickname(region, "big", "here-gpu-a100")
    assert path == tmp_path / "config" / "nicknames.yaml" == nicknames_path()
    assert yaml.safe_load(path.read_text()) == {"big": "here-gpu-a100"}
    assert resolve_queue(region, "big").name == "here-gpu-a100"
    add_nickname(region, "big", "c")  # a site nickname names the queue too; replacing is allowed
    assert user_nicknames() == {"big": "here-cpu"}
    assert nicknames_for(region) == {"c": "here-cpu", "big": "here-cpu"}


def test_site_nicknames_and_full_names_resolve(region):
    assert resolve_queue(region, "c").name == "here-cpu"
    assert resolve_queue(region, "here-cpu-vla").team == "vla"


def test_nicknames_of_another_region_are_not_listed_there(region):
    add_nickname(region, "mine", "here-cpu")
    other = load_site().region("there")
    assert "mine" not in nicknames_for(other)
    with pytest.raises(LbmError, match="unknown queue or nickname 'mine' in region there"):
        resolve_queue(other, "mine")


@pytest.mark.parametrize(
    ("nickname", "queue", "message"),
    [
        ("p5", "no-such-queue", "unknown queue or nickname 'no-such-queue' in region here; queues: here-cpu"),
        ("bad nick", "here-cpu", "nickname 'bad nick' is not valid"),
        ("here-cpu-vla", "here-cpu", "already the name of a queue"),
    ],
)
def test_bad_nicknames_write_nothing(region, nickname, queue, message):
    with pytest.raises(LbmError, match=message):
        add_nickname(region, nickname, queue)
    assert not nicknames_path().exists()


def test_a_broken_nicknames_file_is_a_clear_error(region):
    nicknames_path().parent.mkdir(parents=True)
    nicknames_path().write_text("- just\n- a list\n")
    with pytest.raises(LbmError, match="must map nicknames to queue names"):
        resolve_queue(region, "here-cpu")
