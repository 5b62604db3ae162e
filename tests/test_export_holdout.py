"""export.holdout.locate_holdout: where all-pareto finds the run's held-out shards."""

import os
import sys
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(__file__))

from export_testlib import write_logs  # noqa: E402

from matta_rec.export.holdout import locate_holdout  # noqa: E402

HELD = "dt=2026-01-01/hour=02/part-0.parquet"


def _run(schema, metrics):
    return SimpleNamespace(schema=schema, metrics=metrics)


def test_recorded_shards_under_the_recorded_root_or_under_data(tmp_path):
    logs = str(tmp_path / "logs")
    schema = write_logs(logs, shards=3, rows=8)
    held = os.path.join(logs, *HELD.split("/"))
    # A root the run recorded (no --data needed).
    found = locate_holdout(_run(schema, {"holdout": {"shards": [HELD], "root": logs}}))
    assert found.files == [held] and logs in found.source
    # Else the root of --data (the training logs).
    found = locate_holdout(_run(schema, {"holdout": {"shards": [HELD]}}), logs)
    assert found.files == [held]
    # A recorded root that moved: --data still finds them.
    moved = {"holdout": {"shards": [HELD], "root": str(tmp_path / "gone")}}
    assert locate_holdout(_run(schema, moved), logs).files == [held]


def test_not_found_is_none_unless_data_may_stand_for_the_holdout(tmp_path):
    logs = str(tmp_path / "logs")
    schema = write_logs(logs, shards=2, rows=8)
    other = str(tmp_path / "other")
    write_logs(other, shards=1, rows=8)
    nothing_held = _run(schema, {"holdout": {"shards": []}})
    unfinished = _run(schema, {})
    assert locate_holdout(nothing_held) is None
    assert locate_holdout(unfinished, logs) is None
    assert locate_holdout(nothing_held, other, allow_data=True).files == other
    # Recorded shards that are not under --data: --data is taken as HOLDOUT_DIR.
    recorded = _run(schema, {"holdout": {"shards": [HELD]}})
    assert locate_holdout(recorded, other) is None
    assert locate_holdout(recorded, other, allow_data=True).files == other
