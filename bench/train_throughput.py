"""End-to-end training throughput: `train_run` against a plain Keras `fit` of the same model.

Writes Parquet shards of a 10-field categorical log (5 vocabulary fields, 5
hashed id fields; ``teacher_prob`` / ``click`` labels), then times, side by
side in one process, with the default ``ModelConfig`` and the default run
settings (batch 512, Adam 1e-3, exact online AUROC per 10k-row window,
checkpoints every 100k rows, TensorBoard on; only the progress line off):

* ``train_run student`` / ``train_run matta``: :func:`matta_rec.training.train_run`
  end to end, timed over its training loop (first batch, which traces the
  step, left out; the final checkpoint and the hold-out / ``model.keras``
  finish left out, periodic checkpoints in);
* ``loop step only``: the loop's own compiled step
  (:func:`~matta_rec.training.distribute.make_train_step`, student mode) fed
  the same batches from memory, nothing else;
* ``keras fit raw``: the same Student model (``build_model``, in-model
  preprocessing: vocabulary lookups, string hashing) and the same loss
  (binary cross-entropy on the soft ``teacher_prob``) in a plain
  ``model.fit`` on the raw features held in memory as tensors;
* ``keras fit ids``: the same model and loss from pre-encoded integer ids
  (the preprocessor applied beforehand), for reference.

Figures are process CPU time per row (all threads; the less contaminated
figure on a shared machine), median of ``--repeats`` alternating repeats
(the order reverses every repeat).  The per-phase breakdown of the
``train_run`` loop comes from timers wrapped around its parts (input wait,
the step, host copies and finiteness check, exact online metrics,
TensorBoard / progress, checkpoints): process CPU per row spent while the
main thread is in each part (background input threads count in the part
they overlap) and wall share; the isolated costs of the input (the
``LogStream`` dataset alone) and of the in-model preprocessing (the
preprocessor alone, ``tf.function``) are measured on their own.

The last line printed is
``train throughput: plain-keras/matta-rec ratio X.XX (target <= 1.30)``:
CPU per row of ``keras fit raw`` over that of ``train_run student``, as a
slowdown factor (``train_run`` / fit; lower is better).

Usage:
    .venv/bin/python bench/train_throughput.py [--rows 100000] [--repeats 3]
        [--shards 8] [--no-matta]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

#: The log's categorical fields: (name, kind, size); vocabulary fields list
#: their distinct values, hashed fields draw ids from ``size`` values.
FIELDS = [
    ("country", "vocabulary", 40), ("device", "vocabulary", 8), ("hour", "vocabulary", 24),
    ("category", "vocabulary", 200), ("slot", "vocabulary", 12),
    ("user_id", "hashed", 50_000), ("item_id", "hashed", 20_000), ("query_id", "hashed", 30_000),
    ("seller_id", "hashed", 5_000), ("campaign_id", "hashed", 2_000),
]

PHASES = ("input wait", "step", "host copies + finite check", "online metrics",
          "tensorboard / progress", "checkpoints", "other loop Python")


def write_logs(root: str, rows: int, shards: int, seed: int = 0):
    """``shards`` hourly Parquet shards of ``rows`` rows in all; returns the schema."""
    from matta_rec.data.schema import Schema
    from matta_rec.data.writers import write_shard

    features = {}
    for name, kind, size in FIELDS:
        spec = {"group": "context", "kind": "categorical"}
        if kind == "vocabulary":
            spec["vocabulary"] = "auto"
        else:
            spec["buckets"] = size * 2
        features[name] = spec
    schema = Schema.from_dict({"features": features,
                               "labels": {"target": "teacher_prob", "event": "click"}})
    rng = np.random.default_rng(seed)
    effects = {name: rng.normal(scale=0.5, size=size) for name, _, size in FIELDS}
    per = -(-rows // shards)
    for s in range(shards):
        n = min(per, rows - s * per)
        cols, logit = {}, np.full(n, -1.0)
        for name, _, size in FIELDS:
            ids = np.minimum(rng.zipf(1.3, n) - 1, size - 1)
            logit += effects[name][ids]
            cols[name] = np.char.add(f"{name[:2]}", ids.astype(str)).astype(object)
        p = 1.0 / (1.0 + np.exp(-logit))
        cols["teacher_prob"] = np.clip(p + rng.normal(scale=0.05, size=n), 0.01, 0.99).astype(
            np.float32)
        cols["click"] = (rng.random(n) < p).astype(np.float32)
        write_shard(os.path.join(root, f"dt=2026-01-01/hour={s:02d}/part-0.parquet"), cols, schema)
    schema.to_yaml(os.path.join(root, "schema.yaml"))
    return schema


class LoopTimers:
    """Timers wrapped around the parts of ``train_run``'s loop (monkeypatched).

    The loop window runs from the end of the first trained batch (which
    traces the step) to the end of the last one.
    """

    def __init__(self):
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.first = self.last = None  # (process cpu, wall, rows_end)
        self.batches = 0
        self.closed = False

    def add(self, phase, cpu, wall):
        if self.first is not None and not self.closed:  # only inside the window
            self.cpu[phase] += cpu
            self.wall[phase] += wall

    def timed(self, phase, fn):
        def wrapper(*args, **kwargs):
            c, w = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(phase, time.process_time() - c, time.perf_counter() - w)
        return wrapper

    def result(self):
        cpu = self.last[0] - self.first[0]
        wall = self.last[1] - self.first[1]
        rows = self.last[2] - self.first[2]
        other_cpu = cpu - sum(v for k, v in self.cpu.items() if k != "other loop Python")
        other_wall = wall - sum(v for k, v in self.wall.items() if k != "other loop Python")
        self.cpu["other loop Python"], self.wall["other loop Python"] = other_cpu, other_wall
        return {"rows": rows, "cpu": cpu, "wall": wall, "cpu_phase": dict(self.cpu),
                "wall_phase": dict(self.wall)}


def timed_train_run(mode, data, schema_path, out, overrides=None):
    """``train_run`` with :class:`LoopTimers` patched in; returns their result."""
    from matta_rec.training import loop, online

    timers = LoopTimers()
    session_cls = loop._TrainingSession
    saved = {name: getattr(session_cls, name) for name in
             ("train_batch", "_next_batch", "_check_finite", "_report", "save_checkpoint",
              "_start_monitor", "_stop_signals")}
    saved_add = online.OnlineMetrics.add

    def train_batch(self, batch):
        going = saved["train_batch"](self, batch)
        mark = (time.process_time(), time.perf_counter(), self.rows_end)
        if timers.first is None:
            timers.first = mark
        timers.last = mark
        timers.batches += 1
        return going

    def start_monitor(self):
        saved["_start_monitor"](self)
        self.train_step = timers.timed("step", self.train_step)

    def check_finite(self, logits):
        return saved["_check_finite"](self, logits)

    @contextlib.contextmanager
    def stop_signals(self):
        with saved["_stop_signals"](self):
            yield
        timers.closed = True  # the loop is over: the final checkpoint is not counted

    session_cls.train_batch = train_batch
    session_cls._start_monitor = start_monitor
    session_cls._stop_signals = stop_signals
    session_cls._next_batch = timers.timed("input wait", saved["_next_batch"])
    session_cls._check_finite = timers.timed("host copies + finite check", check_finite)
    session_cls._report = timers.timed("tensorboard / progress", saved["_report"])
    session_cls.save_checkpoint = timers.timed("checkpoints", saved["save_checkpoint"])
    online.OnlineMetrics.add = timers.timed("online metrics", saved_add)
    try:
        config = {"mode": mode, "metrics": {"progress": False}, **(overrides or {})}
        loop.train_run(config, data, schema_path, out)
    finally:
        for name, fn in saved.items():
            setattr(session_cls, name, fn)
        online.OnlineMetrics.add = saved_add
    return timers.result()


def memory_data(data, schema, stats_rows=50_000):
    """All rows in memory (numpy, strings as ``str``), plus fitted stats."""
    from matta_rec.data.reader import LogStream
    from matta_rec.features import FeatureStats

    stream = LogStream(data, schema, batch_size=8192)
    parts = list(stream.iter_numpy())
    features = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    labels = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    stats = FeatureStats.fit(schema, LogStream(data, schema, batch_size=512).iter_numpy(),
                             max_rows=stats_rows)
    return features, labels, stats


def student_model(schema, stats, seed=0):
    import keras

    from matta_rec.training.config import RunConfig
    from matta_rec.training.run_dir import build_model

    keras.utils.set_random_seed(seed)
    return build_model(RunConfig.from_dict({"mode": "student"}).model_for_mode(), schema, stats)


def keras_fit(schema, stats, features, labels, batch, processed):
    """CPU and wall of a plain ``fit`` (one epoch, after a traced warm-up)."""
    import keras
    import tensorflow as tf

    inner = student_model(schema, stats)

    class StudentLogit(keras.Model):
        def __init__(self, model):
            super().__init__()
            self.inner = model

        def call(self, x):
            if processed:
                return tf.reshape(self.inner.logits_from_processed(x)[0], (-1, 1))
            return tf.reshape(self.inner(x)["student"], (-1, 1))

    model = StudentLogit(inner)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    if processed:
        pre = tf.function(inner.preprocessor)
        chunks = [pre({k: tf.constant(v[i:i + 8192]) for k, v in features.items()})
                  for i in range(0, len(labels["target"]), 8192)]
        x = {k: tf.concat([c[k] for c in chunks], 0) for k in chunks[0]}
    else:
        x = {k: tf.constant(v) for k, v in features.items()}
    y = tf.constant(labels["target"].reshape(-1, 1))
    # The warm-up traces both batch shapes the timed epoch meets (full and
    # the short last batch), so the timed fit does not retrace.
    warm = batch + (int(y.shape[0]) % batch or batch)
    model.fit({k: v[:warm] for k, v in x.items()}, y[:warm], batch_size=batch, epochs=1,
              shuffle=False, verbose=0)
    c, w = time.process_time(), time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return {"rows": int(y.shape[0]), "cpu": time.process_time() - c,
            "wall": time.perf_counter() - w}


def loop_step_only(schema, stats, features, labels, batch):
    """The loop's compiled step (student mode) on in-memory batches."""
    import keras
    import tensorflow as tf

    from matta_rec.training.distribute import make_train_step
    from matta_rec.training.trainer import MatTATrainer

    model = student_model(schema, stats)
    trainer = MatTATrainer(model, None, levels=("student",))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    n = len(labels["target"])
    batches = [({k: tf.constant(v[i:i + batch]) for k, v in features.items()},
                {k: tf.constant(v[i:i + batch]) for k, v in labels.items()})
               for i in range(0, n, batch)]
    spec = (tf.nest.map_structure(lambda t: tf.TensorSpec((None,) + t.shape[1:], t.dtype),
                                  batches[0][0]),
            tf.nest.map_structure(lambda t: tf.TensorSpec((None,), t.dtype), batches[0][1]))
    step = make_train_step(tf.distribute.get_strategy(), trainer, "target", spec)
    step(*batches[0])
    c, w = time.process_time(), time.perf_counter()
    for f, y in batches[1:]:
        _, _, logits = step(f, y)
    logits["student"].numpy()
    rows = n - len(batches[0][1]["target"])
    return {"rows": rows, "cpu": time.process_time() - c, "wall": time.perf_counter() - w}


