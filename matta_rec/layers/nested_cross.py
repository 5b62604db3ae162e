"""M-nested DCN-v2 cross layer (``keras_rs.layers.FeatureCross`` semantics)."""

from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import ops

from matta_rec.layers._nesting import (
    check_flag,
    check_rate,
    input_widths,
    per_level,
    pop_deprecated,
    split_inputs,
    split_shapes,
)
from matta_rec.layers.nested_dense import MNestedDense


_LEGACY_PROJECTION_DIM = (
    "student_projection_dim",
    "ta_projection_dim",
    "intermediate_projection_dims",
    "num_levels",
)


def _legacy_projection_dim(given: Mapping) -> tuple:
    """Per-level projection dims from the 0.1 keywords (``num_levels`` included)."""
    student = given.get("student_projection_dim")
    intermediate = tuple(given.get("intermediate_projection_dims", ()))
    num_levels = given.get("num_levels")
    if num_levels is None:
        num_levels = 2 + len(intermediate)
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"`num_levels` must be a positive integer. Received: {num_levels!r}")
    if num_levels == 1:
        if intermediate:
            raise ValueError("A one-level cross layer takes no intermediate projection dims.")
        return (student,)
    if num_levels != 2 + len(intermediate):
        raise ValueError(
            f"`num_levels`={num_levels} needs {num_levels - 2} intermediate "
            f"projection dims. Received: {intermediate}"
        )
    return (student, *intermediate, given.get("ta_projection_dim"))


