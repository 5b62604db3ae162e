"""d_model-nested feature embeddings: one token per feature field."""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import keras
from keras import ops

from matta_rec.layers._nesting import (
    legacy_widths,
    level_suffix,
    per_level,
    per_level_store,
    pop_deprecated,
    prefix,
    track_per_level,
)
from matta_rec.layers.variable_roles import mark_embedding_table

KINDS = ("categorical", "multi_categorical", "numeric", "dense")
GROUPS = ("user", "context", "item")
_NAME_RE = re.compile(r"^[^/]+$")


_LEGACY_DIM = ("student_dim", "ta_dim", "intermediate_dims")


@keras.saving.register_keras_serializable(package="matta_rec")
class MNestedFeatureEmbedding(keras.layers.Layer):
    """Embeds preprocessed features into one token per feature, d_model-nested.

    Every embedding has the TA width ``d_TA = output_dim[-1]``; level ``i``
    reads its first ``d_i = output_dim[i]`` columns (paper Section 3.2.3, d_model M-nesting).  Tokens follow
    the order of ``features``:

    * ``categorical`` (int ids ``[B]``): row of a ``(cardinality, d)`` table.
    * ``multi_categorical`` (int ids ``[B, L]``, 0 = padding): masked mean of
      the token rows of a ``(cardinality, d)`` table (zeros when empty).
    * ``numeric`` (float ``[B]``): ``value * w + b`` with learnt ``w, b`` of
      width ``d``.
    * ``dense`` (float ``[B, dim]``): ``x @ W[:, :d] + b[:d]``.

    With ``group_embeddings`` a learnt vector per group (user / context /
    item) is added to each token of that group.

    Args:
        features: sequence of dicts ``{"name", "kind", "group"}`` plus
            ``"cardinality"`` (categorical kinds) or ``"dim"`` (dense).
        output_dim: tuple of positive ints, the token width ``d_model`` of
            each level ordered Student -> ... -> TA, non-decreasing (as
            ``keras.layers.Embedding(output_dim=...)`` per level).  A single
            int makes a one-level layer.  The keywords ``student_dim`` /
            ``ta_dim`` / ``intermediate_dims`` of matta_rec 0.1 are still
            accepted, with a ``DeprecationWarning``, for one release.
        group_embeddings: bool, add a learnt vector per feature group.
        share_weights: bool, ``False`` gives every level its own tables.
        embeddings_initializer: initializer of tables, numeric scales and
            group vectors.
        embeddings_regularizer: regularizer of the tables (the whole table,
            every step: for a large table prefer ``lookup_l2``).
        lookup_l2: float ``>= 0``, L2 penalty on the table rows the batch
            looks up: in training, ``lookup_l2 * sum(row ** 2) / B`` summed
            over the rows of every categorical and multi-categorical
            feature of the batch (each occurrence counts; padding ids of
            multi-categorical features do not), added with ``add_loss``.
            With shared weights a row is penalised once at the TA's width
            (the Student's row is a prefix of it, not a second row); without,
            each level's own table is penalised.  Defaults to 0 (no loss).
        **kwargs: base ``keras.layers.Layer`` arguments.

    Every categorical table and the group vectors are marked as embedding
    tables (:func:`~matta_rec.layers.variable_roles.mark_embedding_table`),
    shared or per level, so optimizers give them their sparse treatment
    whatever their names.

    Call arguments:
        inputs: dict ``{feature_name: preprocessed tensor}`` (the output of
            :class:`matta_rec.features.FeaturePreprocessor`).
        training: bool, training mode (``lookup_l2`` is added only then).

    Returns:
        A tuple with one ``(B, num_features, d_i)`` token tensor per level.

    Example:

    ```python
    emb = MNestedFeatureEmbedding(
        [{"name": "user_id", "kind": "categorical", "group": "user", "cardinality": 101},
         {"name": "age", "kind": "numeric", "group": "user"}],
        output_dim=(4, 8))
    t_s, t_ta = emb({"user_id": np.array([3, 0]), "age": np.array([0.5, -1.0])})
    # t_s == t_ta[..., :4]
    ```
    """

    # Arguments after `output_dim` are keyword-only while the 0.1 positional
    # form `MNestedFeatureEmbedding(features, student_dim, ta_dim)` is being
    # retired.
    def __init__(
        self,
        features: Sequence[Mapping[str, Any]],
        output_dim: Any = None,
        *,
        group_embeddings: bool = True,
        share_weights: bool = True,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        lookup_l2: float = 0.0,
        **kwargs: Any,
    ) -> None:
        legacy = pop_deprecated(
            kwargs, "MNestedFeatureEmbedding", _LEGACY_DIM, {"output_dim": output_dim}
        )
        if legacy:
            output_dim = legacy_widths(legacy, _LEGACY_DIM)
        super().__init__(**kwargs)
        self.output_dim = per_level(output_dim, "output_dim")
        self.features = [self._check_feature(i, f) for i, f in enumerate(features)]
        if not self.features:
            raise ValueError("`features` must list at least one feature.")
        names = [f["name"] for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"Feature names must be unique. Received: {names}")
        for flag_name, flag in (
            ("group_embeddings", group_embeddings),
            ("share_weights", share_weights),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"`{flag_name}` must be True or False. Received: {flag!r}")
        self.group_embeddings = group_embeddings
        self.share_weights = share_weights
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
        if (isinstance(lookup_l2, bool) or not isinstance(lookup_l2, (int, float))
                or not lookup_l2 >= 0):
            raise ValueError(f"`lookup_l2` must be a number >= 0. Received: {lookup_l2!r}")
        self.lookup_l2 = float(lookup_l2)

    @staticmethod
    def _check_feature(index: int, feature: Mapping[str, Any]) -> dict:
        if not isinstance(feature, Mapping):
            raise ValueError(
                f"features[{index}] must be a dict with 'name', 'kind' and 'group'. "
                f"Received: {feature!r}"
            )
        f = dict(feature)
        name, kind, group = f.get("name"), f.get("kind"), f.get("group")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"features[{index}]['name'] must be a non-empty string without '/'.")
        if kind not in KINDS:
            raise ValueError(f"features[{index}] ('{name}'): kind must be one of {KINDS}.")
        if group not in GROUPS:
            raise ValueError(f"features[{index}] ('{name}'): group must be one of {GROUPS}.")
        key = {"categorical": "cardinality", "multi_categorical": "cardinality", "dense": "dim"}
        if kind in key:
            value = f.get(key[kind])
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"features[{index}] ('{name}', {kind}) needs a positive integer "
                    f"'{key[kind]}'. Received: {value!r}"
                )
            return {"name": name, "kind": kind, "group": group, key[kind]: value}
        return {"name": name, "kind": kind, "group": group}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "features": [dict(f) for f in self.features],
                "output_dim": list(self.output_dim),
                "group_embeddings": self.group_embeddings,
                "share_weights": self.share_weights,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "embeddings_regularizer": keras.regularizers.serialize(
                    self.embeddings_regularizer
                ),
                "lookup_l2": self.lookup_l2,
            }
        )
        return config

    @property
    def num_levels(self) -> int:
        return len(self.output_dim)

    def build(self, input_shape: Any = None) -> None:
        levels = [self.num_levels - 1] if self.share_weights else range(self.num_levels)
        # self._params[level][feature name] -> list of variables
        per_level_store(self, "_params", "_group_vectors")
        for level in levels:
            d = self.output_dim[level]
            suffix = level_suffix(level, self.num_levels)
            params = {}
            for f in self.features:
                name, kind = f["name"], f["kind"]
                if kind in ("categorical", "multi_categorical"):
                    params[name] = [
                        mark_embedding_table(
                            self.add_weight(
                                name=f"{name}_table{suffix}",
                                shape=(f["cardinality"], d),
                                initializer=self.embeddings_initializer,
                                regularizer=self.embeddings_regularizer,
                            )
                        )
                    ]
                elif kind == "numeric":
                    params[name] = [
                        self.add_weight(
                            name=f"{name}_scale{suffix}",
                            shape=(d,),
                            initializer=self.embeddings_initializer,
                        ),
                        self.add_weight(
                            name=f"{name}_offset{suffix}", shape=(d,), initializer="zeros"
                        ),
                    ]
                else:
                    params[name] = [
                        self.add_weight(
                            name=f"{name}_kernel{suffix}",
                            shape=(f["dim"], d),
                            initializer="glorot_uniform",
                            regularizer=self.embeddings_regularizer,
                        ),
                        self.add_weight(
                            name=f"{name}_bias{suffix}", shape=(d,), initializer="zeros"
                        ),
                    ]
            self._params[level] = params
            if self.group_embeddings:
                self._group_vectors[level] = mark_embedding_table(
                    self.add_weight(
                        name=f"group_embeddings{suffix}",
                        shape=(len(GROUPS), d),
                        initializer=self.embeddings_initializer,
                    )
                )
        self._group_ids = [GROUPS.index(f["group"]) for f in self.features]
        track_per_level(self, "_params", "_group_vectors")
        self.built = True

    def _tokens(self, inputs: Mapping[str, Any], level: int, penalise: bool = False):
        """The ``(B, F, d)`` tokens of ``level``; with ``penalise`` also adds
        the ``lookup_l2`` loss of the rows looked up."""
        params = self._params[level]
        tokens = []
        squares = []
        for f in self.features:
            x = inputs[f["name"]]
            kind = f["kind"]
            p = params[f["name"]]
            if kind == "categorical":
                token = ops.take(p[0], ops.cast(ops.reshape(x, (-1,)), "int32"), axis=0)
                if penalise:
                    squares.append(ops.sum(ops.square(ops.cast(token, "float32"))))
            elif kind == "multi_categorical":
                ids = ops.cast(x, "int32")
                rows = ops.take(p[0], ids, axis=0)  # [B, L, d]
                mask = ops.cast(ops.greater(ids, 0), rows.dtype)[..., None]
                count = ops.maximum(ops.sum(mask, axis=1), 1.0)
                token = ops.divide(ops.sum(ops.multiply(rows, mask), axis=1), count)
                if penalise:
                    squares.append(
                        ops.sum(ops.cast(ops.multiply(ops.square(rows), mask), "float32"))
                    )
            elif kind == "numeric":
                value = ops.reshape(ops.cast(x, self.compute_dtype), (-1, 1))
                token = ops.add(ops.multiply(value, p[0]), p[1])
            else:
                token = ops.add(ops.matmul(ops.cast(x, self.compute_dtype), p[0]), p[1])
            tokens.append(token)
        stacked = ops.stack(tokens, axis=1)  # [B, F, d]
        if self.group_embeddings:
            groups = ops.take(self._group_vectors[level], ops.array(self._group_ids), axis=0)
            stacked = ops.add(stacked, groups)  # (F, d) broadcasts over the batch
        if squares:
            batch = ops.cast(ops.shape(stacked)[0], "float32")
            penalty = ops.divide(ops.sum(ops.stack(squares)), batch)
            self.add_loss(ops.multiply(self.lookup_l2, penalty))
        return stacked

    def call(self, inputs: Mapping[str, Any], training: Any = None) -> tuple:
        penalise = bool(training) and self.lookup_l2 > 0
        if self.share_weights:
            full = self._tokens(inputs, self.num_levels - 1, penalise)
            return tuple(prefix(full, (d,)) for d in self.output_dim)
        return tuple(self._tokens(inputs, level, penalise) for level in range(self.num_levels))

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple((None, len(self.features), d) for d in self.output_dim)
