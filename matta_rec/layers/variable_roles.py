"""Roles a layer declares on its variables, for optimizers to read.

An optimizer that treats embedding tables differently (Shampoo: a diagonal,
Adam-like step for row-sparse gradients; weight decay: not applied to
tables) should not guess them from variable names: a per-level table of an
unshared model is ``user_id_table_level0``, which a name pattern like
``(embeddings?|_table)$`` misses.  The layers that own tables mark them when
they create them, with :func:`mark_embedding_table`, and optimizers ask
:func:`is_embedding_table`.

The mark is a plain attribute, ``matta_embedding_table = True``, on the
Keras variable (the object ``layer.weights`` and ``model.trainable_variables``
return, under ``tf.distribute`` too).  It is set again whenever a layer is
built, so models loaded from ``.keras`` files or configs carry it.

Example:

```python
table = layer.add_weight(name="item_table", shape=(1000, 16))
mark_embedding_table(table)
is_embedding_table(table)       # True
```
"""

from __future__ import annotations

from typing import Any

#: The attribute set on a variable that is an embedding table.
EMBEDDING_TABLE_ATTRIBUTE = "matta_embedding_table"


def mark_embedding_table(variable: Any) -> Any:
    """Mark ``variable`` as an embedding table (rows looked up by id); returns it."""
    setattr(variable, EMBEDDING_TABLE_ATTRIBUTE, True)
    return variable


def is_embedding_table(variable: Any) -> bool:
    """Whether a layer marked ``variable`` as an embedding table."""
    return getattr(variable, EMBEDDING_TABLE_ATTRIBUTE, False) is True
