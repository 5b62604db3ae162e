"""A residual Dense block that starts as the identity (depth M-nesting)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="matta_rec")
class ResidualDenseBlock(keras.layers.Layer):
    """``y = x + act(x @ W_in + b_in) @ W_out + b_out`` with ``W_out = 0``, ``b_out = 0``.

    The block a TA adds on top of the Student's layers (paper Section 3.2.2,
    depth M-nesting): its output projection starts at zero, so a freshly
    added block leaves the network's output unchanged and the TA starts from
    what the Student computes; the inner projection has a normal
    initialisation, so the block learns (a zero inner kernel would leave a
    ReLU block without gradient).

    Args:
        units: positive int, the width of the input, the hidden layer and the
            output.
        activation: activation of the hidden layer.
        kernel_initializer: initializer of the inner kernel ``W_in``.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: a tensor ``(..., units)``.

    Returns:
        A tensor of the same shape.

    Example:

    ```python
    block = ResidualDenseBlock(units=32, activation="relu")
    y = block(x)          # == x until training moves W_out
    ```
    """

    def __init__(self, units: int, *, activation: Any = "relu",
                 kernel_initializer: Any = "glorot_uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(f"`units` must be a positive integer. Received: units={units!r}")
        self.units = units
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config

    def build(self, input_shape: Any) -> None:
        if input_shape[-1] != self.units:
            raise ValueError(
                f"Layer '{self.name}' is residual: its input width must equal units="
                f"{self.units}. Received input shape {tuple(input_shape)}"
            )
        u = self.units
        self.inner_kernel = self.add_weight(name="inner_kernel", shape=(u, u),
                                            initializer=self.kernel_initializer)
        self.inner_bias = self.add_weight(name="inner_bias", shape=(u,), initializer="zeros")
        self.outer_kernel = self.add_weight(name="outer_kernel", shape=(u, u),
                                            initializer="zeros")
        self.outer_bias = self.add_weight(name="outer_bias", shape=(u,), initializer="zeros")
        self.built = True

    def call(self, inputs: Any):
        hidden = self.activation(ops.add(ops.matmul(inputs, self.inner_kernel), self.inner_bias))
        return ops.add(inputs, ops.add(ops.matmul(hidden, self.outer_kernel), self.outer_bias))

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape)
