"""Bad input: every case fails with one DataError naming file, column, row and fix."""

import logging
import os

import numpy as np
import pyarrow as pa
import pytest

import reader_testlib as lib
from matta_rec.errors import DataError
from matta_rec.data.formats import read_shard
from matta_rec.data.reader import LogStream
from matta_rec.data.schema import Schema
from matta_rec.data.validation import validate_table
from matta_rec.data.writers import write_shard

N = 8


def _path(tmp_path, fmt, name="part-0"):
    return os.path.join(str(tmp_path), "dt=2026-11-01", "hour=00", f"{name}.{lib.EXT[fmt]}")


def _read_all(path, schema=None, **kwargs):
    stream = LogStream(path, schema or lib.schema(), batch_size=3, **kwargs)
    return list(stream.iter_numpy()), stream


def _error(path, schema=None) -> DataError:
    with pytest.raises(DataError) as info:
        _read_all(path, schema)
    return info.value


def _check(err: DataError, path, column, row):
    assert err.file == os.path.abspath(path)
    assert err.column == column
    assert err.row == row
    text = str(err)
    assert os.path.abspath(path) in text
    if column is not None:
        assert f"column '{column}'" in text
    if row is not None:
        assert f"row {row}" in text
    assert "Fix:" in text


def _variant(**features) -> Schema:
    """The test schema with some features replaced (None removes one)."""
    data = {"features": dict(lib.SCHEMA_DICT["features"]), "labels": dict(lib.SCHEMA_DICT["labels"])}
    for name, spec in features.items():
        if spec is None:
            data["features"].pop(name)
        else:
            data["features"][name] = spec
    return Schema.from_dict(data)


# ------------------------------------------------------------ value problems
VALUE_CASES = {
    # name: (column to corrupt, row, new value, expected error column)
    "nan_numeric": ("user_age", 2, np.nan, "user_age"),
    "inf_numeric": ("user_age", 5, np.inf, "user_age"),
    "target_above_1": ("teacher_prob", 1, 1.5, "teacher_prob"),
    "target_below_0": ("teacher_prob", 6, -0.1, "teacher_prob"),
    "nan_target": ("teacher_prob", 3, np.nan, "teacher_prob"),
    "event_not_binary": ("click", 4, 2.0, "click"),
    "event_fraction": ("click", 7, 0.5, "click"),
    "weight_negative": ("w", 0, -1.0, "w"),
    "weight_inf": ("w", 3, np.inf, "w"),
}


@pytest.mark.parametrize("fmt", lib.FORMATS)
@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_bad_value_names_file_column_row(tmp_path, fmt, case):
    column, row, value, expected = VALUE_CASES[case]
    cols = lib.columns(N)
    cols[column] = cols[column].copy()
    cols[column][row] = value
    path = write_shard(_path(tmp_path, fmt), cols, lib.schema())
    _check(_error(path), path, expected, row)


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_non_finite_dense_value(tmp_path, fmt):
    cols = lib.columns(N)
    cols["item_vec"][3, 1] = np.inf
    path = write_shard(_path(tmp_path, fmt), cols, lib.schema())
    err = _error(path)
    _check(err, path, "item_vec", 3)
    assert "non-finite" in str(err)


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_target_message_explains_range(tmp_path, fmt):
    cols = lib.columns(N)
    cols["teacher_prob"][2] = 3.0
    path = write_shard(_path(tmp_path, fmt), cols, lib.schema())
    text = str(_error(path))
    assert "outside [0, 1]" in text and "sigmoid" in text


