"""Ranking metrics: a leaf package that needs only NumPy.

* :mod:`.auc`: exact (weighted, soft-label) ``auroc``, ``auc_loss``,
  ``logloss``, ``calibration``, ``delong_test``.
* :mod:`.bootstrap`: ``paired_bootstrap`` of the AucLoss difference /
  relative change between two models scored on the same rows.

Training (online progressive validation), export (the publish gate) and
evaluation (reports) all score with these functions, so the package sits
below all of them.

Example:

>>> from matta_rec.metrics import auroc
>>> auroc([0, 1, 1], [0.2, 0.9, 0.1])
0.5
"""

from matta_rec.metrics.auc import (
    Calibration,
    DeLongResult,
    auc_loss,
    auroc,
    calibration,
    delong_test,
    logloss,
)
from matta_rec.metrics.bootstrap import BootstrapResult, paired_bootstrap

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
]
