"""Tiny log streams for the training-loop and distribution tests."""

import os

import numpy as np

from matta_rec.data.schema import Schema
from matta_rec.data.writers import write_shard

SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 50},
        "item_id": {"group": "item", "kind": "categorical", "buckets": 40},
        "hour": {"group": "context", "kind": "categorical", "vocabulary": "auto"},
        "x": {"group": "context", "kind": "numeric"},
        "row_id": {"group": "context", "kind": "numeric", "normalization": "none"},
    },
    "labels": {"target": "teacher_prob", "event": "click"},
}

TINY_MODEL = {
    "d_model": 4,
    "gau_blocks": 0,
    "cross_layers": 1,
    "mlp_units": [8],
    "width_factors": [1, 2],
    "d_model_factors": [1, 2],
    "extra_gau_blocks": [0, 0],
    "extra_cross_layers": [0, 0],
}


def write_logs(root, shards=4, rows=300, seed=0, day="2026-01-01", first_row=0,
               inverted=False):
    """``shards`` hourly parquet shards of ``rows`` rows under ``dt=<day>/``.

    ``row_id`` is the global row index, from ``first_row``. The world (user and
    item effects) depends on ``seed`` only; a later ``day`` with the same seed
    draws new rows of the same world (the row draws are seeded by the day too).
    ``inverted=True`` flips the labels (a partition that makes a model worse).
    """
    schema = Schema.from_dict(SCHEMA)
    rng = np.random.default_rng(seed)
    u_eff = rng.normal(size=50)
    i_eff = rng.normal(size=40)
    if day != "2026-01-01":
        rng = np.random.default_rng([seed, int(day.replace("-", ""))])
    start = first_row
    for s in range(shards):
        u = rng.integers(0, 50, rows)
        i = rng.integers(0, 40, rows)
        x = rng.normal(size=rows).astype(np.float32)
        logit = u_eff[u] + i_eff[i] + 0.8 * x - 1.0
        p = 1 / (1 + np.exp(-logit))
        cols = {
            "user_id": [f"u{v}" for v in u],
            "item_id": [f"i{v}" for v in i],
            "hour": [f"h{s % 24:02d}"] * rows,
            "x": x,
            "row_id": np.arange(start, start + rows, dtype=np.float32),
            "teacher_prob": np.clip(p + rng.normal(scale=0.05, size=rows), 0.01, 0.99).astype(np.float32),
            "click": (rng.random(rows) < p).astype(np.float32),
        }
        if inverted:
            cols["teacher_prob"] = (1.0 - cols["teacher_prob"]).astype(np.float32)
            cols["click"] = (1.0 - cols["click"]).astype(np.float32)
        write_shard(os.path.join(root, f"dt={day}/hour={s:02d}/part-0.parquet"), cols, schema)
        start += rows
    schema.to_yaml(os.path.join(root, "schema.yaml"))
    return schema


def tiny_config(**overrides):
    cfg = {
        "model": dict(TINY_MODEL),
        "batch_size": 64,
        "optimizer": {"name": "adam", "settings": {"learning_rate": 0.01}},
        "loss": {"ramp": {"kind": "linear", "delay_steps": 2, "ramp_steps": 4}},
        "data": {"stats_rows": 200},
        "checkpoint": {"every_rows": 256},
        "metrics": {"window_rows": 200, "progress": False},
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg
