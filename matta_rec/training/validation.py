"""Validation on a fixed validation set, early stopping and the best weights.

For multi-pass training on a fixed data set (``epochs > 1``), a
:class:`ValidationMonitor` scores the validation shards (``data.valid``,
``matta-rec train --valid DIR``) with the current weights in inference mode
(``model(features, training=False)``: no dropout, batch-norm moving
statistics) every epoch or every ``validation.every_rows`` rows, and

* records every level's exact AUROC / AucLoss / logloss per evaluation (the
  curve), and each level's best AucLoss with the step / rows / epoch at which
  it occurred (the TA and the Student may peak at different times);
* flags the evaluations at which the TA overfits: its validation AucLoss is
  above the Student's;
* tracks the *served* level (``validation.level``, the Student by default):
  its best AucLoss, the evaluations in a row without an improvement larger
  than ``early_stopping.min_delta`` (the patience counter), and whether the
  run should stop (``early_stopping.patience``);
* keeps a copy of the whole nested model's weights (every level, as
  non-trainable variables mirroring ``model.weights``) from the served level's
  best evaluation, and loads it back into the model when the run ends
  (``early_stopping.restore_best``).

Its state (the copy of the weights, the counters, the best points and the
curve) is a trackable object for ``tf.train.Checkpoint``, so ``--resume``
continues with the same best weights and patience counter.

Hook interface for the training loop (the order matters):

1. After the model is built (its variables exist) and before the checkpoint
   object is made, in every process::

       monitor = ValidationMonitor.from_config(config, model, levels, schema,
                                               strategy=strategy,
                                               train_files=split.train_files)

   ``None`` when ``data.valid`` is not set (then skip every step below).
   The copy of the weights is created in ``strategy``'s scope.
2. Add ``validation=monitor.trackable`` to the ``tf.train.Checkpoint`` the
   loop saves and restores (model, optimizer, ...); a restore then brings
   the monitor back to the checkpoint's state.
3. After every trained batch::

       if monitor.due(rows_end, epoch=stream.position_at(rows_end).epoch):
           entry = monitor.evaluate(rows_end, step, epoch=...)
           log(monitor.describe(entry))
           if monitor.should_stop:
               checkpoint, then leave the batch loop

   (checkpoint after an evaluation, or at the next regular checkpoint: an
   evaluation lost to a crash is simply repeated after ``--resume``).
4. When the stream ends (not on a stop signal: the run is not over), before
   the final checkpoint: ``if monitor.due(rows_end, final=True):
   monitor.evaluate(...)``; save the final checkpoint (the last trained
   state, so a resume with more epochs continues from it), then
   ``monitor.restore_best()`` before the hold-out evaluation and
   ``model.keras``; ``metrics["validation"] = monitor.report()``.

Every process scores the whole validation set with the same weights, so all
workers of a ``multi_worker`` run take the same early-stopping decision.

Example:

>>> monitor = ValidationMonitor(model, ("student", "ta"), valid_stream, patience=3)
>>> checkpoint = tf.train.Checkpoint(model=model, validation=monitor.trackable)
>>> if monitor.due(rows_end, epoch=1):
...     monitor.evaluate(rows_end, step, epoch=1)
>>> monitor.should_stop
False
>>> monitor.restore_best()["auc_loss"]      # the best point, now in the model
0.0312
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

import tensorflow as tf

from matta_rec.data import filesystem as fs
from matta_rec.errors import ConfigError, DataError
from matta_rec.training.online import exact_metrics, score_stream

__all__ = ["ValidationMonitor"]

_FORMAT = 1


def _fresh_state() -> dict:
    return {
        "format": _FORMAT,
        "evaluations": 0,  # evaluations done
        "last_rows": 0,  # rows_end of the last evaluation
        "last_epoch": 0,  # epoch given to the last evaluation
        "wait": 0,  # evaluations in a row without improvement (patience counter)
        "best": None,  # the served level's best point
        "levels_best": {},  # {level: best point}
        "stopped_at": None,  # the point at which should_stop became true
        "curve": [],  # one entry per evaluation
    }


class _StateRecord(tf.train.experimental.PythonState):
    """The monitor's JSON state as a checkpoint entry (saved and restored with it)."""

    def __init__(self, monitor: "ValidationMonitor"):
        self._monitor = monitor

    def serialize(self) -> str:
        return json.dumps(self._monitor._state)

    def deserialize(self, string) -> None:
        if isinstance(string, bytes):
            string = string.decode("utf-8")
        self._monitor._load_state(json.loads(string))


