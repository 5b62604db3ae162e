"""write_shard + LogStream: round trips, time order, batching, resume, follow mode."""

import json
import os
import threading
import time

import numpy as np
import pytest

import reader_testlib as lib
from matta_rec.errors import DataError
from matta_rec.data.reader import FollowOptions, LogStream, StreamPosition
from matta_rec.data.schema import Schema
from matta_rec.data.writers import format_of, write_shard


def _ids(batches):
    return [int(i) for f, *_ in batches for i in f["slot"]]


def _at(position):
    """The place of a position (its history left out)."""
    return position.shard, position.row, position.rows_consumed, position.epoch


# ------------------------------------------------------------------ writers
@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_round_trip_every_kind(tmp_path, fmt):
    schema = lib.schema()
    cols = lib.columns(11)
    cols["item_tags"] = [["x", "y"], "z"] + list(cols["item_tags"][2:])  # token lists are joined
    path = write_shard(tmp_path / f"a.{fmt}", cols, schema)
    assert path == str(tmp_path / f"a.{fmt}")
    assert sorted(os.listdir(tmp_path)) == [f"a.{fmt}"]  # no temporary file left
    (features, labels), = LogStream(path, schema, batch_size=100).iter_numpy()
    assert list(features) == list(schema.feature_names)
    assert sorted(labels) == ["event", "target", "weight"]
    assert features["user_id"].tolist() == list(cols["user_id"])
    assert isinstance(features["user_id"][0], str)
    assert features["item_tags"].tolist()[:3] == ["x|y", "z", cols["item_tags"][2]]
    assert features["slot"].dtype == np.int64
    np.testing.assert_array_equal(features["slot"], cols["slot"])
    assert features["user_age"].dtype == np.float32
    np.testing.assert_array_equal(features["user_age"], cols["user_age"])
    assert features["item_vec"].dtype == np.float32 and features["item_vec"].shape == (11, 3)
    np.testing.assert_array_equal(features["item_vec"], cols["item_vec"])  # exact float32
    np.testing.assert_array_equal(labels["target"], cols["teacher_prob"])
    np.testing.assert_array_equal(labels["event"], cols["click"])
    np.testing.assert_array_equal(labels["weight"], cols["w"])


def test_write_shard_argument_errors(tmp_path):
    schema = lib.schema()
    cols = lib.columns(3)
    with pytest.raises(ValueError, match="extension"):
        write_shard(tmp_path / "a.json", cols, schema)
    with pytest.raises(ValueError, match="format must be one of"):
        write_shard(tmp_path / "a.parquet", cols, schema, format="orc")
    partial = dict(cols)
    del partial["click"]
    with pytest.raises(ValueError, match=r"\['click'\].*missing"):
        write_shard(tmp_path / "a.parquet", partial, schema)
    ragged = dict(cols, user_age=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="same number of rows"):
        write_shard(tmp_path / "a.parquet", ragged, schema)
    with pytest.raises(ValueError, match=r"\[rows, 3\]"):
        write_shard(tmp_path / "a.parquet", dict(cols, item_vec=np.zeros((3, 2))), schema)
    assert os.listdir(tmp_path) == []
    assert format_of("x/y.TFRecord") == "tfrecord" and format_of("y.txt") is None


def test_write_shard_int64_categorical_in_csv_reads_back_as_int(tmp_path):
    path = write_shard(tmp_path / "a.csv", lib.columns(4, first_id=10**12), lib.schema())
    (features, _), = LogStream(path, lib.schema(), batch_size=10).iter_numpy()
    assert features["slot"].tolist() == [10**12 + i for i in range(4)]


