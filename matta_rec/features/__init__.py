"""Preprocessing statistics and the in-model preprocessing layer.

- :class:`FeatureStats`: statistics learnt from the first window of a stream
  (means / stds, vocabularies), saved as ``RUN_DIR/preprocessing.json``.
- :class:`FeaturePreprocessor`: Keras layer mapping raw log values to ids and
  normalised floats, so exported models take raw features.
"""

from matta_rec.features.preprocessing import FeaturePreprocessor
from matta_rec.features.stats import FeatureStats

__all__ = ["FeatureStats", "FeaturePreprocessor"]
