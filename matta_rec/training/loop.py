"""The online training loop: one time-ordered pass over the log stream.

:func:`train_run` reads the shards in time order (``epochs`` passes for fixed
data sets), and for every batch

1. scores it with the current model and trains on it in the same step
   (:meth:`MatTATrainer.train_batch`: the forward pass precedes the update,
   so the scores are *progressive validation*: each row is scored before it
   is trained on);
2. adds the scores to the online metrics: running in-graph AUROC / logloss
   per head (progress bar, TensorBoard) and, per window of
   ``metrics.window_rows`` rows, the exact AUROC / AucLoss of the scores of
   that window (``metrics.json`` curve);
3. every ``checkpoint.every_rows`` rows (or ``every_steps`` steps) saves
   model, optimizer, metric state and the stream position ``rows_end``
   atomically (``checkpoints/ckpt-<rows_end>``).

``resume=True`` restores the latest checkpoint and restarts the stream at
``stream.position_at(rows_end)``: no row is skipped and none is trained twice
(the rows the interrupted process trained after its last checkpoint are read
again, and the run says how many).

Distribution (``strategy``): every worker reads the same stream; each global
batch is split into contiguous slices, one per replica, inside
``strategy.run``; the per-replica losses are divided by the *global* batch
weight so the all-reduced gradient equals the single-device one, and the
scores are all-gathered so every worker computes the same online metrics.

Example:

>>> metrics = train_run("pipelines/configs/sample.yaml", "sample_data/logs",
...                     "sample_data/schema.yaml", "runs/sample")
>>> metrics["holdout"]["event"]["student"]["auc_loss"]
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from typing import Any, Callable, Mapping

import numpy as np

from matta_rec.errors import ConfigError, DataError, MattaError
from matta_rec.data.schema import Schema, load_schema
from matta_rec.training.config import RunConfig
from matta_rec.training.run_dir import (
    RunPaths,
    build_model,
    example_batch,
    example_tensors,
    get_optimizer,
    read_json,
    write_json_atomic,
)


# --------------------------------------------------------------- strategy
_STRATEGIES: dict = {}


def make_strategy(name: str, source: str = "<config>"):
    """The ``tf.distribute`` strategy of ``strategy: default|mirrored|multi_worker``.

    ``mirrored`` uses every GPU, or every logical CPU device when there is
    no GPU; ``multi_worker`` reads the cluster from ``TF_CONFIG``.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    # One strategy object per kind and process: two MirroredStrategy objects
    # over the same devices can collide on collective-op instance keys, and
    # TensorFlow allows one MultiWorkerMirroredStrategy per process.
    if name in _STRATEGIES:
        return _STRATEGIES[name]
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        _STRATEGIES[name] = tf.distribute.MirroredStrategy(devices=devices)
        return _STRATEGIES[name]
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError(
                "strategy multi_worker needs the TF_CONFIG environment variable "
                '({"cluster": {"worker": [host:port, ...]}, "task": {"type": "worker", '
                '"index": i}}) in every worker process; use strategy: mirrored on one machine',
                source=source,
                key="strategy",
            )
        _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy()
        return _STRATEGIES[name]
    raise ConfigError(f"unknown strategy {name!r}", source=source, key="strategy")


def _task(strategy) -> tuple[str | None, int]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def _is_chief(strategy) -> bool:
    task_type, task_id = _task(strategy)
    if task_type is None or task_type == "chief":
        return True
    if task_type == "worker" and task_id == 0:
        spec = strategy.cluster_resolver.cluster_spec().as_dict()
        return "chief" not in spec
    return False


# ---------------------------------------------------------- online metrics
def _exact(y, score, w=None) -> dict:
    from matta_rec.metrics.auc import auroc, logloss

    out: dict[str, Any] = {}
    try:
        a = auroc(y, score, w)
        out["auroc"], out["auc_loss"] = a, 1.0 - a
    except MattaError:  # one class only in this window
        out["auroc"] = out["auc_loss"] = None
    prob = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(score, np.float64), -60.0, 60.0)))
    out["logloss"] = float(logloss(y, prob, w))
    return out