def input_only(data, schema, batch):
    """CPU per row of the training stream's dataset alone (read, decode, batch)."""
    from matta_rec.data.reader import LogStream

    c, w, rows = time.process_time(), time.perf_counter(), 0
    for _, labels, rows_end in LogStream(data, schema, batch_size=batch).dataset(True):
        rows = int(rows_end)
    return {"rows": rows, "cpu": time.process_time() - c, "wall": time.perf_counter() - w}


def preprocessing_only(schema, stats, features, batch):
    """CPU per row of the in-model preprocessing alone (``tf.function``)."""
    import tensorflow as tf

    model = student_model(schema, stats)
    pre = tf.function(model.preprocessor)
    n = len(next(iter(features.values())))
    batches = [{k: tf.constant(v[i:i + batch]) for k, v in features.items()}
               for i in range(0, n, batch)]
    pre(batches[0])
    c, w = time.process_time(), time.perf_counter()
    for b in batches:
        out = pre(b)
    next(iter(out.values())).numpy()
    return {"rows": n, "cpu": time.process_time() - c, "wall": time.perf_counter() - w}


def per_row_us(result):
    return 1e6 * result["cpu"] / max(result["rows"], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-matta", action="store_true", help="skip train_run mode matta")
    parser.add_argument("--keep", default=None, help="write the shards and runs here (kept)")
    args = parser.parse_args()

    import tensorflow as tf

    from matta_rec.data.schema import load_schema
    from matta_rec.training.config import RunConfig

    batch = RunConfig().batch_size
    root = args.keep or tempfile.mkdtemp(prefix="train_throughput_")
    data = os.path.join(root, "logs")
    write_logs(data, args.rows, args.shards)
    schema_path = os.path.join(data, "schema.yaml")
    schema = load_schema(schema_path)
    features, labels, stats = memory_data(data, schema)
    print(f"rows {args.rows:,} in {args.shards} Parquet shards, {len(FIELDS)} categorical "
          f"fields; batch {batch}; TF threads: default; {os.cpu_count()} CPUs; "
          f"tf {tf.__version__}", flush=True)

    variants = {
        "train_run student": lambda i: timed_train_run(
            "student", data, schema_path, os.path.join(root, f"run-student-{i}")),
        "loop step only": lambda i: loop_step_only(schema, stats, features, labels, batch),
        "keras fit raw": lambda i: keras_fit(schema, stats, features, labels, batch, False),
        "keras fit ids": lambda i: keras_fit(schema, stats, features, labels, batch, True),
        "input only": lambda i: input_only(data, schema, batch),
        "preprocessing only": lambda i: preprocessing_only(schema, stats, features, batch),
    }
    if not args.no_matta:
        variants["train_run matta"] = lambda i: timed_train_run(
            "matta", data, schema_path, os.path.join(root, f"run-matta-{i}"))
    results = {name: [] for name in variants}
    for i in range(args.repeats):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in order:
            tf.keras.backend.clear_session()
            results[name].append(variants[name](i))
            print(f"  repeat {i + 1}: {name}: {per_row_us(results[name][-1]):.2f} us CPU/row",
                  flush=True)
    report(results, args.repeats)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def report(results, repeats) -> None:
    med = {name: statistics.median(per_row_us(r) for r in runs) for name, runs in results.items()}
    wall = {name: statistics.median(r["rows"] / r["wall"] for r in runs)
            for name, runs in results.items()}
    base = med["keras fit raw"]
    print()
    print(f"| variant | CPU us / row | x keras fit raw | rows/s (wall) |")
    print("|---|---:|---:|---:|")
    for name in results:
        print(f"| {name} | {med[name]:.2f} | {med[name] / base:.2f} | {wall[name]:,.0f} |")
    for mode in ("student", "matta"):
        name = f"train_run {mode}"
        if name not in results:
            continue
        print()
        print(f"Loop breakdown, {name} (median of {repeats}):")
        print("| phase | CPU us / row | share of loop CPU | share of loop wall |")
        print("|---|---:|---:|---:|")
        runs = results[name]
        for phase in PHASES:
            cpu = statistics.median(1e6 * r["cpu_phase"][phase] / r["rows"] for r in runs)
            cshare = statistics.median(r["cpu_phase"][phase] / r["cpu"] for r in runs)
            wshare = statistics.median(r["wall_phase"][phase] / r["wall"] for r in runs)
            print(f"| {phase} | {cpu:.2f} | {cshare:.1%} | {wshare:.1%} |")
    print()
    print(f"isolated: input (LogStream dataset) {med['input only']:.2f} us/row, in-model "
          f"preprocessing {med['preprocessing only']:.2f} us/row, the loop's step on "
          f"memory batches {med['loop step only']:.2f} us/row")
    ratio = med["train_run student"] / base
    print(f"train throughput: plain-keras/matta-rec ratio {ratio:.2f} (target <= 1.30)")


if __name__ == "__main__":
    main()
