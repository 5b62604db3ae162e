"""Evaluation: models scored against a baseline, reports, ablations.

* :mod:`.scoring`: load SavedModels, export bases and run directories; score a stream.
* :mod:`.compare`: ``evaluate_models`` (metrics of every model vs the baseline).
* :mod:`.report`: terminal table, report.md, report.json, Pareto and online-curve PNGs.
* :mod:`.ablation`: the paper's Table 3 / Table 4 grid over seeds.

The metrics themselves (``auroc``, ``auc_loss``, ``paired_bootstrap``, ...)
live in :mod:`matta_rec.metrics`; importing them from here still works for
one release, with a ``DeprecationWarning``.

Example:

>>> from matta_rec.evaluation import evaluate_models, resolve_models
>>> handles = resolve_models(["exports"], schema)
"""

import warnings

from matta_rec import metrics as _metrics
from matta_rec.evaluation.compare import compare_scores, evaluate_models
from matta_rec.evaluation.report import format_table, load_curves, write_report
from matta_rec.evaluation.scoring import (
    ModelHandle,
    ScoredRows,
    resolve_model,
    resolve_models,
    score_batches,
    score_stream,
)

__all__ = [
    "evaluate_models",
    "compare_scores",
    "ModelHandle",
    "ScoredRows",
    "resolve_model",
    "resolve_models",
    "score_batches",
    "score_stream",
    "format_table",
    "load_curves",
    "write_report",
]


def __getattr__(name: str):
    """The metrics' old home: ``matta_rec.evaluation.auroc`` -> ``matta_rec.metrics.auroc``."""
    if name in _metrics.__all__:
        warnings.warn(
            f"matta_rec.evaluation.{name} moved to matta_rec.metrics.{name}; import it "
            f"from there (`from matta_rec.metrics import {name}`)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
