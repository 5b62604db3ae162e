"""The preprocessing layer: raw log values -> ids and normalised floats.

Preprocessing lives inside the model, so an exported model takes the raw log
values of every feature (see ``docs/design.md``).
"""

from __future__ import annotations

import os
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from matta_rec.errors import ConfigError
from matta_rec.data.schema import FeatureSpec, Schema, load_schema
from matta_rec.features.stats import STD_FLOOR, FeatureStats


@keras.saving.register_keras_serializable(package="matta_rec")
class FeaturePreprocessor(keras.layers.Layer):
    """Maps the raw features dict to model-ready tensors.

    Per feature kind (``B`` is the batch size):

    * ``categorical`` (string ``[B]`` or int64 ``[B]``) -> int32 ``[B]`` in
      ``[0, cardinality)``.  Hashed features give ``1 + hash(value) % buckets``
      with TensorFlow's stable ``to_hash_bucket_fast`` (int64 values are
      hashed as their decimal text, so a serving-time int64 and a logged
      string of the same number get the same id); vocabulary features give
      ``1 + index`` in the vocabulary.  Id 0 means missing (``""``) or
      out-of-vocabulary.
    * ``multi_categorical`` (string ``[B]``, tokens joined by ``separator``) ->
      int32 ``[B, max_length]``: empty tokens dropped, ids as above, truncated
      to ``max_length`` and padded with 0.
    * ``numeric`` (float32 ``[B]``) -> float32 ``[B]``: ``(x - mean) / std``
      (after ``sign(x) * log1p(|x|)`` for ``normalization: log``), clipped to
      ``[-clip, clip]``; NaN becomes 0 (the mean).  ``normalization: none``
      passes values through (NaN -> 0).
    * ``dense`` (float32 ``[B, dim]``) -> float32 ``[B, dim]``, standardised
      per dimension like numeric features.

    Args:
        schema: a :class:`~matta_rec.data.schema.Schema` or its ``to_dict()``.
        stats: a :class:`~matta_rec.features.stats.FeatureStats` or its
            ``to_dict()``, fitted on the same schema.
        clip: normalised numeric / dense values are clipped to
            ``[-clip, clip]``.  Defaults to ``10.0``.
        **kwargs: base layer keyword arguments (``name``, ``dtype``...).

    Call arguments:
        inputs: dict ``{feature_name: raw tensor}`` holding every schema
            feature (extra keys are ignored).

    Returns:
        Dict with the schema's feature names as keys, in schema order.

    Example:

    >>> pre = FeaturePreprocessor(schema, stats)
    >>> out = pre({"user_id": tf.constant(["u1", ""]), "age": tf.constant([30., 41.])})
    >>> out["user_id"]            # int32 [2], out["user_id"][1] == 0
    >>> pre.cardinality("user_id")  # embedding table size
    """

    def __init__(self, schema, stats, clip: float = 10.0, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.autocast = False
        if isinstance(schema, (str, os.PathLike)):
            schema = load_schema(schema)
        elif isinstance(schema, Mapping):
            schema = Schema.from_dict(dict(schema), source="FeaturePreprocessor.schema")
        if not isinstance(schema, Schema):
            raise ConfigError(
                f"schema must be a Schema or its to_dict(), got {type(schema).__name__}"
            )
        stats = FeatureStats.from_dict(stats, source="FeaturePreprocessor.stats")
        clip = float(clip)
        if not clip > 0:
            raise ConfigError(f"clip must be > 0, got {clip}", key="clip")
        self.schema = schema
        self.stats = stats
        self.clip = clip
        self._plans = {}
        for index, spec in enumerate(schema.features):
            self._plans[spec.name] = self._plan(index, spec)
        # No weights: everything is fixed by schema and stats at construction.
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "schema": self.schema.to_dict(),
                "stats": self.stats.to_dict(),
                "clip": self.clip,
            }
        )
        return config

    # ------------------------------------------------------------- planning
    def _plan(self, index: int, spec: FeatureSpec) -> dict:
        source = self.schema.source
        if spec.kind in ("categorical", "multi_categorical"):
            if spec.hashed:
                return {"mode": "hash", "cardinality": spec.buckets + 1}
            if isinstance(spec.vocabulary, tuple):
                vocabulary = list(spec.vocabulary)
            else:
                if spec.name not in self.stats or "vocabulary" not in self.stats[spec.name]:
                    raise ConfigError(
                        "feature has 'vocabulary: auto' but the statistics hold no "
                        "vocabulary for it; refit FeatureStats on this schema",
                        source=source,
                        key=f"features.{spec.name}.vocabulary",
                    )
                vocabulary = list(self.stats[spec.name]["vocabulary"])
            vocabulary = list(dict.fromkeys(str(v) for v in vocabulary if str(v) != ""))
            plan = {"mode": "vocab", "cardinality": len(vocabulary) + 1, "table": None}
            if vocabulary:
                initializer = tf.lookup.KeyValueTensorInitializer(
                    keys=tf.constant(vocabulary, tf.string),
                    values=tf.range(1, len(vocabulary) + 1, dtype=tf.int64),
                )
                table = tf.lookup.StaticHashTable(initializer, default_value=0)
                attr = f"lookup_table_{index}"
                # Attribute assignment makes the table a tracked resource, so
                # SavedModel export (ExportArchive.track) carries it.
                setattr(self, attr, table)
                plan["table"] = attr
            return plan
        if spec.name not in self.stats:
            raise ConfigError(
                "no statistics for this feature; refit FeatureStats on the current schema",
                source=source,
                key=f"features.{spec.name}",
            )
        entry = self.stats[spec.name]
        shape = (spec.dim,) if spec.kind == "dense" else ()
        mean = np.asarray(entry.get("mean", 0.0), np.float64)
        std = np.asarray(entry.get("std", 1.0), np.float64)
        if mean.shape != shape or std.shape != shape:
            raise ConfigError(
                f"statistics have shape {list(mean.shape)} but the schema says "
                f"{list(shape)}; refit FeatureStats on the current schema",
                source=source,
                key=f"features.{spec.name}",
            )
        std = np.where(np.isfinite(std) & (std > STD_FLOOR), std, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        return {
            "mode": spec.normalization,
            "mean": mean.astype(np.float32),
            "inv_std": (1.0 / std).astype(np.float32),
        }

    def cardinality(self, name: str) -> int:
        """Embedding table size of a categorical / multi_categorical feature."""
        plan = self._plans.get(name)
        if plan is None or "cardinality" not in plan:
            kinds = [f.name for f in self.schema.features if "cardinality" in self._plans[f.name]]
            raise ConfigError(
                f"'{name}' is not a categorical feature of the schema; "
                f"categorical features: {kinds}",
                source=self.schema.source,
            )
        return int(plan["cardinality"])

    # ---------------------------------------------------------------- call
    def _ids(self, spec: FeatureSpec, strings: tf.Tensor) -> tf.Tensor:
        plan = self._plans[spec.name]
        if plan["mode"] == "hash":
            ids = 1 + tf.strings.to_hash_bucket_fast(strings, spec.buckets)
            ids = tf.where(tf.equal(strings, ""), tf.zeros_like(ids), ids)
        elif plan["table"] is None:
            ids = tf.zeros_like(strings, dtype=tf.int64)
        else:
            ids = getattr(self, plan["table"]).lookup(strings)
        return tf.cast(ids, tf.int32)

    def _categorical(self, spec: FeatureSpec, x: tf.Tensor) -> tf.Tensor:
        if x.dtype.is_integer:
            x = tf.strings.as_string(x)
        elif x.dtype != tf.string:
            raise ValueError(
                f"feature '{spec.name}' is categorical: expected a string or int64 "
                f"tensor, got {x.dtype.name}"
            )
        if x.shape.rank == 2 and x.shape[-1] == 1:
            x = tf.squeeze(x, -1)
        if spec.kind == "categorical":
            return self._ids(spec, x)
        tokens = tf.strings.split(x, sep=spec.separator)
        tokens = tf.ragged.boolean_mask(tokens, tf.not_equal(tokens, ""))
        ids = tf.ragged.map_flat_values(lambda t: self._ids(spec, t), tokens)
        return ids.to_tensor(default_value=0, shape=[None, spec.max_length])

    def _numeric(self, spec: FeatureSpec, x: tf.Tensor) -> tf.Tensor:
        if x.dtype == tf.string or x.dtype == tf.bool:
            raise ValueError(
                f"feature '{spec.name}' is {spec.kind}: expected a float32 tensor, "
                f"got {x.dtype.name}"
            )
        x = tf.cast(x, tf.float32)
        if spec.kind == "numeric" and x.shape.rank == 2 and x.shape[-1] == 1:
            x = tf.squeeze(x, -1)
        plan = self._plans[spec.name]
        finite = tf.math.is_finite(x)
        if plan["mode"] == "none":
            return tf.where(finite, x, tf.zeros_like(x))
        if plan["mode"] == "log":
            x = tf.sign(x) * tf.math.log1p(tf.abs(x))
        z = (x - tf.constant(plan["mean"])) * tf.constant(plan["inv_std"])
        z = tf.clip_by_value(z, -self.clip, self.clip)
        return tf.where(finite, z, tf.zeros_like(z))

    def call(self, inputs):
        if not isinstance(inputs, Mapping):
            raise ValueError(
                "FeaturePreprocessor expects a dict {feature_name: tensor}, got "
                f"{type(inputs).__name__}"
            )
        missing = [name for name in self.schema.feature_names if name not in inputs]
        if missing:
            raise ValueError(
                f"missing raw feature(s) {missing}; the model needs every feature of "
                f"the schema ({self.schema.source})"
            )
        out = {}
        for spec in self.schema.features:
            x = tf.convert_to_tensor(inputs[spec.name])
            if spec.kind in ("categorical", "multi_categorical"):
                out[spec.name] = self._categorical(spec, x)
            else:
                out[spec.name] = self._numeric(spec, x)
        return out

    def compute_output_spec(self, inputs):
        out = {}
        for spec in self.schema.features:
            batch = inputs[spec.name].shape[0] if spec.name in inputs else None
            if spec.kind == "categorical":
                out[spec.name] = keras.KerasTensor((batch,), dtype="int32")
            elif spec.kind == "multi_categorical":
                out[spec.name] = keras.KerasTensor((batch, spec.max_length), dtype="int32")
            elif spec.kind == "numeric":
                out[spec.name] = keras.KerasTensor((batch,), dtype="float32")
            else:
                out[spec.name] = keras.KerasTensor((batch, spec.dim), dtype="float32")
        return out
