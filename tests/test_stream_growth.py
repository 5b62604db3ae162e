"""LogStream on growing logs: names relative to the data root, late shards, fingerprints."""

import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import reader_testlib as lib
from matta_rec.data.fingerprints import ShardFingerprint, check_fingerprints, count_rows, shard_fingerprint
from matta_rec.data.reader import FollowOptions, LogStream, StreamPosition
from matta_rec.data.writers import write_shard
from matta_rec.errors import DataError

DAY1, DAY2 = "dt=2026-11-01", "dt=2026-11-02"


def _ids(batches):
    return [int(i) for f, *_ in batches for i in f["slot"]]


def _stop_at(stream, rows):
    """Read ``stream`` until ``rows`` stream rows; return the ids and the position there."""
    seen = []
    for features, _, rows_end in stream.iter_numpy_with_position():
        seen.extend(features["slot"].tolist())
        if rows_end == rows:
            return seen, stream.position_at(rows_end)
    raise AssertionError(f"the stream never reached row {rows}")


def _shard(root, day, hour, n, first_id, fmt="parquet"):
    path = os.path.join(str(root), day, f"hour={hour:02d}", f"part-0.{lib.EXT[fmt]}")
    write_shard(path, lib.columns(n, first_id), lib.schema())
    return path


# ------------------------------------------------------------------ names
def test_names_are_relative_to_the_root_however_data_is_given(tmp_path, monkeypatch):
    root = tmp_path / "logs"
    files = lib.write_shards(root, [2, 2], folder=DAY1) + lib.write_shards(root, [2], folder=DAY2, first_id=4)
    expected = [os.path.relpath(p, root).replace(os.sep, "/") for p in files]
    monkeypatch.chdir(tmp_path)
    spellings = {
        "directory": (str(root), None),
        "relative": ("logs", None),
        "trailing slash": ("logs/", None),
        "glob": (os.path.join(str(root), "dt=*", "**", "*.parquet"), str(root)),
        "list + root": (files, "logs/"),
        "list + absolute root": ([os.path.relpath(p) for p in files], str(root) + os.sep),
        "day folder + root": (str(root / DAY1), "./logs"),
    }
    for what, (data, given_root) in spellings.items():
        stream = LogStream(data, lib.schema(), batch_size=2, root=given_root)
        names = expected[:2] if what == "day folder + root" else expected
        assert stream.shards() == names, what
        assert stream.root == str(root), what
    # without root= a list keeps its old default, the files' common folder
    assert LogStream(files[:2], lib.schema(), batch_size=2).shards() == ["hour=00/part-0.parquet",
                                                                          "hour=01/part-0.parquet"]


def test_root_argument_errors(tmp_path):
    files = lib.write_shards(tmp_path / "logs", [2])
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DataError, match="outside the data root") as info:
        LogStream(files, lib.schema(), batch_size=2, root=other)
    assert info.value.file == files[0] and "--data" in info.value.fix
    with pytest.raises(DataError, match="outside the data root"):
        LogStream(str(tmp_path / "logs"), lib.schema(), batch_size=2, root=other)
    with pytest.raises(DataError, match="not a directory"):
        LogStream(files, lib.schema(), batch_size=2, root=tmp_path / "nope")
    with pytest.raises(TypeError, match="root"):
        LogStream(files, lib.schema(), batch_size=2, root=3)


def test_a_position_in_a_file_list_resumes_after_the_list_grew(tmp_path):
    """Issue 14 item 1: the holdout (last shard of day 1) stays out; day 2 lands; resume."""
    root = str(tmp_path)
    day1 = lib.write_shards(root, [5, 5, 5, 5], folder=DAY1)
    train1, holdout = day1[:3], day1[3:]
    seen, position = _stop_at(LogStream(train1, lib.schema(), batch_size=3, root=root), 12)
    assert position.shard == f"{DAY1}/hour=02/part-0.parquet" and position.row == 2
    day2 = lib.write_shards(root, [4, 4], folder=DAY2, first_id=100)
    train2 = [p for p in sorted(day1 + day2) if p not in holdout]
    rest = LogStream(train2, lib.schema(), batch_size=3, root=root, start=position)
    assert seen + _ids(rest.iter_numpy()) == list(range(15)) + list(range(100, 108))
    assert rest.report().shards_read[0] == f"{DAY1}/hour=02/part-0.parquet"
    # the old default root (the list's common folder) moves when the list grows: the bug
    moved = LogStream(train1, lib.schema(), batch_size=3)
    _, old = _stop_at(moved, 12)
    with pytest.raises(DataError, match="different logs"):
        list(LogStream(train2, lib.schema(), batch_size=3, start=old).iter_numpy())


