"""Two worker processes on 127.0.0.1 for the multi-worker tests.

:func:`start_workers` starts ``tests/train_driver.py`` once per worker with its
``TF_CONFIG``; each logs the row ids it trains (``<rows_end> <id> ...`` per
step, ``rows_end`` the global count) to its own rows file.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from matta_rec.data.schema import Schema
from matta_rec.data.writers import write_shard

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: train_testlib's schema with a row weight: the reference run pads its
#: global batches with zero-weight rows, as the workers do.
SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 50},
        "item_id": {"group": "item", "kind": "categorical", "buckets": 40},
        "hour": {"group": "context", "kind": "categorical", "vocabulary": "auto"},
        "x": {"group": "context", "kind": "numeric"},
        "row_id": {"group": "context", "kind": "numeric"},  # standardised: SGD stays stable
    },
    "labels": {"target": "teacher_prob", "event": "click", "weight": "w"},
}


def shard_columns(ids, seed=0, hour="h00", weights=None):
    """Columns of rows with ``row_id`` = ``ids`` (features drawn from ``seed``)."""
    ids = np.asarray(ids)
    rng = np.random.default_rng([seed, int(ids[0]) if len(ids) else 0])
    n = len(ids)
    u, i = rng.integers(0, 50, n), rng.integers(0, 40, n)
    x = rng.normal(size=n).astype(np.float32)
    p = 1 / (1 + np.exp(-(0.05 * u - 0.04 * i + 0.8 * x - 1.0)))
    return {
        "user_id": [f"u{v}" for v in u], "item_id": [f"i{v}" for v in i], "hour": [hour] * n,
        "x": x, "row_id": ids.astype(np.float32),
        "teacher_prob": np.clip(p + rng.normal(scale=0.05, size=n), 0.01, 0.99).astype(np.float32),
        "click": (rng.random(n) < p).astype(np.float32),
        "w": (rng.uniform(0.5, 1.5, n) if weights is None else weights).astype(np.float32),
    }


def write_uneven_logs(root, sizes, first_row=0, first_hour=0, day="2026-01-01"):
    """Hourly shards of the given sizes; ``row_id`` counts from ``first_row``."""
    schema = Schema.from_dict(SCHEMA)
    start = first_row
    for k, rows in enumerate(sizes):
        hour = first_hour + k
        write_shard(os.path.join(root, f"dt={day}/hour={hour:02d}/part-0.parquet"),
                    shard_columns(np.arange(start, start + rows), hour=f"h{hour % 24:02d}"), schema)
        start += rows
    schema.to_yaml(os.path.join(root, "schema.yaml"))
    return schema


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(logs, out, config_path, rows_files, resume=False, step_delay=0.0,
                  workers=2):
    """Start ``workers`` driver processes (one per ``TF_CONFIG`` task); returns the Popens."""
    hosts = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    procs = []
    for index in range(workers):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                         "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, os.path.join(HERE, "train_driver.py"), "--data", logs,
               "--schema", os.path.join(logs, "schema.yaml"), "--out", out,
               "--config", str(config_path), "--rows-file", rows_files[index],
               "--step-delay", str(step_delay)]
        if resume:
            cmd.append("--resume")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def wait_all(procs, timeout=400):
    """``[(returncode, output)]`` of every process (all killed on a timeout)."""
    out = []
    for proc in procs:
        try:
            out.append((proc.wait(timeout=timeout), proc.stdout.read()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    return out


def read_rows(path):
    """``[(session, rows_end, [ids])]`` from a rows file (session counts resumes)
    and ``{session: rows_start}`` of the resumed sessions."""
    session, out, starts = 0, [], {}
    if not os.path.exists(path):
        return out, starts
    with open(path) as handle:
        for line in handle:
            if line.startswith("# resume"):
                session += 1
                starts[session] = int(line.split()[-1])
                continue
            parts = line.split()
            out.append((session, int(parts[0]), [int(v) for v in parts[1:]]))
    return out, starts


def trained_ids(path):
    """The ids a worker's training kept: a session's steps after the checkpoint
    the next session resumed from are trained again there, so they drop out."""
    rows, starts = read_rows(path)
    return [i for session, rows_end, ids in rows
            if session + 1 not in starts or rows_end <= starts[session + 1] for i in ids]
