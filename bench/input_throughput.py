"""Input throughput of LogStream, side by side with plain pandas / pyarrow reads.

Measures, in one run and on the same rows:

* ``LogStream(...).dataset()`` (validated, batched ``tf.data`` tensors) from
  Parquet, CSV and TFRecord shards, each consumed twice: by an eager Python
  loop, and inside the TF runtime (``Dataset.reduce``, the way ``model.fit``
  pulls batches in its traced step); and ``iter_numpy()`` from Parquet;
* a plain ``pandas.read_parquet`` loop and raw ``pyarrow.parquet.read_table``
  (with and without converting every column to numpy) over the same files;
* the rows/s one training step of the default model consumes (when
  ``matta_rec.training`` / ``matta_rec.models`` can be imported);
* peak RSS of a process streaming 100k and 2M rows (each in its own
  subprocess, shards of the same size), to show memory stays flat.

Every figure is printed with its ratio to the pandas loop, to raw pyarrow
and (for the reader) to the training step.

Usage::

    .venv/bin/python bench/input_throughput.py                      # defaults
    .venv/bin/python bench/input_throughput.py --rows 100000 --rss-rows 100000 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np  # noqa: E402

from matta_rec.data.schema import Schema  # noqa: E402

SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 100_000},
        "user_age": {"group": "user", "kind": "numeric"},
        "user_segment": {"group": "user", "kind": "categorical", "vocabulary": "auto"},
        "user_country": {"group": "user", "kind": "categorical", "vocabulary": "auto"},
        "hour": {"group": "context", "kind": "categorical", "dtype": "int64", "vocabulary": "auto"},
        "device": {"group": "context", "kind": "categorical", "vocabulary": "auto"},
        "position": {"group": "context", "kind": "numeric"},
        "item_id": {"group": "item", "kind": "categorical", "buckets": 50_000},
        "item_category": {"group": "item", "kind": "categorical", "vocabulary": "auto"},
        "item_tags": {"group": "item", "kind": "multi_categorical", "buckets": 5_000, "max_length": 5},
        "item_popularity": {"group": "item", "kind": "numeric", "normalization": "log"},
        "item_vec": {"group": "item", "kind": "dense", "dim": 8},
    },
    "labels": {"target": "teacher_prob", "event": "click"},
}


def _columns(n: int, seed: int) -> dict:
    """Random rows shaped like the synthetic logs (ids, enums, tags, a vector)."""
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.3, n) % 1_000_000
    items = rng.zipf(1.2, n) % 200_000
    tags = np.array([f"t{i}" for i in range(400)], dtype=object)
    tag_rows = [
        "|".join(tags[rng.integers(0, 400, k)]) for k in rng.integers(1, 6, n)
    ]
    p = rng.beta(1.0, 8.0, n).astype(np.float32)
    return {
        "user_id": np.char.add("u", np.char.zfill(users.astype(str), 7)).astype(object),
        "user_age": rng.integers(16, 80, n).astype(np.float32),
        "user_segment": np.char.add("seg_", rng.integers(0, 8, n).astype(str)).astype(object),
        "user_country": np.array(["US", "IN", "DE", "BR", "KR", "FR"], dtype=object)[rng.integers(0, 6, n)],
        "hour": rng.integers(0, 24, n).astype(np.int64),
        "device": np.array(["ios", "android", "desktop", "tablet"], dtype=object)[rng.integers(0, 4, n)],
        "position": rng.geometric(0.3, n).astype(np.float32),
        "item_id": np.char.add("i", np.char.zfill(items.astype(str), 6)).astype(object),
        "item_category": np.char.add("cat_", rng.integers(0, 24, n).astype(str)).astype(object),
        "item_tags": np.array(tag_rows, dtype=object),
        "item_popularity": rng.lognormal(6, 2, n).astype(np.float32),
        "item_vec": rng.normal(size=(n, 8)).astype(np.float32),
        "teacher_prob": p,
        "click": (rng.random(n) < p).astype(np.float32),
    }


def write_logs(root: str, rows: int, shard_rows: int, fmt: str, seed: int = 0) -> list[str]:
    """Equal-size hourly shards ``dt=.../hour=HH/part-0.<fmt>``; returns their paths."""
    from matta_rec.data.writers import write_shard

    schema = Schema.from_dict(SCHEMA)
    paths = []
    written = 0
    index = 0
    while written < rows:
        n = min(shard_rows, rows - written)
        day, hour = divmod(index, 24)
        path = os.path.join(root, f"dt=2026-11-{day + 1:02d}", f"hour={hour:02d}", f"part-0.{fmt}")
        write_shard(path, _columns(n, seed + index), schema)
        paths.append(path)
        written += n
        index += 1
    return paths


# ----------------------------------------------------------------- measuring
def _best(fn, repeat: int) -> tuple[int, float]:
    best = None
    rows = 0
    for _ in range(repeat):
        start = time.perf_counter()
        rows = fn()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return rows, best


def _pandas(files):
    import pandas as pd

    return sum(len(pd.read_parquet(f)) for f in files)


def _pyarrow(files):
    import pyarrow.parquet as pq

    return sum(pq.read_table(f).num_rows for f in files)


def _pyarrow_numpy(files):
    import pyarrow.parquet as pq

    rows = 0
    for f in files:
        table = pq.read_table(f)
        for column in table.columns:
            column.to_numpy()
        rows += table.num_rows
    return rows


def _stream_tf(root, batch_size):
    from matta_rec.data.reader import LogStream

    def run():
        stream = LogStream(root, SCHEMA, batch_size=batch_size)
        rows = 0
        for _, labels in stream.dataset():
            rows += int(labels["target"].shape[0])
        return rows

    return run


def _count_rows(dataset):
    """Rows in ``dataset``, consumed inside the TF runtime (``Dataset.reduce``).

    This is how training consumes the stream: ``model.fit`` pulls every batch
    with ``iterator.get_next()`` inside its traced step, so no Python runs per
    batch on the consumer's side. The eager loop of :func:`_stream_tf` pays
    ~0.2-0.4 ms of Python per batch on top, on the same two cores.
    """
    import tensorflow as tf

    return int(dataset.reduce(
        tf.constant(0, tf.int64),
        lambda total, batch: total + tf.shape(batch[1]["target"], out_type=tf.int64)[0],
    ))


def _stream_tf_graph(root, batch_size):
    from matta_rec.data.reader import LogStream

    return lambda: _count_rows(LogStream(root, SCHEMA, batch_size=batch_size).dataset())


def _cached_tf(root, batch_size):
    """Iterating the same batches from a tf.data cache: the per-batch cost of
    the eager Python loop itself, a ceiling for any tf.data source."""
    from matta_rec.data.reader import LogStream

    cached = LogStream(root, SCHEMA, batch_size=batch_size).dataset().cache()
    for _ in cached:  # fill the cache
        pass

    def run():
        rows = 0
        for _, labels in cached:
            rows += int(labels["target"].shape[0])
        return rows

    return run


def _stream_numpy(root, batch_size):
    from matta_rec.data.reader import LogStream

    def run():
        stream = LogStream(root, SCHEMA, batch_size=batch_size)
        return sum(len(labels["target"]) for _, labels in stream.iter_numpy())

    return run


def train_rows_per_second(root: str, batch_size: int, steps: int) -> tuple[float | None, str]:
    """Rows/s of the default model's MatTA train step, or (None, why not)."""
    try:
        import tensorflow as tf

        from matta_rec.data.reader import LogStream
        from matta_rec.features import FeatureStats
        from matta_rec.models import ModelConfig, NestedRelevanceModel
        from matta_rec.training import MatTATrainer, RunConfig
        from matta_rec.training.run_dir import get_optimizer
    except Exception as exc:  # noqa: BLE001 - the bench reports what is missing
        return None, f"not available yet ({type(exc).__name__}: {exc})"
    try:
        config = RunConfig()
        schema = Schema.from_dict(SCHEMA)
        stream = LogStream(root, schema, batch_size=batch_size)
        stats = FeatureStats.fit(schema, stream.iter_numpy(), max_rows=20 * batch_size)
        model = NestedRelevanceModel(schema, stats, ModelConfig())
        trainer = MatTATrainer(model, config.loss, levels=tuple(model.levels))
        trainer.compile(optimizer=get_optimizer(config.optimizer.name, config.optimizer.settings))
        batches = list(stream.dataset().take(steps + 3))
        if len(batches) < steps + 3:
            return None, f"needs {steps + 3} batches of data"

        @tf.function(reduce_retracing=True)
        def step(features, labels):
            logs, _ = trainer.train_batch(features, labels)
            return logs["loss"]

        for features, labels in batches[:3]:  # trace + warm up
            step(features, labels).numpy()
        start = time.perf_counter()
        for features, labels in batches[3:]:
            loss = step(features, labels)
        loss.numpy()
        elapsed = time.perf_counter() - start
        return steps * batch_size / elapsed, (
            f"default ModelConfig, mode {config.mode}, optimizer {config.optimizer.name}"
        )
    except Exception as exc:  # noqa: BLE001
        return None, f"not available ({type(exc).__name__}: {exc})"


