"""Logs read straight from object storage (s3://) through matta_rec.data.filesystem.

A real S3 API (moto's standalone server) runs on 127.0.0.1 for the module
(tests/s3_testlib.py); the reader finds it through the standard AWS
environment only.
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import reader_testlib as lib
from matta_rec.data import filesystem as fs
from matta_rec.data.fingerprints import count_rows, shard_fingerprint
from matta_rec.data.holdout import split_holdout
from matta_rec.data.reader import FollowOptions, LogStream, StreamPosition
from matta_rec.errors import DataError
from s3_testlib import s3, s3_server  # noqa: F401 (fixtures)

SIZES = [50, 70, 30]


def _ids(stream):
    return np.concatenate([f["slot"] for f, _ in stream.iter_numpy()])


def _logs(tmp_path, s3, fmt="parquet", sizes=SIZES):
    """Shards written locally, uploaded under ``s3://BUCKET/logs``, plus objects
    the listing must ignore."""
    local = tmp_path / "local"
    lib.write_shards(local, sizes, fmt=fmt)
    names = s3.upload(local, "logs")
    s3.put("logs/_SUCCESS", b"")
    s3.put("logs/dt=2026-11-01/.part-9.parquet.tmp", b"partial")
    s3.put("logs/_tmp/part-0.parquet", b"not a shard")
    return local, names


# ------------------------------------------------------------------ the layer
def test_uri_helpers_without_a_server(tmp_path):
    assert fs.normalize("s3://b//logs/") == "s3://b/logs"
    assert fs.normalize("hdfs://nn:8020/logs/") == "hdfs://nn:8020/logs"
    assert fs.normalize(f"file://{tmp_path}/x/") == str(tmp_path / "x")
    assert not fs.is_uri(f"file://{tmp_path}") and fs.is_uri("gs://b/x")
    assert fs.join("s3://b/logs", "dt=1/a.csv") == "s3://b/logs/dt=1/a.csv"
    assert fs.relative("s3://b/logs/dt=1/a.csv", "s3://b/logs") == "dt=1/a.csv"
    assert fs.relative("s3://b/logs2/a.csv", "s3://b/logs") is None
    assert fs.relative(str(tmp_path / "a.csv"), "s3://b") is None
    assert fs.common_folder(["s3://b/l/x/a.csv", "s3://b/l/y/b.csv"]) == "s3://b/l"
    with pytest.raises(DataError, match="different file systems or buckets"):
        fs.common_folder(["s3://b/l/a.csv", "s3://c/l/b.csv"])
    with pytest.raises(DataError, match="AWS_ENDPOINT_URL") as err:
        fs.normalize("s3://b/logs?endpoint_override=localhost:9000")
    assert "s3://b/logs?endpoint_override" in str(err.value)


def test_file_uris_read_like_local_paths(tmp_path):
    paths = lib.write_shards(tmp_path / "logs", [5, 7])
    stream = LogStream(f"file://{tmp_path}/logs", lib.schema(), batch_size=4)
    assert stream.root == str(tmp_path / "logs")
    assert stream.shards() == ["dt=2026-11-01/hour=00/part-0.parquet", "dt=2026-11-01/hour=01/part-0.parquet"]
    np.testing.assert_array_equal(_ids(stream), np.arange(12))
    listed = LogStream([f"file://{p}" for p in paths], lib.schema(), batch_size=4, root=f"file://{tmp_path}/logs")
    assert listed.shards() == stream.shards()


# ------------------------------------------------------------------ reading
@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_every_row_in_time_order_from_s3(tmp_path, s3, fmt):
    _, names = _logs(tmp_path, s3, fmt)
    stream = LogStream(s3.uri("logs") + "/", lib.schema(), batch_size=32)
    assert stream.root == s3.uri("logs")
    assert stream.shards() == names  # hidden names and folders ignored
    np.testing.assert_array_equal(_ids(stream), np.arange(sum(SIZES)))
    report = stream.report()
    assert report.shards_read == names and report.rows_read == sum(SIZES) and not report.quarantined
    # Fingerprints and row counts come through the same layer.
    for name, n in zip(names, SIZES):
        assert count_rows(s3.uri("logs", name)) == n
        assert shard_fingerprint(s3.uri("logs"), name).rows == n


def test_dataset_glob_file_list_and_root_on_s3(tmp_path, s3):
    local, names = _logs(tmp_path, s3)
    lib.write_shards(tmp_path / "more", [9], first_id=150, fmt="csv", folder="dt=2026-11-02")
    names += s3.upload(tmp_path / "more", "logs")
    schema = lib.schema()
    rows = [int(v) for f, _ in LogStream(s3.uri("logs"), schema, batch_size=40).dataset()
            for v in f["slot"].numpy()]
    assert rows == list(range(159))
    glob = LogStream(s3.uri("logs", "dt=2026-11-0*/hour=0[02]/*.*"), schema, batch_size=8)
    assert glob.root == s3.uri("logs")
    assert glob.shards() == [names[0], names[2], names[3]]
    files = [s3.uri("logs", n) for n in names[1:3]]
    listed = LogStream(files, schema, batch_size=8, root=s3.uri("logs"))
    assert listed.shards() == names[1:3]
    np.testing.assert_array_equal(_ids(listed), np.arange(50, 150))
    assert LogStream(s3.uri("logs", names[1]), schema, batch_size=8).shards() == ["part-0.parquet"]
    split = split_holdout(s3.uri("logs"), schema, 1)
    assert split.holdout == (names[-1],) and split.holdout_files == [s3.uri("logs", names[-1])]
    with pytest.raises(DataError, match="no such directory, file or glob") as err:
        LogStream(s3.uri("nothing-here"), schema, batch_size=8)
    assert s3.uri("nothing-here") in str(err.value)
    with pytest.raises(DataError, match="outside the data root"):
        LogStream(files, schema, batch_size=8, root=str(local))


# ------------------------------------------------------------------ resume
def test_a_position_from_s3_resumes_exactly_and_checks_the_trained_shards(tmp_path, s3):
    local, names = _logs(tmp_path, s3, "csv")
    schema = lib.schema()
    stream = LogStream(s3.uri("logs"), schema, batch_size=32, read_ahead=0)
    seen = []
    for features, _, rows_end in stream.iter_numpy_with_position():
        seen.extend(features["slot"])
        if rows_end == 96:
            break
    saved = json.loads(json.dumps(stream.position_at(96).to_dict()))
    assert saved["shard"] == names[1] and saved["row"] == 46
    assert [fp["name"] for fp in saved["trained"]] == names[:2]
    again = LogStream(s3.uri("logs"), schema, batch_size=32, start=StreamPosition.from_dict(saved))
    rest = _ids(again)
    np.testing.assert_array_equal(np.concatenate([seen, rest]), np.arange(sum(SIZES)))
    # A trained object replaced by other data: the resume refuses it, naming its URI.
    lib.write_shards(tmp_path / "other", [SIZES[0] + 1], fmt="csv")
    s3.upload(tmp_path / "other", "logs")
    with pytest.raises(DataError, match="different logs") as err:
        LogStream(s3.uri("logs"), schema, batch_size=32, start=saved).check_start()
    assert s3.uri("logs", names[0]) in str(err.value)


# ------------------------------------------------------------------ follow
def test_follow_mode_picks_up_a_newly_uploaded_object(tmp_path, s3):
    _logs(tmp_path, s3, "tfrecord", sizes=[40])
    lib.write_shards(tmp_path / "new", [25], fmt="tfrecord", first_id=40, folder="dt=2026-11-02")
    stream = LogStream(s3.uri("logs"), lib.schema(), batch_size=16,
                       follow=FollowOptions(poll_interval_s=0.1, idle_timeout_s=60, sentinel="_DONE"))
    first_batch = threading.Event()

    def producer():
        first_batch.wait(30)
        s3.upload(tmp_path / "new", "logs")
        s3.put("logs/_DONE", b"")

    thread = threading.Thread(target=producer)
    thread.start()
    ids = []
    for features, _ in stream.iter_numpy():
        ids.extend(features["slot"])
        first_batch.set()
    thread.join()
    assert ids == list(range(65))
    report = stream.report()
    assert report.stopped_by == "sentinel"
    assert report.shards_read[-1] == "dt=2026-11-02/hour=00/part-0.tfrecord"


def test_request_stop_ends_a_follow_wait_on_s3(tmp_path, s3):
    _logs(tmp_path, s3, sizes=[20])
    stream = LogStream(s3.uri("logs"), lib.schema(), batch_size=8,
                       follow=FollowOptions(poll_interval_s=0.1))
    ids = []
    for features, _ in stream.iter_numpy():
        ids.extend(features["slot"])
        if len(ids) == 16:
            threading.Timer(0.3, stream.request_stop).start()
    assert ids == list(range(20)) and stream.report().stopped_by == "requested"


# ------------------------------------------------------------------ bad objects
@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_a_corrupt_object_is_quarantined_and_named_by_its_uri(tmp_path, s3, fmt):
    local, names = _logs(tmp_path, s3, fmt)
    with open(os.path.join(local, names[1]), "rb") as handle:
        data = handle.read()
    s3.put(f"logs/{names[1]}", data[: len(data) // 2 + 3])  # cut mid-record / mid-footer
    uri = s3.uri("logs", names[1])
    with pytest.raises(DataError, match="truncated or corrupt|truncated") as err:
        _ids(LogStream(s3.uri("logs"), lib.schema(), batch_size=32))
    assert uri in str(err.value) and "ram://" not in str(err.value)
    stream = LogStream(s3.uri("logs"), lib.schema(), batch_size=32, skip_bad_shards=True)
    np.testing.assert_array_equal(_ids(stream), np.r_[0:50, 120:150])
    (entry,) = stream.report().quarantined
    assert entry.shard == names[1] and uri in entry.error


def test_a_bad_csv_value_names_the_uri_row_column_and_fix(tmp_path, s3):
    cols = lib.columns(6)
    cols["user_age"] = np.array(["1", "2", "3", "x", "5", "6"], dtype=object)
    text = "user_id,user_age,slot,item_tags,item_vec,teacher_prob,click,w\n" + "".join(
        f"{cols['user_id'][i]},{cols['user_age'][i]},{i},a,1|2|3,0.5,1,1\n" for i in range(6))
    uri = s3.put("logs/dt=2026-11-01/hour=00/part-0.csv", text.encode())
    with pytest.raises(DataError) as err:
        _ids(LogStream(s3.uri("logs"), lib.schema(), batch_size=4))
    message = str(err.value)
    assert uri in message and "user_age" in message and "row 3" in message
    assert "line 5" in message and "write column 'user_age' as numbers" in message


# ------------------------------------------------------------------ commands
def test_inspect_data_on_s3(tmp_path, s3):
    _, names = _logs(tmp_path, s3, "csv")
    lib.schema().to_yaml(tmp_path / "schema.yaml")
    out = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, "-m", "matta_rec.cli.main", "inspect-data", "--data", s3.uri("logs"),
         "--schema", str(tmp_path / "schema.yaml"), "--json", str(out)],
        capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"data:   {s3.uri('logs')}" in done.stdout and names[2] in done.stdout
    summary = json.loads(out.read_text())
    assert [s["rows"] for s in summary["shards"]] == SIZES


@pytest.mark.slow
def test_train_run_from_s3(tmp_path, s3):
    from train_testlib import tiny_config, write_logs
    from matta_rec.training import train_run

    local = tmp_path / "local"
    write_logs(str(local), shards=3, rows=200)
    s3.upload(local, "logs")
    out = str(tmp_path / "run")
    metrics = train_run(tiny_config(), s3.uri("logs"), str(local / "schema.yaml"), out)
    assert metrics["rows_trained"] == 600 and metrics["train_shards"] == 3
    assert sum(e["rows"] for e in metrics["online"]["curve"]) == 600
    # A new hourly object lands; --resume trains exactly its rows.
    write_logs(str(tmp_path / "more"), shards=4, rows=200)
    s3.upload(tmp_path / "more", "logs", only=[tmp_path / "more/dt=2026-01-01/hour=03/part-0.parquet"])
    again = train_run(None, s3.uri("logs"), None, out, resume=True)
    assert again["rows_trained"] == 800 and again["input"]["root"] == s3.uri("logs")
    assert [fp["name"][-22:] for fp in again["input"]["train_shards"]] == [
        f"hour={h:02d}/part-0.parquet" for h in range(4)]
    held = train_run(tiny_config(**{"data.holdout_shards": 1}), s3.uri("logs"),
                     str(local / "schema.yaml"), str(tmp_path / "held"))
    assert held["rows_trained"] == 600 and held["train_shards"] == 3
    assert held["holdout"]["rows"] == 200
    # evaluate --data s3://... names the shards the run trained on (URIs compared as URIs).
    from matta_rec.cli.evaluate import overlap_warnings

    lines = overlap_warnings(s3.uri("logs"), str(local / "schema.yaml"), [str(tmp_path / "held")])
    assert len(lines) == 1 and "3 of the 4 shard(s)" in lines[0], lines
    assert held["holdout"]["shards"] == ["dt=2026-01-01/hour=03/part-0.parquet"]
