"""The nested relevance model and Mix'n'Match extraction.

- :class:`ModelConfig`: Student sizes plus per-level expansion factors.
- :class:`NestedRelevanceModel`: raw features -> ``{level: logit [B]}``.
- :class:`ExtractedRelevanceModel`: a standalone one-level model -> logit ``[B]``.
- :class:`SubmodelSpec`, :func:`extract`, :func:`list_submodels`,
  :class:`SubmodelInfo`: Mix'n'Match sub-models of a trained nested model.
"""

from matta_rec.models.config import ModelConfig
from matta_rec.models.mixnmatch import (
    SubmodelInfo,
    SubmodelSpec,
    count_flops,
    count_params,
    extract,
    list_submodels,
    submodel_architecture,
)
from matta_rec.models.relevance import ExtractedRelevanceModel, NestedRelevanceModel

__all__ = [
    "ModelConfig",
    "NestedRelevanceModel",
    "ExtractedRelevanceModel",
    "SubmodelSpec",
    "SubmodelInfo",
    "extract",
    "list_submodels",
    "submodel_architecture",
    "count_params",
    "count_flops",
]
