"""M-nested layers: one set of TA weights serves every nested level.

Every layer serves levels ordered Student -> ... -> TA.  It is called with one
tensor (read by every level) or with a tuple of one tensor per level, and
returns a tuple of one output per level; level ``i`` uses the top-left slice
of the TA weights that fits its widths (paper Section 3.2, Algorithm 2).

- :class:`MNestedDense`: nested Dense (Algorithm 2).
- :class:`MNestedGAU`: nested Gated Attention Unit (Figure 3).
- :class:`MNestedCross`: nested DCN-v2 cross layer.
- :class:`MNestedFeatureEmbedding`: d_model-nested tokens, one per feature.
"""

from matta_rec.layers.nested_cross import MNestedCross
from matta_rec.layers.nested_dense import MNestedDense
from matta_rec.layers.nested_embedding import MNestedFeatureEmbedding
from matta_rec.layers.nested_gau import MNestedGAU

__all__ = ["MNestedDense", "MNestedGAU", "MNestedCross", "MNestedFeatureEmbedding"]
