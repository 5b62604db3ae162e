"""Preprocessing statistics learnt from the first window of a log stream.

:class:`FeatureStats` holds, per feature of a :class:`~matta_rec.data.schema.Schema`:

* numeric / dense: ``count``, ``mean``, ``std`` (after the ``log`` transform
  when the feature's normalisation is ``"log"``; per dimension for dense
  features), raw ``min`` / ``max`` and the number of NaN values;
* categorical / multi_categorical with ``vocabulary: auto``: the most frequent
  values (tokens), at most ``max_vocabulary``, with their counts; ties are
  broken by the value's string order so that a fit is deterministic;
* categorical / multi_categorical with an explicit vocabulary: that vocabulary,
  as given in the schema;
* hashed categorical / multi_categorical: row and missing counts only.

Moments are accumulated as float64 sums, so fitting on several batches gives
the same statistics as fitting on their concatenation.
"""

from __future__ import annotations

import collections
import json
import math
import os
from typing import Any, Iterable, Mapping

import numpy as np

from matta_rec.errors import ConfigError, DataError
from matta_rec.data.schema import FeatureSpec, Schema, load_schema
from matta_rec.utils.files import write_file_atomic

FORMAT_VERSION = 1

# A standard deviation below this is treated as "constant feature": the
# preprocessor then only centres the value (std = 1) instead of dividing by ~0.
STD_FLOOR = 1e-6


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: the ``log`` normalisation's transform."""
    return np.sign(x) * np.log1p(np.abs(x))


