"""The feature schema: the one description of a log's columns.

A schema is a YAML file::

    features:
      user_id:   {group: user,    kind: categorical, buckets: 100000}   # hashed
      user_age:  {group: user,    kind: numeric}
      hour:      {group: context, kind: categorical, vocabulary: auto}  # learnt
      item_tags: {group: item,    kind: multi_categorical, separator: "|", buckets: 5000}
      item_vec:  {group: item,    kind: dense, dim: 16}
    labels:
      target: teacher_prob   # Teacher probability in [0, 1] (or a 0/1 label)
      event: click           # optional 0/1 outcome used for evaluation
      weight: null           # optional per-row weight

Nothing else in the package hard-codes column names: readers, preprocessing,
models, exporters and evaluators all take a :class:`Schema`.

Raw value types (what a log shard holds and what an exported model takes):

============================  ==========================  ======================
kind                          raw dtype / shape           notes
============================  ==========================  ======================
``categorical``               string ``[B]`` (default)   or ``dtype: int64``
``numeric``                   float32 ``[B]``             normalised in-model
``multi_categorical``         string ``[B]``              tokens joined by
                                                          ``separator``
``dense``                     float32 ``[B, dim]``        Parquet list column,
                                                          TFRecord float list,
                                                          CSV: ``separator``-
                                                          joined numbers
============================  ==========================  ======================
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Mapping

import yaml

from matta_rec.errors import SchemaError

GROUPS = ("user", "context", "item")
KINDS = ("categorical", "numeric", "multi_categorical", "dense")
NORMALIZATIONS = ("standard", "log", "none")
CATEGORICAL_DTYPES = ("string", "int64")

_FEATURE_KEYS = {
    "group",
    "kind",
    "buckets",
    "vocabulary",
    "max_vocabulary",
    "separator",
    "max_length",
    "dim",
    "dtype",
    "normalization",
    "default",
    "description",
}
_LABEL_KEYS = {"target", "teacher", "event", "weight"}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One feature column of the log.

    Args:
        name: column name in the log and input name of exported models.
        group: ``"user"``, ``"context"`` or ``"item"``.
        kind: ``"categorical"``, ``"numeric"``, ``"multi_categorical"`` or
            ``"dense"``.
        buckets: number of hash buckets (categorical / multi_categorical
            without a vocabulary).
        vocabulary: ``"auto"`` (learnt from the first window of the stream)
            or an explicit list of values (categorical only).
        max_vocabulary: cap on an ``auto`` vocabulary (most frequent kept).
        separator: token separator of multi_categorical values, and of dense
            vectors stored as text (CSV).
        max_length: tokens kept per row of a multi_categorical feature.
        dim: vector length of a dense feature.
        dtype: raw dtype of a categorical feature, ``"string"`` or ``"int64"``.
        normalization: numeric / dense normalisation, ``"standard"``,
            ``"log"`` (log1p of the absolute value, signed, then standard) or
            ``"none"``.
        default: value that replaces a null; ``None`` means nulls are an error.
        description: free text, for humans.
    """

    name: str
    group: str
    kind: str
    buckets: int | None = None
    vocabulary: str | tuple | None = None
    max_vocabulary: int = 10_000
    separator: str = "|"
    max_length: int = 8
    dim: int | None = None
    dtype: str = "string"
    normalization: str = "standard"
    default: Any = None
    description: str | None = None

    @property
    def hashed(self) -> bool:
        """True when ids come from hashing into ``buckets``."""
        return self.kind in ("categorical", "multi_categorical") and self.vocabulary is None

    @property
    def learns_vocabulary(self) -> bool:
        return self.vocabulary == "auto"

    @property
    def raw_dtype(self) -> str:
        """Raw dtype name: ``"string"``, ``"int64"`` or ``"float32"``."""
        if self.kind == "categorical":
            return self.dtype
        if self.kind == "multi_categorical":
            return "string"
        return "float32"

    @property
    def raw_shape(self) -> tuple:
        """Raw shape without the batch dimension."""
        return (self.dim,) if self.kind == "dense" else ()

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"group": self.group, "kind": self.kind}
        defaults = FeatureSpec(name="_", group="user", kind=self.kind)
        for field in dataclasses.fields(self):
            if field.name in ("name", "group", "kind"):
                continue
            value = getattr(self, field.name)
            if value != getattr(defaults, field.name):
                out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """The label columns.

    Args:
        target: training target column: a Teacher probability in [0, 1] or a
            0/1 label.  YAML accepts ``target:`` or ``teacher:``.
        event: optional 0/1 outcome column used for evaluation.
        weight: optional non-negative per-row weight column.
    """

    target: str
    event: str | None = None
    weight: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for c in (self.target, self.event, self.weight) if c)

    def to_dict(self) -> dict:
        return {"target": self.target, "event": self.event, "weight": self.weight}