# ------------------------------------------------------------------- nulls
@pytest.mark.parametrize("fmt", lib.FORMATS)
@pytest.mark.parametrize("column,row", [("user_age", 2), ("item_vec", 5)])
def test_null_without_default_is_an_error(tmp_path, fmt, column, row):
    cols = lib.columns(N)
    values = list(cols[column])
    values[row] = None
    cols[column] = values
    path = write_shard(_path(tmp_path, fmt), cols, lib.schema())
    err = _error(path)
    _check(err, path, column, row)
    assert "default" in str(err)


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_null_with_default_is_replaced(tmp_path, fmt):
    cols = lib.columns(N)
    ages = list(cols["user_age"])
    ages[2] = None
    vecs = list(cols["item_vec"])
    vecs[5] = None
    cols["user_age"], cols["item_vec"] = ages, vecs
    path = write_shard(_path(tmp_path, fmt), cols, lib.schema())
    schema = lib.schema(user_age={"default": -1.0}, item_vec={"default": [7.0, 8.0, 9.0]})
    batches, _ = _read_all(path, schema)
    age = np.concatenate([f["user_age"] for f, _ in batches])
    vec = np.concatenate([f["item_vec"] for f, _ in batches])
    assert age[2] == -1.0
    assert age[3] == lib.columns(N)["user_age"][3]
    np.testing.assert_array_equal(vec[5], [7.0, 8.0, 9.0])
    np.testing.assert_allclose(vec[4], lib.columns(N)["item_vec"][4], rtol=1e-6)
    assert np.isfinite(age).all() and len(age) == N


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_null_categorical(tmp_path, fmt):
    cols = lib.columns(N)
    users = list(cols["user_id"])
    users[6] = None
    cols["user_id"] = users
    path = write_shard(_path(tmp_path, fmt), cols, lib.schema())
    _check(_error(path), path, "user_id", 6)
    batches, _ = _read_all(path, lib.schema(user_id={"default": "unknown"}))
    got = np.concatenate([f["user_id"] for f, _ in batches])
    assert got[6] == "unknown" and got[5] == "u5"


def test_null_label_is_an_error(tmp_path):
    cols = lib.columns(N)
    target = list(cols["teacher_prob"])
    target[4] = None
    cols["teacher_prob"] = target
    path = write_shard(_path(tmp_path, "parquet"), cols, lib.schema())
    _check(_error(path), path, "teacher_prob", 4)


# ----------------------------------------------------- columns and types
@pytest.mark.parametrize("fmt", lib.FORMATS)
@pytest.mark.parametrize("column", ["user_age", "teacher_prob", "item_vec"])
def test_missing_column(tmp_path, fmt, column):
    cols = lib.columns(N)
    del cols[column]
    if column == "teacher_prob":
        writer_schema = Schema.from_dict(
            {"features": lib.SCHEMA_DICT["features"], "labels": {"target": "click", "weight": "w"}}
        )
    else:
        writer_schema = _variant(**{column: None})
    path = write_shard(_path(tmp_path, fmt), cols, writer_schema)
    err = _error(path)
    _check(err, path, column, None)
    assert "missing" in str(err)


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_wrong_type_text_in_numeric_column(tmp_path, fmt):
    cols = lib.columns(N)
    cols["user_age"] = np.array(["31", "40", "50", "abc", "1", "2", "3", "4"], dtype=object)
    writer_schema = _variant(user_age={"group": "user", "kind": "categorical", "buckets": 10})
    path = write_shard(_path(tmp_path, fmt), cols, writer_schema)
    err = _error(path)
    # CSV is text: the first value that is not a number is located. Parquet
    # and TFRecord store a type per column (per record for TFRecord).
    expected_row = {"csv": 3, "tfrecord": 0, "parquet": None}[fmt]
    _check(err, path, "user_age", expected_row)
    assert "wrong type" in str(err) or "not a number" in str(err)


def test_wrong_type_int_ids_for_string_categorical(tmp_path):
    cols = lib.columns(N)
    path = lib.write_parquet_table(
        _path(tmp_path, "parquet"),
        {
            "user_id": pa.array(np.arange(N)),
            **{k: pa.array(v) for k, v in cols.items() if k not in ("user_id", "item_vec")},
            "item_vec": pa.array(list(cols["item_vec"]), type=pa.list_(pa.float32())),
        },
    )
    err = _error(path)
    _check(err, path, "user_id", None)
    assert "dtype: int64" in str(err)


def test_wrong_type_in_one_tfrecord_row(tmp_path):
    rows = lib.tf_rows(lib.columns(N))
    rows[5]["user_age"] = ("bytes", ["old"])
    path = lib.write_tfrecord_rows(_path(tmp_path, "tfrecord"), rows)
    _check(_error(path), path, "user_age", 5)


