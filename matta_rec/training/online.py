"""Online (progressive-validation) metrics and the hold-out evaluation of a run.

The training step scores every batch before it trains on it, so the scores
of a single pass are an honest estimate of the model on unseen rows.
:class:`OnlineMetrics` turns them into the exact AUROC / AucLoss / logloss per
window of rows (the ``metrics.json`` curve); :func:`evaluate_holdout` scores
the held-out shards with the final model.

Example:

>>> online = OnlineMetrics(("student", "ta"), window_rows=10_000, has_event=True)
>>> entry = online.add(labels, logits, rows_end=4096)   # None until a window fills
>>> online.flush(rows_end=4096)                         # close the last window
>>> summarize_curve(online.curve, ("student", "ta"))     # row-weighted mean AucLoss
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from matta_rec.errors import MattaError
from matta_rec.metrics.auc import auroc, logloss

__all__ = ["OnlineMetrics", "evaluate_holdout", "exact_metrics", "summarize_curve"]


def exact_metrics(y, score, w=None) -> dict:
    """Exact ``{"auroc", "auc_loss", "logloss"}`` of logits ``score`` against labels ``y``.

    Args:
        y: labels in [0, 1] (soft labels allowed).
        score: logits.
        w: optional row weights.

    Returns:
        The metrics; ``auroc`` / ``auc_loss`` are ``None`` when ``y`` holds a
        single class.
    """
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

    The state (finished windows and the scores of the unfinished one) is
    saved with every checkpoint, so a resumed run continues the same curve
    and every row is scored exactly once.

    Args:
        levels: head names.
        window_rows: rows per window.
        has_event: the labels carry an ``event`` column.
    """

    def __init__(self, levels, window_rows: int, has_event: bool):
        if int(window_rows) < 1:
            raise ValueError(f"window_rows must be >= 1, got {window_rows}")
        self.levels = tuple(levels)
        self.window_rows = int(window_rows)
        self.has_event = has_event
        self.curve: list[dict] = []
        self._clear()

    def _clear(self):
        self.buffers: dict[str, list] = {k: [] for k in ("target", "event", "weight", *self.levels)}
        self.pending = 0

    def add(self, labels: Mapping, logits: Mapping, rows_end: int) -> dict | None:
        """Add a scored batch; returns the finished window's entry, if any.

        Args:
            labels: numpy ``{"target", "event"?, "weight"?}`` of the batch.
            logits: numpy ``{level: logits}`` of the batch.
            rows_end: stream rows up to and including this batch.
        """
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
        """Close the current window (if it holds rows); returns its entry."""
        if not self.pending:
            return None
        cat = {k: np.concatenate(v) if v else None for k, v in self.buffers.items()}
        w = cat["weight"]
        entry: dict[str, Any] = {"rows_end": int(rows_end), "rows": int(self.pending), "target": {}}
        for level in self.levels:
            entry["target"][level] = exact_metrics(cat["target"], cat[level], w)
        if self.has_event:
            entry["event"] = {level: exact_metrics(cat["event"], cat[level], w)
                              for level in self.levels}
        self.curve.append(entry)
        self._clear()
        return entry

    def state(self) -> dict:
        """JSON-safe state for a checkpoint."""
        return {
            "curve": self.curve,
            "pending": {k: np.concatenate(v).tolist() for k, v in self.buffers.items() if v},
        }

    def load_state(self, state: Mapping) -> None:
        """Restore what :meth:`state` returned."""
        self.curve = list(state.get("curve", []))
        self._clear()
        pending = state.get("pending", {})
        for key, values in pending.items():
            self.buffers[key] = [np.asarray(values, np.float32)]
        self.pending = len(pending.get("target", []))


def summarize_curve(curve: list[dict], levels) -> dict:
    """Row-weighted mean of the window AucLosses over the whole stream.

    Returns:
        ``{label: {level: {"auc_loss_mean_over_windows": value}}}`` for the
        labels and levels with at least one two-class window.
    """
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


def score_stream(predict, stream, levels) -> tuple[dict, dict]:
    """Labels and per-level scores of a whole stream, concatenated.

    Args:
        predict: maps a batch of raw features to ``{level: logits [B]}``.
        stream: a :class:`~matta_rec.data.reader.LogStream`.
        levels: the heads to score.

    Returns:
        ``(labels, scores)``: ``{label key: array}`` (``{}`` for an empty
        stream) and ``{level: array}``.
    """
    labels: dict[str, list] = {}
    scores: dict[str, list] = {level: [] for level in levels}
    for features, y in stream.dataset():
        out = predict(features)
        for level in levels:
            scores[level].append(out[level].numpy())
        for key, value in y.items():
            labels.setdefault(key, []).append(value.numpy())
    if not labels:
        return {}, {}
    return ({k: np.concatenate(v) for k, v in labels.items()},
            {k: np.concatenate(v) for k, v in scores.items()})


def evaluate_holdout(model, stream, levels) -> dict:
    """Exact AUROC / AucLoss / logloss of every head on a (hold-out) stream.

    Args:
        model: maps raw features to ``{level: logits}``.
        stream: a :class:`~matta_rec.data.reader.LogStream`.
        levels: the heads to score.

    Returns:
        ``{"rows", "target": {level: metrics}}``, plus ``"event"`` and
        ``"teacher_vs_event"`` (the Teacher's own AUROC on the events) when
        the schema has an event label; ``{"rows": 0}`` for an empty stream.
    """
    import tensorflow as tf

    @tf.function
    def predict(features):
        out = model(features, training=False)
        return {k: tf.reshape(out[k], [-1]) for k in levels}

    y, s = score_stream(predict, stream, levels)
    if not y:
        return {"rows": 0}
    w = y.get("weight")
    result: dict[str, Any] = {"rows": int(len(y["target"]))}
    result["target"] = {level: exact_metrics(y["target"], s[level], w) for level in levels}
    if "event" in y:
        result["event"] = {level: exact_metrics(y["event"], s[level], w) for level in levels}
        teacher_logit = np.log(np.clip(y["target"], 1e-7, 1 - 1e-7)) - np.log(
            np.clip(1 - y["target"], 1e-7, 1)
        )
        result["teacher_vs_event"] = exact_metrics(y["event"], teacher_logit, w)
    return result
