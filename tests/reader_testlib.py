"""Shared helpers for the reader / validation / inspect-data tests.

Every generated row carries a unique integer ``row_id`` (the int64
categorical feature ``slot``) so that tests can check exactly which rows a
stream delivered.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matta_rec.data.schema import Schema
from matta_rec.data.writers import write_shard

SCHEMA_DICT = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 100},
        "user_age": {"group": "user", "kind": "numeric"},
        "slot": {"group": "context", "kind": "categorical", "dtype": "int64", "buckets": 1000},
        "item_tags": {"group": "item", "kind": "multi_categorical", "buckets": 50},
        "item_vec": {"group": "item", "kind": "dense", "dim": 3},
    },
    "labels": {"target": "teacher_prob", "event": "click", "weight": "w"},
}

FORMATS = ("parquet", "csv", "tfrecord")
EXT = {"parquet": "parquet", "csv": "csv", "tfrecord": "tfrecord"}


def schema(**feature_overrides) -> Schema:
    data = {"features": dict(SCHEMA_DICT["features"]), "labels": dict(SCHEMA_DICT["labels"])}
    for name, extra in feature_overrides.items():
        data["features"][name] = {**data["features"][name], **extra}
    return Schema.from_dict(data)


def columns(n: int, first_id: int = 0, seed: int = 0) -> dict:
    """``n`` valid rows with ids ``first_id .. first_id + n - 1`` in ``slot``."""
    rng = np.random.default_rng(seed + first_id)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    tags = np.array(["a|b", "c", "", "d|e|f"], dtype=object)
    return {
        "user_id": np.array([f"u{i % 7}" for i in ids], dtype=object),
        "user_age": (20 + ids % 50).astype(np.float32),
        "slot": ids,
        "item_tags": tags[ids % 4],
        "item_vec": rng.normal(size=(n, 3)).astype(np.float32),
        "teacher_prob": rng.uniform(size=n).astype(np.float32),
        "click": (ids % 3 == 0).astype(np.float32),
        "w": np.ones(n, np.float32),
    }


def write_shards(root, sizes, fmt="parquet", schema_obj=None, first_id=0, folder="dt=2026-11-01"):
    """Write one shard per size as ``<folder>/hour=HH/part-0.<ext>``; return the paths."""
    schema_obj = schema_obj or schema()
    paths = []
    next_id = first_id
    for hour, n in enumerate(sizes):
        path = os.path.join(str(root), folder, f"hour={hour:02d}", f"part-0.{EXT[fmt]}")
        write_shard(path, columns(n, next_id), schema_obj)
        next_id += n
        paths.append(path)
    return paths


def write_parquet_table(path, table: dict) -> str:
    """Write arbitrary arrow-typed columns (to create bad shards)."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    pq.write_table(pa.table(table), str(path))
    return str(path)


def write_tfrecord_rows(path, rows: list[dict]) -> str:
    """Write ``tf.Example`` rows given as ``{name: ("float" | "int64" | "bytes", [values])}``."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in rows:
            feature = {}
            for name, (kind, values) in row.items():
                if kind == "float":
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                elif kind == "int64":
                    feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                else:
                    feature[name] = tf.train.Feature(
                        bytes_list=tf.train.BytesList(
                            value=[v if isinstance(v, bytes) else str(v).encode() for v in values]
                        )
                    )
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    return str(path)


def tf_rows(cols: dict) -> list[dict]:
    """Columns (as from :func:`columns`) -> rows for :func:`write_tfrecord_rows`."""
    n = len(cols["slot"])
    out = []
    for i in range(n):
        out.append(
            {
                "user_id": ("bytes", [cols["user_id"][i]]),
                "user_age": ("float", [float(cols["user_age"][i])]),
                "slot": ("int64", [int(cols["slot"][i])]),
                "item_tags": ("bytes", [cols["item_tags"][i]]),
                "item_vec": ("float", [float(v) for v in cols["item_vec"][i]]),
                "teacher_prob": ("float", [float(cols["teacher_prob"][i])]),
                "click": ("float", [float(cols["click"][i])]),
                "w": ("float", [float(cols["w"][i])]),
            }
        )
    return out
