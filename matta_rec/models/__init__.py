"""The nested relevance model and Mix'n'Match extraction.

- :class:`ModelConfig`: Student sizes plus per-level expansion factors.
- :class:`NestedRelevanceModel`: raw features -> ``{level: logit [B]}``.
- :class:`ExtractedRelevanceModel`: a standalone one-level model -> logit ``[B]``.
- :func:`extract`, :func:`list_submodels`: Mix'n'Match sub-models of a
  trained nested model (also its ``extract`` / ``list_submodels`` methods).
- :class:`SubmodelSpec`, :class:`SubmodelInfo`, :func:`submodel_architecture`,
  :func:`submodel_family`, :func:`count_params`, :func:`count_flops`: which
  sub-models an architecture holds and their sizes (no Keras needed).
- :func:`model_levels`: the level names of a model.
- :func:`nestify`, :class:`NestifiedModel`: a user's Keras model M-nested
  into a TA (bring your own model), with its levels extracted back.

``ModelConfig``, the Mix'n'Match descriptions and ``model_levels`` import
without Keras or TensorFlow (config validation stays cheap); the models and
``extract`` / ``list_submodels`` import Keras on first use.
"""

from matta_rec.models.config import ModelConfig
from matta_rec.models.levels import model_levels
from matta_rec.models.mixnmatch import (
    SubmodelInfo,
    SubmodelSpec,
    count_flops,
    count_params,
    submodel_architecture,
    submodel_family,
)
from matta_rec.utils.lazy import lazy_attributes

_LAZY = {
    "NestedRelevanceModel": "matta_rec.models.relevance",
    "ExtractedRelevanceModel": "matta_rec.models.relevance",
    "extract": "matta_rec.models.relevance",
    "list_submodels": "matta_rec.models.relevance",
    "nestify": "matta_rec.models.nestify",
    "NestifiedModel": "matta_rec.models.nestify",
}

__getattr__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "ModelConfig",
    "NestedRelevanceModel",
    "ExtractedRelevanceModel",
    "SubmodelSpec",
    "SubmodelInfo",
    "extract",
    "list_submodels",
    "submodel_architecture",
    "submodel_family",
    "count_params",
    "count_flops",
    "model_levels",
    "nestify",
    "NestifiedModel",
]
