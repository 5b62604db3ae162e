"""Evaluation: exact AUROC / AucLoss (soft labels), CIs vs a baseline, reports, ablations.

* :mod:`.metrics`: ``auroc``, ``auc_loss``, ``logloss``, ``calibration``, ``delong_test``.
* :mod:`.bootstrap`: ``paired_bootstrap`` of the AucLoss difference / relative change.
* :mod:`.scoring`: load SavedModels, export bases and run directories; score a stream.
* :mod:`.compare`: ``evaluate_models`` (metrics of every model vs the baseline).
* :mod:`.report`: terminal table, report.md, report.json, Pareto and online-curve PNGs.
* :mod:`.ablation`: the paper's Table 3 / Table 4 grid over seeds.

Example:

>>> from matta_rec.evaluation import auroc
>>> auroc([0, 1, 1], [0.2, 0.9, 0.1])
0.5
"""

from matta_rec.metrics.bootstrap import BootstrapResult, paired_bootstrap
from matta_rec.evaluation.compare import compare_scores, evaluate_models
from matta_rec.metrics.auc import (
    Calibration,
    DeLongResult,
    auc_loss,
    auroc,
    calibration,
    delong_test,
    logloss,
)
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
    "auroc",
    "auc_loss",
    "logloss",
    "calibration",
    "Calibration",
    "delong_test",
    "DeLongResult",
    "paired_bootstrap",
    "BootstrapResult",
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
