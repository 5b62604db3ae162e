"""M-nested plain embedding table (``keras.layers.Embedding`` nested in d_model)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from matta_rec.layers._nesting import (
    level_suffix,
    per_level,
    per_level_store,
    prefix,
    split_inputs,
    track_per_level,
)
from matta_rec.layers.variable_roles import mark_embedding_table


@keras.saving.register_keras_serializable(package="matta_rec")
class MNestedEmbedding(keras.layers.Layer):
    """An id -> vector lookup whose vectors are M-nested (d_model nesting).

    The layer owns one ``(input_dim, output_dim[-1])`` table; level ``i``
    (Student first, TA last) reads its first ``output_dim[i]`` columns, so
    the Student's table is a prefix slice of the TA's (paper Section 3.2.3).
    With one level it is ``keras.layers.Embedding``.  It is the twin
    :func:`matta_rec.nestify` puts in place of a user's ``Embedding``;
    :class:`MNestedFeatureEmbedding` is the schema-driven one-token-per-feature
    layer of the relevance model.

    Args:
        input_dim: positive int, the number of ids (table rows).
        output_dim: tuple of positive ints, the vector width of each level
            ordered Student -> ... -> TA, non-decreasing (e.g. ``(8, 16)``);
            a single int makes a one-level layer.
        embeddings_initializer: initializer of the table(s).
        embeddings_regularizer: regularizer of the table(s).
        embeddings_constraint: constraint of the table(s).
        mask_zero: bool, id 0 is padding: a mask is propagated (one per
            level, all equal), as in ``keras.layers.Embedding``.
        share_weights: bool, ``False`` gives every level its own table.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: integer ids of any shape, read by every level (or a tuple of
            one id tensor per level).

    Returns:
        A tuple of one ``inputs.shape + (output_dim[i],)`` tensor per level.

    The table(s) are marked as embedding tables
    (:func:`~matta_rec.layers.variable_roles.mark_embedding_table`), so
    optimizers give them their sparse treatment.

    Example:

    ```python
    emb = MNestedEmbedding(100, output_dim=(4, 8))
    v_s, v_ta = emb(np.array([[3], [7]]))     # (2, 1, 4) and (2, 1, 8)
    # v_s == v_ta[..., :4]
    ```
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: Any = None,
        *,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        embeddings_constraint: Any = None,
        mask_zero: bool = False,
        share_weights: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim <= 0:
            raise ValueError(
                f"`input_dim` must be a positive integer (the number of ids). "
                f"Received: input_dim={input_dim!r}"
            )
        self.input_dim = input_dim
        self.output_dim = per_level(output_dim, "output_dim")
        for flag_name, flag in (("mask_zero", mask_zero), ("share_weights", share_weights)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{flag_name}` must be True or False. Received: {flag!r}")
        self.mask_zero = mask_zero
        self.share_weights = share_weights
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = keras.constraints.get(embeddings_constraint)
        self.supports_masking = mask_zero

    @property
    def num_levels(self) -> int:
        return len(self.output_dim)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "output_dim": list(self.output_dim),
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "embeddings_regularizer": keras.regularizers.serialize(
                    self.embeddings_regularizer
                ),
                "embeddings_constraint": keras.constraints.serialize(
                    self.embeddings_constraint
                ),
                "mask_zero": self.mask_zero,
                "share_weights": self.share_weights,
            }
        )
        return config

    def build(self, input_shape: Any = None) -> None:
        last = self.num_levels - 1
        owners = [last] if self.share_weights else range(self.num_levels)
        per_level_store(self, "_tables")
        for level in owners:
            self._tables[level] = mark_embedding_table(self.add_weight(
                name="embeddings" + level_suffix(level, self.num_levels),
                shape=(self.input_dim, self.output_dim[level]),
                initializer=self.embeddings_initializer,
                regularizer=self.embeddings_regularizer,
                constraint=self.embeddings_constraint,
            ))
        track_per_level(self, "_tables")
        self.built = True

    @property
    def embeddings(self):
        """The TA table ``(input_dim, output_dim[-1])``."""
        return self._tables[self.num_levels - 1]

    def level_table(self, level: int):
        """The table level ``level`` reads: ``embeddings[:, :output_dim[level]]``."""
        if not self.share_weights:
            return self._tables[level]
        table = self._tables[self.num_levels - 1]
        d = self.output_dim[level]
        return prefix(table, (d,))

    def call(self, inputs: Any) -> tuple:
        ids, shared = split_inputs(inputs, self.num_levels, self.name)
        if shared and self.share_weights:
            full = ops.take(self.embeddings, ops.cast(ids[-1], "int32"), axis=0)
            return tuple(prefix(full, (d,)) for d in self.output_dim)
        return tuple(
            None if x is None else ops.take(self.level_table(level), ops.cast(x, "int32"), axis=0)
            for level, x in enumerate(ids)
        )

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        if not self.mask_zero:
            return None
        ids, _ = split_inputs(inputs, self.num_levels, self.name)
        return tuple(None if x is None else ops.not_equal(x, 0) for x in ids)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        # A per-level tuple holds at least one shape; ``(None,)`` is the
        # shape of a batch of scalar ids.
        if isinstance(input_shape, (tuple, list)) and any(
            isinstance(s, (tuple, list)) for s in input_shape
        ):
            shapes = tuple(input_shape)
        else:
            shapes = (input_shape,) * self.num_levels
        return tuple(
            None if s is None else tuple(s) + (d,) for s, d in zip(shapes, self.output_dim)
        )
