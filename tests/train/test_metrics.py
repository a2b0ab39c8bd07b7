"""The metrics file and the stdout line log scrapers parse."""

from __future__ import annotations

import re

from lbm.train.metrics import MetricsLog, format_line, read_metrics

LINE = re.compile(r"^\[metrics\] (?:\w+=\S+ ?)+$")


def test_line_is_stable_and_parseable():
    line = format_line({"epoch": 3, "step": 120, "val_loss": 0.0535, "train_loss": 0.0412, "extra": 1})
    assert line == "[metrics] step=120 epoch=3 train_loss=0.0412 val_loss=0.0535 extra=1"
    assert LINE.match(line)


def test_truncate_after_drops_steps_past_a_resume_point(tmp_path, capsys):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (10, 20, 30):
        log.log({"step": step, "train_loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "tra')  # torn line of a killed process
    log.truncate_after(20)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [10, 20]
    assert capsys.readouterr().out.count("[metrics]") == 3
