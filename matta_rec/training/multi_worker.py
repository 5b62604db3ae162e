"""Multi-worker training (``strategy: multi_worker``): each worker reads its own shards.

:class:`MultiWorkerSession` is the training session of one worker process
of a ``MultiWorkerMirroredStrategy`` cluster (``TF_CONFIG``):

* *Shards.*  The chief assigns the training shards to the workers
  (:func:`~matta_rec.training.distribute.assign_shards`: round-robin in time
  order) and records it in ``RUN_DIR/workers.json``; a resumed run keeps the
  recorded workers of its shards and appends new shards after them, so an
  assigned shard never moves when the list grows.  Worker ``i`` reads only
  its own shards (``LogStream(shard_filter=...)``), in local batches of
  ``batch_size / workers`` rows.  The chief alone fits the preprocessing
  statistics (on the whole stream, as one host would); the others load them.
* *Steps.*  Global batch ``k`` is the concatenation, in worker order, of the
  workers' local batches ``k``: time order across workers is not kept.
  Before each step the workers exchange (one small all-gather) how many rows
  they hold, whether they met an error and whether they were asked to stop;
  so they agree when the stream is over, stop at the same step on SIGTERM,
  and on a data error all checkpoint the last fully trained step before
  they raise.  A worker whose part ran out (or whose last batch is short)
  pads its local batch with zero-weight rows: every row is trained exactly
  once and padding enters neither the loss, the online metrics nor the row
  counts.  ``data.max_rows`` cuts the global batch in worker order.
* *Checkpoints.*  Each worker writes its stream position to
  ``checkpoints/state-<rows_end>.worker-<i>.json`` (atomically), all wait at
  a barrier, then the chief writes ``state-<rows_end>.json`` and the
  TensorFlow checkpoint: a ``ckpt-<rows_end>`` that ``--resume`` finds has
  every worker's position, whenever a process was killed.  ``rows_end`` is
  the global row count.
* *Failures.*  Collectives time out after ``distribute.collective_timeout_s``
  seconds (run config); a dead worker makes the others fail, not hang.

Follow mode is not supported under ``multi_worker`` (refused by
:func:`~matta_rec.training.loop.train_run`).

Example (in every worker process, with its ``TF_CONFIG``):

>>> train_run(config_with_strategy_multi_worker, "logs/", "logs/schema.yaml", "runs/a")
"""

from __future__ import annotations

import os
import re
import signal

import numpy as np

from matta_rec.errors import ConfigError, DataError, MattaError
from matta_rec.training.distribute import (
    assign_shards,
    exchange,
    input_context,
    make_worker_train_step,
    worker_values,
)
from matta_rec.training.loop import HOLDOUT_FILE, _TrainingSession
from matta_rec.training.monitor import log
from matta_rec.training.run_dir import example_batch, example_tensors, read_json, write_json_atomic

__all__ = ["MultiWorkerSession", "WORKERS_FILE"]

#: The shard -> worker assignment of a multi-worker run (``RUN_DIR/workers.json``).
WORKERS_FILE = "workers.json"

_WORKER_STATE = re.compile(r"^state-(\d+)\.worker-(\d+)\.json$")

# What a worker tells the others before each step.
_END, _DATA, _ERROR, _DATA_ERROR = 0, 1, 2, 3


