"""M-nested layers: one set of TA weights serves every nested level.

Every layer serves levels ordered Student -> ... -> TA.  It is called with one
tensor (read by every level) or with a tuple of one tensor per level, and
returns a tuple of one output per level; level ``i`` uses the top-left slice
of the TA weights that fits its widths (paper Section 3.2, Algorithm 2).

Per-level sizes: each size a layer nests is one argument holding one value
per level, as a tuple ordered Student -> ... -> TA (non-decreasing: a level
reads a prefix of the next).  The argument keeps the name the plain Keras /
keras-rs layer gives that size; a single value makes a one-level (plain)
layer.  The attribute of the same name holds the tuple.

- :class:`MNestedDense`: nested Dense (Algorithm 2); ``units=(16, 32)``
  as ``keras.layers.Dense(units)``.
- :class:`MNestedGAU`: nested Gated Attention Unit (Figure 3);
  ``units=(16, 32)`` (expanded width), ``shared_dim=(8, 16)`` (query/key).
- :class:`MNestedCross`: nested DCN-v2 cross layer; ``projection_dim=(4, 8)``
  or ``(None, None)`` for full rank, as ``keras_rs.layers.FeatureCross``.
- :class:`MNestedFeatureEmbedding`: d_model-nested tokens, one per feature;
  ``output_dim=(8, 16)`` as ``keras.layers.Embedding(output_dim)``.
- :class:`MNestedEmbedding`: a nested plain id lookup,
  ``keras.layers.Embedding(input_dim, output_dim=(8, 16))``.
- :class:`MNestedLayerNormalization`, :class:`MNestedBatchNormalization`:
  last-axis normalisation, scale / offset nested like a bias.
- :class:`ResidualDenseBlock`: a TA-only block that starts as the identity
  (depth nesting, used by :func:`matta_rec.nestify`).

The matta_rec 0.1 keywords (``student_units`` / ``ta_units`` /
``intermediate_units`` and their ``_shared_dim``, ``_projection_dim``,
``_dim`` counterparts) are still accepted for one release with a
``DeprecationWarning``; configs saved with them load, and ``get_config``
writes the tuple form.

Example:

```python
dense = MNestedDense(units=(16, 32), activation="relu")
y_student, y_ta = dense(x)            # (B, 16) and (B, 32)
```
"""

from matta_rec.layers.nested_cross import MNestedCross
from matta_rec.layers.nested_dense import MNestedDense
from matta_rec.layers.nested_embedding import MNestedFeatureEmbedding
from matta_rec.layers.nested_gau import MNestedGAU
from matta_rec.layers.nested_lookup import MNestedEmbedding
from matta_rec.layers.nested_norm import MNestedBatchNormalization, MNestedLayerNormalization
from matta_rec.layers.residual_block import ResidualDenseBlock

__all__ = [
    "MNestedDense",
    "MNestedGAU",
    "MNestedCross",
    "MNestedFeatureEmbedding",
    "MNestedEmbedding",
    "MNestedLayerNormalization",
    "MNestedBatchNormalization",
    "ResidualDenseBlock",
]
