"""Input work per worker under ``strategy: multi_worker``: 1 and 2 workers side by side.

Each worker of a multi-worker run reads only its own shards (round-robin in
time order, :func:`matta_rec.training.distribute.assign_shards`) in local
batches of ``batch_size / workers`` rows.  For 1 and 2 workers, this script
runs each worker's training stream alone over its assigned shards, exactly as
the training loop builds it (``LogStream(shard_filter=...).dataset(
with_position=True)``, read to the end), and measures the process CPU time
it takes (reading, validating, decoding and the ``tf.data`` threads: all
input work, no model).  The figure per worker is its input CPU-seconds
divided by the *global* number of rows trained, reported as microseconds per
global row and as a ratio to one worker.  The row "2 workers, whole stream
each" is the previous design, where every worker read and decoded the
whole stream and cut its slice out of each global batch (its ratio is 1.0 by
construction; measured, not assumed).  The last column leaves out a
stream's startup (measured on a stream that owns no shard), which a worker
pays once per run however long it trains.

Every worker runs the same number of steps (``rows / batch_size``), each
with a local batch of ``batch_size / workers`` rows, so the per-step part of
the input work (one ``tf.data`` element, its tensors handed to Python) does
not fall with more workers; only the per-row part does.  The script prints
one table per global batch size (``--batch-sizes``) to show both.

The default stream is 96 hourly shards of ~40,000 rows (3.9M rows, four
days of a small service's logs): long enough that a worker's once-per-run
startup (~0.07 CPU s) is a few percent of its input work, as in production
where a worker reads for hours, not the 12% it was on the 1M-row stream
this script used before.

Wall-clock scaling is not measured: the workers run one after another on one
(2-core) machine.  Every variant is repeated ``--repeat`` times in
interleaved rounds; ratios are paired within a round and the median over
rounds is reported with its range.  The last line gives the worse of the two
workers' ratios per global batch size against the target (<= 0.60).

Usage::

    .venv/bin/python bench/input_scaling.py                    # 96 shards x ~40000 rows
    .venv/bin/python bench/input_scaling.py --shards 24 --shard-rows 2000 --batch-sizes 512 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np  # noqa: E402

SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 100_000},
        "user_age": {"group": "user", "kind": "numeric"},
        "user_segment": {"group": "user", "kind": "categorical", "vocabulary": "auto"},
        "hour": {"group": "context", "kind": "categorical", "dtype": "int64", "vocabulary": "auto"},
        "device": {"group": "context", "kind": "categorical", "vocabulary": "auto"},
        "item_id": {"group": "item", "kind": "categorical", "buckets": 50_000},
        "item_category": {"group": "item", "kind": "categorical", "vocabulary": "auto"},
        "item_popularity": {"group": "item", "kind": "numeric", "normalization": "log"},
        "item_vec": {"group": "item", "kind": "dense", "dim": 8},
    },
    "labels": {"target": "teacher_prob", "event": "click"},
}


def write_logs(root: str, shards: int, shard_rows: int, seed: int = 0) -> None:
    """``shards`` hourly Parquet shards of ``shard_rows`` rows (sizes vary +-20%)."""
    from matta_rec.data.schema import Schema
    from matta_rec.data.writers import write_shard

    schema = Schema.from_dict(SCHEMA)
    rng = np.random.default_rng(seed)
    for k in range(shards):
        n = int(shard_rows * rng.uniform(0.8, 1.2))
        p = rng.beta(1.0, 8.0, n).astype(np.float32)
        cols = {
            "user_id": np.char.add("u", (rng.zipf(1.3, n) % 1_000_000).astype(str)).astype(object),
            "user_age": rng.integers(16, 80, n).astype(np.float32),
            "user_segment": np.char.add("seg_", rng.integers(0, 8, n).astype(str)).astype(object),
            "hour": np.full(n, k % 24, np.int64),
            "device": np.array(["ios", "android", "desktop"], dtype=object)[rng.integers(0, 3, n)],
            "item_id": np.char.add("i", (rng.zipf(1.2, n) % 200_000).astype(str)).astype(object),
            "item_category": np.char.add("cat_", rng.integers(0, 24, n).astype(str)).astype(object),
            "item_popularity": rng.lognormal(6, 2, n).astype(np.float32),
            "item_vec": rng.normal(size=(n, 8)).astype(np.float32),
            "teacher_prob": p,
            "click": (rng.random(n) < p).astype(np.float32),
        }
        write_shard(os.path.join(root, f"dt=2026-01-{1 + k // 24:02d}/hour={k % 24:02d}/part-0.parquet"),
                    cols, schema)
    schema.to_yaml(os.path.join(root, "schema.yaml"))


def read_stream(root: str, batch_size: int, shard_filter=None) -> tuple[float, int, int]:
    """``(process CPU-seconds, rows, shards)`` of one worker's training stream."""
    from matta_rec.data.reader import LogStream

    stream = LogStream(root, os.path.join(root, "schema.yaml"), batch_size=batch_size,
                       root=root, shard_filter=shard_filter)
    cpu = time.process_time()
    rows_end = 0
    for _, _, rows_end in stream.dataset(with_position=True):
        pass
    cpu = time.process_time() - cpu
    return cpu, int(rows_end), len(stream.report().shards_read)


