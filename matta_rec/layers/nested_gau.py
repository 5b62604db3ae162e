"""M-nested Gated Attention Unit (Hua et al. 2022; paper Figure 3)."""

from __future__ import annotations

from typing import Any, Sequence

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
    per_level,
    per_level_store,
    pop_deprecated,
    track_per_level,
    split_inputs,
    split_shapes,
)
from matta_rec.layers.nested_dense import MNestedDense


_LEGACY_UNITS = ("student_units", "ta_units", "intermediate_units")
_LEGACY_SHARED_DIM = ("student_shared_dim", "ta_shared_dim", "intermediate_shared_dims")


@keras.saving.register_keras_serializable(package="matta_rec")
class MNestedGAU(keras.layers.Layer):
    """A Gated Attention Unit whose projections are all M-nested.

    For each level ``i`` with input tokens ``x_i`` of shape ``(B, T, d_i)``
    (one token per feature field):

    ```
    h   = x_i / sqrt(mean(x_i ** 2) + 1e-6)                   (optional RMS norm)
    u   = act(h @ W_u[:d_i, :e_i]),  v = act(h @ W_v[:d_i, :e_i])
    z   = act(h @ W_z[:d_i, :s_i])
    q   = z * gamma[0, :s_i] + beta[0, :s_i]                  (scale-offset)
    k   = z * gamma[1, :s_i] + beta[1, :s_i]
    A   = relu(q k^T / T) ** 2                                (squared ReLU)
    out = x_i + (u * (A v)) @ W_o[:e_i, :d_i]
    ```

    ``e_i = units[i]`` is the level's expanded (hidden) width and
    ``s_i = shared_dim[i]`` its shared (query/key) dimension; every projection is an :class:`MNestedDense`, so the
    Student GAU is the top-left slice of the TA GAU (paper Figure 3).  The RMS
    norm has no learnt scale: the U / V / Z projections that follow absorb it.
    ``T`` is the number of tokens (the GAU paper's ``1/n`` scaling).

    Args:
        units: tuple of positive ints, the expanded width ``e`` of each level
            (typically ``expansion_factor * d_model``) ordered Student -> ...
            -> TA, non-decreasing.  A single int makes a one-level (plain) GAU.
        shared_dim: tuple of positive ints, the query/key width ``s`` of each
            level, one per entry of ``units``, non-decreasing.  The keywords
            ``student_units`` / ``ta_units`` / ``intermediate_units`` /
            ``student_shared_dim`` / ``ta_shared_dim`` /
            ``intermediate_shared_dims`` of matta_rec 0.1 are still accepted,
            with a ``DeprecationWarning``, for one release.
        activation: activation of the U, V and Z projections
            (default ``"swish"`` as in the GAU paper).
        use_norm: bool, pre-normalise the tokens with a (parameter-free) RMS
            norm.
        share_weights: bool, ``False`` gives every level its own weights
            (see :class:`MNestedDense`).
        kernel_initializer: initializer of the projection kernels.
        kernel_regularizer: regularizer of the projection kernels.
        dropout: float in ``[0, 1)``, dropout rate on the residual branch
            (``(u * (A v)) @ W_o`` before it is added to ``x_i``), in training
            only; one mask per level.  Defaults to 0 (no dropout op).
        init_per_level: bool, passed to the layer's nested Dense kernels
            (:class:`MNestedDense`): each level's block drawn at that level's
            own shape.  A block only larger levels run (depth nesting) passes
            ``False``: its kernels are drawn whole at the shape of the levels
            that use them.
        seed: int or ``None``, seed of the dropout masks.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: tokens ``(B, T, d)`` read by every level, or a tuple of one
            ``(B, T, d_i)`` tensor per level (``None`` for a skipping level).
        training: bool, training mode (dropout on).

    Returns:
        A tuple of one ``(B, T, d_i)`` tensor per level.

    Example:

    ```python
    gau = MNestedGAU(units=(16, 32), shared_dim=(8, 16))
    tokens = np.random.randn(4, 10, 16).astype("float32")
    y_s, y_ta = gau((tokens[..., :8], tokens))   # d_model 8 inside 16
    ```
    """

    # Arguments after `shared_dim` are keyword-only while the 0.1 positional
    # form `MNestedGAU(student_units, ta_units, ...)` is being retired.
    def __init__(
        self,
        units: Any = None,
        shared_dim: Any = None,
        *,
        activation: Any = "swish",
        use_norm: bool = True,
        share_weights: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        kernel_regularizer: Any = None,
        dropout: float = 0.0,
        init_per_level: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        legacy = pop_deprecated(
            kwargs,
            "MNestedGAU",
            _LEGACY_UNITS + _LEGACY_SHARED_DIM,
            {"units": units, "shared_dim": shared_dim},
        )
        if legacy:
            units = legacy_widths(legacy, _LEGACY_UNITS)
            # 0.1 defaulted the Student's shared dim to 8.
            shared_dim = legacy_widths(legacy, _LEGACY_SHARED_DIM, student_default=8)
        super().__init__(**kwargs)
        self.units = per_level(units, "units")
        self.shared_dim = per_level(shared_dim, "shared_dim")
        if len(self.shared_dim) != len(self.units):
            raise ValueError(
                "`shared_dim` needs one entry per level, as `units`. Received: "
                f"units={units!r} ({len(self.units)} levels), shared_dim={shared_dim!r}"
            )
        for flag_name, flag in (("use_norm", use_norm), ("share_weights", share_weights)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{flag_name}` must be True or False. Received: {flag!r}")
        self.activation = keras.activations.get(activation)
        self.use_norm = use_norm
        self.share_weights = share_weights
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.dropout = check_rate(dropout, "dropout")
        self.init_per_level = check_flag(init_per_level, "init_per_level")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.dropout else None

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "units": list(self.units),
                "shared_dim": list(self.shared_dim),
                "activation": keras.activations.serialize(self.activation),
                "use_norm": self.use_norm,
                "share_weights": self.share_weights,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "dropout": self.dropout,
                "init_per_level": self.init_per_level,
                "seed": self.seed,
            }
        )
        return config

    @property
    def num_levels(self) -> int:
        return len(self.units)

    def _dense(self, units: Sequence[int], name: str, activation: Any) -> MNestedDense:
        return MNestedDense(
            units=tuple(units),
            activation=activation,
            share_weights=self.share_weights,
            init_per_level=self.init_per_level,
            kernel_initializer=keras.initializers.get(
                keras.initializers.serialize(self.kernel_initializer)
            ),
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape: Any) -> None:
        shapes, _ = split_shapes(input_shape, self.num_levels, self.name)
        self.model_dims = input_widths(shapes, self.name)
        prefix = tuple(next(s for s in shapes if s is not None)[:-1])
        # Without sharing, levels built without a shape skip the layer and own
        # no variables; with sharing every level owns its slice.
        full_shapes = [
            None if (s is None and not self.share_weights) else prefix + (d,)
            for s, d in zip(shapes, self.model_dims)
        ]
        act = keras.activations.serialize(self.activation)
        self.u_proj = self._dense(self.units, "u", act)
        self.v_proj = self._dense(self.units, "v", act)
        self.z_proj = self._dense(self.shared_dim, "z", act)
        self.o_proj = self._dense(self.model_dims, "o", None)
        for proj in (self.u_proj, self.v_proj, self.z_proj):
            proj.build(tuple(full_shapes))
        self.o_proj.build(
            tuple(None if s is None else s[:-1] + (e,) for s, e in zip(full_shapes, self.units))
        )
        if self.share_weights:
            owners = [self.num_levels - 1]
        else:
            owners = [level for level, s in enumerate(full_shapes) if s is not None]
        per_level_store(self, "_gammas", "_betas")
        for level in owners:
            suffix = level_suffix(level, self.num_levels)
            self._gammas[level] = self.add_weight(
                name="gamma" + suffix,
                shape=(2, self.shared_dim[level]),
                # Like a LayerNorm scale (1) plus noise to tell Q from K: with
                # q = k ~ z the diagonal scores start positive, so the
                # squared-ReLU attention is not dead at initialisation.
                initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02),
                regularizer=self.kernel_regularizer,
            )
            self._betas[level] = self.add_weight(
                name="beta" + suffix, shape=(2, self.shared_dim[level]), initializer="zeros"
            )
        track_per_level(self, "_gammas", "_betas")
        self.built = True

    @property
    def gamma(self):
        """The TA's query/key scales ``(2, s_TA)``."""
        return self._gammas[self.num_levels - 1]

    @property
    def beta(self):
        """The TA's query/key offsets ``(2, s_TA)``."""
        return self._betas[self.num_levels - 1]

    def level_scale_offset(self, level: int, width: int | None = None):
        """``(gamma, beta)`` of shape ``(2, s)`` that level ``level`` uses."""
        width = self.shared_dim[level] if width is None else width
        return (
            level_prefix(self._gammas, level, width, self.share_weights, self.num_levels),
            level_prefix(self._betas, level, width, self.share_weights, self.num_levels),
        )

    def call(self, inputs: Any, training: Any = None) -> tuple:
        xs, shared = split_inputs(inputs, self.num_levels, self.name)
        if not self.use_norm:
            normed = xs
        elif shared:
            normed = (self._rms_norm(xs[-1]),) * self.num_levels
        else:
            normed = tuple(None if x is None else self._rms_norm(x) for x in xs)
        proj_in = normed[-1] if shared else normed
        us = self.u_proj(proj_in)
        vs = self.v_proj(proj_in)
        zs = self.z_proj(proj_in)
        gated = []
        for level, (u, v, z) in enumerate(zip(us, vs, zs)):
            if u is None:
                gated.append(None)
                continue
            gamma, beta = self.level_scale_offset(level, z.shape[-1])
            # relu(q k^T / T)^2 with the 1/T folded into the (tiny) scale-offset
            # parameters: q k^T / T = (q / sqrt(T)) (k / sqrt(T))^T.
            length = z.shape[1] if z.shape[1] is not None else ops.shape(z)[1]
            inv_sqrt_t = ops.rsqrt(ops.cast(length, z.dtype))
            # Queries and keys from the (2, s) parameters' rows: two
            # (B, T, s) products, not one (B, T, 2, s) product unstacked,
            # whose gradient packs and tiles (bench/forward_cost.py).
            scales = tf.unstack(ops.multiply(gamma, inv_sqrt_t), num=2)
            offsets = tf.unstack(ops.multiply(beta, inv_sqrt_t), num=2)
            q, k = (ops.add(ops.multiply(z, a), b) for a, b in zip(scales, offsets))
            attention = ops.square(ops.relu(tf.matmul(q, k, transpose_b=True)))
            gated.append(ops.multiply(u, tf.matmul(attention, v)))
        outs = self.o_proj(tuple(gated))
        if self.dropout and training:
            outs = level_dropout(outs, self.dropout, self.seed_generator)
        return tuple(None if o is None else ops.add(x, o) for x, o in zip(xs, outs))

    @staticmethod
    def _rms_norm(x):
        ms = ops.mean(ops.square(x), axis=-1, keepdims=True)
        return ops.multiply(x, ops.rsqrt(ops.add(ms, 1e-6)))

    def compute_output_shape(self, input_shape: Any) -> tuple:
        shapes, _ = split_shapes(input_shape, self.num_levels, self.name)
        return tuple(None if s is None else tuple(s) for s in shapes)
