"""The online training loop: one time-ordered pass over the log stream.

:func:`train_run` reads the shards in time order (``epochs`` passes for fixed
data sets), and for every batch

1. scores it with the current model and trains on it in the same step
   (:meth:`MatTATrainer.train_batch`: the forward pass precedes the update,
   so the scores are *progressive validation*: each row is scored before it
   is trained on);
2. adds the scores to the online metrics (:mod:`matta_rec.training.online`):
   running in-graph AUROC / logloss per head (progress, TensorBoard) and, per
   window of ``metrics.window_rows`` rows, the exact AUROC / AucLoss of the
   scores of that window (``metrics.json`` curve);
3. every ``checkpoint.every_rows`` rows (or ``every_steps`` steps) saves
   model, optimizer, metric state and the stream position ``rows_end``
   atomically (``checkpoints/ckpt-<rows_end>``).

``resume=True`` restores the latest checkpoint and restarts the stream at
``stream.position_at(rows_end)``: no row is skipped and none is trained twice
(the rows the interrupted process trained after its last checkpoint are read
again, and the run says how many).

The run is a :class:`_TrainingSession` in named parts: *prepare* (config,
schema, hold-out split, preprocessing statistics), *build* and *restore*
(model, optimizer, checkpoint, stream position), *step*
(:meth:`_TrainingSession.train_batch`, one batch; the distributed step is
:func:`matta_rec.training.distribute.make_train_step`), *log*
(:class:`matta_rec.training.monitor.TrainingMonitor`), *checkpoint*
(:meth:`_TrainingSession.save_checkpoint`, callable after any batch) and
*finish* (hold-out evaluation, ``metrics.json``, ``model.keras``).
Callbacks (:mod:`matta_rec.training.callbacks`) run at fixed points of it.

Example:

>>> metrics = train_run("pipelines/configs/sample.yaml", "sample_data",
...                     "sample_data/schema.yaml", "runs/sample")
>>> metrics["holdout"]["event"]["student"]["auc_loss"]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from matta_rec.errors import ConfigError, DataError, MattaError
from matta_rec.data.holdout import HoldoutSplit, split_holdout
from matta_rec.data.schema import Schema, load_schema
from matta_rec.models import model_levels
from matta_rec.optimizers.weight_decay import exclude_defaults
from matta_rec.training.callbacks import CallbackList, TrainingCallback, TrainingInfo
from matta_rec.training.config import RunConfig, schedule_depends_on_length
from matta_rec.training.distribute import is_chief, make_strategy, make_train_step, task_of
from matta_rec.training.monitor import TrainingMonitor, log, planned_rows
from matta_rec.training.online import OnlineMetrics, evaluate_holdout, summarize_curve
from matta_rec.training.resume_policy import check_resume
from matta_rec.training.run_dir import (
    RunPaths,
    build_model,
    example_batch,
    example_tensors,
    get_optimizer,
    read_json,
    restore_checkpoint,
    write_json_atomic,
)

__all__ = ["train_run", "make_strategy"]

#: The hold-out shards a run fixed when it started (``RUN_DIR/holdout.json``).
HOLDOUT_FILE = "holdout.json"


def _optimizer_diagnostics(optimizer) -> dict:
    """Counters an optimizer exposes for monitoring (Shampoo: root failures,
    skipped non-finite updates), as plain ints; ``{}`` for optimizers without."""
    diagnostics = getattr(optimizer, "diagnostics", None)
    return dict(diagnostics()) if callable(diagnostics) else {}


def _comparable(config: RunConfig) -> dict:
    """``config.to_dict()`` with the model section's defaults filled in, so a
    key spelled out with its default value is no change."""
    from matta_rec.utils.config import to_dict

    out = config.to_dict()
    out["model"] = to_dict(config.model_config())
    return out


def _recorded_config(paths: RunPaths) -> dict | None:
    """The config the latest checkpoint was trained with (its state file
    records it), or ``None`` for runs written before it was recorded."""
    for rows_end in reversed(paths.states()):
        recorded = read_json(paths.state(rows_end)).get("config")
        if recorded is not None:
            return recorded
    return None


def _load_config(config, schema, paths: RunPaths, resume: bool,
                 overrides: Mapping | None) -> tuple[RunConfig, Schema, list]:
    """The run's config and schema, checked against the run directory.

    On ``resume`` the run's own ``config.yaml``, with ``config`` (when given)
    and ``overrides`` applied through the resume policy
    (:mod:`matta_rec.training.resume_policy`: only checkpoint, metrics,
    follow and publish keys, ``data.skip_bad_shards``, ``data.max_rows`` and
    ``epochs`` may change; anything else is refused, every changed key
    named; the comparison is with the config the latest checkpoint was
    trained with, so a hand edit of ``config.yaml`` goes through the same
    policy), and unless one is given its ``schema.yaml``; otherwise
    ``config`` and ``schema``, refusing a directory that already holds a run.

    Returns:
        ``(config, schema, changes)``: ``changes`` lists the allowed changes
        a resume applies (:class:`~matta_rec.training.resume_policy.Change`).
    """
    changes: list = []
    if resume:
        if not os.path.exists(paths.config):
            raise ConfigError(
                "nothing to resume: the run directory has no config.yaml; train without --resume",
                source=paths.root,
            )
        saved = RunConfig.from_yaml(paths.config)
        asked = saved if config is None else RunConfig.load(config)
        new = RunConfig.load(asked, overrides)
        trained_with = _recorded_config(paths) or _comparable(saved)
        changes = check_resume(trained_with, _comparable(new),
                               schedule_depends_on_length=schedule_depends_on_length(saved),
                               source=paths.config)
        config = RunConfig.from_dict(new.to_dict(), source=paths.config) if changes else saved
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
            "loss.label is 'event' but the schema declares no labels.event column; "
            "use --set loss.label=target",
            source=config.source, key="loss.label",
        )
    return config, schema, changes


class _TrainingSession:
    """One process's share of a training run, in named parts.

    Construction is *prepare*: the strategy, the hold-out split and the
    preprocessing statistics.  :meth:`run` then builds and restores
    (:meth:`_build`, :meth:`_open_stream`, :meth:`_restore`), trains batch by
    batch (:meth:`train_batch`, which checkpoints when due) and finishes
    (:meth:`finish`).  :meth:`save_checkpoint` saves the state after the last
    trained batch and may be called between any two batches.

    Args:
        paths: the run directory.
        config: the run's config (validated).
        schema: the feature schema.
        data: the log shards (directory, glob, file or list of files).
        resume: continue from the latest checkpoint.
        model_builder: ``(model_config, schema, stats) -> keras.Model``.
        callbacks: :class:`TrainingCallback` instances.
    """

    def __init__(self, paths: RunPaths, config: RunConfig, schema: Schema, data, *,
                 resume: bool, model_builder: Callable | None,
                 callbacks: Sequence[TrainingCallback] | None, changes: Sequence = ()):
        self.paths, self.config, self.schema, self.data = paths, config, schema, data
        self.resume, self.changes = resume, list(changes)
        self.model_builder = model_builder or build_model
        self.callbacks = CallbackList(callbacks)
        self.strategy = make_strategy(  # before any TF op
            config.strategy, config.source, config.distribute.collective_timeout_s)
        self.chief = is_chief(self.strategy)
        self.task = task_of(self.strategy)
        self._prepare()
        self.rows_start = self.rows_end = self.rows_here = 0
        self.run_info: dict[str, Any] = {"resumed_from_rows": None, "rows_reread": 0,
                                         "resumes": 0, "config_changes": []}
        self.window: dict | None = None  # the last finished online window
        self.stop_signal: str | None = None  # set by SIGTERM / SIGINT
        self.early_stopped = False
        self.validation = None
        self.stream = None

    # ------------------------------------------------------------- prepare
    def _prepare(self) -> None:
        """The hold-out split and the preprocessing statistics."""
        self.split = self._holdout_split()
        self.stats = self._prepare_stats()

    def _holdout_split(self) -> HoldoutSplit:
        """The hold-out shards, fixed when the run starts.

        A new run splits the shards present (the last ``data.holdout_shards``
        or ``data.holdout_fraction``) and records the hold-out names in
        ``RUN_DIR/holdout.json``; a resumed run holds out exactly those (the
        ones still present), however the data root has grown since: a shard
        never moves between training and hold-out.  Training reads the data
        root minus the hold-out (``LogStream(exclude=...)``), so partitions
        that land later are trained.
        """
        config, path = self.config, os.path.join(self.paths.root, HOLDOUT_FILE)
        if self.resume and os.path.exists(path):
            return self._recorded_holdout(path)
        split = split_holdout(
            self.data, self.schema, config.data.holdout_shards,
            holdout_fraction=config.data.holdout_fraction, source=config.source,
            key="data.holdout_shards",
            fix="lower --set data.holdout_shards=N (or data.holdout_fraction)")
        if self.chief:
            os.makedirs(self.paths.root, exist_ok=True)
            write_json_atomic(path, {"holdout": list(split.holdout)})
        return split

    def _recorded_holdout(self, path: str) -> HoldoutSplit:
        """The split of the shards present now with the hold-out recorded in ``path``."""
        recorded = read_json(path)["holdout"]
        present = split_holdout(self.data, self.schema, 0)
        held, shards = set(recorded), set(present.train)
        return HoldoutSplit(present.root, tuple(s for s in present.train if s not in held),
                            tuple(s for s in recorded if s in shards))

    def _stream(self, **options):
        """A stream of the data root minus the hold-out shards (``batch_size``
        and other :class:`~matta_rec.data.reader.LogStream` options may be given)."""
        from matta_rec.data.reader import LogStream

        options.setdefault("batch_size", self.config.batch_size)
        return LogStream(self.data, self.schema,
                         skip_bad_shards=self.config.data.skip_bad_shards,
                         root=self.split.root, exclude=self.split.holdout, **options)

    def _train_stream(self, **options):
        """The stream this process trains on (:meth:`_stream` on one host)."""
        return self._stream(**options)

    def _prepare_stats(self):
        """Fit (new run) or load (resume) the preprocessing statistics; the
        chief writes config, schema and statistics into the run directory."""
        from matta_rec.features import FeatureStats

        os.makedirs(self.paths.root, exist_ok=True)
        if self.resume:
            if self.changes and self.chief:
                self.config.to_yaml(self.paths.config)
                log("--resume applies " + "; ".join(str(c) for c in self.changes))
            return FeatureStats.load(self.paths.preprocessing)
        config = self.config
        stats = FeatureStats.fit(self.schema, self._stream().iter_numpy(),
                                 max_rows=config.data.stats_rows)
        if self.chief:
            config.to_yaml(self.paths.config)
            self.schema.to_yaml(self.paths.schema)
            stats.save(self.paths.preprocessing)
        return stats

    def _read_resume_point(self) -> None:
        """The latest checkpoint and its state file (plain file reads; the
        TensorFlow restore comes after the model is built)."""
        import tensorflow as tf

        from matta_rec.data.reader import StreamPosition

        self.latest = tf.train.latest_checkpoint(self.paths.checkpoints) if self.resume else None
        self.state: dict = {}
        self.start = None
        if self.latest is not None:
            self.state = read_json(self.paths.state(int(self.latest.rsplit("-", 1)[1])))
            self.start = StreamPosition.from_dict(self.state["position"])
        elif self.resume:
            log("no checkpoint yet: starting the stream from its beginning")

    # --------------------------------------------------------------- build
    def _build(self) -> None:
        """Model, trainer and optimizer in the strategy's scope (seeded)."""
        import keras

        from matta_rec.training.trainer import MatTATrainer

        config = self.config
        self.loss_config = config.effective_loss()
        model_config = config.model_for_mode()
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = self.model_builder(model_config, self.schema, self.stats)
            self.levels = tuple(model_levels(self.model, default=model_config.levels))
            self.trainer = MatTATrainer(self.model, self.loss_config, levels=self.levels)
            self.optimizer = get_optimizer(config.optimizer.name, config.optimizer.settings,
                                           schedule=config.optimizer.schedule,
                                           total_steps=self._total_steps(), source=config.source)
            self.trainer.compile(optimizer=self.optimizer)

    def _total_steps(self) -> int | None:
        """The run's planned optimizer steps, when the schedule decays over the
        run (``decay_steps: auto``): fixed when the run starts and recorded in
        ``RUN_DIR/schedule.json``, so a resume keeps the same schedule."""
        from matta_rec.training.schedules import planned_steps

        config = self.config
        if not schedule_depends_on_length(config):
            return None
        path = os.path.join(self.paths.root, "schedule.json")
        if self.resume and os.path.exists(path):
            return int(read_json(path)["total_steps"])
        if config.follow.enabled:
            raise ConfigError("optimizer.schedule.decay_steps: auto needs the run's length, "
                              "which a followed stream does not have; set decay_steps to a "
                              "number of steps", source=config.source,
                              key="optimizer.schedule.decay_steps")
        rows = planned_rows(self.split.train_files, config.epochs, config.data.max_rows)
        steps = planned_steps(rows, config.batch_size)
        if steps is None:
            raise ConfigError("optimizer.schedule.decay_steps: auto needs the run's length: "
                              "Parquet shards (row counts in their footers) or data.max_rows; "
                              "or set decay_steps to a number of steps", source=config.source,
                              key="optimizer.schedule.decay_steps")
        if self.chief:
            write_json_atomic(path, {"total_steps": int(steps)})
        return int(steps)

    def _open_stream(self) -> None:
        """The training stream from the resume point; its first batch builds
        the model's variables (or the saved example, at the end of the stream)."""
        from matta_rec.data.reader import FollowOptions

        config = self.config
        follow = None
        if config.follow.enabled:
            follow = FollowOptions(poll_interval_s=config.follow.poll_interval_s,
                                   idle_timeout_s=config.follow.idle_timeout_s,
                                   sentinel=config.follow.sentinel)
        self.stream = self._train_stream(start=self.start, epochs=config.epochs, follow=follow)
        dataset = self.stream.dataset(with_position=True)
        self.element_spec = dataset.element_spec
        self.iterator = iter(dataset)
        self.first_batch = self._next_batch(checkpoint=False)
        if self.first_batch is not None:
            self.example = example_batch(self.first_batch[0])
        elif self.state.get("example"):
            self.example = self.state["example"]  # resumed at the end of the stream
        else:
            self.example = self._other_example()
        with self.strategy.scope():
            self.model(example_tensors(self.example, self.schema), training=False)
            # Decoupled weight decay skips embedding tables and biases (Shampoo too).
            exclude_defaults(self.optimizer, self.trainer.trainable_variables)
            self.optimizer.build(self.trainer.trainable_variables)

    def _other_example(self) -> dict:
        """Example rows when this process's stream has none (one host: an error)."""
        raise DataError("the training shards hold no rows", file=str(self.data),
                        fix="check --data and --set data.holdout_shards=N")

    def _next_batch(self, checkpoint: bool = True):
        """The next batch of the stream, ``None`` at its end.

        A data error met mid-stream (a truncated shard, a bad value) reaches
        here wrapped in a ``tf.errors`` exception; the stream keeps the
        original.  The state after the last fully trained batch is
        checkpointed first (``checkpoint=False`` before the model exists),
        then the original error is raised, so fixing or quarantining the
        shard and resuming neither loses nor repeats a row.
        """
        try:
            return next(self.iterator, None)
        except Exception as exc:
            error = getattr(self.stream, "error", None)
            if not isinstance(error, MattaError):
                raise
            if checkpoint and self.rows_end > self.last_saved[0]:
                self.save_checkpoint()
                log(f"checkpoint at stream row {self.rows_end}, the last fully trained batch; "
                    "fix or quarantine the shard, then run the same command with --resume")
            raise error from exc

    # ------------------------------------------------------------- restore
    def _restore(self) -> None:
        """Checkpoint objects; on resume, the model, optimizer, metric state
        and online curve of the latest checkpoint."""
        import tensorflow as tf

        config = self.config
        task_type, task_id = self.task
        ckpt_dir = self.paths.checkpoints if self.chief else os.path.join(
            self.paths.root, f".worker-{task_type}-{task_id}", "checkpoints")
        self.rows_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="rows_end")
        metric_holder = tf.Module()
        metric_holder.variables_list = [v for m in self.trainer.metrics for v in m.variables]
        from matta_rec.training.validation import ValidationMonitor

        self.validation = ValidationMonitor.from_config(
            config, self.model, self.levels, self.schema, strategy=self.strategy,
            train_files=self.split.train_files)
        tracked = {} if self.validation is None else {"validation": self.validation.trackable}
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              metrics=metric_holder, rows_end=self.rows_var,
                                              **tracked)
        self.manager = tf.train.CheckpointManager(self.checkpoint, ckpt_dir,
                                                  max_to_keep=config.checkpoint.keep,
                                                  checkpoint_name="ckpt")
        self.online = OnlineMetrics(self.levels, config.metrics.window_rows,
                                    self.schema.labels.event is not None)
        if self.latest is not None:
            self._restore_checkpoint()
        self.rows_end = self.rows_start
        self.last_saved = (self.rows_start, int(self.optimizer.iterations.numpy()))

    def _restore_checkpoint(self) -> None:
        latest, state = self.latest, self.state
        restore_checkpoint(self.checkpoint, latest)
        self.rows_start = rows_start = int(self.rows_var.numpy())
        if rows_start != state["rows_end"]:
            raise DataError(f"checkpoint {latest} holds rows_end {rows_start} but its state file "
                            f"says {state['rows_end']}", fix="delete the damaged checkpoint")
        self.online.load_state(state.get("online", {}))
        previous = read_json(self.paths.progress) if os.path.exists(self.paths.progress) else {}
        seen = int(previous.get("rows_end", rows_start))
        self.previous_step = int(previous.get("step") or 0)
        prior = state.get("run_info", {})
        self.run_info = {
            "resumed_from_rows": rows_start,
            "rows_reread": max(0, seen - rows_start),
            "resumes": int(prior.get("resumes", 0)) + 1,
            "config_changes": list(prior.get("config_changes", []))
            + [{**c.to_dict(), "rows_end": rows_start} for c in self.changes],
        }
        log(f"resuming from {os.path.basename(latest)}: {rows_start} rows trained, stream "
            f"restarts at {self.start.shard or '<start>'} row {self.start.row}; the interrupted "
            f"run had read up to row {seen}, so {self.run_info['rows_reread']} row(s) after the "
            "checkpoint are read (and trained) again")

    def _start_monitor(self) -> None:
        """The training step, progress / TensorBoard / heartbeat, and the
        callbacks' ``on_train_begin``."""
        config = self.config
        self.train_step = make_train_step(self.strategy, self.trainer, self.loss_config.label,
                                          self.element_spec)
        planned = None
        if ((self.chief and config.metrics.progress) or self.callbacks) and not config.follow.enabled:
            total = planned_rows(self.split.train_files, config.epochs, config.data.max_rows)
            planned = None if total is None else max(total - self.rows_start, 0)
        names = [m.name for m in self.trainer.metrics] + list(_optimizer_diagnostics(self.optimizer))
        self.monitor = TrainingMonitor(self.paths, config.metrics, self.chief, names,
                                       planned_rows=planned,
                                       written_through_step=getattr(self, "previous_step", 0))
        self.callbacks.on_train_begin(TrainingInfo(
            run_dir=self.paths.root, config=config, schema=self.schema, levels=self.levels,
            rows_start=self.rows_start, resumed=self.resume, chief=self.chief,
            planned_rows=planned, model=self.model, example=self.example))

    # ---------------------------------------------------------------- step
    def train_batch(self, batch) -> bool:
        """Train one ``(features, labels, rows_end)`` batch of the stream.

        Cuts the batch at ``data.max_rows``, trains it, checks the scores
        are finite, adds them to the online metrics, runs the callbacks,
        reports, and checkpoints when due.

        Returns:
            Whether the stream goes on (``False`` once ``data.max_rows`` rows
            are trained).
        """
        features, labels, batch_rows_end = batch
        batch_rows_end = int(batch_rows_end)
        max_rows = self.config.data.max_rows
        if max_rows is not None and batch_rows_end > max_rows:
            keep = max_rows - self.rows_end
            if keep <= 0:
                return False
            features = {k: v[:keep] for k, v in features.items()}
            labels = {k: v[:keep] for k, v in labels.items()}
            batch_rows_end = max_rows
        labels_np = {k: v.numpy() for k, v in labels.items()}
        batch_callbacks = self.callbacks.wants_batches
        features_np = {k: v.numpy() for k, v in features.items()} if batch_callbacks else None
        if batch_callbacks:
            self.callbacks.on_batch_begin(batch_rows_end, features_np, labels_np)
        logs, weight, logits = self.train_step(features, labels)
        self.rows_here += batch_rows_end - self.rows_end
        self.rows_end = batch_rows_end
        step = int(self.optimizer.iterations.numpy())
        self.monitor.heartbeat.beat(self.rows_end, step)
        logits_np = {k: v.numpy() for k, v in logits.items()}
        self._check_finite(logits_np)
        finished = self.online.add(labels_np, logits_np, self.rows_end)
        if finished is not None:
            self.window = finished
        if batch_callbacks:
            self.callbacks.on_batch_end(self.rows_end, features_np, labels_np, logits_np)
        return self._after_step(step, logs, weight, finished)

    def _after_step(self, step: int, logs: Mapping, weight, finished: dict | None) -> bool:
        """Report a trained step, validate and checkpoint when due.

        Returns:
            Whether the stream goes on: ``False`` once ``data.max_rows``
            rows are trained or early stopping ends the run.
        """
        self._report(step, logs, weight, finished)
        if self.validation is not None:
            epoch = None if self.validation.every_rows is not None else self._position().epoch
            if self.validation.due(self.rows_end, epoch):
                self._validate(step, epoch)
                if self.validation.should_stop:
                    self.early_stopped = True
                    self.save_checkpoint()
                    return False
        if self._checkpoint_due(step):
            self.save_checkpoint()
        max_rows = self.config.data.max_rows
        return max_rows is None or self.rows_end < max_rows

    def _validate(self, step: int, epoch: int | None) -> None:
        entry = self.validation.evaluate(self.rows_end, step, epoch)
        if self.chief:
            log(self.validation.describe(entry))

    def _check_finite(self, logits: Mapping) -> None:
        for level, values in logits.items():
            if not np.all(np.isfinite(values)):
                raise MattaError(
                    f"training diverged: the {level} head scored NaN/inf on the batch ending at "
                    f"stream row {self.rows_end} (step {int(self.optimizer.iterations.numpy())}); "
                    "lower optimizer.settings.learning_rate (the last checkpoint is intact: "
                    "--resume --set optimizer.settings.learning_rate=...)"
                )

    # ----------------------------------------------------------------- log
    def _report(self, step: int, logs: Mapping, weight, finished: dict | None) -> None:
        values = None
        if self.monitor.wants_values(step):
            elapsed = max(time.time() - self.t0, 1e-9)
            values = {k: float(v) for k, v in logs.items()}
            values["distill_weight"] = float(weight)
            values["rows/s"] = self.rows_here / elapsed
            window = self.window
            if window is not None and window["target"][self.levels[0]]["auc_loss"] is not None:
                values["online_aucloss"] = window["target"][self.levels[0]]["auc_loss"]
            values.update(_optimizer_diagnostics(self.optimizer))
        self.monitor.batch_end(step, self.rows_here, values, finished)

    # ---------------------------------------------------------- checkpoint
    def _checkpoint_due(self, step: int) -> bool:
        every_rows, every_steps = self.config.checkpoint.every_rows, self.config.checkpoint.every_steps
        saved_rows, saved_step = self.last_saved
        return (every_rows is not None and self.rows_end - saved_rows >= every_rows) or (
            every_steps is not None and step - saved_step >= every_steps)

    def save_checkpoint(self) -> None:
        """Checkpoint the state after the last trained batch (``ckpt-<rows_end>``).

        Writes the state file (stream position, online metrics, example
        rows, run info) first, then the TensorFlow checkpoint, then drops
        the state files of checkpoints the manager deleted; runs the
        callbacks' ``on_checkpoint``.
        """
        rows_end, paths = self.rows_end, self.paths
        position = self._position()
        self.rows_var.assign(rows_end)
        if self.chief:
            write_json_atomic(paths.state(rows_end), {
                "rows_end": int(rows_end),
                "position": position.to_dict(),
                "step": int(self.optimizer.iterations.numpy()),
                "online": self.online.state(),
                "example": self.example,
                "run_info": self.run_info,
                "config": _comparable(self.config),
            })
        self.manager.save(checkpoint_number=rows_end)
        if self.chief:
            keep = {int(p.rsplit("-", 1)[1]) for p in self.manager.checkpoints}
            for number in paths.states():
                if number not in keep:
                    os.unlink(paths.state(number))
        self.last_saved = (rows_end, int(self.optimizer.iterations.numpy()))
        self.callbacks.on_checkpoint(rows_end)

    def _position(self):
        """The stream position after the last trained batch."""
        if self.rows_end == self.rows_start and self.start is not None:
            return self.start  # nothing read yet in this process
        return self.stream.position_at(self.rows_end)

    # ----------------------------------------------------------------- run
    def run(self) -> dict:
        """Build, restore, train to the end of the stream (or a stop signal),
        finish; returns the metrics."""
        self._read_resume_point()
        self._build()
        self._open_stream()
        self._restore()
        self._start_monitor()
        self.t0 = time.time()
        with self._stop_signals():
            self._train_loop()
        self.wall = time.time() - self.t0
        self.online.flush(self.rows_end)
        finished = self.stop_signal is None and not self.early_stopped
        if finished and self.validation is not None and self.validation.due(self.rows_end,
                                                                            final=True):
            self._validate(int(self.optimizer.iterations.numpy()), None)
        if self.rows_end > self.last_saved[0] or self.latest is None:
            self.save_checkpoint()
        self.monitor.heartbeat.beat(self.rows_end, int(self.optimizer.iterations.numpy()))
        self.monitor.close(self.rows_here)
        if self.stop_signal is not None:
            log(f"stopped by {self.stop_signal}: checkpoint at stream row {self.rows_end}; "
                "run the same command with --resume to continue")
        metrics = self.finish()
        self.callbacks.on_train_end(metrics)
        return metrics

    def _train_loop(self) -> None:
        """Train batch after batch to the end of the stream or a stop signal."""
        batch = self.first_batch
        while batch is not None and self.train_batch(batch) and self.stop_signal is None:
            batch = self._next_batch()

    @contextlib.contextmanager
    def _stop_signals(self):
        """SIGTERM / SIGINT end the run after the current batch, checkpointed.

        The Python handler runs only when the main thread is between two
        bytecodes, not while it waits inside TensorFlow for the next batch
        (a follow-mode stream may wait for new partitions for a long time).
        So the signal also goes through a wake-up pipe that a watcher thread
        reads: it asks the stream to stop, the wait ends, and the loop sees
        the signal after the batch it is on.  Only in the main thread.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum, frame=None):
            self.stop_signal = signal.Signals(signum).name
            if self.stream is not None:
                self.stream.request_stop()

        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)

        def watch():
            while True:
                data = os.read(read_fd, 16)
                if not data:
                    return
                stop(data[-1])

        handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        watcher = threading.Thread(target=watch, name="matta-rec-stop-signals", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            signal.set_wakeup_fd(wakeup)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            os.close(write_fd)
            watcher.join(timeout=5.0)
            os.close(read_fd)

    # -------------------------------------------------------------- finish
    def finish(self) -> dict:
        """Evaluate the hold-out shards; the chief writes ``metrics.json`` and
        ``model.keras``; other workers remove their scratch checkpoints."""
        from matta_rec.data.reader import LogStream

        config, levels, wall = self.config, self.levels, self.wall
        final = {m.name: float(m.result().numpy()) for m in self.trainer.metrics}
        validation = None
        if self.validation is not None:
            if self.stop_signal is None:
                best = self.validation.restore_best()  # the model from here on is the best one
                if best is not None and self.chief:
                    log(f"restored the best weights: {self.validation.level} validation AucLoss "
                        f"{best['auc_loss']:.5f} at stream row {best['rows_end']}")
            validation = self.validation.report()
        holdout: dict[str, Any] = {"shards": list(self.split.holdout), "root": self.split.root}
        if self.split.holdout and self.stop_signal is not None:
            holdout["skipped"] = f"stopped by {self.stop_signal}; evaluated when the run ends"
        elif self.split.holdout:
            hold_stream = LogStream(self.split.holdout_files, self.schema,
                                    batch_size=max(config.batch_size, 1024),
                                    root=self.split.root)
            holdout.update(evaluate_holdout(self.model, hold_stream, levels))
        trained = self._trained_shards()
        metrics = {
            "mode": config.mode,
            "levels": list(levels),
            "strategy": config.strategy,
            "replicas": int(self.strategy.num_replicas_in_sync),
            "rows_trained": int(self.rows_end),
            "rows_this_process": int(self.rows_here),
            "steps": int(self.optimizer.iterations.numpy()),
            "epochs": config.epochs,
            "train_shards": len(self.split.train),
            "wall_s": wall,
            "rows_per_s": self.rows_here / max(wall, 1e-9),
            **self.run_info,
            "final": final,
            "online": {
                "window_rows": config.metrics.window_rows,
                "curve": self.online.curve,
                "summary": summarize_curve(self.online.curve, levels),
                "cumulative": {level: {"auroc": final[f"{level}_auroc"],
                                       "auc_loss": 1.0 - final[f"{level}_auroc"],
                                       "logloss": final[f"{level}_logloss"]} for level in levels},
            },
            "holdout": holdout,
            "input": {"root": self.split.root, "train_shards": trained,
                      "holdout_shards": list(self.split.holdout),
                      **self._input_by_worker(trained)},
            "stopped_by": self.stop_signal or ("early_stopping" if self.early_stopped else None),
            "validation": validation,
            "optimizer": {"name": config.optimizer.name, **_optimizer_diagnostics(self.optimizer)},
            "stream": self.stream.report().to_dict(),
        }
        if self.chief:
            write_json_atomic(self.paths.metrics, metrics)
            self.model.save(self.paths.model)
            total = "" if self.rows_here == self.rows_end else \
                f"; the run has trained {self.rows_end} rows in all"
            log(f"trained {self.rows_here} rows in {wall:.1f}s ({metrics['rows_per_s']:.0f} "
                f"rows/s){total}; run directory {self.paths.root}")
        else:
            task_type, task_id = self.task
            shutil.rmtree(os.path.join(self.paths.root, f".worker-{task_type}-{task_id}"),
                          ignore_errors=True)
        return metrics


    def _trained_shards(self) -> list:
        """Fingerprint dicts of the shards the run has trained (``input.train_shards``)."""
        return self._position().to_dict().get("trained") or []

    def _input_by_worker(self, trained: list) -> dict:
        """``rows_read_by_worker`` / ``shards_read_by_worker``: what each worker
        trained over the whole run (one host: this process, one entry)."""
        return {"rows_read_by_worker": [int(self.rows_end)],
                "shards_read_by_worker": [[fp["name"] for fp in trained]]}


def train_run(
    config: "RunConfig | str | Mapping | None",
    data,
    schema: "Schema | str | Mapping | None",
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overrides: Mapping | None = None,
    model_builder: Callable | None = None,
    callbacks: Sequence[TrainingCallback] | None = None,
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
        callbacks: :class:`~matta_rec.training.callbacks.TrainingCallback`
            instances run at fixed points of the loop (see that module for
            the contract).

    Returns:
        The content of ``metrics.json``.

    Raises:
        ConfigError: bad config, or ``out_dir`` already holds a run and
            ``resume`` is False (or holds none and ``resume`` is True).
        DataError: unreadable shards.
        TypeError: a callback is not a ``TrainingCallback``.

    Example:

    >>> metrics = train_run("pipelines/configs/sample.yaml", "sample_data",
    ...                     "sample_data/schema.yaml", "runs/sample")
    """
    CallbackList(callbacks)  # a wrong callback fails before any work
    paths = RunPaths(out_dir)
    config, schema, changes = _load_config(config, schema, paths, resume, overrides)
    if config.publish.export_base and not any(getattr(c, "publishes", False)
                                              for c in callbacks or ()):
        raise ConfigError(
            "publish.export_base is set but nothing publishes: run matta-rec train --publish "
            "EXPORT_BASE, or pass callbacks=[matta_rec.export.gate.PublishCallback()]",
            source=config.source, key="publish.export_base")
    session_class = _TrainingSession
    if config.strategy == "multi_worker":
        if config.follow.enabled:
            raise ConfigError(
                "follow mode is not supported under strategy multi_worker (the workers would "
                "have to agree on each new shard as it lands); follow on one machine with "
                "--set strategy=mirrored, or train the shards present without --follow",
                source=config.source, key="follow.enabled")
        from matta_rec.training.multi_worker import MultiWorkerSession as session_class
    session = session_class(paths, config, schema, data, resume=resume,
                            model_builder=model_builder, callbacks=callbacks,
                            changes=changes)
    return session.run()
