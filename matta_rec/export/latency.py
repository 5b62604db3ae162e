"""Serving latency of an exported SavedModel, measured on its signature."""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import numpy as np

from matta_rec.export.publish import ExportError
from matta_rec.utils.timing import latency_summary, time_calls


def load_signature(path_or_loaded, signature: str = "serving_default"):
    """The concrete signature function of a SavedModel path or loaded object."""
    import tensorflow as tf

    loaded = path_or_loaded
    if isinstance(path_or_loaded, (str, os.PathLike)):
        loaded = tf.saved_model.load(os.fspath(path_or_loaded))
    if not hasattr(loaded, "signatures") or signature not in loaded.signatures:
        raise ExportError(f"the SavedModel has no '{signature}' signature")
    return loaded, loaded.signatures[signature]


def tile_rows(rows: Mapping, batch_size: int) -> dict:
    """``batch_size`` rows made by repeating ``rows`` (numpy arrays)."""
    out = {}
    for name, values in rows.items():
        values = np.asarray(values)
        if len(values) == 0:
            raise ExportError(f"no rows for feature '{name}' to measure latency with")
        reps = -(-batch_size // len(values))
        out[name] = np.concatenate([values] * reps)[:batch_size]
    return out


def measure_latency(
    path_or_loaded,
    rows: Mapping,
    batch_sizes: Iterable[int] = (1, 256),
    repeats: int = 50,
    warmup: int = 5,
    signature: str = "serving_default",
) -> dict:
    """Median wall-clock latency of ``serving_default`` per batch size.

    Args:
        path_or_loaded: SavedModel directory or a ``tf.saved_model.load``
            result.
        rows: raw rows ``{feature: array}`` in the signature's dtypes; they are
            repeated to fill the larger batches.
        batch_sizes: batch sizes to time.
        repeats: timed calls per batch size (the median is reported).
        warmup: untimed calls before timing.
        signature: signature name.

    Returns:
        ``{batch_size: {"median_ms", "p10_ms", "p90_ms", "per_example_us",
        "repeats"}}`` (integer keys).

    Example:

    >>> measure_latency("exports/student/1", rows)[256]["median_ms"]
    """
    import tensorflow as tf

    if repeats < 1:
        raise ExportError(f"repeats must be >= 1, got {repeats}")
    _, fn = load_signature(path_or_loaded, signature)
    results = {}
    for batch_size in batch_sizes:
        batch_size = int(batch_size)
        feeds = {k: tf.constant(v) for k, v in tile_rows(rows, batch_size).items()}
        times = time_calls(lambda: _fetch(fn(**feeds)), repeats, warmup=max(0, warmup))
        results[batch_size] = latency_summary(times.wall_ms, rows=batch_size)
    return results


def _fetch(outputs) -> None:
    for value in outputs.values():
        value.numpy()