class MultiWorkerSession(_TrainingSession):
    """One worker's share of a ``multi_worker`` run; see the module docstring.

    Same arguments as the one-host session
    (:func:`~matta_rec.training.loop.train_run` picks this class).
    """

    # ------------------------------------------------------------- prepare
    def _prepare(self) -> None:
        """Check the cluster against the config and the run, then (chief) split,
        fit and assign, barrier, and (others) read what the chief wrote."""
        from matta_rec.features import FeatureStats

        config, context = self.config, input_context(self.strategy)
        self.worker, self.workers = context.input_pipeline_id, context.num_input_pipelines
        replicas = int(self.strategy.num_replicas_in_sync)
        if config.batch_size % replicas:
            fit = max(replicas, config.batch_size - config.batch_size % replicas)
            raise ConfigError(
                f"batch_size {config.batch_size} is not divisible by the {replicas} replicas of "
                "the multi_worker cluster (each worker trains batch_size / workers rows per "
                f"step); use --set batch_size={fit}", source=config.source, key="batch_size")
        self.local_batch = context.get_per_replica_batch_size(config.batch_size) * (
            replicas // self.workers)
        path = os.path.join(self.paths.root, WORKERS_FILE)
        recorded = read_json(path) if self.resume and os.path.exists(path) else None
        if recorded is not None and int(recorded["workers"]) != self.workers:
            raise ConfigError(
                f"the run was trained by {recorded['workers']} workers ({path}) but this cluster "
                f"has {self.workers}; resume it with {recorded['workers']} workers in TF_CONFIG "
                "(each worker's stream position belongs to its own shards)",
                source=path, key="strategy")
        self.status, self.failure = _DATA, None
        if self.chief:
            super()._prepare()
            record = {"workers": self.workers,
                      "rule": "shard k in first-sight (time) order goes to worker k % workers",
                      "shards": assign_shards(self.split.train, self.workers,
                                              recorded["shards"] if recorded else None)}
            write_json_atomic(path, record)
            exchange(self.strategy, [0.0])  # barrier: the run directory is written
        else:
            exchange(self.strategy, [0.0])
            self.split = self._recorded_holdout(os.path.join(self.paths.root, HOLDOUT_FILE))
            self.stats = FeatureStats.load(self.paths.preprocessing)
            record = read_json(path)
        self.assignment = {name: int(worker) for name, worker in record["shards"]}

    def _train_stream(self, **options):
        """This worker's shards, in local batches of ``batch_size / workers`` rows."""
        mine = frozenset(name for name, worker in self.assignment.items()
                         if worker == self.worker)
        return self._stream(batch_size=self.local_batch, shard_filter=mine.__contains__,
                            **options)

    def _other_example(self) -> dict:
        """This worker owns no rows: example rows from the whole stream."""
        for features, _ in self._stream().iter_numpy():
            return example_batch(features)
        return super()._other_example()

    def _worker_state(self, rows_end: int, worker: int) -> str:
        return os.path.join(self.paths.checkpoints, f"state-{int(rows_end)}.worker-{worker}.json")

    def _read_resume_point(self) -> None:
        """The latest checkpoint, and this worker's own position in it."""
        from matta_rec.data.reader import StreamPosition

        super()._read_resume_point()
        self.local_start = 0
        if self.latest is not None:
            number = int(self.latest.rsplit("-", 1)[1])
            path = self._worker_state(number, self.worker)
            if not os.path.exists(path):
                raise DataError(
                    f"checkpoint ckpt-{number} has no stream position for worker {self.worker}",
                    file=path, fix="resume with the workers the run was trained with "
                    "(RUN_DIR/workers.json), or delete the damaged checkpoint")
            state = read_json(path)
            self.start = StreamPosition.from_dict(state["position"])
            self.local_start = int(state["rows_read"])
        self.local_end = self.local_start

    def _start_monitor(self) -> None:
        super()._start_monitor()
        self.train_step = make_worker_train_step(self.strategy, self.trainer,
                                                 self.loss_config.label)
        self.filler = example_tensors(self.example, self.schema)
        self.label_keys = tuple(self.stream.label_keys)

    # ---------------------------------------------------------------- step
    def _next_batch(self, checkpoint: bool = True):
        """This worker's next local batch; an error is kept for :meth:`_agree`
        (the other workers must learn of it), not raised."""
        try:
            batch = next(self.iterator, None)
        except Exception as exc:  # noqa: BLE001 - told to every worker, then raised
            self.failure = (exc, getattr(self.stream, "error", None))
            self.status = _DATA_ERROR if isinstance(self.failure[1], MattaError) else _ERROR
            return None
        self.status = _DATA if batch is not None else _END
        return batch

    def _train_loop(self) -> None:
        batch = self.first_batch
        while True:
            agreed = self._agree(batch)
            if agreed is None or not self.train_batch(agreed):
                return
            batch = self._next_batch()

    def _agree(self, batch):
        """Exchange (status, rows, stop signal) with every worker.

        Returns:
            ``(batch, rows held by each worker)``, or ``None`` when the
            stream is over everywhere or a worker was asked to stop.

        Raises:
            The error a worker met (the others raise a ``MattaError`` naming
            it), after checkpointing the last trained step for a data error.
        """
        rows = 0 if batch is None else int(batch[1][self.label_keys[0]].shape[0])
        stop = signal.Signals[self.stop_signal].value if self.stop_signal else 0
        table = exchange(self.strategy, [self.status, rows, stop])
        statuses = table[:, 0].astype(int)
        if (statuses >= _ERROR).any():
            self._fail(statuses)
        signals = table[:, 2].astype(int)
        if signals.any():
            if self.stop_signal is None:
                self.stop_signal = signal.Signals(int(signals[signals > 0][0])).name
            return None
        counts = table[:, 1].astype(int)
        return None if counts.sum() == 0 else (batch, counts)

    def _fail(self, statuses) -> None:
        bad = [j for j, status in enumerate(statuses) if status >= _ERROR]
        saved = ""
        if (statuses == _DATA_ERROR).any() and self.rows_end > self.last_saved[0]:
            self.save_checkpoint()
            saved = f"; checkpoint at stream row {self.rows_end}, the last fully trained step"
            log(f"worker {bad[0]} met a data error{saved}; fix or quarantine the shard, then run "
                "the same command with --resume on every worker")
        if self.failure is not None:
            exc, error = self.failure
            if isinstance(error, MattaError):
                raise error from exc
            raise exc
        raise MattaError(f"worker {bad[0]} of {self.workers} stopped on an error reading its "
                         f"shards (its log names it){saved}; every worker stops at the same step")

    def _keep(self, counts) -> np.ndarray:
        """Rows of each worker trained this step: all, or cut at ``data.max_rows``
        in worker order."""
        max_rows = self.config.data.max_rows
        if max_rows is None:
            return counts
        left, keep = max(max_rows - self.rows_end, 0), np.zeros_like(counts)
        for j, count in enumerate(counts):
            keep[j] = min(int(count), left)
            left -= keep[j]
        return keep

    def _padded(self, features, labels, rows: int):
        """The local batch cut to ``rows`` real rows, padded to the local batch
        size with copies of a real row weighted 0 (``labels["weight"]``)."""
        import tensorflow as tf

        pad, size = self.local_batch - rows, self.local_batch
        source = features if rows else self.filler
        x = {k: tf.concat([features[k][:rows], tf.repeat(source[k][:1], pad, axis=0)], 0)
             if rows else tf.repeat(source[k][:1], size, axis=0) for k in self.filler}
        zeros = tf.zeros([pad], tf.float32)
        y = {k: tf.concat([tf.cast(labels[k][:rows], tf.float32), zeros], 0) if rows
             else tf.zeros([size], tf.float32) for k in self.label_keys}
        if "weight" not in y:
            y["weight"] = tf.concat([tf.ones([rows], tf.float32), zeros], 0)
        return x, y

    def train_batch(self, agreed) -> bool:
        """Train one global step: this worker's ``(batch, rows of every worker)``.

        Returns:
            Whether the stream goes on (``False`` once ``data.max_rows``
            rows are trained).
        """
        batch, counts = agreed
        keep = self._keep(counts)
        total, mine, size = int(keep.sum()), int(keep[self.worker]), self.local_batch
        if total == 0:
            return False
        features, labels = (batch[0], batch[1]) if batch is not None else ({}, {})
        rows_end = self.rows_end + total
        local_x = {k: v[:mine].numpy() for k, v in features.items()} if mine else {}
        local_y = {k: v[:mine].numpy() for k, v in labels.items()} if mine else {}
        if self.callbacks.wants_batches and mine:
            self.callbacks.on_batch_begin(rows_end, local_x, local_y)
        x, y = self._padded(features, labels, mine)
        logs, weight, logits, gathered = self.train_step(worker_values(self.strategy, x),
                                                         worker_values(self.strategy, y))
        self.rows_here += total
        self.rows_end, self.local_end = rows_end, self.local_end + mine
        step = int(self.optimizer.iterations.numpy())
        self.monitor.heartbeat.beat(self.rows_end, step)
        real = np.concatenate([np.arange(j * size, j * size + int(k)) for j, k in enumerate(keep)])
        logits_all = {k: v.numpy() for k, v in logits.items()}
        labels_np = {k: v.numpy()[real] for k, v in gathered.items() if k in self.label_keys}
        logits_np = {k: v[real] for k, v in logits_all.items()}
        self._check_finite(logits_np)
        finished = self.online.add(labels_np, logits_np, self.rows_end)
        if finished is not None:
            self.window = finished
        if self.callbacks.wants_batches and mine:
            lo = self.worker * size
            self.callbacks.on_batch_end(self.rows_end, local_x, local_y,
                                        {k: v[lo:lo + mine] for k, v in logits_all.items()})
        return self._after_step(step, logs, weight, finished)

    # ---------------------------------------------------------- checkpoint
    def _position(self):
        """This worker's stream position after the last trained step."""
        if self.local_end == self.local_start and self.start is not None:
            return self.start
        return self.stream.position_at(self.local_end)

    def save_checkpoint(self) -> None:
        """Every worker's position file, a barrier, then the chief's state file
        and the checkpoint (:meth:`_TrainingSession.save_checkpoint`)."""
        number, position = self.rows_end, self._position()
        os.makedirs(self.paths.checkpoints, exist_ok=True)
        write_json_atomic(self._worker_state(number, self.worker), {
            "rows_end": int(number), "worker": self.worker, "workers": self.workers,
            "position": position.to_dict(), "rows_read": int(self.local_end),
            "shards_read": [fp.name for fp in position.trained or ()],
        })
        exchange(self.strategy, [0.0])  # every position is on disk before the checkpoint
        super().save_checkpoint()
        if self.chief:
            keep = {int(p.rsplit("-", 1)[1]) for p in self.manager.checkpoints}
            for name in os.listdir(self.paths.checkpoints):
                match = _WORKER_STATE.match(name)
                if match and int(match.group(1)) < number and int(match.group(1)) not in keep:
                    os.unlink(os.path.join(self.paths.checkpoints, name))

    # -------------------------------------------------------------- finish
    def _worker_states(self) -> list:
        """Every worker's position file of the final checkpoint (``{}`` if missing)."""
        out = []
        for worker in range(self.workers):
            path = self._worker_state(self.rows_end, worker)
            out.append(read_json(path) if os.path.exists(path) else {})
        return out

    def _trained_shards(self) -> list:
        """The shards every worker has trained, by name."""
        prints = {}
        for state in self._worker_states():
            for fp in (state.get("position") or {}).get("trained") or []:
                prints[fp["name"]] = fp
        return [prints[name] for name in sorted(prints)]

    def _input_by_worker(self, trained: list) -> dict:
        """Rows and shards each worker trained over the run."""
        states = self._worker_states()
        return {"workers": self.workers,
                "rows_read_by_worker": [int(s.get("rows_read", 0)) for s in states],
                "shards_read_by_worker": [list(s.get("shards_read", [])) for s in states]}