def variants(root: str, batch_size: int) -> dict:
    """``{name: [(worker, batch size, shard filter)]}`` of the compared setups."""
    from matta_rec.data.reader import LogStream
    from matta_rec.training.distribute import assign_shards

    shards = LogStream(root, os.path.join(root, "schema.yaml"), batch_size=1).shards()
    out = {"1 worker": [(0, batch_size, None)],
           "2 workers, whole stream each (before)": [(0, batch_size, None), (1, batch_size, None)]}
    assignment = dict(assign_shards(shards, 2))
    out["2 workers, own shards"] = [
        (worker, batch_size // 2,
         frozenset(n for n, w in assignment.items() if w == worker).__contains__)
        for worker in range(2)]
    return out


def measure(root: str, batch_size: int, repeat: int) -> dict:
    """Print the table of one global batch size; return ``{(setup, worker): ratio}``.

    Every round runs every setup once, and a stream that owns no shard (the
    startup); ratios are taken within a round (paired), and the median over
    rounds is reported with its range, so a slow drift of the machine's
    speed, which moves all of a round's figures together, cancels out.
    """
    setups = variants(root, batch_size)
    read_stream(root, batch_size)  # warm-up: imports, tf.data, page cache
    cpu: dict = {}
    facts: dict = {}
    startups = []
    for _ in range(repeat):
        for name, workers in setups.items():
            for worker, batch, keep in workers:
                seconds, rows, shards = read_stream(root, batch, keep)
                cpu.setdefault((name, worker), []).append(seconds)
                facts[(name, worker)] = (rows, shards)
        startups.append(read_stream(root, batch_size, lambda name: False)[0])
    total = facts[("1 worker", 0)][0]
    single = cpu[("1 worker", 0)]
    print(f"\nglobal batch {batch_size}: {total} rows (global rows trained), "
          f"{-(-total // batch_size)} steps; {repeat} interleaved rounds; a stream's startup "
          f"(listing, tf.data pipeline, no shard read; once per worker and run): "
          f"{statistics.median(startups):.3f} CPU s")
    print("| setup | worker | shards read | rows read | input CPU s | us per global row | "
          "ratio to 1 worker (range) | same, startup left out |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ratios = {}
    for name, workers in setups.items():
        rows_read = sum(facts[(name, w)][0] for w, _, _ in workers)
        if "own shards" in name:
            assert rows_read == total, (rows_read, total)  # disjoint, nothing lost
        for worker, _, _ in workers:
            runs = cpu[(name, worker)]
            paired = [c / s for c, s in zip(runs, single)]
            net = [(c - u) / (s - u) for c, s, u in zip(runs, single, startups)]
            seconds = statistics.median(runs)
            rows, shards = facts[(name, worker)]
            ratios[(name, worker)] = statistics.median(paired)
            print(f"| {name} | {worker} | {shards} | {rows} | {seconds:.2f} | "
                  f"{1e6 * seconds / total:.2f} | {statistics.median(paired):.2f} "
                  f"({min(paired):.2f}-{max(paired):.2f}) | {statistics.median(net):.2f} |")
    return ratios


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=96)
    parser.add_argument("--shard-rows", type=int, default=40000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 4096],
                        help="global batch sizes (each worker reads batch / workers rows a step)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="input_scaling-")
    try:
        write_logs(root, args.shards, args.shard_rows)
        print(f"{args.shards} Parquet shards of ~{args.shard_rows} rows")
        worst = {}
        for batch_size in args.batch_sizes:
            ratios = measure(root, batch_size, args.repeat)
            worst[batch_size] = max(r for (name, _), r in ratios.items() if "own shards" in name)
        print("\ninput scaling: 2 workers' input CPU per global row / 1 worker's, worse worker: "
              + ", ".join(f"{ratio:.2f} at global batch {b}" for b, ratio in worst.items())
              + " (target <= 0.60)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