# ------------------------------------------------------------------ order
def test_shards_are_read_in_path_order_not_creation_order(tmp_path):
    root = str(tmp_path)
    schema = lib.schema()
    layout = [  # written out of order, mixed formats
        ("dt=2026-11-02/hour=00/part-0.csv", 300),
        ("dt=2026-11-01/hour=10/part-0.parquet", 200),
        ("dt=2026-11-01/hour=07/part-1.tfrecord", 100),
        ("dt=2026-11-01/hour=07/part-0.parquet", 0),
    ]
    for rel, first in layout:
        write_shard(os.path.join(root, rel), lib.columns(3, first_id=first), schema)
    # ignored: hidden files, temp names, markers, other extensions
    open(os.path.join(root, "dt=2026-11-01", "_SUCCESS"), "w").close()
    open(os.path.join(root, "dt=2026-11-01", ".part-9.parquet.abc.tmp"), "w").close()
    open(os.path.join(root, "schema.yaml"), "w").close()
    stream = LogStream(root, schema, batch_size=2)
    assert stream.shards() == sorted(rel for rel, _ in layout)
    ids = _ids(stream.iter_numpy())
    assert ids == [0, 1, 2, 100, 101, 102, 200, 201, 202, 300, 301, 302]
    glob_stream = LogStream(os.path.join(root, "dt=2026-11-01", "**", "*.parquet"), schema, batch_size=4)
    assert _ids(glob_stream.iter_numpy()) == [0, 1, 2, 200, 201, 202]
    files = [os.path.join(root, rel) for rel, _ in layout[:2]]
    assert _ids(LogStream(files, schema, batch_size=4).iter_numpy()) == [200, 201, 202, 300, 301, 302]


