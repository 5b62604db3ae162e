"""data.holdout: one split of the last shards, used by training and the ablation."""

import os
import sys

import pytest

from matta_rec.data.holdout import HoldoutSplit, holdout_count, split_holdout
from matta_rec.errors import ConfigError, DataError, MattaError

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import write_logs  # noqa: E402


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("logs"))
    write_logs(root, shards=5, rows=20)
    return root


def _shard(hour):
    return f"dt=2026-01-01/hour={hour:02d}/part-0.parquet"


@pytest.mark.parametrize("shards, k, fraction, expected", [
    (5, 0, None, 0), (5, 2, None, 2), (5, 0, 0.1, 1), (5, 0, 0.25, 2), (8, 0, 0.25, 2),
    (96, 0, 0.25, 24),
])
def test_holdout_count(shards, k, fraction, expected):
    assert holdout_count(shards, k, fraction) == expected


def test_holdout_count_rejects_bad_values():
    with pytest.raises(ValueError, match="holdout_fraction"):
        holdout_count(5, holdout_fraction=1.0)
    with pytest.raises(ValueError, match="holdout_shards"):
        holdout_count(5, -1)


def test_split_keeps_the_last_shards_in_time_order(logs):
    split = split_holdout(logs, os.path.join(logs, "schema.yaml"), holdout_fraction=0.25)
    assert isinstance(split, HoldoutSplit)
    assert split.train == tuple(_shard(h) for h in range(3))
    assert split.holdout == (_shard(3), _shard(4))
    assert split.train_files == [os.path.join(os.path.abspath(logs), _shard(h)) for h in range(3)]
    assert all(os.path.isfile(p) for p in split.holdout_files)
    none = split_holdout(logs, os.path.join(logs, "schema.yaml"))
    assert none.holdout == () and len(none.train) == 5


def test_split_refuses_to_hold_out_everything_and_an_empty_directory(logs, tmp_path):
    with pytest.raises(ConfigError, match="leaves none of the 5 shard") as info:
        split_holdout(logs, os.path.join(logs, "schema.yaml"), 5, source="run.yaml",
                      key="data.holdout_shards", fix="lower --set data.holdout_shards=N")
    assert "run.yaml" in str(info.value) and "--set data.holdout_shards=N" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no log shards"):
        split_holdout(str(tmp_path / "empty"), os.path.join(logs, "schema.yaml"), 1)


def test_the_ablation_splits_like_training(logs):
    """ablation.split_holdout returns the files of the same split (it adds
    only its rule that something is held out)."""
    from matta_rec.evaluation.ablation import split_holdout as ablation_split

    schema = os.path.join(logs, "schema.yaml")
    for kwargs in ({"holdout_fraction": 0.25}, {"holdout_shards": 2}, {"holdout_fraction": 0.1}):
        shards = kwargs.get("holdout_shards", 0)
        split = split_holdout(logs, schema, shards, holdout_fraction=kwargs.get("holdout_fraction"))
        train, held = ablation_split(logs, schema, kwargs.get("holdout_shards"),
                                     holdout_fraction=kwargs.get("holdout_fraction"))
        assert (train, held) == (split.train_files, split.holdout_files)
    with pytest.raises(MattaError, match="--holdout-shards must be >= 1"):
        ablation_split(logs, schema, 0)
    with pytest.raises(MattaError, match="--holdout-shards"):
        ablation_split(logs, schema, 5)