def test_resume_with_data_copied_elsewhere_and_spelled_differently(tmp_path, monkeypatch):
    lib.write_shards(tmp_path / "a", [4, 4, 4])
    seen, position = _stop_at(LogStream(str(tmp_path / "a"), lib.schema(), batch_size=2), 6)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    files = sorted(os.path.join("b", DAY1, h, "part-0.parquet") for h in os.listdir(os.path.join("b", DAY1)))
    rest = LogStream(files, lib.schema(), batch_size=2, root="b/", start=position)
    assert seen + _ids(rest.iter_numpy()) == list(range(12))


def test_quarantine_names_keep_the_partition_folders(tmp_path):
    root = str(tmp_path)
    files = lib.write_shards(root, [3, 3], folder=DAY1)
    bad = os.path.join(root, DAY1, "hour=01", "part-0.parquet")
    with open(bad, "wb") as handle:
        handle.write(b"PAR1 not really")
    stream = LogStream(files, lib.schema(), batch_size=2, root=root, skip_bad_shards=True)
    assert _ids(stream.iter_numpy()) == [0, 1, 2]
    (q,) = stream.report().quarantined
    assert q.shard == f"{DAY1}/hour=01/part-0.parquet"


# ------------------------------------------------------------------ late shards
def test_a_late_shard_before_the_resume_position_is_an_error_naming_it(tmp_path):
    root = str(tmp_path)
    _shard(root, DAY1, 0, 4, 0)
    _shard(root, DAY1, 2, 4, 20)
    seen, position = _stop_at(LogStream(root, lib.schema(), batch_size=2), 6)
    late = _shard(root, DAY1, 1, 3, 10)  # lands after the run went past hour 01
    resumed = LogStream(root, lib.schema(), batch_size=2, start=position)
    with pytest.raises(DataError, match="late shard") as info:
        resumed.check_start()
    assert info.value.file == late
    assert "--set data.skip_bad_shards=true" in info.value.fix
    with pytest.raises(DataError, match="late shard"):
        list(resumed.iter_numpy())
    # the same with follow mode
    follow = FollowOptions(poll_interval_s=0.05, idle_timeout_s=0.1)
    with pytest.raises(DataError, match="late shard"):
        list(LogStream(root, lib.schema(), batch_size=2, start=position, follow=follow).iter_numpy())


def test_a_late_shard_with_skip_bad_shards_is_quarantined_reported_and_remembered(tmp_path):
    root = str(tmp_path)
    _shard(root, DAY1, 0, 4, 0)
    _shard(root, DAY1, 2, 4, 20)
    _shard(root, DAY1, 3, 4, 30)
    seen, position = _stop_at(LogStream(root, lib.schema(), batch_size=2), 6)
    _shard(root, DAY1, 1, 3, 10)
    stream = LogStream(root, lib.schema(), batch_size=2, start=position, skip_bad_shards=True)
    assert stream.check_start() == [f"{DAY1}/hour=01/part-0.parquet"]
    rest, later = _stop_at(stream, 10)
    assert seen + rest == [0, 1, 2, 3, 20, 21, 22, 23, 30, 31]
    (q,) = stream.report().quarantined
    assert (q.shard, q.rows) == (f"{DAY1}/hour=01/part-0.parquet", 3) and "late shard" in q.error
    # the next resume knows it was set aside: no error, nothing read twice
    assert later.quarantined == (f"{DAY1}/hour=01/part-0.parquet",)
    again = LogStream(root, lib.schema(), batch_size=2, start=StreamPosition.from_dict(later.to_dict()))
    assert again.check_start() == []
    assert _ids(again.iter_numpy()) == [32, 33]