class ValidationMonitor:
    """Periodic validation, early stopping and best weights of a nested model.

    Args:
        model: the nested model, built (its variables exist), mapping raw
            features to ``{level: logits}``.
        levels: the levels, smallest (the Student) first, largest (the TA)
            last.
        stream: the validation set: a
            :class:`~matta_rec.data.reader.LogStream` (or any object whose
            ``dataset()`` yields ``(features, labels)`` batches); read in full
            at every evaluation.
        level: the served level (early stopping, best weights); default the
            first of ``levels``.
        label: ``"target"`` or ``"event"``: the label the AucLoss is
            measured on.
        every_rows: evaluate after this many trained rows since the last
            evaluation; ``None`` = when the epoch changes (see :meth:`due`).
        patience: evaluations in a row without improvement after which
            :attr:`should_stop` is true; ``None`` = never.
        min_delta: the least AucLoss decrease that counts as an improvement.
        restore_best: keep a copy of the weights at the best evaluation (and
            load it in :meth:`restore_best`); ``False`` keeps no copy.
        strategy: the ``tf.distribute`` strategy the model lives in (the
            copy is created in its scope); default the current one.
        data: how the validation set is named in the report and in errors
            (e.g. the ``--valid`` argument).

    Raises:
        ValueError: a bad argument (an unknown level, an unbuilt model, ...).
    """

    def __init__(self, model, levels: Sequence[str], stream, *, level: str | None = None,
                 label: str = "target", every_rows: int | None = None,
                 patience: int | None = None, min_delta: float = 0.0,
                 restore_best: bool = True, strategy=None, data: str | None = None):
        self.levels = tuple(levels)
        if not self.levels:
            raise ValueError("levels must name at least one level")
        self.level = self.levels[0] if level is None else level
        if self.level not in self.levels:
            raise ValueError(f"level must be one of {list(self.levels)}, got {self.level!r}")
        if label not in ("target", "event"):
            raise ValueError(f"label must be 'target' or 'event', got {label!r}")
        if every_rows is not None and (isinstance(every_rows, bool) or int(every_rows) < 1):
            raise ValueError(f"every_rows must be an integer >= 1 or None, got {every_rows!r}")
        if patience is not None and (isinstance(patience, bool) or int(patience) < 1):
            raise ValueError(f"patience must be an integer >= 1 or None, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.model, self.stream, self.label = model, stream, label
        self.every_rows = None if every_rows is None else int(every_rows)
        self.patience = None if patience is None else int(patience)
        self.min_delta = float(min_delta)
        self.restore_best_weights = bool(restore_best)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.data = data if data is not None else str(getattr(stream, "root", "<validation set>"))
        self.restored = False
        self._state = _fresh_state()
        self._weights = list(model.weights)
        if not self._weights:
            raise ValueError("the model has no weights yet: call it on a batch before "
                             "building the ValidationMonitor")
        self._best_weights: list = []
        if self.restore_best_weights:
            with self.strategy.scope():
                self._best_weights = [
                    tf.Variable(lambda w=w: tf.zeros(w.shape, tf.as_dtype(w.dtype)),
                                trainable=False,
                                name="best_" + getattr(w, "path", w.name).replace("/", "_"))
                    for w in self._weights]
        self._trackable = tf.Module(name="validation")
        self._trackable.record = _StateRecord(self)
        self._trackable.best_weights = self._best_weights

        @tf.function(reduce_retracing=True)
        def predict(features):
            out = model(features, training=False)
            return {k: tf.reshape(out[k], [-1]) for k in self.levels}

        self._predict = predict

    @classmethod
    def from_config(cls, config, model, levels: Sequence[str], schema, *, strategy=None,
                    train_files: Sequence[str] = ()) -> "ValidationMonitor | None":
        """The monitor of a run's config, or ``None`` without ``data.valid``.

        Args:
            config: the run's :class:`~matta_rec.training.config.RunConfig`.
            model: the nested model, built.
            levels: its levels, smallest first.
            schema: the feature schema (the validation shards must follow it).
            strategy: the run's ``tf.distribute`` strategy.
            train_files: the training shards (absolute paths or URIs); a
                validation shard among them is an error.

        Raises:
            ConfigError: ``validation.level`` is not a level of the model,
                the label is not in the schema, or the validation shards
                overlap the training shards.
            DataError: ``data.valid`` holds no shards.
        """
        from matta_rec.data.reader import LogStream

        valid = config.data.valid
        if valid is None:
            return None
        level = config.validation.level
        if level is not None and level not in levels:
            raise ConfigError(f"validation.level {level!r} is not a level of the trained model "
                              f"{list(levels)}; --set validation.level=null serves the smallest",
                              source=config.source, key="validation.level")
        label = config.validation.label or config.loss.label
        if label == "event" and schema.labels.event is None:
            raise ConfigError("validation is measured on the event label but the schema "
                              "declares no labels.event column; --set validation.label=target",
                              source=config.source, key="validation.label")
        batch = config.validation.batch_size or max(config.batch_size, 1024)
        stream = LogStream(valid, schema, batch_size=batch)
        files = [fs.normalize(fs.join(stream.root, rel)) for rel in stream.shards()]
        if not files:
            raise DataError("the validation set holds no shards", file=str(valid),
                            fix="pass --valid DIR (data.valid) as a folder, glob or URI of "
                                "shards outside the training data")
        shared = sorted(set(files) & {fs.normalize(path) for path in train_files})
        if shared:
            raise ConfigError(
                f"{len(shared)} validation shard(s) are also training shards, e.g. {shared[0]}; "
                "keep the validation shards outside --data (or hold them out of training)",
                source=config.source, key="data.valid")
        return cls(model, levels, stream, level=level, label=label,
                   every_rows=config.validation.every_rows,
                   patience=config.early_stopping.patience,
                   min_delta=config.early_stopping.min_delta,
                   restore_best=config.early_stopping.restore_best,
                   strategy=strategy, data=str(valid))

    # ------------------------------------------------------------- state
    @property
    def trackable(self) -> tf.Module:
        """The checkpointable state: ``tf.train.Checkpoint(..., validation=monitor.trackable)``.

        Holds ``best_weights`` (the copy of ``model.weights``, empty without
        ``restore_best``) and ``record`` (the counters, best points and
        curve, as JSON).
        """
        return self._trackable

    def _load_state(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise DataError("the checkpoint's validation state has an unknown format",
                            fix="resume with the matta-rec version that wrote the run, "
                                "or start a new --out")
        merged = _fresh_state()
        merged.update(state)
        self._state = merged

    @property
    def evaluations(self) -> int:
        """Evaluations done so far (across resumes)."""
        return int(self._state["evaluations"])

    @property
    def wait(self) -> int:
        """Evaluations in a row without improvement of the served level (the patience counter)."""
        return int(self._state["wait"])

    @property
    def best(self) -> dict | None:
        """The served level's best point (``auc_loss``, ``rows_end``, ``step``, ...), or ``None``."""
        best = self._state["best"]
        return None if best is None else dict(best)

    @property
    def should_stop(self) -> bool:
        """``patience`` evaluations in a row have not improved the served level."""
        return self.patience is not None and self.wait >= self.patience

    # ---------------------------------------------------------- evaluate
    def due(self, rows_end: int, epoch: int | None = None, *, final: bool = False) -> bool:
        """Whether to evaluate after the batch that ends at stream row ``rows_end``.

        Args:
            rows_end: stream rows trained so far (across epochs and resumes).
            epoch: the 0-based epoch of the next row the stream delivers
                (``stream.position_at(rows_end).epoch``); with
                ``every_rows=None`` an evaluation is due when it is larger
                than at the last evaluation.
            final: the stream has ended: due unless the last evaluation was
                at ``rows_end``.

        Returns:
            True when rows were trained since the last evaluation and the
            cadence is reached.
        """
        last = int(self._state["last_rows"])
        if int(rows_end) <= last:
            return False
        if final:
            return True
        if self.every_rows is not None:
            return int(rows_end) - last >= self.every_rows
        return epoch is not None and int(epoch) > int(self._state["last_epoch"])

    def _score(self) -> dict:
        """Exact metrics of every level on the whole validation set."""
        y, s = score_stream(self._predict, self.stream, self.levels)
        if not y:
            raise DataError("the validation set holds no rows", file=self.data,
                            fix="pass --valid DIR (data.valid) with at least one non-empty shard")
        if self.label not in y:
            raise DataError(f"the validation shards have no {self.label} label", file=self.data,
                            fix="--set validation.label=target")
        out: dict[str, Any] = {"rows": int(len(y["target"]))}
        for key in ("target", "event"):
            if key in y:
                out[key] = {level: exact_metrics(y[key], s[level], y.get("weight"))
                            for level in self.levels}
        return out

    def evaluate(self, rows_end: int, step: int, epoch: int | None = None) -> dict:
        """Score the validation set now and update the best points and the counter.

        On an improvement of the served level (AucLoss below its best by
        more than ``min_delta``; the first evaluation always improves) the
        weights are copied and the counter is reset; otherwise the counter
        goes up by one.

        Args:
            rows_end: stream rows trained so far.
            step: optimizer steps so far.
            epoch: the epoch (as given to :meth:`due`), recorded.

        Returns:
            The curve entry: ``evaluation`` (1-based), ``rows_end``, ``step``,
            ``epoch``, ``rows`` (validation rows), ``target`` / ``event``
            ``{level: {auroc, auc_loss, logloss}}``, ``improved``, ``wait``,
            ``ta_overfits`` (two levels or more) and ``seconds``.

        Raises:
            DataError: the validation set is empty or has one class of the
                label (no AucLoss).
        """
        t0 = time.time()
        result = self._score()
        metrics = result[self.label]
        score = metrics[self.level]["auc_loss"]
        if score is None:
            raise DataError(f"the validation set has a single class of the {self.label} label, "
                            "so its AucLoss is undefined", file=self.data,
                            fix="use a validation set with both classes (or --set "
                                "validation.label=target for soft labels)")
        state = self._state
        point = {"evaluation": state["evaluations"] + 1, "rows_end": int(rows_end),
                 "step": int(step), "epoch": None if epoch is None else int(epoch)}
        for level in self.levels:
            value = metrics[level]["auc_loss"]
            old = state["levels_best"].get(level)
            if value is not None and (old is None or value < old["auc_loss"]):
                state["levels_best"][level] = {**point, "auc_loss": value}
        best = state["best"]
        improved = best is None or score < best["auc_loss"] - self.min_delta
        if improved:
            state["best"] = {**point, "level": self.level, "auc_loss": score}
            state["wait"] = 0
            self._copy_weights()
        else:
            state["wait"] += 1
        entry = {**point, "rows": result["rows"],
                 **{k: result[k] for k in ("target", "event") if k in result},
                 "improved": bool(improved), "wait": state["wait"]}
        if len(self.levels) > 1:
            student, ta = (metrics[lv]["auc_loss"] for lv in (self.levels[0], self.levels[-1]))
            entry["ta_overfits"] = student is not None and ta is not None and ta > student
        if self.should_stop and state["stopped_at"] is None:
            state["stopped_at"] = dict(point)
        entry["seconds"] = time.time() - t0
        state["curve"].append(entry)
        state["evaluations"] += 1
        state["last_rows"] = int(rows_end)
        if epoch is not None:
            state["last_epoch"] = int(epoch)
        return entry

    def _copy_weights(self) -> None:
        with self.strategy.scope():
            for copy, weight in zip(self._best_weights, self._weights):
                copy.assign(weight.value if hasattr(weight, "value") else weight)

    def restore_best(self) -> dict | None:
        """Load the weights of the served level's best evaluation into the model.

        Every weight of the nested model (all levels, normalisation
        statistics included) comes from that evaluation.  Nothing happens
        without ``restore_best``, or before the first evaluation.

        Returns:
            The best point (``auc_loss``, ``rows_end``, ``step``, ``epoch``,
            ``evaluation``, ``level``), or ``None`` when nothing was loaded.
        """
        if not self.restore_best_weights or self._state["best"] is None:
            return None
        with self.strategy.scope():
            for weight, copy in zip(self._weights, self._best_weights):
                weight.assign(copy)
        self.restored = True
        return self.best

    # ------------------------------------------------------------ report
    def describe(self, entry: dict) -> str:
        """A one-line log message for a curve entry :meth:`evaluate` returned."""
        metrics = entry[self.label]
        parts = [f"{lv} {metrics[lv]['auc_loss']:.5f}" if metrics[lv]["auc_loss"] is not None
                 else f"{lv} n/a" for lv in self.levels]
        best = self._state["best"]
        text = (f"validation {entry['evaluation']} at row {entry['rows_end']} (step "
                f"{entry['step']}): {self.label} AucLoss " + ", ".join(parts)
                + f"; best {self.level} {best['auc_loss']:.5f} at row {best['rows_end']}")
        if self.patience is not None:
            text += f", {entry['wait']}/{self.patience} without improvement"
        if entry.get("ta_overfits"):
            text += f"; the {self.levels[-1]} is worse than the {self.levels[0]} (overfits)"
        if self.should_stop:
            text += "; stopping early"
        return text

    def report(self) -> dict:
        """The ``validation`` section of ``metrics.json`` (JSON-safe).

        Returns:
            ``data``, ``label``, ``level``, ``every_rows``, ``evaluations``,
            ``curve`` (one entry per evaluation), ``best`` (the served
            level's best point), ``levels_best`` (each level's best point),
            ``early_stopping`` (``patience``, ``min_delta``, ``wait``,
            ``stopped``, ``stopped_at``), ``restore_best`` / ``restored`` and
            ``ta_overfits``: ``any``, ``at_best`` (at the served level's best
            evaluation), ``at_end`` (at the last one) and ``points`` (every
            evaluation where the TA's AucLoss is above the Student's).
        """
        state, curve = self._state, self._state["curve"]
        student, ta = self.levels[0], self.levels[-1]
        points = [{"evaluation": e["evaluation"], "rows_end": e["rows_end"], "step": e["step"],
                   "epoch": e["epoch"], f"{student}_auc_loss": e[self.label][student]["auc_loss"],
                   f"{ta}_auc_loss": e[self.label][ta]["auc_loss"]}
                  for e in curve if e.get("ta_overfits")]
        best = state["best"]
        overfits = None
        if len(self.levels) > 1:
            at_best = None if best is None else bool(curve[best["evaluation"] - 1]["ta_overfits"])
            overfits = {"any": bool(points), "at_best": at_best,
                        "at_end": bool(curve[-1]["ta_overfits"]) if curve else None,
                        "points": points}
        return {
            "data": self.data,
            "label": self.label,
            "level": self.level,
            "every_rows": self.every_rows,
            "evaluations": self.evaluations,
            "curve": [dict(e) for e in curve],
            "best": self.best,
            "levels_best": {k: dict(v) for k, v in state["levels_best"].items()},
            "early_stopping": {"patience": self.patience, "min_delta": self.min_delta,
                               "wait": self.wait, "stopped": self.should_stop,
                               "stopped_at": state["stopped_at"]},
            "restore_best": self.restore_best_weights,
            "restored": self.restored,
            "ta_overfits": overfits,
        }
