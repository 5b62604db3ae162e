"""utils.files.write_atomic: the one atomic write (manifest, metrics, preprocessing.json, log shards)."""

import json
import os

import pytest

from matta_rec.utils import files
from matta_rec.utils.files import TMP_MARK, write_atomic, write_file_atomic


def test_write_atomic_calls_the_writer_on_a_hidden_sibling_then_renames(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert os.path.basename(tmp).startswith(".data.bin" + TMP_MARK)
        assert os.path.dirname(tmp) == str(tmp_path / "sub")
        with open(tmp, "wb") as handle:
            handle.write(b"new")

    out = write_atomic(tmp_path / "sub" / "data.bin", write)
    assert out == str(tmp_path / "sub" / "data.bin")
    assert open(out, "rb").read() == b"new"
    assert os.listdir(tmp_path / "sub") == ["data.bin"]
    assert len(seen) == 1


def test_a_writer_failing_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "shard.parquet"
    write_file_atomic(path, "old")

    def half_then_fail(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["shard.parquet"]


def test_fsync_is_the_default_and_can_be_turned_off(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    write_file_atomic(tmp_path / "a.json", "{}")
    assert len(synced) == 2  # the file, then its directory
    synced.clear()
    write_file_atomic(tmp_path / "b.json", "{}", fsync=False)
    assert synced == []


def test_feature_stats_and_shards_are_written_through_it(tmp_path, monkeypatch):
    from matta_rec.data.schema import Schema
    from matta_rec.data.writers import write_shard
    from matta_rec.features import FeatureStats

    schema = Schema.from_dict({"features": {"x": {"group": "user", "kind": "numeric"}},
                               "labels": {"target": "y"}})
    written = []
    real = files.write_atomic

    def spy(path, write, fsync=True):
        written.append(os.path.basename(os.fspath(path)))
        return real(path, write, fsync)

    monkeypatch.setattr(files, "write_atomic", spy)
    monkeypatch.setattr("matta_rec.data.writers.write_atomic", spy)
    write_shard(tmp_path / "part-0.csv", {"x": [1.0, 2.0], "y": [0.0, 1.0]}, schema)
    stats = FeatureStats.fit(schema, [{"x": [1.0, 2.0, 3.0]}])
    stats.save(tmp_path / "preprocessing.json")
    assert written == ["part-0.csv", "preprocessing.json"]
    assert json.loads((tmp_path / "preprocessing.json").read_text())["features"]["x"]
    assert sorted(os.listdir(tmp_path)) == ["part-0.csv", "preprocessing.json"]