def test_shards_trained_before_are_skipped_not_flagged(tmp_path):
    root = str(tmp_path)
    lib.write_shards(root, [3, 3, 3, 3])
    position = None
    got = []
    for _ in range(6):  # one batch per "process", positions through JSON
        stream = LogStream(root, lib.schema(), batch_size=2, start=position)
        batches = list(stream.iter_numpy_with_position())
        if not batches:
            break
        features, _, rows_end = batches[0]
        got.extend(features["slot"].tolist())
        position = StreamPosition.from_dict(stream.position_at(rows_end).to_dict())
    assert got == list(range(12))
    assert [fp.rows for fp in position.trained] == [3, 3, 3, 3]


def test_a_position_without_history_skips_what_sorts_before_it(tmp_path):
    """Positions saved before fingerprints existed resume as they did."""
    root = str(tmp_path)
    lib.write_shards(root, [3, 3, 3])
    old = {"shard": f"{DAY1}/hour=01/part-0.parquet", "row": 1, "rows_consumed": 4, "epoch": 0}
    stream = LogStream(root, lib.schema(), batch_size=2, start=StreamPosition.from_dict(old))
    assert stream.check_start() == []
    assert _ids(stream.iter_numpy()) == list(range(4, 9))
    assert stream.position_at(9).trained is None


def test_a_shard_quarantined_before_the_position_is_not_late_and_may_be_repaired(tmp_path):
    root = str(tmp_path)
    _shard(root, DAY1, 0, 4, 0)
    bad = os.path.join(root, DAY1, "hour=01", "part-0.parquet")
    lib.write_parquet_table(bad, {"slot": pa.array([1, 2], pa.int64())})  # columns missing
    _shard(root, DAY1, 2, 4, 20)
    seen, position = _stop_at(LogStream(root, lib.schema(), batch_size=2, skip_bad_shards=True), 6)
    assert position.quarantined == (f"{DAY1}/hour=01/part-0.parquet",)
    assert f"{DAY1}/hour=01/part-0.parquet" not in position.trained_names
    _shard(root, DAY1, 1, 3, 10)  # repaired: not compared, not trained (it is behind)
    rest = LogStream(root, lib.schema(), batch_size=2, start=position)
    assert seen + _ids(rest.iter_numpy()) == [0, 1, 2, 3, 20, 21, 22, 23]


# ------------------------------------------------------------------ fingerprints
def test_a_trained_shard_that_changed_means_different_data(tmp_path):
    root = str(tmp_path)
    lib.write_shards(root, [6, 6])
    _, position = _stop_at(LogStream(root, lib.schema(), batch_size=2), 8)
    other = os.path.join(root, DAY1, "hour=00", "part-0.parquet")
    write_shard(other, lib.columns(5, 500), lib.schema())  # same name, other logs
    resumed = LogStream(root, lib.schema(), batch_size=2, start=position)
    with pytest.raises(DataError, match="different logs") as info:
        resumed.check_start()
    message = str(info.value)
    assert f"shard '{DAY1}/hour=00/part-0.parquet' had 6 rows" in message and "now 5 rows" in message
    assert info.value.file == other
    assert info.value.fix == "resume with the original --data, or start a new --out"
    with pytest.raises(DataError, match="different logs"):
        list(resumed.iter_numpy())


