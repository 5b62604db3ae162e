"""TF Serving export: one SavedModel version per extracted size.

- :func:`export_model`: any Keras model (raw features -> logit) to
  ``EXPORT_BASE/<size>/<version>/`` with a raw-feature ``serving_default``
  signature, a ``tf_example`` signature, and warmup requests.
- :func:`export_run`: every chosen size of a training run, plus
  ``EXPORT_BASE/manifest.json``.
- :func:`publish_version`: atomic publication (temporary sibling + rename).
- :func:`measure_latency`: median latency of a loaded SavedModel.
"""

from matta_rec.export.latency import measure_latency
from matta_rec.export.publish import ExportError, publish_version
from matta_rec.export.savedmodel import export_model
from matta_rec.export.warmup import build_warmup_requests, read_warmup, write_warmup
from matta_rec.utils.lazy import lazy_attributes

__all__ = [
    "ExportError",
    "build_warmup_requests",
    "export_model",
    "export_run",
    "measure_latency",
    "publish_version",
    "read_warmup",
    "write_warmup",
]


# export_run pulls in matta_rec.training / models: imported on first use.
__getattr__ = lazy_attributes(__name__, {"export_run": "matta_rec.export.run_export"}, globals())