@dataclasses.dataclass(frozen=True)
class Schema:
    """Features and labels of a log stream.

    Args:
        features: feature specs in declaration order (the token order of the
            model).
        labels: the label columns.
        source: where the schema was read from (used in error messages).

    Example:

    >>> schema = Schema.from_yaml("sample_data/schema.yaml")
    >>> schema.feature_names[:2]
    ('user_id', 'user_age')
    """

    features: tuple[FeatureSpec, ...]
    labels: LabelSpec
    source: str = "<dict>"

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Schema":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise SchemaError(
                "schema file not found; pass --schema pointing at a YAML file "
                "with 'features:' and 'labels:' (see README)",
                source=path,
            )
        with open(path, "r", encoding="utf-8") as handle:
            try:
                data = yaml.safe_load(handle)
            except yaml.YAMLError as exc:
                raise SchemaError(f"not valid YAML ({exc})", source=path) from exc
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "Schema":
        if not isinstance(data, Mapping):
            raise SchemaError(
                "expected a mapping with 'features:' and 'labels:'", source=source
            )
        unknown = set(data) - {"features", "labels"}
        if unknown:
            raise SchemaError(
                f"unknown top-level key(s) {sorted(unknown)}; expected 'features' and 'labels'",
                source=source,
            )
        raw_features = data.get("features")
        if not isinstance(raw_features, Mapping) or not raw_features:
            raise SchemaError(
                "'features' must be a non-empty mapping of column name -> spec",
                source=source,
                key="features",
            )
        features = tuple(
            _parse_feature(str(name), spec, source) for name, spec in raw_features.items()
        )
        labels = _parse_labels(data.get("labels"), source)
        names = [f.name for f in features]
        for column in labels.columns:
            if column in names:
                raise SchemaError(
                    f"column '{column}' is declared both as a feature and as a label",
                    source=source,
                    key="labels",
                )
        return cls(features=features, labels=labels, source=str(source))

    def to_dict(self) -> dict:
        return {
            "features": {f.name: f.to_dict() for f in self.features},
            "labels": self.labels.to_dict(),
        }

    def to_yaml(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.to_dict(), handle, sort_keys=False)

    # ------------------------------------------------------------ accessors
    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a shard must have: features then labels."""
        return self.feature_names + self.labels.columns

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(f"no feature named '{name}' in schema {self.source}")

    def group(self, group: str) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.features if f.group == group)

    def raw_signature(self) -> dict:
        """``{name: tf.TensorSpec}`` of the raw features, batch dimension first."""
        import tensorflow as tf

        dtypes = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
        return {
            f.name: tf.TensorSpec((None,) + f.raw_shape, dtypes[f.raw_dtype], name=f.name)
            for f in self.features
        }


def _parse_feature(name: str, spec: Any, source: str) -> FeatureSpec:
    key = f"features.{name}"
    if not isinstance(spec, Mapping):
        raise SchemaError(
            "expected a mapping like {group: user, kind: numeric}", source=source, key=key
        )
    unknown = set(spec) - _FEATURE_KEYS
    if unknown:
        raise SchemaError(
            f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_FEATURE_KEYS)}",
            source=source,
            key=key,
        )
    group = spec.get("group")
    if group not in GROUPS:
        raise SchemaError(
            f"group must be one of {list(GROUPS)}, got {group!r}", source=source, key=f"{key}.group"
        )
    kind = spec.get("kind")
    if kind not in KINDS:
        raise SchemaError(
            f"kind must be one of {list(KINDS)}, got {kind!r}", source=source, key=f"{key}.kind"
        )
    values = dict(spec)
    values.pop("group")
    values.pop("kind")
    vocabulary = values.get("vocabulary")
    if isinstance(vocabulary, list):
        values["vocabulary"] = tuple(str(v) for v in vocabulary)
    try:
        feature = FeatureSpec(name=name, group=group, kind=kind, **values)
    except TypeError as exc:  # pragma: no cover - guarded by _FEATURE_KEYS
        raise SchemaError(str(exc), source=source, key=key) from exc
    _validate_feature(feature, source, key)
    return feature


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _validate_feature(f: FeatureSpec, source: str, key: str) -> None:
    def fail(message: str, field: str) -> None:
        raise SchemaError(message, source=source, key=f"{key}.{field}")

    if f.kind in ("categorical", "multi_categorical"):
        if f.vocabulary is not None and f.buckets is not None:
            fail("give either 'buckets' (hashing) or 'vocabulary', not both", "vocabulary")
        if f.vocabulary is None and not _positive_int(f.buckets):
            fail(
                f"a {f.kind} feature needs 'buckets: N' (N > 0) for hashing or "
                "'vocabulary: auto' / a list of values",
                "buckets",
            )
        if f.vocabulary is not None and not (
            f.vocabulary == "auto" or isinstance(f.vocabulary, tuple)
        ):
            fail("vocabulary must be 'auto' or a list of values", "vocabulary")
        if isinstance(f.vocabulary, tuple) and not f.vocabulary:
            fail("an explicit vocabulary must not be empty", "vocabulary")
        if not _positive_int(f.max_vocabulary):
            fail("max_vocabulary must be a positive integer", "max_vocabulary")
    if f.kind == "categorical" and f.dtype not in CATEGORICAL_DTYPES:
        fail(f"dtype must be one of {list(CATEGORICAL_DTYPES)}, got {f.dtype!r}", "dtype")
    if f.kind != "categorical" and f.dtype != "string":
        fail("'dtype' applies to categorical features only", "dtype")
    if f.kind == "multi_categorical":
        if not _positive_int(f.max_length):
            fail("max_length must be a positive integer", "max_length")
    if f.kind in ("multi_categorical", "dense"):
        if not isinstance(f.separator, str) or len(f.separator) == 0:
            fail("separator must be a non-empty string such as '|'", "separator")
    if f.kind == "dense":
        if not _positive_int(f.dim):
            fail("a dense feature needs 'dim: N' with N > 0", "dim")
    elif f.dim is not None:
        fail("'dim' applies to dense features only", "dim")
    if f.kind in ("numeric", "dense"):
        if f.normalization not in NORMALIZATIONS:
            fail(f"normalization must be one of {list(NORMALIZATIONS)}", "normalization")
        if f.buckets is not None or f.vocabulary is not None:
            fail(f"a {f.kind} feature takes no 'buckets' / 'vocabulary'", "buckets")
        if f.default is not None and f.kind == "numeric":
            if not isinstance(f.default, (int, float)) or isinstance(f.default, bool):
                fail("default of a numeric feature must be a number", "default")


def _parse_labels(data: Any, source: str) -> LabelSpec:
    if not isinstance(data, Mapping):
        raise SchemaError(
            "'labels' must be a mapping with at least 'target: <column>'",
            source=source,
            key="labels",
        )
    unknown = set(data) - _LABEL_KEYS
    if unknown:
        raise SchemaError(
            f"unknown key(s) {sorted(unknown)}; allowed: target (or teacher), event, weight",
            source=source,
            key="labels",
        )
    if "target" in data and "teacher" in data and data["target"] != data["teacher"]:
        raise SchemaError(
            "'target' and 'teacher' name the same label; give one of them",
            source=source,
            key="labels",
        )
    target = data.get("target", data.get("teacher"))
    if not isinstance(target, str) or not target:
        raise SchemaError(
            "labels.target must name the training-target column (a Teacher "
            "probability in [0,1] or a 0/1 label)",
            source=source,
            key="labels.target",
        )
    out = {}
    for name in ("event", "weight"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise SchemaError(
                f"labels.{name} must be a column name or null", source=source, key=f"labels.{name}"
            )
        out[name] = value
    columns = [c for c in (target, out["event"], out["weight"]) if c]
    if len(set(columns)) != len(columns):
        raise SchemaError(
            "target, event and weight must be different columns", source=source, key="labels"
        )
    return LabelSpec(target=target, **out)


def load_schema(schema: "Schema | str | os.PathLike | Mapping") -> Schema:
    """Accept a Schema, a YAML path or a dict and return a Schema."""
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, Mapping):
        return Schema.from_dict(schema)
    return Schema.from_yaml(schema)


def iter_specs(schema: Schema, kinds: Iterable[str]) -> tuple[FeatureSpec, ...]:
    """Feature specs of the given kinds, in schema order."""
    kinds = tuple(kinds)
    return tuple(f for f in schema.features if f.kind in kinds)
