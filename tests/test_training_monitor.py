"""training.monitor: the progress report (bar with ETA, plain lines) and the row estimate."""

import io
import os
import sys

import pytest

from matta_rec.training.monitor import ProgressReporter, planned_rows

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import write_logs  # noqa: E402


def test_planned_rows_from_parquet_footers(tmp_path):
    write_logs(str(tmp_path), shards=3, rows=50)
    files = sorted(str(p) for p in tmp_path.rglob("*.parquet"))
    assert planned_rows(files) == 150
    assert planned_rows(files, epochs=2) == 300
    assert planned_rows(files, epochs=2, max_rows=200) == 200
    assert planned_rows(files, max_rows=1000) == 150
    # A shard whose size is unknown without reading it: only max_rows is known.
    csv = tmp_path / "x.csv"
    csv.write_text("a\n1\n")
    assert planned_rows(files + [str(csv)]) is None
    assert planned_rows(files + [str(csv)], max_rows=99) == 99
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    assert planned_rows(files + [str(broken)]) is None


def test_plain_lines_every_interval_with_total_and_eta():
    out = io.StringIO()
    progress = ProgressReporter(["loss", "online_aucloss"], target=1000, interval_s=3600,
                                tty=False, stream=out)
    progress.update(100, {"loss": 0.5}, step=1)
    assert out.getvalue() == ""  # the interval has not passed
    progress.interval_s = 1e-9
    progress.update(250, {"loss": 0.5, "online_aucloss": 0.25}, step=4)
    line = out.getvalue().strip()
    assert line.startswith("[matta-rec train] rows 250/1000 (25.0%) - ")
    assert " rows/s - ETA " in line and line.endswith("step 4 - online_aucloss 0.2500 - loss 0.5000")
    progress.close(1000, {"loss": 0.4}, step=16)
    last = out.getvalue().strip().splitlines()[-1]
    assert "rows 1000/1000 (100.0%)" in last and "done in" in last and "ETA" not in last


def test_plain_lines_without_a_total_have_no_eta():
    out = io.StringIO()
    progress = ProgressReporter([], target=None, interval_s=1e-9, tty=False, stream=out)
    progress.update(64, {}, step=1)
    line = out.getvalue().strip()
    assert line.split(" - ")[0] == "[matta-rec train] rows 64" and "ETA" not in line


def test_terminal_bar_has_a_target(capsys):
    progress = ProgressReporter(["loss"], target=200, tty=True)
    progress.update(100, {"loss": 0.5})
    progress.close(200, {"loss": 0.4})
    out = capsys.readouterr().out
    assert "200/200" in out and "Unknown" not in out


def test_reporter_validates_its_arguments():
    with pytest.raises(ValueError, match="interval_s"):
        ProgressReporter([], interval_s=0)
    with pytest.raises(ValueError, match="target"):
        ProgressReporter([], target=-1)
