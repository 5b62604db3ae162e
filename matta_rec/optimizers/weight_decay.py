"""Which variables decoupled weight decay leaves alone by default.

Decoupled weight decay (``w -= learning_rate * weight_decay * w`` each step,
apart from the gradient step: AdamW, ``keras.optimizers.Adam(weight_decay=)``,
``Shampoo(weight_decay=)``) shrinks every variable it applies to on every
step.  Two kinds of variables should not get it by default:

* embedding tables: a step updates only the rows the batch looked up, but
  decay would shrink every row of the table every step, so rare ids fade
  toward zero between their occurrences.  Regularise the rows a batch looks
  up instead (``model.embedding_l2``).
* vectors (rank <= 1: biases, scales and offsets, norm parameters), as
  AdamW recipes usually do.

Embedding tables are those the layers marked
(:func:`matta_rec.layers.variable_roles.is_embedding_table`), plus, for
models built from other layers, those whose name matches
``embedding_pattern`` (Keras ``Embedding`` tables are named ``embeddings``).

Example:

```python
opt = keras.optimizers.AdamW(1e-3, weight_decay=0.01)
exclude_defaults(opt, model.trainable_variables)   # before the first step
```
"""

from __future__ import annotations

import re
from typing import Iterable

from matta_rec.layers.variable_roles import is_embedding_table

#: Names of embedding tables of layers that do not mark them (the fallback).
DEFAULT_EMBEDDING_PATTERN = r"(embeddings?|_table)$"


def is_embedding(variable, embedding_pattern: str | None = DEFAULT_EMBEDDING_PATTERN) -> bool:
    """Whether ``variable`` is an embedding table: marked by its layer, or
    (fallback) its name, the last path component, matches ``embedding_pattern``."""
    if is_embedding_table(variable):
        return True
    if embedding_pattern is None:
        return False
    name = (getattr(variable, "path", None) or str(variable.name)).rsplit("/", 1)[-1]
    return re.search(embedding_pattern, name) is not None


def default_exclusions(variables: Iterable, embedding_pattern: str | None = DEFAULT_EMBEDDING_PATTERN) -> list:
    """The variables of ``variables`` weight decay skips by default: embedding
    tables and variables of rank <= 1."""
    return [v for v in variables if len(v.shape) <= 1 or is_embedding(v, embedding_pattern)]


def exclude_defaults(optimizer, variables: Iterable, embedding_pattern: str | None = DEFAULT_EMBEDDING_PATTERN):
    """Exclude :func:`default_exclusions` from ``optimizer``'s weight decay.

    Call before the optimizer is built (its first step).  Does nothing when
    the optimizer has no weight decay.  Replaces any earlier
    ``exclude_from_weight_decay(var_list=...)`` of the optimizer.

    Returns:
        The excluded variables.
    """
    if not getattr(optimizer, "weight_decay", None):
        return []
    excluded = default_exclusions(variables, embedding_pattern)
    optimizer.exclude_from_weight_decay(var_list=excluded)
    return excluded