class OnlineMetrics:
    """Exact progressive-validation metrics per window of rows.

    Args:
        levels: head names.
        window_rows: rows per window.
        has_event: the labels carry an ``event`` column.
    """

    def __init__(self, levels, window_rows: int, has_event: bool):
        self.levels = tuple(levels)
        self.window_rows = int(window_rows)
        self.has_event = has_event
        self.curve: list[dict] = []
        self._clear()

    def _clear(self):
        self.buffers: dict[str, list] = {k: [] for k in ("target", "event", "weight", *self.levels)}
        self.pending = 0

    def add(self, labels: Mapping, logits: Mapping, rows_end: int) -> dict | None:
        """Add a scored batch; returns the finished window's entry, if any."""
        n = len(labels["target"])
        self.buffers["target"].append(np.asarray(labels["target"], np.float32))
        if self.has_event:
            self.buffers["event"].append(np.asarray(labels["event"], np.float32))
        if "weight" in labels:
            self.buffers["weight"].append(np.asarray(labels["weight"], np.float32))
        for level in self.levels:
            self.buffers[level].append(np.asarray(logits[level], np.float32).reshape(-1))
        self.pending += n
        if self.pending >= self.window_rows:
            return self.flush(rows_end)
        return None

    def flush(self, rows_end: int) -> dict | None:
        if not self.pending:
            return None
        cat = {k: np.concatenate(v) if v else None for k, v in self.buffers.items()}
        w = cat["weight"]
        entry: dict[str, Any] = {"rows_end": int(rows_end), "rows": int(self.pending), "target": {}}
        for level in self.levels:
            entry["target"][level] = _exact(cat["target"], cat[level], w)
        if self.has_event:
            entry["event"] = {level: _exact(cat["event"], cat[level], w) for level in self.levels}
        self.curve.append(entry)
        self._clear()
        return entry

    def state(self) -> dict:
        return {
            "curve": self.curve,
            "pending": {k: np.concatenate(v).tolist() for k, v in self.buffers.items() if v},
        }

    def load_state(self, state: Mapping) -> None:
        self.curve = list(state.get("curve", []))
        self._clear()
        pending = state.get("pending", {})
        for key, values in pending.items():
            self.buffers[key] = [np.asarray(values, np.float32)]
        self.pending = len(pending.get("target", []))


def _summary(curve: list[dict], levels) -> dict:
    """Row-weighted mean of the window metrics over the whole stream."""
    out: dict[str, Any] = {}
    for label in ("target", "event"):
        per = {}
        for level in levels:
            vals = [(e["rows"], e[label][level]["auc_loss"]) for e in curve
                    if label in e and e[label][level]["auc_loss"] is not None]
            if vals:
                rows = sum(r for r, _ in vals)
                per[level] = {"auc_loss_mean_over_windows": sum(r * v for r, v in vals) / rows}
        if per:
            out[label] = per
    return out


# ----------------------------------------------------------- evaluation
def evaluate_holdout(model, stream, levels) -> dict:
    """Exact AUROC / AucLoss / logloss of every head on a (hold-out) stream."""
    import tensorflow as tf

    @tf.function
    def predict(features):
        out = model(features, training=False)
        return {k: tf.reshape(out[k], [-1]) for k in levels}

    labels: dict[str, list] = {}
    scores: dict[str, list] = {level: [] for level in levels}
    for features, y in stream.dataset():
        out = predict(features)
        for level in levels:
            scores[level].append(out[level].numpy())
        for key, value in y.items():
            labels.setdefault(key, []).append(value.numpy())
    if not labels:
        return {"rows": 0}
    y = {k: np.concatenate(v) for k, v in labels.items()}
    s = {k: np.concatenate(v) for k, v in scores.items()}
    w = y.get("weight")
    result: dict[str, Any] = {"rows": int(len(y["target"]))}
    result["target"] = {level: _exact(y["target"], s[level], w) for level in levels}
    if "event" in y:
        result["event"] = {level: _exact(y["event"], s[level], w) for level in levels}
        teacher_logit = np.log(np.clip(y["target"], 1e-7, 1 - 1e-7)) - np.log(
            np.clip(1 - y["target"], 1e-7, 1)
        )
        result["teacher_vs_event"] = _exact(y["event"], teacher_logit, w)
    return result