def test_missing_data_and_no_shards(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        LogStream(tmp_path / "nope", lib.schema(), batch_size=2)
    with pytest.raises(DataError, match="no shards found"):
        list(LogStream(tmp_path, lib.schema(), batch_size=2).iter_numpy())


# ------------------------------------------------------------------ batching
@pytest.mark.parametrize("batch_size", [1, 4, 7, 100])
def test_batches_span_shards_and_last_is_partial(tmp_path, batch_size):
    lib.write_shards(tmp_path, [5, 3, 9])
    stream = LogStream(str(tmp_path), lib.schema(), batch_size=batch_size)
    batches = list(stream.iter_numpy_with_position())
    sizes = [len(l["target"]) for _, l, _ in batches]
    assert sum(sizes) == 17 and all(s == batch_size for s in sizes[:-1])
    assert 0 < sizes[-1] <= batch_size
    assert _ids(batches) == list(range(17))
    assert [r for *_, r in batches] == list(np.cumsum(sizes))
    report = stream.report()
    assert report.rows_read == 17 and len(report.shards_read) == 3 and report.stopped_by == "end"


def test_dataset_matches_iter_numpy(tmp_path):
    lib.write_shards(tmp_path, [5, 6], fmt="csv")
    lib.write_shards(tmp_path, [4], fmt="tfrecord", first_id=11, folder="dt=2026-11-02")
    schema = lib.schema()
    stream = LogStream(str(tmp_path), schema, batch_size=4)
    expected = list(stream.iter_numpy_with_position())
    ds = stream.dataset(with_position=True)
    spec = ds.element_spec
    assert set(spec[0]) == set(schema.feature_names)
    assert spec[0]["item_vec"].shape.as_list() == [None, 3]
    assert spec[0]["user_id"].dtype.name == "string" and spec[0]["slot"].dtype.name == "int64"
    assert sorted(spec[1]) == ["event", "target", "weight"] and spec[2].shape.rank == 0
    got = [(f, l, int(r)) for f, l, r in ds.as_numpy_iterator()]
    assert len(got) == len(expected) == 4
    for (f, l, r), (ef, el, er) in zip(got, expected):
        assert r == er
        assert [s.decode() for s in f["user_id"]] == ef["user_id"].tolist()
        np.testing.assert_array_equal(f["item_vec"], ef["item_vec"])
        np.testing.assert_array_equal(f["slot"], ef["slot"])
        for key in el:
            np.testing.assert_array_equal(l[key], el[key])
    plain = list(stream.dataset())
    assert len(plain[0]) == 2 and len(plain) == 4


def test_dataset_error_keeps_the_data_error(tmp_path):
    import tensorflow as tf

    cols = lib.columns(5)
    cols["click"][3] = 7.0
    write_shard(tmp_path / "a.parquet", cols, lib.schema())
    stream = LogStream(str(tmp_path), lib.schema(), batch_size=2)
    with pytest.raises(tf.errors.OpError) as info:
        list(stream.dataset())
    assert "column 'click'" in str(info.value)
    assert isinstance(stream.error, DataError) and stream.error.row == 3
    assert stream.report().stopped_by == "error"


def test_epochs(tmp_path):
    lib.write_shards(tmp_path, [3, 2])
    stream = LogStream(str(tmp_path), lib.schema(), batch_size=2, epochs=2)
    batches = list(stream.iter_numpy_with_position())
    assert _ids(batches) == [0, 1, 2, 3, 4] * 2
    pos = stream.position_at(6)
    assert pos.epoch == 1 and pos.row == 1 and pos.rows_consumed == 6
    resumed = LogStream(str(tmp_path), lib.schema(), batch_size=2, epochs=2, start=pos)
    assert _ids(resumed.iter_numpy()) == [1, 2, 3, 4]


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_stop_mid_stream_save_position_resume_gets_exactly_the_rest(tmp_path, fmt):
    lib.write_shards(tmp_path, [7, 5, 8], fmt=fmt)
    schema = lib.schema()
    stream = LogStream(str(tmp_path), schema, batch_size=3)
    seen = []
    for features, labels, rows_end in stream.dataset(with_position=True):
        seen.extend(features["slot"].numpy().tolist())
        if int(rows_end) == 9:  # mid-way through the second shard
            saved = json.dumps(stream.position_at(int(rows_end)).to_dict())
            break
    position = StreamPosition.from_dict(json.loads(saved))
    assert _at(position) == ("dt=2026-11-01/hour=01/part-0." + fmt, 2, 9, 0)
    # the history: both shards with rows before the position, as on disk
    assert [(fp.name, fp.rows) for fp in position.trained] == [
        (f"dt=2026-11-01/hour=0{h}/part-0.{fmt}", n) for h, n in ((0, 7), (1, 5))
    ]
    assert [fp.bytes for fp in position.trained] == [
        os.path.getsize(os.path.join(tmp_path, fp.name)) for fp in position.trained
    ]
    assert position.quarantined == ()
    resumed = LogStream(str(tmp_path), schema, batch_size=3, start=position)
    rest = list(resumed.dataset(with_position=True).as_numpy_iterator())
    rest_ids = [int(i) for f, _, _ in rest for i in f["slot"]]
    assert seen == list(range(9)) and rest_ids == list(range(9, 20))
    # rows_end keeps counting from the stream's origin
    assert [int(r) for *_, r in rest] == [12, 15, 18, 20]
    assert resumed.report().rows_read == 11


def test_resume_from_every_batch_boundary(tmp_path):
    lib.write_shards(tmp_path, [4, 1, 6, 3])
    schema = lib.schema()
    full = list(LogStream(str(tmp_path), schema, batch_size=3).iter_numpy_with_position())
    stream = LogStream(str(tmp_path), schema, batch_size=3)
    for k, (_, _, rows_end) in enumerate(stream.iter_numpy_with_position()):
        position = stream.position_at(rows_end)
        resumed = list(LogStream(str(tmp_path), schema, batch_size=3, start=position).iter_numpy())
        assert _ids(resumed) == list(range(rows_end, 14)), (k, position)
    assert _ids(full) == list(range(14))


def test_resume_twice_and_chain_positions(tmp_path):
    lib.write_shards(tmp_path, [5, 5, 5])
    schema = lib.schema()
    got = []
    position = None
    for _ in range(10):
        stream = LogStream(str(tmp_path), schema, batch_size=4, start=position)
        batches = list(stream.iter_numpy_with_position())
        if not batches:
            break
        features, _, rows_end = batches[0]  # consume one batch per "process"
        got.extend(features["slot"].tolist())
        position = StreamPosition.from_dict(stream.position_at(rows_end).to_dict())
    assert got == list(range(15))
    assert position.rows_consumed == 15


def test_position_at_bounds_and_start_position(tmp_path):
    lib.write_shards(tmp_path, [4])
    stream = LogStream(str(tmp_path), lib.schema(), batch_size=2)
    assert stream.position_at(0) == StreamPosition(trained=(), quarantined=())
    list(stream.iter_numpy())
    end = stream.position_at(4)
    assert _at(end) == ("dt=2026-11-01/hour=00/part-0.parquet", 4, 4, 0)
    assert [fp.name for fp in end.trained] == ["dt=2026-11-01/hour=00/part-0.parquet"]
    # position 2 (shard boundary at row 2 of the only shard) has it partly trained
    assert [fp.rows for fp in stream.position_at(2).trained] == [4]
    with pytest.raises(ValueError, match="beyond"):
        stream.position_at(5)


def test_resume_position_in_a_changed_or_missing_shard(tmp_path):
    lib.write_shards(tmp_path, [4, 4])
    schema = lib.schema()
    gone = StreamPosition("dt=2026-11-01/hour=00/part-9.parquet", 2, 2, 0)
    with pytest.raises(DataError, match="gone"):
        list(LogStream(str(tmp_path), schema, batch_size=2, start=gone).iter_numpy())
    too_far = StreamPosition("dt=2026-11-01/hour=00/part-0.parquet", 9, 9, 0)
    with pytest.raises(DataError, match="changed"):
        list(LogStream(str(tmp_path), schema, batch_size=2, start=too_far).iter_numpy())


def test_argument_validation(tmp_path):
    lib.write_shards(tmp_path, [2])
    root, schema = str(tmp_path), lib.schema()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        LogStream(root, schema, batch_size=0)
    with pytest.raises(ValueError, match="epochs must be 1"):
        LogStream(root, schema, batch_size=2, follow=FollowOptions(), epochs=2)
    with pytest.raises(TypeError, match="FollowOptions"):
        LogStream(root, schema, batch_size=2, follow={"poll_interval_s": 1})
    with pytest.raises(ValueError, match="prefetch"):
        LogStream(root, schema, batch_size=2, prefetch=-5)
    with pytest.raises(ValueError, match="poll_interval_s"):
        FollowOptions(poll_interval_s=0)
    with pytest.raises(ValueError, match="max_rows"):
        FollowOptions(max_rows=0)
    with pytest.raises(ValueError, match="unknown stream position key"):
        StreamPosition.from_dict({"shard": "a", "offset": 3})
    with pytest.raises(ValueError, match="row must be an integer"):
        StreamPosition("a", -1, 0)
    with pytest.raises(ValueError, match="fixed list"):
        LogStream([lib.write_shards(tmp_path / "x", [1])[0]], schema, batch_size=2, follow=FollowOptions())


# ------------------------------------------------------------------ follow
def _producer(root, plan, delay, done=None):
    """Write shards (hour, first_id, rows) one by one, then optionally a sentinel."""

    def run():
        for hour, first, rows in plan:
            time.sleep(delay)
            path = os.path.join(root, "dt=2026-11-01", f"hour={hour:02d}", "part-0.parquet")
            write_shard(path, lib.columns(rows, first_id=first), lib.schema())
        if done:
            time.sleep(delay)
            open(os.path.join(root, done), "w").close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_follow_reads_new_shards_until_sentinel(tmp_path):
    root = str(tmp_path)
    lib.write_shards(root, [3])
    producer = _producer(root, [(1, 3, 4), (2, 7, 2)], delay=0.15, done="_DONE")
    stream = LogStream(
        root, lib.schema(), batch_size=2,
        follow=FollowOptions(poll_interval_s=0.05, idle_timeout_s=30, sentinel="_DONE"),
    )
    ids = _ids(stream.iter_numpy())
    producer.join()
    assert ids == list(range(9))
    assert stream.report().stopped_by == "sentinel"


def test_follow_stops_after_idle_timeout(tmp_path):
    root = str(tmp_path)
    lib.write_shards(root, [3])
    producer = _producer(root, [(1, 3, 2)], delay=0.1)
    stream = LogStream(
        root, lib.schema(), batch_size=10,
        follow=FollowOptions(poll_interval_s=0.05, idle_timeout_s=0.6),
    )
    start = time.monotonic()
    ids = _ids(stream.iter_numpy())
    elapsed = time.monotonic() - start
    producer.join()
    assert ids == list(range(5))
    assert 0.6 <= elapsed < 10
    assert stream.report().stopped_by == "idle_timeout"


def test_follow_max_rows_cuts_exactly_and_resumes(tmp_path):
    root = str(tmp_path)
    lib.write_shards(root, [4, 4, 4])
    opts = FollowOptions(poll_interval_s=0.05, idle_timeout_s=0.3, max_rows=6)
    stream = LogStream(root, lib.schema(), batch_size=4, follow=opts)
    batches = list(stream.iter_numpy_with_position())
    assert _ids(batches) == list(range(6)) and batches[-1][2] == 6
    assert stream.report().stopped_by == "max_rows"
    position = stream.position_at(6)
    rest = LogStream(root, lib.schema(), batch_size=4, follow=opts, start=position)
    assert _ids(rest.iter_numpy()) == list(range(6, 12))
    assert rest.report().stopped_by == "max_rows"


def test_follow_out_of_order_shard_is_an_error(tmp_path):
    root = str(tmp_path)
    lib.write_shards(root, [2, 2, 2], folder="dt=2026-11-02")
    late = os.path.join(root, "dt=2026-11-01", "hour=05", "part-0.parquet")
    opts = FollowOptions(poll_interval_s=0.05, idle_timeout_s=1.0)
    stream = LogStream(root, lib.schema(), batch_size=2, follow=opts, read_ahead=0)
    seen = []
    with pytest.raises(DataError) as info:
        for features, _ in stream.iter_numpy():
            seen.extend(features["slot"].tolist())
            if len(seen) == 6:  # everything present has been read; now a late shard lands
                write_shard(late, lib.columns(3, first_id=100), lib.schema())
    assert info.value.file == late and "time order" in str(info.value)
    assert seen == list(range(6))
    # With skip_bad_shards it is quarantined, counted and reported instead.
    os.remove(late)
    stream = LogStream(root, lib.schema(), batch_size=2, follow=opts, read_ahead=0, skip_bad_shards=True)
    seen = []
    for features, _ in stream.iter_numpy():
        seen.extend(features["slot"].tolist())
        if len(seen) == 6:
            write_shard(late, lib.columns(3, first_id=100), lib.schema())
    assert seen == list(range(6))
    (q,) = stream.report().quarantined
    assert q.shard == "dt=2026-11-01/hour=05/part-0.parquet" and q.rows == 3
    assert "time order" in q.error


def test_follow_resume_skips_consumed_shards(tmp_path):
    root = str(tmp_path)
    lib.write_shards(root, [3, 3, 3])
    opts = FollowOptions(poll_interval_s=0.05, idle_timeout_s=0.2)
    position = StreamPosition("dt=2026-11-01/hour=01/part-0.parquet", 1, 4, 0)
    stream = LogStream(root, lib.schema(), batch_size=2, follow=opts, start=position)
    assert _ids(stream.iter_numpy()) == list(range(4, 9))


def test_memory_is_bounded_by_read_ahead(tmp_path, monkeypatch):
    """Only a bounded number of shards is loaded ahead of the consumer."""
    import matta_rec.data.reader as reader_module

    calls = []
    original = reader_module.read_shard

    def counting(path, schema):
        calls.append(path)
        return original(path, schema)

    monkeypatch.setattr(reader_module, "read_shard", counting)
    lib.write_shards(tmp_path, [2] * 12)
    stream = LogStream(str(tmp_path), lib.schema(), batch_size=2, read_ahead=1)
    it = stream.iter_numpy()
    next(it)
    time.sleep(0.5)  # give the read-ahead thread every chance to run ahead
    # the shard being delivered + one in the queue + one waiting to be queued
    assert len(calls) <= 3, len(calls)
    assert len(list(it)) == 11 and len(calls) == 12


def test_tfrecord_protos_parse_with_protobuf(tmp_path):
    """The hand-encoded tf.Example bytes are what protobuf itself reads."""
    import tensorflow as tf

    cols = lib.columns(3)
    cols["slot"] = np.array([-5, 2**40, -(2**63)], dtype=np.int64)
    cols["user_id"] = np.array(["ü-ñ", "", "x" * 300], dtype=object)  # multi-byte, empty, long
    ages = list(cols["user_age"])
    ages[1] = None  # a null is a missing feature
    cols["user_age"] = ages
    path = write_shard(tmp_path / "a.tfrecord", cols, lib.schema())
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    examples = [tf.train.Example.FromString(r).features.feature for r in records]
    assert [e["slot"].int64_list.value[0] for e in examples] == [-5, 2**40, -(2**63)]
    assert [e["user_id"].bytes_list.value[0].decode() for e in examples] == ["ü-ñ", "", "x" * 300]
    assert "user_age" not in examples[1] and examples[0]["user_age"].float_list.value[0] == 20.0
    np.testing.assert_array_equal(examples[2]["item_vec"].float_list.value, cols["item_vec"][2])
    assert sorted(examples[0]) == sorted([*lib.SCHEMA_DICT["features"], "click", "teacher_prob", "w"])


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_dataset_strings_survive_the_arrow_buffer_path(tmp_path, fmt):
    """Multi-byte, empty and long strings, batches spanning shards and groups."""
    schema = lib.schema()
    values = ["ü-ñ", "", "x" * 300, "日本", "a|b"]
    for i in range(3):
        cols = lib.columns(7, first_id=7 * i)
        cols["user_id"] = np.array([values[(j + i) % 5] for j in range(7)], dtype=object)
        write_shard(tmp_path / f"h={i}" / f"part.{fmt}", cols, schema)
    stream = LogStream(str(tmp_path), schema, batch_size=3)
    expected = [f["user_id"].tolist() for f, _ in stream.iter_numpy()]
    got = [[v.decode() for v in f["user_id"].numpy()] for f, _ in stream.dataset()]
    assert got == expected and sum(map(len, got)) == 21


def _tfrecord_paths_agree(path, schema):
    """The traced TFRecord decode gives exactly the value-by-value table;
    returns whether it handled the shard (False: it handed it over)."""
    from matta_rec.data import formats

    wanted = formats._tf_types(schema)
    fast = formats._read_tfrecord_fast(path, schema, wanted)
    slow = formats._read_tfrecord_by_value(path, schema, wanted)
    assert formats.read_tfrecord(path, schema).equals(slow)
    if fast is not None:
        assert fast.schema.equals(slow.schema), (fast.schema, slow.schema)
        assert fast.equals(slow)
    return fast is not None


def test_tfrecord_fast_decode_equals_the_value_by_value_read(tmp_path):
    cols = lib.columns(50)
    cols["user_id"][:3] = ["ü-ñ", "", "x" * 300]  # multi-byte, empty, long
    path = write_shard(tmp_path / "a.tfrecord", cols, lib.schema())
    assert _tfrecord_paths_agree(path, lib.schema())


@pytest.mark.parametrize(
    "change",
    ["missing value", "repeated value", "short vector", "missing column", "int64 numbers", "not utf-8"],
)
def test_tfrecord_fast_decode_hands_over_what_it_does_not_cover(tmp_path, change):
    rows = lib.tf_rows(lib.columns(20))
    if change == "missing value":
        del rows[4]["user_id"]
    elif change == "repeated value":
        rows[4]["user_age"] = ("float", [30.0, 31.0])
    elif change == "short vector":
        rows[6]["item_vec"] = ("float", [0.5, 0.5])
    elif change == "missing column":
        for row in rows:
            del row["w"]
    elif change == "int64 numbers":
        for row in rows:
            row["click"] = ("int64", [int(row["click"][1][0])])
    elif change == "not utf-8":
        rows[3]["user_id"] = ("bytes", [b"\xff\xfeu1"])
    path = lib.write_tfrecord_rows(tmp_path / "a.tfrecord", rows)
    from matta_rec.data import formats

    wanted = formats._tf_types(lib.schema())
    assert formats._read_tfrecord_fast(path, lib.schema(), wanted) is None
    if change == "repeated value":  # the value-by-value path names the row
        with pytest.raises(DataError, match=r"column 'user_age', row 4: record 4 holds 2 values"):
            formats.read_tfrecord(path, lib.schema())
    elif change != "not utf-8":
        assert not _tfrecord_paths_agree(path, lib.schema())


@pytest.mark.parametrize("strings", [True, False])
def test_dataset_packing_gives_every_column_of_iter_numpy(tmp_path, strings):
    """dataset() packs a group's columns for the hand-over to tf.data (strings
    in one buffer, the others stacked by dtype and shape); unpacked, every
    feature and label of every batch, and the positions, are iter_numpy's."""
    data = {"features": dict(lib.SCHEMA_DICT["features"]), "labels": dict(lib.SCHEMA_DICT["labels"])}
    if not strings:
        del data["features"]["user_id"], data["features"]["item_tags"]
    schema = Schema.from_dict(data)
    for i, n in enumerate([7, 5, 9]):
        write_shard(tmp_path / f"h={i}" / "part.parquet", lib.columns(n, first_id=10 * i), schema)
    stream = LogStream(str(tmp_path), schema, batch_size=4)
    expected = list(stream.iter_numpy_with_position())
    got = list(stream.dataset(with_position=True))
    assert len(got) == len(expected) == 6
    for (f, l, rows_end), (ef, el, erows_end) in zip(got, expected):
        assert int(rows_end) == erows_end
        assert sorted(f) == sorted(ef) and sorted(l) == sorted(el)
        for name, value in ef.items():
            value = np.asarray(value)
            if value.dtype == object:
                assert [v.decode() for v in f[name].numpy()] == value.tolist(), name
            else:
                assert f[name].dtype.as_numpy_dtype == value.dtype, name
                np.testing.assert_array_equal(f[name].numpy(), value, err_msg=name)
        for key, value in el.items():
            np.testing.assert_array_equal(l[key].numpy(), value, err_msg=key)