# ----------------------------------------------------------------- memory
def _rss_child(files: list[str], batch_size: int) -> None:
    """Stream every row of ``files`` through tf.data; print RSS figures as JSON."""
    import psutil

    from matta_rec.data.reader import LogStream

    stream = LogStream(files, SCHEMA, batch_size=batch_size)
    rows = 0
    after_first = None
    process = psutil.Process()
    streaming_peak = 0
    for i, (_, labels) in enumerate(stream.dataset()):
        rows += int(labels["target"].shape[0])
        if after_first is None:
            after_first = process.memory_info().rss
        if i % 20 == 0:
            streaming_peak = max(streaming_peak, process.memory_info().rss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rows": rows, "peak_rss": peak, "rss_after_first_batch": after_first,
                      "streaming_peak": max(streaming_peak, process.memory_info().rss),
                      "rss_end": process.memory_info().rss}))


def measure_rss(files: list[str], batch_size: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(files, handle)
    try:
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--rss-child", handle.name,
             "--batch-size", str(batch_size)],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per format for throughput")
    parser.add_argument("--tfrecord-rows", type=int, default=None,
                        help="rows of TFRecord shards (default --rows; writing them is slow)")
    parser.add_argument("--shard-rows", type=int, default=20_000, help="rows per shard")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="batch size (default 512 = RunConfig's default)")
    parser.add_argument("--repeat", type=int, default=2, help="best of N timings")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--rss-rows", type=int, nargs="*", default=[100_000, 2_000_000],
                        help="stream sizes for the peak-RSS comparison ([] to skip)")
    parser.add_argument("--workdir", default=None, help="where to write the shards (default: a temp dir)")
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        with open(args.rss_child) as handle:
            _rss_child(json.load(handle), args.batch_size)
        return 0

    work = tempfile.mkdtemp(prefix="matta_bench_", dir=args.workdir)
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args, work: str) -> int:
    print(f"# input throughput: {args.rows:,} rows per format, shards of {args.shard_rows:,} rows, "
          f"batch {args.batch_size}, best of {args.repeat}, {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    files = {}
    tf_rows = args.tfrecord_rows or args.rows
    for fmt, rows in (("parquet", args.rows), ("csv", args.rows), ("tfrecord", tf_rows)):
        files[fmt] = write_logs(os.path.join(work, fmt), rows, args.shard_rows, fmt)
    print(f"# wrote the shards in {time.perf_counter() - t0:.1f}s")

    results = []

    def record(name, fn, expected):
        rows, seconds = _best(fn, args.repeat)
        if rows != expected:
            raise SystemExit(f"{name}: read {rows} rows, expected {expected}")
        results.append((name, rows, seconds, rows / seconds))
        print(f"  {name:<40} {rows:>10,} rows {seconds:8.2f}s {rows / seconds:>12,.0f} rows/s", flush=True)

    import tensorflow as tf  # noqa: F401  (import cost kept out of the timings)

    record("pandas.read_parquet loop", lambda: _pandas(files["parquet"]), args.rows)
    record("pyarrow read_table", lambda: _pyarrow(files["parquet"]), args.rows)
    record("pyarrow read_table + to_numpy", lambda: _pyarrow_numpy(files["parquet"]), args.rows)
    for fmt, rows in (("parquet", args.rows), ("csv", args.rows), ("tfrecord", tf_rows)):
        root = os.path.join(work, fmt)
        record(f"LogStream {fmt} -> tf.data", _stream_tf(root, args.batch_size), rows)
        record(f"LogStream {fmt} -> tf.data, in-graph", _stream_tf_graph(root, args.batch_size), rows)
    record("tf.data loop over cached batches", _cached_tf(os.path.join(work, "parquet"), args.batch_size), args.rows)
    record("LogStream parquet -> numpy", _stream_numpy(os.path.join(work, "parquet"), args.batch_size), args.rows)

    speed = {name: rps for name, _, _, rps in results}
    pandas_rps = speed["pandas.read_parquet loop"]
    arrow_rps = speed["pyarrow read_table"]
    arrow_np_rps = speed["pyarrow read_table + to_numpy"]
    train_rps, train_note = train_rows_per_second(
        os.path.join(work, "parquet"), args.batch_size, args.train_steps
    )
    print()
    print(f"{'source':<40} {'rows/s':>12} {'x pandas':>9} {'x pyarrow':>10} {'x arrow+np':>11} {'x train':>8}")
    for name, _, _, rps in results:
        train_ratio = f"{rps / train_rps:8.1f}" if train_rps and name.startswith("LogStream") else f"{'':>8}"
        print(f"{name:<40} {rps:>12,.0f} {rps / pandas_rps:>9.2f} {rps / arrow_rps:>10.2f} "
              f"{rps / arrow_np_rps:>11.2f} {train_ratio}")
    if train_rps:
        print(f"{'train step (' + train_note + ')':<40} {train_rps:>12,.0f}")
    else:
        print(f"train step: {train_note}; the reader-vs-training comparison is not available")
    print()
    print("targets (eager loop / in-graph consumer):")
    for fmt in ("parquet", "csv", "tfrecord"):
        eager = speed[f"LogStream {fmt} -> tf.data"]
        graph = speed[f"LogStream {fmt} -> tf.data, in-graph"]
        if train_rps:
            print(f"  reader ({fmt}, tf.data) / train step = {eager / train_rps:.1f}x / "
                  f"{graph / train_rps:.1f}x  (target >= 10x)")
    eager = speed["LogStream parquet -> tf.data"]
    graph = speed["LogStream parquet -> tf.data, in-graph"]
    for name, rps, note in (("raw pyarrow read_table", arrow_rps, "target <= 2x"),
                            ("pandas.read_parquet loop", pandas_rps, "for reference"),
                            ("pyarrow read_table + to_numpy", arrow_np_rps, "for reference")):
        print(f"  {name} / reader (parquet, tf.data) = {rps / eager:.2f}x / {rps / graph:.2f}x  ({note})")

    if args.rss_rows:
        biggest = max(args.rss_rows)
        rss_files = write_logs(os.path.join(work, "rss"), biggest, args.shard_rows, "parquet", seed=10_000)
        print()
        print(f"peak RSS streaming through tf.data (shards of {args.shard_rows:,} rows, own subprocess each):")
        figures = {}
        for rows in sorted(args.rss_rows):
            count = -(-rows // args.shard_rows)
            r = measure_rss(rss_files[:count], args.batch_size)
            figures[rows] = r
            print(f"  {r['rows']:>10,} rows: peak RSS {r['peak_rss'] / 2**20:8.1f} MiB; sampled "
                  f"while streaming: after the first batch {r['rss_after_first_batch'] / 2**20:.1f} "
                  f"MiB, max {r['streaming_peak'] / 2**20:.1f} MiB, at the end "
                  f"{r['rss_end'] / 2**20:.1f} MiB")
        small, large = figures[min(figures)], figures[max(figures)]
        print(f"  peak RSS {max(figures):,} / {min(figures):,} rows = "
              f"{large['peak_rss'] / small['peak_rss']:.2f}x  (target <= 1.2x); max RSS while "
              f"streaming {large['streaming_peak'] / small['streaming_peak']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