# ----------------------------------------------------------------- helpers
def _split_shards(data, schema, config: RunConfig):
    from matta_rec.data.reader import LogStream

    probe = LogStream(data, schema, batch_size=config.batch_size)
    shards = probe.shards()
    if not shards:
        raise DataError(
            "no log shards found", file=str(data),
            fix="pass --data pointing at a directory of *.parquet / *.csv / *.tfrecord shards",
        )
    k = config.data.holdout_shards
    if config.data.holdout_fraction is not None:
        k = max(1, math.ceil(config.data.holdout_fraction * len(shards)))
    if k >= len(shards):
        raise ConfigError(
            f"holding out {k} shard(s) leaves none of the {len(shards)} shard(s) to train on; "
            "lower data.holdout_shards / data.holdout_fraction",
            source=config.source,
            key="data.holdout_shards",
        )
    if k == 0:
        return data, [], shards, []
    root = probe.root
    train = [os.path.join(root, rel) for rel in shards[: len(shards) - k]]
    hold = [os.path.join(root, rel) for rel in shards[len(shards) - k:]]
    return train, hold, shards[: len(shards) - k], shards[len(shards) - k:]


class _Heartbeat:
    """``progress.json``: rows trained so far, rewritten after every step.

    A resumed run compares it with its checkpoint to say how many rows the
    interrupted process trained after that checkpoint (and are read again).
    """

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def beat(self, rows_end: int):
        if self.enabled:
            write_json_atomic(self.path, {"rows_end": int(rows_end), "pid": os.getpid(),
                                          "time": time.time()}, fsync=False)


def _scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar without importing the tensorboard package.

    ``tf.summary.scalar`` needs ``tensorboard`` installed only to build this
    metadata; TensorBoard's scalar plugin reads events tagged this way.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


def _optimizer_diagnostics(optimizer) -> dict:
    """Counters an optimizer exposes for monitoring (Shampoo: root failures,
    skipped non-finite updates), as plain ints; ``{}`` for optimizers without."""
    diagnostics = getattr(optimizer, "diagnostics", None)
    return dict(diagnostics()) if callable(diagnostics) else {}


