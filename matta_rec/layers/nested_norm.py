"""M-nested normalisation layers (last-axis Layer / Batch normalisation)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from matta_rec.layers._nesting import (
    input_widths,
    level_prefix,
    level_suffix,
    per_level_store,
    split_inputs,
    split_shapes,
    track_per_level,
)


class _NestedNorm(keras.layers.Layer):
    """Shared part: a learnt scale ``gamma`` and offset ``beta`` over the last
    axis, level ``i`` reading their first ``d_i`` entries (``d_i`` = the
    width of the level's input)."""

    def __init__(
        self,
        num_levels: int = 2,
        *,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        share_weights: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(
                f"`num_levels` must be a positive integer (Student ... TA). "
                f"Received: num_levels={num_levels!r}"
            )
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(f"`epsilon` must be a positive number. Received: {epsilon!r}")
        for flag_name, flag in (
            ("center", center), ("scale", scale), ("share_weights", share_weights)
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"`{flag_name}` must be True or False. Received: {flag!r}")
        self._num_levels = num_levels
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.share_weights = share_weights
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.supports_masking = True

    @property
    def num_levels(self) -> int:
        return self._num_levels

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_levels": self._num_levels,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "share_weights": self.share_weights,
                "beta_initializer": keras.initializers.serialize(self.beta_initializer),
                "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
                "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
            }
        )
        return config

    def _owners(self, shapes) -> list[int]:
        if self.share_weights:
            return [self.num_levels - 1]
        return [level for level, s in enumerate(shapes) if s is not None]

    def build(self, input_shape: Any) -> None:
        shapes, _ = split_shapes(input_shape, self.num_levels, self.name)
        self.input_dims = input_widths(shapes, self.name)
        per_level_store(self, "_gammas", "_betas")
        for level in self._owners(shapes):
            suffix = level_suffix(level, self.num_levels)
            d = self.input_dims[level]
            if self.scale:
                self._gammas[level] = self.add_weight(
                    name="gamma" + suffix, shape=(d,), initializer=self.gamma_initializer,
                    regularizer=self.gamma_regularizer,
                )
            if self.center:
                self._betas[level] = self.add_weight(
                    name="beta" + suffix, shape=(d,), initializer=self.beta_initializer,
                    regularizer=self.beta_regularizer,
                )
        self._build_statistics(shapes)
        track_per_level(self, "_gammas", "_betas", *self._statistics_stores())
        self.built = True

    def _build_statistics(self, shapes) -> None:
        """Hook: extra (non-trainable) per-level variables."""

    def _statistics_stores(self) -> tuple:
        return ()

    def level_scale_offset(self, level: int, width: int):
        """``(gamma, beta)`` level ``level`` uses (``None`` where disabled)."""
        gamma = beta = None
        if self.scale:
            gamma = level_prefix(self._gammas, level, width, self.share_weights, self.num_levels)
        if self.center:
            beta = level_prefix(self._betas, level, width, self.share_weights, self.num_levels)
        return gamma, beta

    def call(self, inputs: Any, training: Any = None) -> tuple:
        xs, _ = split_inputs(inputs, self.num_levels, self.name)
        return tuple(
            None if x is None else self._normalize(level, x, training)
            for level, x in enumerate(xs)
        )

    def compute_output_shape(self, input_shape: Any) -> tuple:
        shapes, _ = split_shapes(input_shape, self.num_levels, self.name)
        return tuple(None if s is None else tuple(s) for s in shapes)


@keras.saving.register_keras_serializable(package="matta_rec")
class MNestedLayerNormalization(_NestedNorm):
    """Layer normalisation over the last axis, M-nested.

    Level ``i`` normalises its own input ``x_i`` (width ``d_i``) over the
    last axis and applies ``gamma[:d_i]`` / ``beta[:d_i]`` of the TA's
    scale and offset: with one level (or equal widths) it is
    ``keras.layers.LayerNormalization(axis=-1)``.

    Args:
        num_levels: the number of levels, Student ... TA (the widths come
            from the inputs).
        epsilon: small float added to the variance.
        center: bool, learn an offset ``beta``.
        scale: bool, learn a scale ``gamma``.
        share_weights: bool, ``False`` gives every level its own scale and
            offset.
        beta_initializer: initializer of ``beta``.
        gamma_initializer: initializer of ``gamma``.
        beta_regularizer: regularizer of ``beta``.
        gamma_regularizer: regularizer of ``gamma``.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: one tensor read by every level or a tuple of one tensor per
            level, last-axis widths non-decreasing.

    Returns:
        A tuple of one normalised tensor per level.

    Example:

    ```python
    norm = MNestedLayerNormalization(num_levels=2)
    y_s, y_ta = norm((x[:, :8], x))     # gamma/beta (16,), Student reads [:8]
    ```
    """

    def _normalize(self, level, x, training):
        gamma, beta = self.level_scale_offset(level, x.shape[-1])
        out = ops.layer_normalization(x, gamma, beta, -1, self.epsilon)
        return ops.cast(out, self.compute_dtype)


