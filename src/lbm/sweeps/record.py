"""A sweep's record: its folder under $LBM_HOME/sweeps/<name>/ (where its study lives unless --storage names
another) and what the study keeps of it (the sweep file, launch settings, conditional files, cap, state)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbm.errors import LbmError
from lbm.jobs.local.home import lbm_home
from lbm.sweeps.engine import SweepStudy, redacted, storage_for
from lbm.sweeps.sweep_file import SweepFile, parse_sweep

RECORD_FILE = "sweep.json"
STUDY_FILE = "study.sqlite"
LOG_FILE = "controller.log"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class State:
    """A sweep's state, kept in its study."""

    RUNNING = "running"
    STOPPED = "stopped"
    FINISHED = "finished"


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep's controllers need, saved in its study when it is created."""

    sweep: dict[str, Any]
    launch: dict[str, Any]
    conditional_files: dict[str, dict[str, Any]]
    max_agents: int
    cap: int | None
    seed: int

    def to_attrs(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "launch": self.launch,
            "conditional_files": self.conditional_files,
            "max_agents": self.max_agents,
            "cap": self.cap,
            "seed": self.seed,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> SweepSettings:
        return cls(**{key: attrs[key] for key in cls.__dataclass_fields__})

    def sweep_file(self, name: str) -> SweepFile:
        return parse_sweep(self.sweep, f"of sweep {name}")


def sweeps_dir() -> Path:
    return lbm_home() / "sweeps"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LbmError(
            f"sweep name {name!r} must be letters, digits, . _ - (at most 100, not starting with . _ -)"
        )
    return name


@dataclass(frozen=True)
class SweepRecord:
    """The folder of sweep `name` on this machine and the URL of its study's storage."""

    name: str
    folder: Path
    storage_url: str

    @classmethod
    def new(cls, name: str, storage_url: str | None) -> SweepRecord:
        folder = sweeps_dir() / check_name(name)
        return cls(name, folder, storage_url or f"sqlite:///{folder / STUDY_FILE}")

    @classmethod
    def load(cls, name: str, storage_url: str | None = None) -> SweepRecord:
        """The sweep `name` of this machine (or, with `storage_url`, one created on another machine)."""
        folder = sweeps_dir() / check_name(name)
        path = folder / RECORD_FILE
        if path.is_file():
            saved = json.loads(path.read_text())["storage"]
            return cls(name, folder, storage_url or saved)
        if storage_url is None:
            known = sorted(p.name for p in sweeps_dir().glob("*") if (p / RECORD_FILE).is_file())
            raise LbmError(
                f"no sweep {name!r} on this machine (sweeps: {', '.join(known) or 'none'}); "
                "one created elsewhere needs --storage URL"
            )
        return cls(name, folder, storage_url)

    @property
    def log(self) -> Path:
        return self.folder / LOG_FILE

    def save(self) -> None:
        """Write the record (owner-only: a storage URL may hold a password)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{RECORD_FILE}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"name": self.name, "storage": self.storage_url}, f)
        os.replace(partial, self.folder / RECORD_FILE)

    def storage(self):
        if self.storage_url.startswith("sqlite:///"):
            self.folder.mkdir(parents=True, exist_ok=True)
        return storage_for(self.storage_url)

    def settings(self, storage=None) -> SweepSettings:
        """The sweep's settings as its study keeps them."""
        import optuna

        storage = storage or self.storage()
        try:
            study = optuna.load_study(study_name=self.name, storage=storage)
        except KeyError:
            raise LbmError(f"no sweep {self.name!r} in storage {redacted(self.storage_url)}") from None
        return SweepSettings.from_attrs(study.user_attrs)

    def study(self) -> tuple[SweepStudy, SweepSettings]:
        storage = self.storage()
        settings = self.settings(storage)
        sweep = settings.sweep_file(self.name)
        return SweepStudy.open(sweep, storage, self.name, settings.cap, settings.seed), settings


def state_of(study: SweepStudy) -> str:
    return study.study.user_attrs.get("state", State.RUNNING)


def set_state(study: SweepStudy, state: str) -> None:
    study.study.set_user_attr("state", state)
