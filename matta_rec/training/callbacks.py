"""Callbacks: code that runs at fixed points of :func:`~matta_rec.training.train_run`.

Subclass :class:`TrainingCallback`, override the methods you need and pass
instances as ``train_run(..., callbacks=[...])``.  The contract:

* ``on_train_begin(info)``: once per process, after the model, optimizer and
  (on resume) the checkpoint are restored, before the first batch of this
  process is trained.  ``info`` is a :class:`TrainingInfo`.
* ``on_batch_begin(rows_end, features, labels)``: a batch was read and is
  about to be trained; nothing has been fitted on it yet (a publication gate
  scores models on it here).
* ``on_batch_end(rows_end, features, labels, logits)``: after a batch was
  trained (the optimizer update is applied and its scores are in the online
  metrics) and *before* a checkpoint covering it may be written.  A process
  killed after this call and before the next checkpoint leaves rows that a
  resumed run trains again (``metrics.json: rows_reread``); rows_end values
  seen by callbacks never skip a row.
* ``on_checkpoint(rows_end)``: after ``ckpt-<rows_end>`` and its state file
  are complete on disk: a restart resumes at stream row ``rows_end`` or later.
* ``on_train_end(metrics)``: after the final checkpoint, ``metrics.json`` and
  ``model.keras`` are written, with the content of ``metrics.json``.

Callbacks run on every worker process of a multi-worker run (use
``info.chief`` to act once).  An exception raised by a callback stops the
run with that exception; the batch it was raised for is not checkpointed.

Example:

>>> class TrainedRows(TrainingCallback):
...     def on_batch_end(self, rows_end, features, labels, logits):
...         print(rows_end, features["row_id"][:3])
>>> train_run(config, "logs/", "logs/schema.yaml", "runs/a", callbacks=[TrainedRows()])
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

__all__ = ["TrainingCallback", "TrainingInfo"]


@dataclasses.dataclass(frozen=True)
class TrainingInfo:
    """What a callback learns when training starts.

    Args:
        run_dir: the run directory.
        config: the run's :class:`~matta_rec.training.config.RunConfig`.
        schema: the feature schema.
        levels: the model's levels, smallest first.
        rows_start: stream rows trained before this process (the restored
            checkpoint's ``rows_end``; 0 for a new run).
        resumed: this process continues a run (``resume=True``).
        chief: this process writes the run directory.
        planned_rows: rows this process is expected to train, when known
            without reading the shards (see
            :func:`matta_rec.training.monitor.planned_rows`), else ``None``.
        model: the nested model being trained (read it, do not train it).
        example: a few raw rows of the stream ``{feature: list}`` (warmup
            requests of an export).
    """

    run_dir: str
    config: Any
    schema: Any
    levels: tuple[str, ...]
    rows_start: int
    resumed: bool
    chief: bool
    planned_rows: int | None = None
    model: Any = None
    example: Mapping | None = None


class TrainingCallback:
    """Base class of training callbacks; every method does nothing by default.

    See the module docstring for when each method runs.
    """

    @property
    def wants_batches(self) -> bool:
        """Whether ``on_batch_begin`` / ``on_batch_end`` should be called.

        Read after ``on_train_begin``; a callback that finds nothing to do
        there (a publication gate without ``publish.export_base``) returns
        ``False``, and the loop then skips handing it each batch as NumPy.
        """
        return True

    def on_train_begin(self, info: TrainingInfo) -> None:
        """Training of this process starts (after any restore)."""

    def on_batch_begin(self, rows_end: int, features: Mapping, labels: Mapping) -> None:
        """A batch is about to be trained.

        Call arguments:
            rows_end: stream rows up to and including this batch.
            features: ``{name: numpy array}`` of the batch's raw features.
            labels: ``{"target", "event"?, "weight"?: numpy array}``.
        """

    def on_batch_end(self, rows_end: int, features: Mapping, labels: Mapping,
                     logits: Mapping) -> None:
        """A batch was trained.

        Call arguments:
            rows_end: stream rows up to and including this batch.
            features: ``{name: numpy array}`` of the raw features of the
                batch as trained (cut at ``data.max_rows``; strings as bytes).
            labels: ``{"target", "event"?, "weight"?: numpy array}``.
            logits: ``{level: numpy array}``: the scores of the batch, taken
                before the update (progressive validation).
        """

    def on_checkpoint(self, rows_end: int) -> None:
        """Checkpoint ``ckpt-<rows_end>`` is on disk."""

    def on_train_end(self, metrics: Mapping) -> None:
        """Training finished; ``metrics`` is the content of ``metrics.json``."""


class CallbackList:
    """Dispatches each event to a sequence of :class:`TrainingCallback`.

    Args:
        callbacks: the callbacks (``None`` = none).

    Raises:
        TypeError: an element is not a :class:`TrainingCallback`.
    """

    def __init__(self, callbacks: Sequence[TrainingCallback] | None = None):
        self.callbacks = list(callbacks or [])
        for index, callback in enumerate(self.callbacks):
            if not isinstance(callback, TrainingCallback):
                raise TypeError(
                    f"callbacks[{index}] must be a matta_rec.training.TrainingCallback, got "
                    f"{type(callback).__name__}"
                )

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    @property
    def wants_batches(self) -> bool:
        """Some callback wants the batches (see :attr:`TrainingCallback.wants_batches`)."""
        return any(callback.wants_batches for callback in self.callbacks)

    def on_train_begin(self, info: TrainingInfo) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(info)

    def on_batch_begin(self, rows_end: int, features, labels) -> None:
        for callback in self.callbacks:
            if callback.wants_batches:
                callback.on_batch_begin(rows_end, features, labels)

    def on_batch_end(self, rows_end: int, features, labels, logits) -> None:
        for callback in self.callbacks:
            if callback.wants_batches:
                callback.on_batch_end(rows_end, features, labels, logits)

    def on_checkpoint(self, rows_end: int) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(rows_end)

    def on_train_end(self, metrics: Mapping) -> None:
        for callback in self.callbacks:
            callback.on_train_end(metrics)