@keras.saving.register_keras_serializable(package="matta_rec")
class MNestedBatchNormalization(_NestedNorm):
    """Batch normalisation over the last axis, M-nested.

    ``gamma`` / ``beta`` are nested like a Dense bias (level ``i`` reads the
    first ``d_i`` entries).  The moving mean and variance are statistics,
    not learnt weights: every level keeps its own (``moving_mean_level0``
    ...; the TA's are ``moving_mean`` / ``moving_variance``), updated from
    its own batches, so each level's inference matches what it saw in
    training.  With one level it is ``keras.layers.BatchNormalization()``.

    Args:
        num_levels: the number of levels, Student ... TA.
        momentum: momentum of the moving statistics.
        epsilon: small float added to the variance.
        center: bool, learn an offset ``beta``.
        scale: bool, learn a scale ``gamma``.
        share_weights: bool, ``False`` gives every level its own scale and
            offset.
        beta_initializer: initializer of ``beta``.
        gamma_initializer: initializer of ``gamma``.
        moving_mean_initializer: initializer of the moving means.
        moving_variance_initializer: initializer of the moving variances.
        beta_regularizer: regularizer of ``beta``.
        gamma_regularizer: regularizer of ``gamma``.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: one tensor read by every level or a tuple of one tensor per
            level.
        training: bool, normalise with the batch's statistics and update
            the moving ones.

    Returns:
        A tuple of one normalised tensor per level.

    Example:

    ```python
    bn = MNestedBatchNormalization(num_levels=2)
    y_s, y_ta = bn((h_s, h_ta), training=True)
    ```
    """

    def __init__(
        self,
        num_levels: int = 2,
        *,
        momentum: float = 0.99,
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_levels, **kwargs)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
            0.0 <= momentum <= 1.0
        ):
            raise ValueError(f"`momentum` must be a number in [0, 1]. Received: {momentum!r}")
        self.momentum = float(momentum)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "moving_mean_initializer": keras.initializers.serialize(
                    self.moving_mean_initializer
                ),
                "moving_variance_initializer": keras.initializers.serialize(
                    self.moving_variance_initializer
                ),
            }
        )
        return config

    def _statistics_stores(self) -> tuple:
        return ("_moving_means", "_moving_variances")

    def _build_statistics(self, shapes) -> None:
        per_level_store(self, "_moving_means", "_moving_variances")
        for level in range(self.num_levels):
            suffix = level_suffix(level, self.num_levels)
            d = self.input_dims[level]
            self._moving_means[level] = self.add_weight(
                name="moving_mean" + suffix, shape=(d,),
                initializer=self.moving_mean_initializer, trainable=False,
                aggregation="mean",  # replicas hold the same (all-reduced) statistics
            )
            self._moving_variances[level] = self.add_weight(
                name="moving_variance" + suffix, shape=(d,),
                initializer=self.moving_variance_initializer, trainable=False,
                aggregation="mean",
            )

    def level_statistics(self, level: int):
        """``(moving_mean, moving_variance)`` of level ``level``."""
        return self._moving_means[level], self._moving_variances[level]

    def _normalize(self, level, x, training):
        x = ops.cast(x, "float32")
        gamma, beta = self.level_scale_offset(level, x.shape[-1])
        moving_mean, moving_variance = self.level_statistics(level)
        if training and self.trainable:
            axes = list(range(len(x.shape) - 1))
            mean, variance = ops.moments(x, axes=axes, synchronized=True)
            moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            mean, variance = moving_mean, moving_variance
        out = ops.batch_normalization(
            x=x, mean=mean, variance=variance, axis=-1, offset=beta, scale=gamma,
            epsilon=self.epsilon,
        )
        return ops.cast(out, self.compute_dtype)
