"""What a running training process reports: progress, TensorBoard and a heartbeat.

* Progress (``metrics.progress: true``, chief only): on a terminal, a Keras
  progress bar with the rows to train and an ETA when the total is known
  (Parquet shards: the row counts in their footers); otherwise, e.g. when
  stdout is redirected to a log file, one plain line on stderr every
  ``interval_s`` seconds and one at the end::

      [matta-rec train] rows 12800/120000 (10.7%) - 3412 rows/s - ETA 31s - step 200 - online_aucloss 0.2312

* TensorBoard (``metrics.tensorboard: true``): the step metrics every
  ``metrics.log_every_steps`` steps and each finished online window's
  AucLoss, under ``RUN_DIR/tensorboard/train``.
* Heartbeat: ``RUN_DIR/progress.json`` holds the rows trained so far,
  rewritten after every step; a resumed run compares it with its checkpoint
  to say how many rows are read (and trained) again.

Example:

>>> monitor = TrainingMonitor(paths, config.metrics, chief=True,
...                           metric_names=["loss"], planned_rows=120_000)
>>> monitor.batch_end(step=1, rows_here=512, values={"loss": 0.6}, finished=None)
>>> monitor.close(rows_here=512)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Mapping, Sequence, TextIO

from matta_rec.training.run_dir import RunPaths, write_json_atomic

__all__ = ["Heartbeat", "ProgressReporter", "TrainingMonitor", "planned_rows", "log"]

PREFIX = "[matta-rec train]"


def log(message: str) -> None:
    """One line on stderr, prefixed ``[matta-rec train]``."""
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def planned_rows(files: Sequence[str], epochs: int = 1, max_rows: int | None = None) -> int | None:
    """Stream rows a run will read, when knowable without reading the shards.

    Args:
        files: the training shards.
        epochs: passes over them.
        max_rows: ``data.max_rows`` (``None`` = all).

    Returns:
        ``epochs`` times the row counts in the Parquet footers, capped at
        ``max_rows``; ``max_rows`` alone when some shard is not Parquet (or
        unreadable); ``None`` when neither is known.  Quarantined shards
        make it an overestimate.
    """
    total = 0
    for path in files:
        if not str(path).endswith(".parquet"):
            return max_rows
        try:
            import pyarrow.parquet as pq

            total += pq.read_metadata(path).num_rows
        except Exception:  # noqa: BLE001 - a progress estimate; the reader reports bad shards
            return max_rows
    total *= int(epochs)
    return total if max_rows is None else min(total, int(max_rows))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if seconds >= 60:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds}s"


class ProgressReporter:
    """Progress of one process: a Keras bar on a terminal, plain lines otherwise.

    Args:
        names: metric names shown as they are (not averaged).
        target: rows this process is expected to train (``None`` = unknown:
            no ETA).
        interval_s: seconds between plain lines (not a terminal).
        tty: whether stdout is a terminal (default: ask ``sys.stdout``).
        stream: where plain lines go (default ``sys.stderr``).
    """

    def __init__(self, names: Sequence[str], target: int | None = None, interval_s: float = 30.0,
                 tty: bool | None = None, stream: TextIO | None = None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if target is not None and target < 0:
            raise ValueError(f"target must be >= 0 or None, got {target}")
        self.target = target or None  # 0 rows to train: nothing to estimate
        self.interval_s = float(interval_s)
        self.tty = sys.stdout.isatty() if tty is None else bool(tty)
        self.stream = stream
        self._bar = None
        if self.tty:
            import keras

            self._bar = keras.utils.Progbar(self.target, stateful_metrics=list(names),
                                            unit_name="row", verbose=1)
        self._t0 = time.time()
        self._last_line = self._t0

    def update(self, rows: int, values: Mapping[str, float], step: int | None = None) -> None:
        """Report ``rows`` trained by this process so far and the current metrics."""
        if self._bar is not None:
            self._bar.update(rows, values=list(values.items()), finalize=False)
        elif time.time() - self._last_line >= self.interval_s:
            self._line(rows, values, step)

    def close(self, rows: int, values: Mapping[str, float], step: int | None = None) -> None:
        """The final report."""
        if self._bar is not None:
            self._bar.update(rows, values=list(values.items()), finalize=True)
        else:
            self._line(rows, values, step, final=True)

    def line(self, rows: int, values: Mapping[str, float], step: int | None = None,
             final: bool = False) -> str:
        """The plain progress line for ``rows`` rows (without the prefix)."""
        elapsed = max(time.time() - self._t0, 1e-9)
        rate = rows / elapsed
        parts = [f"rows {rows}"]
        if self.target:
            parts[0] += f"/{self.target} ({100.0 * rows / self.target:.1f}%)"
        parts.append(f"{rate:.0f} rows/s")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.target and rate > 0:
            parts.append(f"ETA {_duration(max(self.target - rows, 0) / rate)}")
        if step is not None:
            parts.append(f"step {step}")
        for key in ("online_aucloss", "loss"):
            if key in values:
                parts.append(f"{key} {float(values[key]):.4f}")
        return " - ".join(parts)

    def _line(self, rows: int, values: Mapping[str, float], step: int | None,
              final: bool = False) -> None:
        print(f"{PREFIX} {self.line(rows, values, step, final)}", file=self.stream or sys.stderr,
              flush=True)
        self._last_line = time.time()


class Heartbeat:
    """``progress.json``: rows trained so far, rewritten after every step.

    Args:
        path: the file.
        enabled: write it (the chief only).
    """

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def beat(self, rows_end: int, step: int | None = None) -> None:
        if self.enabled:
            write_json_atomic(self.path, {"rows_end": int(rows_end), "step": step,
                                          "pid": os.getpid(), "time": time.time()}, fsync=False)


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


class TrainingMonitor:
    """Progress, TensorBoard scalars and the heartbeat of a training process.

    Only the chief reports; on other workers every method does nothing.

    Args:
        paths: the run directory.
        config: the run's :class:`~matta_rec.training.config.MetricsConfig`.
        chief: whether this process reports.
        metric_names: the step metrics (shown as they are, not averaged).
        planned_rows: rows this process is expected to train, or ``None``.
        interval_s: seconds between plain progress lines.
        written_through_step: TensorBoard already holds the steps up to this
            one (a resumed run retrains the steps an interrupted process took
            after its last checkpoint: they are not written twice).
    """

    def __init__(self, paths: RunPaths, config, chief: bool, metric_names: Sequence[str],
                 planned_rows: int | None = None, interval_s: float = 30.0,
                 written_through_step: int = 0):
        self.config = config
        self.written_through_step = int(written_through_step)
        self.heartbeat = Heartbeat(paths.progress, chief)
        self.writer = None
        if chief and config.tensorboard:
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(os.path.join(paths.tensorboard, "train"))
        self.progress = None
        if chief and config.progress:
            self.progress = ProgressReporter(list(metric_names) + ["rows/s", "online_aucloss"],
                                             target=planned_rows, interval_s=interval_s)
        self.values: dict[str, float] = {}
        self.step: int | None = None

    def wants_values(self, step: int) -> bool:
        """Whether :meth:`batch_end` of ``step`` shows or writes the step metrics."""
        return self.progress is not None or (
            self.writer is not None and step % self.config.log_every_steps == 0)

    def batch_end(self, step: int, rows_here: int, values: Mapping[str, float] | None,
                  finished: Mapping | None) -> None:
        """Report a trained step.

        Args:
            step: the optimizer step after the update.
            rows_here: rows this process has trained.
            values: the step metrics (``None`` when :meth:`wants_values` said
                no: the last ones are kept for the final report).
            finished: the online window this batch closed, if any.
        """
        if values is not None:
            self.values = dict(values)
        if self.progress is not None:
            self.progress.update(rows_here, self.values, step)
        self.step = step
        if self.writer is None or step <= self.written_through_step:
            return
        with self.writer.as_default(step=step):
            if step % self.config.log_every_steps == 0:
                for key, value in self.values.items():
                    _scalar(key.replace("/", "_per_"), value, step)
            if finished is not None:
                for label in ("target", "event"):
                    for level, vals in finished.get(label, {}).items():
                        if vals["auc_loss"] is not None:
                            _scalar(f"online/{label}/{level}_auc_loss", vals["auc_loss"], step)

    def close(self, rows_here: int) -> None:
        """The final progress report."""
        if self.progress is not None:
            self.progress.close(rows_here, self.values, self.step)