def _log(message: str) -> None:
    print(f"[matta-rec train] {message}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------- main
def train_run(
    config: "RunConfig | str | Mapping | None",
    data,
    schema: "Schema | str | Mapping | None",
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overrides: Mapping | None = None,
    model_builder: Callable | None = None,
) -> dict:
    """Train on a log stream; write the run directory; return ``metrics.json``.

    Args:
        config: a :class:`RunConfig`, a YAML path, a mapping or ``None``.
            On ``resume`` the run's own ``config.yaml`` is used (``overrides``
            still apply, e.g. to change the checkpoint cadence).
        data: the log shards (directory, glob, file or list of files).
        schema: the feature schema (on resume: ``None`` = the run's copy).
        out_dir: the run directory (created).
        resume: continue from the latest checkpoint of ``out_dir``.
        overrides: ``{dotted.key: value}`` applied on top of the config.
        model_builder: ``(model_config, schema, stats) -> keras.Model``
            returning ``{level: logit}``; default ``NestedRelevanceModel``.

    Returns:
        The content of ``metrics.json``.

    Raises:
        ConfigError: bad config, or ``out_dir`` already holds a run and
            ``resume`` is False (or holds none and ``resume`` is True).
        DataError: unreadable shards.
    """
    paths = RunPaths(out_dir)
    if resume:
        if not os.path.exists(paths.config):
            raise ConfigError(
                "nothing to resume: the run directory has no config.yaml; train without --resume",
                source=paths.root,
            )
        config = RunConfig.from_yaml(paths.config, overrides=overrides)
        schema = load_schema(schema if schema is not None else paths.schema)
    else:
        if os.path.exists(paths.metrics) or os.path.exists(paths.checkpoints):
            raise ConfigError(
                "the run directory already holds a run; pass --resume to continue it or "
                "choose a new --out",
                source=paths.root,
            )
        config = RunConfig.load(config, overrides)
        if schema is None:
            raise ConfigError("a schema is required: pass --schema FILE")
        schema = load_schema(schema)
    if config.loss.label == "event" and schema.labels.event is None:
        raise ConfigError(
            "loss.label is 'event' but the schema declares no labels.event column",
            source=config.source, key="loss.label",
        )
    if config.debug.trained_rows_column is not None:
        try:
            schema.feature(config.debug.trained_rows_column)
        except KeyError as exc:
            raise ConfigError(str(exc), source=config.source, key="debug.trained_rows_column")

    strategy = make_strategy(config.strategy, config.source)  # before any TF op
    import keras
    import tensorflow as tf

    from matta_rec.data.reader import LogStream, StreamPosition
    from matta_rec.features import FeatureStats
    from matta_rec.training.trainer import MatTATrainer, split_labels

    chief = _is_chief(strategy)
    task_type, task_id = _task(strategy)
    train_data, holdout_files, train_shards, holdout_shards = _split_shards(data, schema, config)

    # ---- run directory, preprocessing statistics
    os.makedirs(paths.root, exist_ok=True)
    if resume:
        stats = FeatureStats.load(paths.preprocessing)
    else:
        first = LogStream(train_data, schema, batch_size=config.batch_size,
                          skip_bad_shards=config.data.skip_bad_shards)
        stats = FeatureStats.fit(schema, first.iter_numpy(), max_rows=config.data.stats_rows)
        if chief:
            config.to_yaml(paths.config)
            schema.to_yaml(paths.schema)
            stats.save(paths.preprocessing)

    # ---- resume point (plain file reads; TF restore comes after the build)
    ckpt_dir = paths.checkpoints if chief else os.path.join(
        paths.root, f".worker-{task_type}-{task_id}", "checkpoints")
    latest = tf.train.latest_checkpoint(paths.checkpoints) if resume else None
    state: dict = {}
    start = None
    if latest is not None:
        state = read_json(paths.state(int(latest.rsplit("-", 1)[1])))
        start = StreamPosition.from_dict(state["position"])
    elif resume:
        _log("no checkpoint yet: starting the stream from its beginning")

    loss_config = config.effective_loss()
    model_config = config.model_for_mode()
    keras.utils.set_random_seed(config.seed)
    builder = model_builder or build_model
    with strategy.scope():
        model = builder(model_config, schema, stats)
        levels = tuple(getattr(model, "levels", None) or model_config.levels)
        trainer = MatTATrainer(model, loss_config, levels=levels)
        optimizer = get_optimizer(config.optimizer.name, config.optimizer.settings)
        trainer.compile(optimizer=optimizer)

    stream = LogStream(train_data, schema, batch_size=config.batch_size, start=start,
                       epochs=config.epochs, skip_bad_shards=config.data.skip_bad_shards)
    dataset = stream.dataset(with_position=True)
    element_spec = dataset.element_spec
    iterator = iter(dataset)
    first_batch = next(iterator, None)
    if first_batch is not None:
        example = example_batch(first_batch[0])
    elif state.get("example"):
        example = state["example"]  # resumed at the end of the stream
    else:
        raise DataError("the training shards hold no rows", file=str(data),
                        fix="check --data and data.holdout_shards")
    with strategy.scope():
        model(example_tensors(example, schema), training=False)
        optimizer.build(trainer.trainable_variables)

    rows_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="rows_end")
    metric_holder = tf.Module()
    metric_holder.variables_list = [v for m in trainer.metrics for v in m.variables]
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, metrics=metric_holder,
                                     rows_end=rows_var)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.checkpoint.keep,
                                         checkpoint_name="ckpt")
    online = OnlineMetrics(levels, config.metrics.window_rows, schema.labels.event is not None)
    rows_start = 0
    run_info: dict[str, Any] = {"resumed_from_rows": None, "rows_reread": 0, "resumes": 0}
    if latest is not None:
        checkpoint.restore(latest).assert_existing_objects_matched()
        rows_start = int(rows_var.numpy())
        if rows_start != state["rows_end"]:
            raise DataError(f"checkpoint {latest} holds rows_end {rows_start} but its state file "
                            f"says {state['rows_end']}", fix="delete the damaged checkpoint")
        online.load_state(state.get("online", {}))
        previous = read_json(paths.progress) if os.path.exists(paths.progress) else {}
        seen = int(previous.get("rows_end", rows_start))
        prior = state.get("run_info", {})
        run_info = {
            "resumed_from_rows": rows_start,
            "rows_reread": max(0, seen - rows_start),
            "resumes": int(prior.get("resumes", 0)) + 1,
        }
        _log(f"resuming from {os.path.basename(latest)}: {rows_start} rows trained, stream "
             f"restarts at {start.shard or '<start>'} row {start.row}; the interrupted run had "
             f"read up to row {seen}, so {run_info['rows_reread']} row(s) after the checkpoint "
             "are read (and trained) again")

    # ---- the distributed step
    label_key = loss_config.label
    single = strategy.num_replicas_in_sync == 1

    def replica_fn(features, labels):
        full_labels, full_w = split_labels(labels, label_key)
        denominator = (tf.reduce_sum(full_w) if full_w is not None
                       else tf.cast(tf.shape(full_labels)[0], tf.float32))
        if single:
            logs, logits = trainer.train_batch(features, labels, denominator=denominator)
            return logs["distill_weight"], logits
        ctx = tf.distribute.get_replica_context()
        n = ctx.num_replicas_in_sync
        i = ctx.replica_id_in_sync_group
        rows = tf.shape(full_labels)[0]
        per = (rows + n - 1) // n
        lo = tf.minimum(i * per, rows)
        hi = tf.minimum(lo + per, rows)
        cut = lambda t: t[lo:hi]  # noqa: E731
        local_x = tf.nest.map_structure(cut, features)
        local_y = tf.nest.map_structure(cut, labels)
        logs, logits = trainer.train_batch(local_x, local_y, denominator=denominator)
        gathered = {k: ctx.all_gather(v, axis=0) for k, v in logits.items()}
        return logs["distill_weight"], gathered

    # One trace for every batch size (the last batch is short).
    @tf.function(input_signature=list(element_spec[:2]))
    def train_step(features, labels):
        weight, logits = strategy.run(replica_fn, args=(features, labels))
        weight = strategy.experimental_local_results(weight)[0]
        logits = {k: strategy.experimental_local_results(v)[0] for k, v in logits.items()}
        logs = {m.name: m.result() for m in trainer.metrics}
        return logs, weight, logits

    # ---- outputs
    writer = None
    if chief and config.metrics.tensorboard:
        writer = tf.summary.create_file_writer(os.path.join(paths.tensorboard, "train"))
    heartbeat = _Heartbeat(paths.progress, chief)
    debug_handle = None
    if chief and config.debug.trained_rows_column:
        os.makedirs(paths.debug, exist_ok=True)
        debug_handle = open(os.path.join(paths.debug, "trained_rows.txt"), "a", encoding="utf-8")
        if latest is not None or resume:
            debug_handle.write(f"# resume {rows_start}\n")
            debug_handle.flush()
    names = [m.name for m in trainer.metrics] + ["rows/s", "online_aucloss"]
    names += list(_optimizer_diagnostics(optimizer))
    progbar = None
    if chief and config.metrics.progress:
        progbar = keras.utils.Progbar(None, stateful_metrics=names, unit_name="row",
                                      verbose=1 if sys.stdout.isatty() else 2)

    def save(rows_end: int, position) -> None:
        rows_var.assign(rows_end)
        if chief:
            write_json_atomic(paths.state(rows_end), {
                "rows_end": int(rows_end),
                "position": position.to_dict(),
                "step": int(optimizer.iterations.numpy()),
                "online": online.state(),
                "example": example,
                "run_info": run_info,
            })
        manager.save(checkpoint_number=rows_end)
        if chief:
            keep = {int(p.rsplit("-", 1)[1]) for p in manager.checkpoints}
            for number in paths.states():
                if number not in keep:
                    os.unlink(paths.state(number))

    # ---- the loop
    rows_end = rows_start
    last_saved_rows, last_saved_step = rows_start, int(optimizer.iterations.numpy())
    max_rows = config.data.max_rows
    t0 = time.time()
    trained_here = 0
    window = None
    logs_np: dict = {}
    batch = first_batch
    while batch is not None:
        features, labels, batch_rows_end = batch
        batch_rows_end = int(batch_rows_end)
        if max_rows is not None and batch_rows_end > max_rows:
            keep = max_rows - rows_end
            if keep <= 0:
                break
            features = {k: v[:keep] for k, v in features.items()}
            labels = {k: v[:keep] for k, v in labels.items()}
            batch_rows_end = max_rows
        logs, weight, logits = train_step(features, labels)
        n = batch_rows_end - rows_end
        rows_end = batch_rows_end
        trained_here += n
        heartbeat.beat(rows_end)
        logits_np = {k: v.numpy() for k, v in logits.items()}
        labels_np = {k: v.numpy() for k, v in labels.items()}
        for level, values in logits_np.items():
            if not np.all(np.isfinite(values)):
                raise MattaError(
                    f"training diverged: the {level} head scored NaN/inf on the batch ending at "
                    f"stream row {rows_end} (step {int(optimizer.iterations.numpy())}); lower "
                    "optimizer.settings.learning_rate (the last checkpoint is intact: --resume "
                    "--set optimizer.settings.learning_rate=...)"
                )
        if debug_handle is not None:
            ids = features[config.debug.trained_rows_column].numpy().reshape(-1)
            debug_handle.write(f"{rows_end} " + " ".join(str(int(v)) for v in ids) + "\n")
            debug_handle.flush()
        finished = online.add(labels_np, logits_np, rows_end)
        if finished is not None:
            window = finished
        step = int(optimizer.iterations.numpy())
        elapsed = max(time.time() - t0, 1e-9)
        if progbar is not None or (writer is not None and step % config.metrics.log_every_steps == 0):
            logs_np = {k: float(v) for k, v in logs.items()}
            logs_np["distill_weight"] = float(weight)
            logs_np["rows/s"] = trained_here / elapsed
            if window is not None and window["target"][levels[0]]["auc_loss"] is not None:
                logs_np["online_aucloss"] = window["target"][levels[0]]["auc_loss"]
            logs_np.update(_optimizer_diagnostics(optimizer))
        if progbar is not None:
            progbar.update(trained_here, values=list(logs_np.items()))
        if writer is not None:
            with writer.as_default(step=step):
                if step % config.metrics.log_every_steps == 0:
                    for key, value in logs_np.items():
                        _scalar(key.replace("/", "_per_"), value, step)
                if finished is not None:
                    for label in ("target", "event"):
                        for level, vals in finished.get(label, {}).items():
                            if vals["auc_loss"] is not None:
                                _scalar(f"online/{label}/{level}_auc_loss",
                                        vals["auc_loss"], step)
        due = (config.checkpoint.every_rows is not None
               and rows_end - last_saved_rows >= config.checkpoint.every_rows) or (
            config.checkpoint.every_steps is not None
            and step - last_saved_step >= config.checkpoint.every_steps)
        if due:
            save(rows_end, stream.position_at(rows_end))
            last_saved_rows, last_saved_step = rows_end, step
        if config.debug.step_delay_s:
            time.sleep(config.debug.step_delay_s)
        if max_rows is not None and rows_end >= max_rows:
            break
        batch = next(iterator, None)
    wall = time.time() - t0

    online.flush(rows_end)
    if rows_end > last_saved_rows or latest is None:
        save(rows_end, stream.position_at(rows_end) if rows_end > rows_start or start is None
             else start)
    heartbeat.beat(rows_end)
    if debug_handle is not None:
        debug_handle.close()
    if progbar is not None:
        progbar.update(trained_here, values=list(logs_np.items()), finalize=True)

    # ---- evaluation and outputs
    final = {m.name: float(m.result().numpy()) for m in trainer.metrics}
    holdout: dict[str, Any] = {"shards": holdout_shards}
    if holdout_files:
        hold_stream = LogStream(holdout_files, schema, batch_size=max(config.batch_size, 1024))
        holdout.update(evaluate_holdout(model, hold_stream, levels))
    metrics = {
        "mode": config.mode,
        "levels": list(levels),
        "strategy": config.strategy,
        "replicas": int(strategy.num_replicas_in_sync),
        "rows_trained": int(rows_end),
        "rows_this_process": int(trained_here),
        "steps": int(optimizer.iterations.numpy()),
        "epochs": config.epochs,
        "train_shards": len(train_shards),
        "wall_s": wall,
        "rows_per_s": trained_here / max(wall, 1e-9),
        **run_info,
        "final": final,
        "online": {
            "window_rows": config.metrics.window_rows,
            "curve": online.curve,
            "summary": _summary(online.curve, levels),
            "cumulative": {level: {"auroc": final[f"{level}_auroc"],
                                   "auc_loss": 1.0 - final[f"{level}_auroc"],
                                   "logloss": final[f"{level}_logloss"]} for level in levels},
        },
        "holdout": holdout,
        "optimizer": {"name": config.optimizer.name, **_optimizer_diagnostics(optimizer)},
        "stream": stream.report().to_dict(),
    }
    if chief:
        write_json_atomic(paths.metrics, metrics)
        model.save(paths.model)
        _log(f"trained {rows_end} rows in {wall:.1f}s ({metrics['rows_per_s']:.0f} rows/s); "
             f"run directory {paths.root}")
    else:
        shutil.rmtree(os.path.join(paths.root, f".worker-{task_type}-{task_id}"), ignore_errors=True)
    return metrics
