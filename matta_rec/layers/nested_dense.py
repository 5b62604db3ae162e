"""M-nested Dense layer (paper Algorithm 2, Figure 2)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from matta_rec.layers._nesting import (
    check_flag,
    check_rate,
    input_widths,
    level_dropout,
    legacy_widths,
    level_suffix,
    level_prefix,
    prefix,
    per_level,
    per_level_store,
    pop_deprecated,
    track_per_level,
    split_inputs,
    split_shapes,
)
from matta_rec.layers.nested_norm import MNestedBatchNormalization, MNestedLayerNormalization


def dense_matmul(x, kernel):
    """``x @ kernel`` over the last axis of ``x`` (any rank >= 2).

    Inputs of rank > 2 are folded into one 2-D matmul (a reshape each way):
    fewer graph ops than a broadcast batch matmul or ``tensordot``, which
    matters for the many small matmuls of a nested model.
    """
    if len(x.shape) == 2:
        return tf.matmul(x, kernel)
    flat = tf.matmul(tf.reshape(x, (-1, x.shape[-1])), kernel)
    lead = x.shape[:-1]
    if None in lead[1:]:
        out_shape = tf.concat([tf.shape(x)[:-1], tf.shape(kernel)[-1:]], axis=0)
    else:
        out_shape = (-1, *lead[1:], kernel.shape[-1])
    return tf.reshape(flat, out_shape)


_LEGACY_UNITS = ("student_units", "ta_units", "intermediate_units")

#: The values of ``MNestedDense(normalization=...)``.
NORMALIZATIONS = (None, "batch", "layer")
_NORM_CLASSES = {"batch": MNestedBatchNormalization, "layer": MNestedLayerNormalization}


@keras.saving.register_keras_serializable(package="matta_rec")
class MNestedDense(keras.layers.Layer):
    """A Dense layer shared by nested models (Student ⊂ ... ⊂ TA).

    The layer owns one TA kernel of shape ``(M_TA, units[-1])`` and one bias
    of shape ``(units[-1],)``.  Level ``i`` (Student first, TA last) computes

    ``y_i = activation(x_i @ kernel[:M_i, :N_i] + bias[:N_i])``

    where ``N_i = units[i]`` and ``M_i`` is the width of the level's input.  The Student's weights are the top-left slice of the TA's: the same
    variables, not a copy, so a gradient of the Student loss updates the TA
    too (paper Section 3.2.1, Algorithm 2).  Any prefix ``kernel[:m, :n]`` is
    itself a valid Dense layer, which is what Mix'n'Match extraction uses.

    When the layer is called with a single tensor, every level reads it; the
    layer then runs a single matmul with the TA kernel and slices its output
    (the Student's output is the first ``units[0]`` columns of the TA's
    pre-activation), so the Student costs nothing extra.

    Args:
        units: tuple of positive ints, the output width of each level ordered
            Student -> ... -> TA, non-decreasing (e.g. ``(16, 32)``, or
            ``(16, 24, 32)`` for Student ⊂ Medium ⊂ TA).  A single int makes a
            one-level layer: a plain Dense.  The keywords ``student_units`` /
            ``ta_units`` / ``intermediate_units`` of matta_rec 0.1 are still
            accepted, with a ``DeprecationWarning``, for one release.
        activation: activation function, as in ``keras.layers.Dense``.
        use_bias: bool, whether the layer uses a bias vector.
        share_weights: bool.  ``True`` (default, MatTA) nests every level in
            the TA variables.  ``False`` gives every level its own kernel and
            bias of the level's shape (independent models with identical
            shapes; the paper's Table 4 ablation).
        kernel_initializer: initializer of the kernel(s).
        init_per_level: bool.  With shared weights, ``True`` (default) draws
            each level's block of the kernel with ``kernel_initializer`` at
            that level's own shape (the TA's kernel first, then each smaller
            level that runs the layer gets its top-left block redrawn, the
            Student's last), so every level starts as if it were built alone: a fan-in/fan-out scaled
            initializer (Glorot, He) drawn at the TA's shape gives the
            Student's block a scale up to ~2x too small, which slows a short
            run's Student down.  ``False`` draws the whole kernel at the
            TA's shape.
        bias_initializer: initializer of the bias(es).
        kernel_regularizer: regularizer of the kernel(s).
        bias_regularizer: regularizer of the bias(es).
        activity_regularizer: regularizer of the outputs.
        kernel_constraint: constraint of the kernel(s).
        bias_constraint: constraint of the bias(es).
        normalization: ``None`` (default), ``"batch"`` or ``"layer"``: normalise
            each level's pre-activation before the activation, with an
            :class:`~matta_rec.layers.nested_norm.MNestedBatchNormalization`
            / ``MNestedLayerNormalization`` sub-layer named ``norm`` (its
            scale and offset are nested like the bias; each level's batch
            statistics are computed on that level's own pre-activations and
            every level keeps its own moving mean / variance).
        dropout: float in ``[0, 1)``, dropout rate on the outputs (after the
            activation), in training only.  Each level draws its own mask:
            every level's path is the layer a model of that size would run
            alone.  Defaults to 0 (no dropout op at all).
        seed: int or ``None``, seed of the dropout masks.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Call arguments:
        inputs: one tensor ``(..., M)`` read by every level, or a tuple of one
            tensor per level ``(..., M_i)`` with non-decreasing ``M_i``.  An
            entry may be ``None`` for a level that skips the layer.
        training: bool, training mode (dropout on, batch statistics).

    Returns:
        A tuple of one tensor ``(..., N_i)`` per level (``None`` where the
        input was ``None``).

    Example:

    ```python
    layer = MNestedDense(units=(4, 8), activation="relu")
    y_s, y_ta = layer(np.ones((2, 6)))                  # both read the same input
    z_s, z_ta = MNestedDense(units=(2, 4))((y_s, y_ta))  # kernel (8, 4), Student [:4, :2]
    ```
    """

    # Arguments after `units` are keyword-only while the 0.1 positional form
    # `MNestedDense(student_units, ta_units)` is being retired: it now fails
    # loudly instead of binding the TA width to `activation`.
    def __init__(
        self,
        units: Any = None,
        *,
        activation: Any = None,
        use_bias: bool = True,
        share_weights: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        normalization: str | None = None,
        dropout: float = 0.0,
        seed: int | None = None,
        init_per_level: bool = True,
        **kwargs: Any,
    ) -> None:
        legacy = pop_deprecated(kwargs, "MNestedDense", _LEGACY_UNITS, {"units": units})
        if legacy:
            units = legacy_widths(legacy, _LEGACY_UNITS)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = per_level(units, "units")
        if not isinstance(use_bias, bool):
            raise ValueError(f"`use_bias` must be True or False. Received: {use_bias!r}")
        if not isinstance(share_weights, bool):
            raise ValueError(
                f"`share_weights` must be True or False. Received: {share_weights!r}"
            )
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.share_weights = share_weights
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {NORMALIZATIONS}. "
                f"Received: normalization={normalization!r}"
            )
        self.init_per_level = check_flag(init_per_level, "init_per_level")
        self.normalization = normalization
        self.dropout = check_rate(dropout, "dropout")
        self.seed = seed
        # Only a layer with dropout owns a seed generator (its state is a
        # variable): a layer without keeps exactly the variables it had.
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout else None
        self.norm = None
        self.supports_masking = True

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "units": list(self.units),
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "share_weights": self.share_weights,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "normalization": self.normalization,
                "dropout": self.dropout,
                "seed": self.seed,
                "init_per_level": self.init_per_level,
            }
        )
        return config

    @property
    def num_levels(self) -> int:
        return len(self.units)

    def _kernel_init(self, owner: int):
        """The initializer of the kernel ``owner`` holds.

        Shared weights with ``init_per_level``: the TA-shaped draw, then each
        smaller level's top-left block drawn at its own shape, largest
        first (see ``init_per_level``).
        """
        base = self.kernel_initializer
        if not (self.share_weights and self.init_per_level) or owner != self.num_levels - 1:
            return base
        # Only the levels that run the layer: a block only larger levels run
        # (depth nesting) is drawn whole at the shape of the levels that use it.
        blocks = [(self.input_dims[level], self.units[level])
                  for level in range(owner - 1, -1, -1) if level in self._running_levels]

        def fresh(index: int):
            # A Keras initializer instance draws the same values on every call
            # (its seed is fixed when it is made): each block needs its own
            # instance, or the blocks would repeat the TA draw's values.
            config = base.get_config()
            if config.get("seed") is not None:
                config["seed"] = int(config["seed"]) + 7919 * (index + 1)
            return base.__class__.from_config(config)

        def initializer(shape, dtype=None):
            kernel = base(shape, dtype=dtype)
            for index, (rows, cols) in enumerate(blocks):
                if (rows, cols) != tuple(shape):
                    block = fresh(index)((rows, cols), dtype=dtype)
                    kernel = ops.slice_update(kernel, (0, 0), block)
            return kernel

        return initializer

    def build(self, input_shape: Any) -> None:
        shapes, _ = split_shapes(input_shape, self.num_levels, self.name)
        self.input_dims = input_widths(shapes, self.name)
        self._running_levels = tuple(level for level, s in enumerate(shapes) if s is not None)
        last = self.num_levels - 1
        if self.share_weights:
            # One variable set, the TA's; a level built with shape None still
            # owns its slice (Mix'n'Match may use it).
            owners = {last: (self.input_dims[-1], self.units[-1])}
        else:
            # Without sharing, a level built with shape None never runs the
            # layer and owns no variables.
            owners = {
                level: (self.input_dims[level], self.units[level])
                for level, s in enumerate(shapes)
                if s is not None
            }
        per_level_store(self, "_kernels", "_biases")
        for level, (m, n) in owners.items():
            suffix = level_suffix(level, self.num_levels)
            self._kernels[level] = self.add_weight(
                name="kernel" + suffix,
                shape=(m, n),
                initializer=self._kernel_init(level),
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            if self.use_bias:
                self._biases[level] = self.add_weight(
                    name="bias" + suffix,
                    shape=(n,),
                    initializer=self.bias_initializer,
                    regularizer=self.bias_regularizer,
                    constraint=self.bias_constraint,
                )
        track_per_level(self, "_kernels", "_biases")
        if self.normalization is not None:
            self.norm = _NORM_CLASSES[self.normalization](
                num_levels=self.num_levels,
                share_weights=self.share_weights,
                dtype=self.dtype_policy,
                name="norm",
            )
            self.norm.build(
                tuple(None if s is None else tuple(s[:-1]) + (n,)
                      for s, n in zip(shapes, self.units))
            )
        self.built = True

    @property
    def kernel(self):
        """The TA kernel ``(M_TA, units[-1])``."""
        return self._kernels[self.num_levels - 1]

    @property
    def bias(self):
        """The TA bias ``(units[-1],)`` (``None`` without bias)."""
        return self._biases[self.num_levels - 1] if self.use_bias else None

    def level_kernel(self, level: int, input_dim: int | None = None):
        """Kernel level ``level`` uses: ``kernel[:M_i, :N_i]`` (a slice when shared).

        ``input_dim`` overrides ``M_i`` (a Mix'n'Match path may feed a
        different prefix width); it must not exceed the built input width.
        """
        m = self.input_dims[level] if input_dim is None else input_dim
        n = self.units[level]
        if self.share_weights:
            if m > self.input_dims[-1]:
                raise ValueError(
                    f"Layer '{self.name}': input width {m} exceeds the TA input width "
                    f"{self.input_dims[-1]}."
                )
            # The TA (or a one-level layer) reads the whole kernel: no slice op.
            return prefix(self._kernels[self.num_levels - 1], (m, n))
        if level not in self._kernels:
            raise ValueError(
                f"Layer '{self.name}' has independent weights per level and level "
                f"{level} was built without an input (it skips this layer)."
            )
        if m != self.input_dims[level]:
            raise ValueError(
                f"Layer '{self.name}' has independent weights per level: level {level} "
                f"reads width {self.input_dims[level]}, not {m}."
            )
        return self._kernels[level]

    def level_bias(self, level: int):
        """Bias level ``level`` uses: ``bias[:N_i]`` (``None`` without bias)."""
        if not self.use_bias:
            return None
        return level_prefix(
            self._biases, level, self.units[level], self.share_weights, self.num_levels
        )

    def call(self, inputs: Any, training: Any = None) -> tuple:
        xs, shared = split_inputs(inputs, self.num_levels, self.name)
        # With a normalisation the activation follows it.
        activation = self.activation if self.norm is None else None
        if shared and self.share_weights:
            # One matmul serves every level: the Student's pre-activation is a
            # prefix of the TA's.
            y = dense_matmul(xs[-1], self._kernels[self.num_levels - 1])
            if self.use_bias:
                y = ops.add(y, self._biases[self.num_levels - 1])
            if activation is not None:
                y = activation(y)
            outputs = tuple(prefix(y, (n,)) for n in self.units)
        else:
            outputs = []
            for level, x in enumerate(xs):
                if x is None:
                    outputs.append(None)
                    continue
                y = dense_matmul(x, self.level_kernel(level, x.shape[-1]))
                if self.use_bias:
                    y = ops.add(y, self.level_bias(level))
                if activation is not None:
                    y = activation(y)
                outputs.append(y)
            outputs = tuple(outputs)
        if self.norm is not None:
            outputs = tuple(
                None if y is None else self.activation(y)
                for y in self.norm(outputs, training=training)
            )
        if self.dropout and training:
            outputs = level_dropout(outputs, self.dropout, self.seed_generator)
        return outputs

    def compute_output_shape(self, input_shape: Any) -> tuple:
        shapes, _ = split_shapes(input_shape, self.num_levels, self.name)
        return tuple(
            None if s is None else tuple(s[:-1]) + (n,) for s, n in zip(shapes, self.units)
        )