@keras.saving.register_keras_serializable(package="matta_rec")
class MNestedCross(keras.layers.Layer):
    """A DCN-v2 cross layer whose projections are M-nested.

    For each level ``i`` with inputs of width ``D_i``:

    ``x_{l+1} = x0 * (W x_l + b + diag_scale * x_l) + x_l``

    with ``W = kernel[:D_i, :D_i]`` (full rank) or, when projection dims are
    given, the low-rank ``W = U[:D_i, :r_i] V[:r_i, :D_i]`` with
    ``r_i = projection_dim[i]``.  This is
    ``keras_rs.layers.FeatureCross`` with every Dense replaced by an
    :class:`MNestedDense`; a flat Student vector that is a prefix of the TA's
    makes the Student cross layer the top-left slice of the TA's.

    Args:
        projection_dim: tuple with the low-rank width ``r`` of each level
            ordered Student -> ... -> TA (positive ints, non-decreasing), or
            ``None`` per level for full-rank kernels (all or none: e.g.
            ``(None, None)`` for a two-level full-rank layer).  A single int
            or ``None`` (default) makes a one-level layer: a plain
            ``keras_rs.layers.FeatureCross``.  The keywords
            ``student_projection_dim`` / ``ta_projection_dim`` /
            ``intermediate_projection_dims`` / ``num_levels`` of matta_rec 0.1
            are still accepted, with a ``DeprecationWarning``, for one release.
        diag_scale: non-negative float added to the kernel's diagonal.
        use_bias: bool, whether the projection has a bias.
        pre_activation: activation applied before the product with ``x0``.
        share_weights: bool, ``False`` gives every level its own weights.
        kernel_initializer: initializer of the kernels.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernels.
        bias_regularizer: regularizer of the bias.
        dropout: float in ``[0, 1)``, dropout rate on the cross term
            ``x0 * (W x_l + b + diag_scale * x_l)`` before the residual
            ``+ x_l``, in training only; one mask per level.  Defaults to 0
            (no dropout op).
        init_per_level: bool, passed to the layer's nested Dense kernels
            (:class:`MNestedDense`): each level's block drawn at that level's
            own shape.  A block only larger levels run (depth nesting) passes
            ``False``: its kernels are drawn whole at the shape of the levels
            that use them.
        seed: int or ``None``, seed of the dropout masks.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call arguments:
        x0: the stack's input: one tensor ``(B, D)`` read by every level or a
            tuple of one ``(B, D_i)`` tensor per level.
        x: optional output of the previous cross layer, same convention;
            defaults to ``x0``.
        training: bool, training mode (dropout on).

    Returns:
        A tuple of one ``(B, D_i)`` tensor per level.

    Example:

    ```python
    cross = MNestedCross(projection_dim=(4, 8))
    flat = np.random.randn(2, 24).astype("float32")
    y_s, y_ta = cross((flat[:, :12], flat))
    ```
    """

    # Arguments after `projection_dim` are keyword-only while the 0.1
    # positional form `MNestedCross(student_projection_dim, ta_projection_dim)`
    # is being retired: it now fails loudly instead of binding the TA width to
    # `diag_scale`.
    def __init__(
        self,
        projection_dim: Any = None,
        *,
        diag_scale: float | None = 0.0,
        use_bias: bool = True,
        pre_activation: Any = None,
        share_weights: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        dropout: float = 0.0,
        init_per_level: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        legacy = pop_deprecated(
            kwargs, "MNestedCross", _LEGACY_PROJECTION_DIM, {"projection_dim": projection_dim}
        )
        if legacy:
            projection_dim = _legacy_projection_dim(legacy)
        super().__init__(**kwargs)
        self.projection_dim = per_level(projection_dim, "projection_dim", allow_none=True)
        if diag_scale is not None and (
            isinstance(diag_scale, bool)
            or not isinstance(diag_scale, (int, float))
            or diag_scale < 0
        ):
            raise ValueError(
                f"`diag_scale` should be a non-negative number or None. Received: {diag_scale!r}"
            )
        for flag_name, flag in (("use_bias", use_bias), ("share_weights", share_weights)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{flag_name}` must be True or False. Received: {flag!r}")
        self.diag_scale = diag_scale
        self.use_bias = use_bias
        self.pre_activation = keras.activations.get(pre_activation)
        self.share_weights = share_weights
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.dropout = check_rate(dropout, "dropout")
        self.init_per_level = check_flag(init_per_level, "init_per_level")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout else None

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "projection_dim": list(self.projection_dim),
                "diag_scale": self.diag_scale,
                "use_bias": self.use_bias,
                "pre_activation": keras.activations.serialize(self.pre_activation),
                "share_weights": self.share_weights,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "dropout": self.dropout,
                "init_per_level": self.init_per_level,
                "seed": self.seed,
            }
        )
        return config

    @property
    def num_levels(self) -> int:
        return len(self.projection_dim)

    @property
    def low_rank(self) -> bool:
        return self.projection_dim[0] is not None

    def _initializer(self, init):
        return keras.initializers.get(keras.initializers.serialize(init))

    def build(self, input_shape: Any) -> None:
        shapes, _ = split_shapes(input_shape, self.num_levels, self.name)
        self.input_dims = input_widths(shapes, self.name)
        prefix = tuple(next(s for s in shapes if s is not None)[:-1])
        # Without sharing, levels built without a shape own no variables.
        full = tuple(
            None if (s is None and not self.share_weights) else prefix + (d,)
            for s, d in zip(shapes, self.input_dims)
        )
        if self.low_rank:
            self.down_proj = MNestedDense(
                units=self.projection_dim,
                use_bias=False,
                share_weights=self.share_weights,
            init_per_level=self.init_per_level,
                kernel_initializer=self._initializer(self.kernel_initializer),
                kernel_regularizer=self.kernel_regularizer,
                dtype=self.dtype_policy,
                name="down_proj",
            )
            self.down_proj.build(full)
            up_in = tuple(
                None if s is None else s[:-1] + (r,) for s, r in zip(full, self.projection_dim)
            )
        else:
            self.down_proj = None
            up_in = full
        self.dense = MNestedDense(
            units=self.input_dims,
            activation=keras.activations.serialize(self.pre_activation),
            use_bias=self.use_bias,
            share_weights=self.share_weights,
            init_per_level=self.init_per_level,
            kernel_initializer=self._initializer(self.kernel_initializer),
            bias_initializer=self._initializer(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype=self.dtype_policy,
            name="dense",
        )
        self.dense.build(up_in)
        self.built = True

    def call(self, x0: Any, x: Any = None, training: Any = None) -> tuple:
        x0s, shared0 = split_inputs(x0, self.num_levels, self.name)
        if x is None:
            xs, shared = x0s, shared0
        else:
            xs, shared = split_inputs(x, self.num_levels, self.name)
        proj_in = xs[-1] if shared else xs
        if self.down_proj is not None:
            proj_in = self.down_proj(proj_in)
        outs = self.dense(proj_in)
        results = []
        for a, b, o in zip(x0s, xs, outs):
            if o is None or a is None or b is None:
                results.append(None)
                continue
            if self.diag_scale:
                o = ops.add(o, ops.multiply(self.diag_scale, b))
            cross = ops.multiply(a, o)
            if self.dropout and training:
                cross = keras.random.dropout(cross, self.dropout, seed=self.seed_generator)
            results.append(ops.add(cross, b))
        return tuple(results)

    def compute_output_shape(self, x0_shape: Any, x_shape: Any = None) -> tuple:
        shapes, _ = split_shapes(x0_shape, self.num_levels, self.name)
        return tuple(None if s is None else tuple(s) for s in shapes)
