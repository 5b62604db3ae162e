"""Optimizers: `Shampoo` and `get`, the name -> optimizer mapping of training configs.

`Shampoo.preconditioner_state(variable)` returns a `PreconditionerState`;
`matta_rec.optimizers.heatmaps` dumps and plots a variable's factors.

`get("shampoo", learning_rate=1e-3)`, `get({"name": "adam", "learning_rate":
1e-3})` or `get({"class_name": "Shampoo", "config": {...}})` build an optimizer;
an optimizer instance is returned unchanged.

`exclude_defaults(optimizer, variables)` keeps decoupled weight decay off
embedding tables and vectors (biases, norms) for any Keras optimizer, as
`Shampoo` does by default (`matta_rec.optimizers.weight_decay`).
"""

from __future__ import annotations

import keras

from matta_rec.errors import ConfigError
from matta_rec.optimizers.preconditioner_state import PreconditionerState
from matta_rec.optimizers.shampoo import Shampoo
from matta_rec.optimizers.weight_decay import exclude_defaults

__all__ = ["Shampoo", "PreconditionerState", "get", "OPTIMIZERS", "exclude_defaults"]

OPTIMIZERS = {
    "shampoo": Shampoo,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "adagrad": keras.optimizers.Adagrad,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def get(name_or_config, **kwargs):
    """Builds an optimizer from a name, a config mapping or an instance.

    Args:
        name_or_config: one of `OPTIMIZERS` (case-insensitive) or another
            name `keras.optimizers.get` knows, a mapping
            `{"name": <name>, **arguments}`, a Keras-style mapping
            `{"class_name": <name>, "config": {...}}`, or an optimizer
            instance (returned as is).
        **kwargs: constructor arguments; they override those of the mapping.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ConfigError: unknown name, or arguments the optimizer does not take.
    """
    if isinstance(name_or_config, keras.optimizers.Optimizer):
        if kwargs:
            raise ConfigError(f"Arguments {sorted(kwargs)} given with an optimizer instance; pass a name instead.")
        return name_or_config
    if isinstance(name_or_config, str):
        name, arguments = name_or_config, {}
    elif isinstance(name_or_config, dict):
        mapping = dict(name_or_config)
        if "class_name" in mapping:
            name = mapping.pop("class_name")
            arguments = dict(mapping.pop("config", None) or {})
            if mapping:
                raise ConfigError(f"Unexpected keys {sorted(mapping)} next to 'class_name'.", key="optimizer")
        elif "name" in mapping:
            name = mapping.pop("name")
            arguments = mapping
        else:
            raise ConfigError(
                f"An optimizer mapping needs a 'name' key (one of {sorted(OPTIMIZERS)}).", key="optimizer"
            )
    else:
        raise ConfigError(
            f"Expected an optimizer name, mapping or instance, got {type(name_or_config).__name__}.",
            key="optimizer",
        )
    if not isinstance(name, str):
        raise ConfigError(f"The optimizer name must be a string, got {name!r}.", key="optimizer.name")
    key = name.lower()
    if key.startswith("matta_rec>"):
        key = key.split(">", 1)[1]
    arguments.update(kwargs)
    if "learning_rate" in arguments and isinstance(arguments["learning_rate"], int):
        arguments["learning_rate"] = float(arguments["learning_rate"])
    if key not in OPTIMIZERS:
        # Any other optimizer Keras knows by name (nadam, lamb, lion, ...).
        try:
            cls = keras.optimizers.get(name).__class__
        except ValueError:
            raise ConfigError(
                f"Unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)} "
                "or another keras.optimizers name.",
                key="optimizer.name",
            ) from None
    else:
        cls = OPTIMIZERS[key]
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"Bad arguments for optimizer {name!r}: {e}", key="optimizer") from e