def test_int64_numeric_values_are_accepted_in_tfrecord(tmp_path):
    cols = lib.columns(N)
    rows = lib.tf_rows(cols)
    for row in rows:
        row["click"] = ("int64", [int(row["click"][1][0])])
    path = lib.write_tfrecord_rows(_path(tmp_path, "tfrecord"), rows)
    batches, _ = _read_all(path)
    got = np.concatenate([l["event"] for _, l in batches])
    np.testing.assert_array_equal(got, cols["click"])
    assert got.dtype == np.float32


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_dense_of_wrong_length(tmp_path, fmt):
    cols = lib.columns(N)
    cols["item_vec"] = cols["item_vec"][:, :2]
    writer_schema = _variant(item_vec={"group": "item", "kind": "dense", "dim": 2})
    path = write_shard(_path(tmp_path, fmt), cols, writer_schema)
    err = _error(path)
    _check(err, path, "item_vec", 0)
    assert "dim 3" in str(err)


def test_dense_of_wrong_length_in_one_row(tmp_path):
    cols = lib.columns(N)
    vectors = [list(map(float, v)) for v in cols["item_vec"]]
    vectors[6] = vectors[6][:2]
    table = {k: pa.array(v) for k, v in cols.items() if k != "item_vec"}
    table["item_vec"] = pa.array(vectors, type=pa.list_(pa.float32()))
    path = lib.write_parquet_table(_path(tmp_path, "parquet"), table)
    _check(_error(path), path, "item_vec", 6)


def test_invalid_utf8_in_tfrecord_string_feature(tmp_path):
    rows = lib.tf_rows(lib.columns(N))
    rows[3]["user_id"] = ("bytes", [b"\xff\xfeu1"])
    path = lib.write_tfrecord_rows(_path(tmp_path, "tfrecord"), rows)
    err = _error(path)
    _check(err, path, "user_id", 3)
    assert "UTF-8" in str(err)


def test_multi_value_in_scalar_tfrecord_feature(tmp_path):
    rows = lib.tf_rows(lib.columns(N))
    rows[2]["user_age"] = ("float", [1.0, 2.0])
    path = lib.write_tfrecord_rows(_path(tmp_path, "tfrecord"), rows)
    _check(_error(path), path, "user_age", 2)


# ------------------------------------------------------- unreadable files
@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_empty_file(tmp_path, fmt):
    path = _path(tmp_path, fmt)
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    err = _error(path)
    _check(err, path, None, None)
    assert "empty" in str(err)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_shard_without_rows(tmp_path, fmt):
    cols = {k: v[:0] for k, v in lib.columns(N).items()}
    path = write_shard(_path(tmp_path, fmt), cols, lib.schema())
    err = _error(path)
    _check(err, path, None, None)
    assert "no rows" in str(err)


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_truncated_file(tmp_path, fmt):
    path = write_shard(_path(tmp_path, fmt), lib.columns(40), lib.schema())
    data = open(path, "rb").read()
    # Cut inside a record / line (a TFRecord cut exactly at a record boundary
    # cannot be told from a shorter file: the format has no footer).
    cut = data.index(b"\n", int(len(data) * 0.6)) + 4 if fmt == "csv" else int(len(data) * 0.6) + 3
    with open(path, "wb") as handle:
        handle.write(data[:cut])
    err = _error(path)
    assert err.file == os.path.abspath(path)
    assert "Fix:" in str(err)
    assert any(w in str(err) for w in ("truncated", "corrupt", "fields"))