def to_strings(values: Any) -> list[str]:
    """Raw categorical values (str / bytes / int / None / NaN) as Python strings.

    ``None`` and NaN (null-likes of a pandas / pyarrow column) become ``""``,
    the "missing" value.  Integers become their decimal text, as
    ``tf.strings.as_string`` does in the preprocessor.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        array = array.reshape(-1)
    if array.dtype.kind == "U":
        return array.tolist()
    if array.dtype.kind == "S":
        return [v.decode("utf-8", errors="replace") for v in array.tolist()]
    if array.dtype.kind in "iu":
        return [str(int(v)) for v in array.tolist()]
    out = []
    for v in array.tolist():
        if v is None:
            out.append("")
        elif isinstance(v, bytes):
            out.append(v.decode("utf-8", errors="replace"))
        elif isinstance(v, float):
            out.append("" if math.isnan(v) else str(int(v)) if v.is_integer() else str(v))
        else:
            out.append(str(v))
    return out


def split_tokens(value: str, separator: str, max_length: int) -> list[str]:
    """Non-empty tokens of one multi_categorical value, truncated to ``max_length``."""
    return [t for t in value.split(separator) if t][:max_length]


class _Moments:
    """float64 running sums of one numeric / dense feature (per dimension)."""

    def __init__(self, dim: int | None):
        shape = () if dim is None else (dim,)
        self.count = np.zeros(shape, np.int64)
        self.total = np.zeros(shape, np.float64)
        self.total_sq = np.zeros(shape, np.float64)
        self.min = np.full(shape, np.inf)
        self.max = np.full(shape, -np.inf)
        self.nan = 0

    def update(self, raw: np.ndarray, transformed: np.ndarray) -> None:
        finite = np.isfinite(raw)
        self.nan += int(np.sum(~finite))
        self.count += np.sum(finite, axis=0)
        t = np.where(finite, transformed, 0.0)
        self.total += np.sum(t, axis=0)
        self.total_sq += np.sum(t * t, axis=0)
        if raw.size:
            self.min = np.minimum(self.min, np.min(np.where(finite, raw, np.inf), axis=0))
            self.max = np.maximum(self.max, np.max(np.where(finite, raw, -np.inf), axis=0))

    def result(self) -> dict:
        count = np.maximum(self.count, 1)
        mean = self.total / count
        var = np.maximum(self.total_sq / count - mean * mean, 0.0)
        std = np.sqrt(var)
        empty = self.count == 0

        def clean(a, fill):
            return np.where(empty, fill, a)

        def py(a):
            return a.tolist() if isinstance(a, np.ndarray) and a.ndim else float(a)

        return {
            "count": py(self.count) if self.count.ndim else int(self.count),
            "nan_count": self.nan,
            "mean": py(clean(mean, 0.0)),
            "std": py(clean(std, 0.0)),
            "min": py(clean(self.min, 0.0)),
            "max": py(clean(self.max, 0.0)),
        }


class FeatureStats:
    """Statistics of every feature of a schema, learnt from a first window.

    Args:
        features: ``{feature_name: stats dict}`` (the layout written by
            :meth:`to_dict`, see the module docstring).
        rows: number of rows the statistics were learnt from.

    Example:

    >>> stats = FeatureStats.fit(schema, stream.iter_numpy(), max_rows=100_000)
    >>> stats.save("run/preprocessing.json")
    >>> stats = FeatureStats.load("run/preprocessing.json")
    >>> stats["user_age"]["mean"]
    """

    def __init__(self, features: Mapping[str, Mapping], rows: int = 0):
        if not isinstance(features, Mapping):
            raise ConfigError("FeatureStats features must be a mapping name -> stats")
        self.features = {str(k): dict(v) for k, v in features.items()}
        self.rows = int(rows)

    # ------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        schema: Schema | str | os.PathLike | Mapping,
        batches: Iterable,
        max_rows: int | None = None,
    ) -> "FeatureStats":
        """Learn statistics from ``batches``.

        Args:
            schema: the feature schema (object, YAML path or dict).
            batches: iterable of numpy feature dicts with raw dtypes (a
                ``(features, labels[, ...])`` tuple is accepted too: its first
                element is used).
            max_rows: stop after this many rows (the last batch is cut).

        Returns:
            A :class:`FeatureStats`.
        """
        schema = load_schema(schema)
        if max_rows is not None and (not isinstance(max_rows, int) or max_rows <= 0):
            raise ConfigError(f"max_rows must be a positive integer or None, got {max_rows!r}")
        moments: dict[str, _Moments] = {}
        counters: dict[str, collections.Counter] = {}
        missing: dict[str, int] = {}
        rows = 0
        for spec in schema.features:
            if spec.kind in ("numeric", "dense"):
                moments[spec.name] = _Moments(spec.dim if spec.kind == "dense" else None)
            elif spec.learns_vocabulary:
                counters[spec.name] = collections.Counter()
            missing[spec.name] = 0

        for batch in batches:
            if max_rows is not None and rows >= max_rows:
                break
            features = batch[0] if isinstance(batch, (tuple, list)) else batch
            if not isinstance(features, Mapping):
                raise DataError(
                    f"expected a dict of feature arrays, got {type(features).__name__}",
                    fix="pass an iterable of numpy feature dicts (e.g. LogStream.iter_numpy())",
                )
            n = _batch_size(features, schema)
            take = n if max_rows is None else min(n, max_rows - rows)
            for spec in schema.features:
                values = np.asarray(features[spec.name])[:take]
                _update(spec, values, moments, counters, missing)
            rows += take

        out: dict[str, dict] = {}
        for spec in schema.features:
            entry: dict[str, Any] = {"kind": spec.kind}
            if spec.kind in ("numeric", "dense"):
                entry["normalization"] = spec.normalization
                entry.update(moments[spec.name].result())
                if spec.kind == "dense":
                    entry["dim"] = spec.dim
            else:
                entry["count"] = rows
                entry["missing"] = missing[spec.name]
                if spec.learns_vocabulary:
                    counter = counters[spec.name]
                    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
                    ranked = ranked[: spec.max_vocabulary]
                    entry["vocabulary"] = [k for k, _ in ranked]
                    entry["counts"] = [int(c) for _, c in ranked]
                    entry["distinct"] = len(counter)
                elif isinstance(spec.vocabulary, tuple):
                    entry["vocabulary"] = list(spec.vocabulary)
            out[spec.name] = entry
        return cls(out, rows=rows)

    # ------------------------------------------------------------ accessors
    def __getitem__(self, name: str) -> dict:
        try:
            return self.features[name]
        except KeyError:
            raise ConfigError(
                f"no statistics for feature '{name}'; refit FeatureStats on the "
                "current schema",
                key=name,
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.features

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureStats) and other.to_dict() == self.to_dict()

    def __repr__(self) -> str:
        return f"FeatureStats(rows={self.rows}, features={list(self.features)})"

    def vocabulary(self, name: str) -> list[str] | None:
        """The vocabulary of a categorical feature, or None if it is hashed."""
        return self[name].get("vocabulary")

    # ----------------------------------------------------------------- I/O
    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "rows": self.rows,
            "features": json.loads(json.dumps(self.features)),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "FeatureStats":
        if isinstance(data, FeatureStats):
            return data
        if not isinstance(data, Mapping) or not isinstance(data.get("features"), Mapping):
            raise ConfigError(
                "expected a mapping with 'features:' (as written by FeatureStats.save)",
                source=source,
            )
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"unsupported format_version {version!r} (this version reads "
                f"{FORMAT_VERSION}); refit the statistics",
                source=source,
                key="format_version",
            )
        for name, entry in data["features"].items():
            if not isinstance(entry, Mapping) or "kind" not in entry:
                raise ConfigError(
                    "each feature entry needs at least 'kind'", source=source, key=f"features.{name}"
                )
        return cls(data["features"], rows=data.get("rows", 0))

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics as JSON to ``path`` atomically (fsynced)."""
        write_file_atomic(path, json.dumps(self.to_dict(), indent=1, sort_keys=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ConfigError(
                "preprocessing statistics not found; they are written to "
                "RUN_DIR/preprocessing.json by training",
                source=path,
            )
        with open(path, "r", encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"not valid JSON ({exc})", source=path) from exc
        return cls.from_dict(data, source=path)


def _batch_size(features: Mapping, schema: Schema) -> int:
    size = None
    for spec in schema.features:
        if spec.name not in features:
            raise DataError(
                "feature missing from a batch",
                column=spec.name,
                fix="batches must hold every feature of the schema",
            )
        n = len(features[spec.name])
        if size is None:
            size = n
        elif n != size:
            raise DataError(
                f"batch has {n} rows for this feature but {size} for others",
                column=spec.name,
                fix="all feature arrays of a batch must have the same length",
            )
    return size or 0


def _update(spec: FeatureSpec, values, moments, counters, missing) -> None:
    if spec.kind in ("numeric", "dense"):
        if spec.kind == "dense" and values.dtype == object and values.ndim == 1 and len(values):
            # A list column (e.g. from pandas) arrives as an array of vectors.
            values = np.stack([np.asarray(v, np.float64) for v in values])
        try:
            raw = values.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{spec.kind} feature holds non-numeric values ({exc})",
                column=spec.name,
                fix="numeric and dense features must be float values",
            ) from None
        if spec.kind == "dense":
            if raw.ndim != 2 or raw.shape[1] != spec.dim:
                raise DataError(
                    f"dense feature expects shape [B, {spec.dim}], got {list(raw.shape)}",
                    column=spec.name,
                    fix="check 'dim' in the schema",
                )
        elif raw.ndim != 1:
            raise DataError(
                f"numeric feature expects shape [B], got {list(raw.shape)}", column=spec.name
            )
        transformed = signed_log1p(raw) if spec.normalization == "log" else raw
        moments[spec.name].update(raw, transformed)
        return
    strings = to_strings(values)
    missing[spec.name] += sum(1 for s in strings if s == "")
    if spec.name not in counters:
        return
    counter = counters[spec.name]
    if spec.kind == "categorical":
        counter.update(s for s in strings if s != "")
    else:
        for s in strings:
            counter.update(split_tokens(s, spec.separator, spec.max_length))
