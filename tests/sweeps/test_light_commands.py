"""`lbm sweep status` and `lbm sweep stop` only look at and stop jobs, `validate` and `preview` only read a
sweep file: they import no torch."""

from __future__ import annotations

import json
import subprocess
import sys

from lbm.sweeps.engine import SweepStudy
from lbm.sweeps.record import SweepRecord, SweepSettings
from lbm.sweeps.sweep_file import parse_sweep

PROGRAM = """
import json, sys
from lbm.cli.main import main
codes = [main(["sweep", "status", "light"]), main(["sweep", "status", "light", "--json"]),
         main(["sweep", "stop", "light"])]
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
"""
READ_ONLY = """
import json, sys
from lbm.cli.main import main
codes = [main(["sweep", "validate", "example_sweep_combined.yaml"]),
         main(["sweep", "preview", "example_sweep_combined.yaml", "--runs", "20", "--json"])]
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
"""
SWEEP = {
    "method": "grid",
    "metric": {"name": "val_loss"},
    "parameters": {"optimizer.lr": {"values": [0.1, 0.2]}},
}


def test_status_and_stop_import_no_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("LBM_HOME", str(tmp_path / "home"))
    record = SweepRecord.new("light", None)
    study = SweepStudy.open(parse_sweep(SWEEP, "t"), record.storage(), "light", 2, 0)
    settings = SweepSettings(SWEEP, {"config_overrides": []}, {}, 1, 2, 0)
    for key, value in settings.to_attrs().items():
        study.study.set_user_attr(key, value)
    record.save()
    run = study.next_run()
    study.finish(run.number, 0.5)

    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"codes": [0, 0, 0], "torch": False}
    assert "sweep light: running, grid, 1 of 2 runs" in done.stdout and "sweep light stopped" in done.stdout


def test_validate_and_preview_of_a_bayes_sweep_import_no_torch(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", READ_ONLY], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"codes": [0, 0], "torch": False}
    assert "valid bayes sweep" in done.stdout