def test_truncated_csv_names_the_line(tmp_path):
    path = write_shard(_path(tmp_path, "csv"), lib.columns(N), lib.schema())
    text = open(path).read().rstrip("\n")
    cut = text[: text.rfind(",")]  # the last line loses its last field
    with open(path, "w") as handle:
        handle.write(cut + "\n")
    err = _error(path)
    _check(err, path, None, N - 1)
    assert f"line {N + 1}" in str(err)


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_corrupt_file(tmp_path, fmt):
    path = write_shard(_path(tmp_path, fmt), lib.columns(40), lib.schema())
    data = bytearray(open(path, "rb").read())
    if fmt == "csv":
        data[len(data) // 2 : len(data) // 2 + 4] = b"\xff\xfe\x00\xc3"
    elif fmt == "tfrecord":
        data[len(data) // 2] ^= 0xFF  # breaks a record's CRC
    else:
        data[:] = os.urandom(len(data))  # no Parquet magic, no footer
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    err = _error(path)
    assert err.file == os.path.abspath(path)
    assert "Fix:" in str(err)


# ---------------------------------------------------------- the whole shard
def test_whole_shard_is_validated_before_any_row_is_yielded(tmp_path):
    good = lib.write_shards(tmp_path, [5])
    cols = lib.columns(20, first_id=5)
    cols["teacher_prob"][19] = 2.0  # last row of the second shard
    bad = write_shard(os.path.join(str(tmp_path), "dt=2026-11-02", "part-0.parquet"), cols, lib.schema())
    stream = LogStream(str(tmp_path), lib.schema(), batch_size=4)
    delivered = []
    with pytest.raises(DataError) as info:
        for features, _ in stream.iter_numpy():
            delivered.extend(features["slot"].tolist())
    # Only the good shard's rows: the batch that would mix in rows of the bad
    # shard (5..7) is never delivered.
    assert delivered == [0, 1, 2, 3]
    assert info.value.row == 19 and info.value.file == os.path.abspath(bad)
    assert good


def test_validate_table_directly(tmp_path):
    path = write_shard(_path(tmp_path, "parquet"), lib.columns(N), lib.schema())
    shard = validate_table(read_shard(path, lib.schema()), lib.schema(), path)
    assert shard.num_rows == N
    assert sorted(shard.labels) == ["event", "target", "weight"]
    assert shard.features["item_vec"].shape == (N, 3)
    assert shard.features["slot"].dtype == np.int64
    assert isinstance(shard.features["user_id"][0], str)
    as_bytes = validate_table(read_shard(path, lib.schema()), lib.schema(), path, strings="bytes")
    assert as_bytes.features["user_id"][0] == b"u0"
    with pytest.raises(ValueError, match="strings must be"):
        validate_table(read_shard(path, lib.schema()), lib.schema(), path, strings="utf8")


def test_extra_columns_are_ignored(tmp_path):
    cols = lib.columns(N)
    cols["debug_note"] = np.array(["x"] * N, dtype=object)
    path = write_shard(_path(tmp_path, "csv"), cols, lib.schema())
    batches, _ = _read_all(path)
    assert sum(len(l["target"]) for _, l in batches) == N
    assert "debug_note" not in batches[0][0]


# ---------------------------------------------------------------- quarantine
def test_skip_bad_shards_quarantines_and_reports(tmp_path, caplog):
    root = str(tmp_path)
    lib.write_shards(root, [5, 6, 7])  # ids 0..17 in hours 00, 01, 02
    # hour=01 gets a bad value: counted, reported with its rows.
    cols = lib.columns(6, first_id=5)
    cols["click"][2] = 3.0
    bad_value = write_shard(os.path.join(root, "dt=2026-11-01", "hour=01", "part-0.parquet"), cols, lib.schema())
    # an unreadable shard between hour 01 and 02.
    corrupt = os.path.join(root, "dt=2026-11-01", "hour=01", "part-1.parquet")
    with open(corrupt, "wb") as handle:
        handle.write(b"not parquet at all")
    with caplog.at_level(logging.WARNING, logger="matta_rec.data.reader"):
        batches, stream = _read_all(root, skip_bad_shards=True)
    ids = np.concatenate([f["slot"] for f, _ in batches]).tolist()
    assert ids == list(range(0, 5)) + list(range(11, 18))
    report = stream.report()
    assert report.rows_read == 12
    assert [q.shard for q in report.quarantined] == [
        "dt=2026-11-01/hour=01/part-0.parquet",
        "dt=2026-11-01/hour=01/part-1.parquet",
    ]
    assert [q.rows for q in report.quarantined] == [6, None]
    assert report.rows_quarantined == 6 and report.unreadable_shards == 1
    assert "column 'click'" in report.quarantined[0].error
    assert os.path.abspath(bad_value) in report.quarantined[0].error
    summary = report.summary()
    assert "unreadable" in summary and "6 rows" in summary
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "quarantined shard dt=2026-11-01/hour=01/part-0.parquet (6 rows)" in messages
    assert "2 shard(s) quarantined" in messages
    assert report.to_dict()["rows_quarantined"] == 6


def test_without_skip_the_first_bad_shard_raises(tmp_path):
    root = str(tmp_path)
    lib.write_shards(root, [5, 6])
    corrupt = os.path.join(root, "dt=2026-11-01", "hour=00", "part-1.parquet")
    with open(corrupt, "wb") as handle:
        handle.write(b"PAR1 garbage")
    err = _error(root)
    assert err.file == os.path.abspath(corrupt)
    assert "skip_bad_shards" in str(err)