def test_growth_and_gone_shards_are_accepted_but_not_all_gone(tmp_path):
    root = str(tmp_path)
    files = lib.write_shards(root, [4, 4, 4])
    _, position = _stop_at(LogStream(root, lib.schema(), batch_size=2), 10)
    lib.write_shards(root, [4], folder=DAY2, first_id=100)  # growth
    os.remove(files[0])  # past its retention
    stream = LogStream(root, lib.schema(), batch_size=2, start=position)
    assert stream.check_start() == []
    assert _ids(stream.iter_numpy()) == [10, 11, 100, 101, 102, 103]
    assert check_fingerprints(root, position.trained) == [f"{DAY1}/hour=00/part-0.parquet"]
    elsewhere = tmp_path / "elsewhere"
    lib.write_shards(elsewhere, [4], folder=DAY2)
    with pytest.raises(DataError, match="none of the 3 shard"):
        check_fingerprints(elsewhere, position.trained)


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_count_rows_matches_the_reader(tmp_path, fmt):
    path = _shard(tmp_path, DAY1, 0, 37, 0, fmt=fmt)
    assert count_rows(path) == 37
    fp = shard_fingerprint(tmp_path, f"{DAY1}/hour=00/part-0.{lib.EXT[fmt]}")
    assert fp == ShardFingerprint(fp.name, os.path.getsize(path), 37)
    assert ShardFingerprint.from_dict(fp.to_dict()) == fp


def test_count_rows_of_a_csv_with_quoted_newlines_and_blank_lines(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,b\n1,"two\nlines"\n\n3,x\n')
    assert count_rows(path) == 2


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_count_rows_of_a_truncated_shard_is_a_data_error(tmp_path, fmt):
    path = _shard(tmp_path, DAY1, 0, 20, 0, fmt=fmt)
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size - 7)
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        count_rows(path)
    assert info.value.file == path
    assert shard_fingerprint(tmp_path, f"{DAY1}/hour=00/part-0.{lib.EXT[fmt]}").rows is None


def test_fingerprint_describe_and_validation():
    assert ShardFingerprint("a.parquet", 1_234_567, 20000).describe() == "20000 rows / 1.2 MB"
    assert ShardFingerprint("a.parquet", 999, None).describe() == "unreadable / 999 bytes"
    with pytest.raises(ValueError, match="bytes"):
        ShardFingerprint("a.parquet", -1, 3)
    with pytest.raises(ValueError, match="exactly the keys"):
        ShardFingerprint.from_dict({"name": "a", "bytes": 3})
    with pytest.raises(ValueError, match="trained"):
        StreamPosition("a", 0, 0, 0, trained="a.parquet")


def test_parquet_rows_come_from_the_footer(tmp_path, monkeypatch):
    path = _shard(tmp_path, DAY1, 0, 11, 0)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read the data"))
    assert count_rows(path) == 11


def test_a_position_survives_json_with_its_history(tmp_path):
    import json

    root = str(tmp_path)
    lib.write_shards(root, [3, 3, 3])
    stream = LogStream(root, lib.schema(), batch_size=2, skip_bad_shards=True)
    _, position = _stop_at(stream, 4)
    again = StreamPosition.from_dict(json.loads(json.dumps(position.to_dict())))
    assert again == position and hash(again) == hash(position)
    names = [f"{DAY1}/hour=0{h}/part-0.parquet" for h in (0, 1)]
    assert again.to_dict()["trained"] == [
        {"name": name, "bytes": os.path.getsize(os.path.join(root, name)), "rows": 3} for name in names
    ]


def test_exclude_keeps_named_shards_out_also_when_they_appear_later(tmp_path):
    import threading

    _shard(tmp_path, DAY1, 0, 10, 0)
    _shard(tmp_path, DAY1, 1, 10, 10)
    held = f"{DAY1}/hour=01/part-0.parquet"
    stream = LogStream(str(tmp_path), lib.schema(), batch_size=4, exclude=[held])
    assert stream.shards() == [f"{DAY1}/hour=00/part-0.parquet"]
    assert _ids(stream.iter_numpy()) == list(range(10))

    follow = LogStream(str(tmp_path), lib.schema(), batch_size=4, exclude=[held],
                       follow=FollowOptions(poll_interval_s=30.0))
    threading.Timer(0.5, follow.request_stop).start()  # the 30 s wait ends at once
    assert _ids(follow.iter_numpy()) == list(range(10))
    assert follow.report().stopped_by == "requested"
    with pytest.raises(TypeError, match="exclude"):
        LogStream(str(tmp_path), lib.schema(), batch_size=4, exclude=held)
