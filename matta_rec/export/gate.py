"""Gated publication: a new version reaches TF Serving only if it is not worse.

Continuous training (``matta-rec train --follow --publish EXPORT_BASE``)
builds a *candidate* export every ``every_rows`` trained rows.  Before the
candidate may replace the version TF Serving serves, both are scored on the
**same next** ``eval_rows`` rows of the stream, *before* training sees those
rows (so neither model was fitted on them), and the candidate is published
only if

    AucLoss(candidate) <= AucLoss(published) + tolerance

on the gating size (the first of ``sizes``, the Student by default).  The
first candidate of an export base with nothing published is published
unconditionally.  This is the role TFX's Evaluator "blessing" plays before
its Pusher.

A candidate is written to ``staging_dir`` (never under ``EXPORT_BASE``: TF
Serving loads the highest integer version it finds there), then copied into
``EXPORT_BASE/<size>/<version>`` through :func:`publish_version` (a hidden
temporary and a rename, so TF Serving never sees half a version).  Each
decision is appended as one JSON line to ``decisions_path``::

    {"decision": "published" | "held_back", "version": 3,
     "published_version": 2, "candidate_auc_loss": 0.241,
     "published_auc_loss": 0.239, "tolerance": 0.0, "label": "event",
     "rows_trained": 60000, "window": {"rows_end_first": 60001,
     "rows_end_last": 65000, "rows": 5000}, "sizes": ["student"], "time": ...}

``version`` is the version the candidate was (or would have been) published
as; ``published_version`` is the version serving when the decision was made.

Example:

>>> gate = PublicationGate("exports", schema, staging_dir="runs/r1/candidates",
...                        decisions_path="runs/r1/publications.jsonl",
...                        every_rows=100_000, eval_rows=10_000)
>>> if gate.due(rows_trained):
...     gate.start_candidate(model, rows_trained, example_rows)
>>> decision = gate.observe(features, labels, rows_end)   # before training on them
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from matta_rec.errors import ConfigError, MattaError
from matta_rec.export.publish import existing_versions, local_export_base, publish_version
from matta_rec.export.run_export import next_version, servable_submodel
from matta_rec.export.run_export import size_dir_name as _size_dir
from matta_rec.export.savedmodel import SERVING_SIGNATURE, export_model
from matta_rec.metrics import auroc
from matta_rec.training.callbacks import TrainingCallback, TrainingInfo


def _load_signature(version_dir: str):
    import tensorflow as tf

    loaded = tf.saved_model.load(version_dir)
    fn = loaded.signatures[SERVING_SIGNATURE]
    return loaded, fn, sorted(fn.structured_input_signature[1])


class _Scorer:
    """Logits of one SavedModel version on raw-feature batches, kept per window."""

    def __init__(self, version_dir: str):
        self.version_dir = version_dir
        self._loaded, self._fn, self._inputs = _load_signature(version_dir)
        self.logits: list[np.ndarray] = []

    def score(self, features: Mapping[str, Any], rows: int) -> None:
        import tensorflow as tf

        feeds = {name: tf.convert_to_tensor(features[name])[:rows] for name in self._inputs}
        self.logits.append(np.asarray(self._fn(**feeds)["logit"], np.float64).reshape(-1))

    def all(self) -> np.ndarray:
        return np.concatenate(self.logits)


class PublicationGate:
    """Build candidate exports and publish those that are not worse than the served one.

    Args:
        export_base: the folder TF Serving watches (``EXPORT_BASE``).
        schema: the raw feature :class:`~matta_rec.data.schema.Schema`.
        staging_dir: where candidates are written before the decision
            (outside ``export_base``; e.g. ``RUN_DIR/candidates``).
        decisions_path: the JSON-lines record of decisions
            (``RUN_DIR/publications.jsonl``).
        every_rows: trained rows between two candidates (``None``: by time only).
        every_minutes: or minutes between two candidates (``None``: by rows only).
        eval_rows: rows of the stream, after the candidate, on which the
            candidate and the published version are both scored.
        tolerance: the candidate is published if its AucLoss is at most the
            published one's plus this (>= 0; 0 = not worse).
        sizes: Mix'n'Match specs exported per candidate; the first one gates.
        label: ``"event"`` or ``"target"``: the label column scored.
        log: ``log(message)`` for one line per decision.
    """

    def __init__(self, export_base: str, schema, *, staging_dir: str, decisions_path: str,
                 every_rows: int | None, eval_rows: int, tolerance: float = 0.0,
                 every_minutes: float | None = None, sizes: Sequence[str] = ("student",),
                 label: str = "event", log: Callable[[str], None] | None = None):
        for name, value in (("every_rows", every_rows), ("eval_rows", eval_rows)):
            if value is None and name == "every_rows":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"publish.{name} must be a positive integer, got {value!r}",
                                  key=f"publish.{name}")
        if every_minutes is not None and (isinstance(every_minutes, bool) or not isinstance(
                every_minutes, (int, float)) or every_minutes <= 0):
            raise ConfigError(f"publish.every_minutes must be a positive number, got "
                              f"{every_minutes!r}", key="publish.every_minutes")
        if every_rows is None and every_minutes is None:
            raise ConfigError("publish needs publish.every_rows or publish.every_minutes",
                              key="publish.every_rows")
        if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
            raise ConfigError(f"publish.tolerance must be a number >= 0, got {tolerance!r}",
                              key="publish.tolerance")
        if not sizes:
            raise ConfigError("publish needs at least one size (e.g. --sizes student)",
                              key="publish.sizes")
        if label not in ("event", "target"):
            raise ConfigError(f"the gate's label must be 'event' or 'target', got {label!r}")
        self.export_base = local_export_base(export_base)
        self.staging_dir = os.path.abspath(os.fspath(staging_dir))
        if os.path.commonpath([self.export_base, self.staging_dir]) == self.export_base:
            raise ConfigError(
                f"the candidates' staging folder {self.staging_dir} is inside the export base "
                f"{self.export_base}; TF Serving would load a held-back candidate from there"
            )
        self.schema = schema
        self.decisions_path = decisions_path
        self.every_rows = None if every_rows is None else int(every_rows)
        self.every_minutes = every_minutes
        self.eval_rows = int(eval_rows)
        self.tolerance = float(tolerance)
        self.sizes = [str(s) for s in sizes]
        self.label = label
        self._log = log or (lambda message: None)
        self._candidate: dict | None = None
        self._last_trigger = self._last_recorded_rows()
        self._last_time = time.monotonic()

    # ----------------------------------------------------------- triggers
    def _last_recorded_rows(self) -> int:
        """Rows trained at the last decision on record (a resumed run keeps its cadence)."""
        last = 0
        for record in self.decisions():
            last = max(last, int(record.get("rows_trained", 0)))
        return last

    def decisions(self) -> list[dict]:
        """Every decision recorded so far, oldest first."""
        if not os.path.exists(self.decisions_path):
            return []
        with open(self.decisions_path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    @property
    def evaluating(self) -> bool:
        """A candidate is waiting for its evaluation window to fill."""
        return self._candidate is not None

    def due(self, rows_trained: int) -> bool:
        """Time for a new candidate: none pending, and ``every_rows`` rows or
        ``every_minutes`` minutes since the last one."""
        if self._candidate is not None:
            return False
        by_rows = (self.every_rows is not None
                   and rows_trained - self._last_trigger >= self.every_rows)
        by_time = (self.every_minutes is not None
                   and time.monotonic() - self._last_time >= 60.0 * self.every_minutes)
        return by_rows or by_time

    def published_version(self) -> int | None:
        """The version TF Serving serves for the gating size (the highest one)."""
        versions = existing_versions(os.path.join(self.export_base, _size_dir(self.sizes[0])))
        return versions[-1] if versions else None

    # ---------------------------------------------------------- candidates
    def start_candidate(self, model, rows_trained: int, example_rows: Mapping) -> None:
        """Export the sizes of ``model`` as of now into the staging folder.

        Args:
            model: the nested model (``model.extract(spec)`` per size) or,
                for one-size runs, any model whose ``extract`` gives it.
            rows_trained: rows the model has been trained on.
            example_rows: raw rows ``{feature: values}`` for warmup requests.
        """
        self._last_trigger, self._last_time = int(rows_trained), time.monotonic()
        published = self.published_version()
        version = next_version(self.export_base, [_size_dir(spec) for spec in self.sizes])
        stage = os.path.join(self.staging_dir, f"rows-{int(rows_trained)}")
        shutil.rmtree(stage, ignore_errors=True)
        paths = {}
        for spec in self.sizes:
            sub = servable_submodel(model, spec)
            paths[spec] = export_model(sub, self.schema,
                                       os.path.join(stage, _size_dir(spec), str(version)),
                                       warmup=example_rows, model_name=_size_dir(spec),
                                       metadata={"size": spec, "rows_trained": int(rows_trained)})
        candidate = _Scorer(paths[self.sizes[0]])
        served = None
        if published is not None:
            served = _Scorer(os.path.join(self.export_base, _size_dir(self.sizes[0]),
                                          str(published)))
        self._candidate = {"rows_trained": int(rows_trained), "version": version,
                           "published": published, "stage": stage, "paths": paths,
                           "candidate": candidate, "served": served, "labels": [],
                           "weights": [], "rows": 0, "first": None, "last": None}
        if served is None:
            self._decide()

    def observe(self, features: Mapping, labels: Mapping, rows_end: int) -> dict | None:
        """Score a batch with the candidate and the published version, before training on it.

        Args:
            features: the batch's raw features.
            labels: the batch's labels (``event`` / ``target`` / ``weight``).
            rows_end: stream row count up to and including this batch.

        Returns:
            The decision record once the window is full, else ``None``.
        """
        state = self._candidate
        if state is None:
            return None
        rows = min(len(np.asarray(labels[self.label]).reshape(-1)),
                   self.eval_rows - state["rows"])
        state["candidate"].score(features, rows)
        state["served"].score(features, rows)
        state["labels"].append(np.asarray(labels[self.label], np.float64).reshape(-1)[:rows])
        if "weight" in labels:
            state["weights"].append(np.asarray(labels["weight"], np.float64).reshape(-1)[:rows])
        first_row = int(rows_end) - len(np.asarray(labels[self.label]).reshape(-1)) + 1
        state["first"] = first_row if state["first"] is None else state["first"]
        state["last"] = first_row + rows - 1
        state["rows"] += rows
        if state["rows"] >= self.eval_rows:
            return self._decide()
        return None

    def discard(self) -> None:
        """Drop a pending candidate (its window will not fill): nothing is published."""
        if self._candidate is not None:
            shutil.rmtree(self._candidate["stage"], ignore_errors=True)
            self._candidate = None

    # ------------------------------------------------------------ decision
    def _auc_loss(self, y: np.ndarray, scores: np.ndarray, w) -> float | None:
        try:
            return 1.0 - auroc(y, scores, w)
        except MattaError:  # one class only in the window
            return None

    def _decide(self) -> dict:
        state, self._candidate = self._candidate, None
        record: dict[str, Any] = {
            "version": state["version"], "published_version": state["published"],
            "rows_trained": state["rows_trained"], "sizes": list(self.sizes),
            "label": self.label, "tolerance": self.tolerance,
            "candidate_auc_loss": None, "published_auc_loss": None,
            "window": {"rows": state["rows"], "rows_end_first": state["first"],
                       "rows_end_last": state["last"]},
        }
        if state["served"] is None:
            publish, reason = True, "nothing published yet"
        else:
            y = np.concatenate(state["labels"])
            w = np.concatenate(state["weights"]) if state["weights"] else None
            cand = self._auc_loss(y, state["candidate"].all(), w)
            served = self._auc_loss(y, state["served"].all(), w)
            record["candidate_auc_loss"], record["published_auc_loss"] = cand, served
            if cand is None or served is None:
                publish, reason = False, "the window holds one class only"
            else:
                publish = cand <= served + self.tolerance
                reason = (f"candidate AucLoss {cand:.5f} vs published {served:.5f} "
                          f"(+{self.tolerance:g} tolerance)")
        if publish:
            for spec, path in state["paths"].items():
                target = os.path.join(self.export_base, _size_dir(spec), str(state["version"]))
                publish_version(target, lambda tmp, src=path: shutil.copytree(
                    src, tmp, dirs_exist_ok=True))
        shutil.rmtree(state["stage"], ignore_errors=True)
        record["decision"] = "published" if publish else "held_back"
        record["reason"] = reason
        record["time"] = time.time()
        os.makedirs(os.path.dirname(os.path.abspath(self.decisions_path)), exist_ok=True)
        with open(self.decisions_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._log(f"{record['decision']} version {state['version']} after "
                  f"{state['rows_trained']} rows: {reason}")
        return record


class PublishCallback(TrainingCallback):
    """Gated publication during :func:`~matta_rec.training.train_run`.

    Reads the run's ``publish`` config section
    (:class:`~matta_rec.training.config.PublishConfig`) when training starts
    and does nothing while ``publish.export_base`` is unset; otherwise (on
    the chief) a :class:`PublicationGate` with candidates staged in
    ``RUN_DIR/candidates`` and decisions in ``RUN_DIR/publications.jsonl``.
    Each batch is offered to a pending candidate's evaluation window before
    it is trained (``on_batch_begin``); after each trained batch a new
    candidate is built when one is due (``on_batch_end``).  The gate scores
    the ``event`` label when the schema has one, else the target.

    Example:

    >>> train_run(config, "logs/", schema, "runs/r1", callbacks=[PublishCallback()])
    """

    publishes = True  # train_run refuses publish.export_base without such a callback

    def __init__(self, log: Callable[[str], None] | None = None):
        self.gate: PublicationGate | None = None
        self._log = log
        self._info: TrainingInfo | None = None

    @property
    def wants_batches(self) -> bool:
        return self.gate is not None  # without publish.export_base, nothing to do per batch

    def on_train_begin(self, info: TrainingInfo) -> None:
        settings = info.config.publish
        if not settings.export_base or not info.chief:
            return
        if self._log is None:
            from matta_rec.training.monitor import log as train_log

            self._log = lambda message: train_log(f"publish: {message}")
        self._info = info
        self.gate = PublicationGate(
            settings.export_base, info.schema,
            staging_dir=os.path.join(info.run_dir, "candidates"),
            decisions_path=os.path.join(info.run_dir, "publications.jsonl"),
            every_rows=settings.every_rows, every_minutes=settings.every_minutes,
            eval_rows=settings.eval_rows, tolerance=settings.tolerance,
            sizes=list(settings.sizes),
            label="event" if info.schema.labels.event is not None else "target",
            log=self._log)

    def on_batch_begin(self, rows_end: int, features: Mapping, labels: Mapping) -> None:
        if self.gate is not None:
            self.gate.observe(features, labels, rows_end)

    def on_batch_end(self, rows_end: int, features: Mapping, labels: Mapping,
                     logits: Mapping) -> None:
        if self.gate is not None and self.gate.due(rows_end):
            self.gate.start_candidate(self._info.model, rows_end, self._info.example)

    def on_train_end(self, metrics: Mapping) -> None:
        if self.gate is not None and self.gate.evaluating:
            self._log("the run ended before the last candidate's evaluation window filled; "
                      "it was not published")
            self.gate.discard()
