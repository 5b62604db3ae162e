"""Ranking and calibration metrics: exact AUROC, AucLoss, logloss, ECE, DeLong.

Everything works on 1-D arrays in float64 and costs ``O(n log n)`` time and
``O(n)`` memory (one sort per score vector, no pairwise matrices), so
millions of rows take tens of MB.

Labels may be *soft*: a label ``y`` in ``[0, 1]`` (e.g. a Teacher
probability) makes the row count as a positive with weight ``w * y`` and as a
negative with weight ``w * (1 - y)``.  With 0/1 labels this is the ordinary
(weighted) AUROC; ties in the score count one half, which equals the
trapezoidal ROC area that scikit-learn computes.

Example:

>>> import numpy as np
>>> auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
>>> round(auc_loss(np.array([0, 1]), np.array([0.2, 0.9])), 3)
0.0
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from matta_rec.errors import MattaError

__all__ = [
    "auroc",
    "auc_loss",
    "logloss",
    "calibration",
    "Calibration",
    "DeLongResult",
    "delong_test",
    "validate_inputs",
]


# --------------------------------------------------------------- validation
def validate_inputs(
    y_true, y_score, sample_weight=None, *, name: str = "predictions"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check and convert labels, scores and weights to float64 1-D arrays.

    Args:
        y_true: labels in ``[0, 1]`` (0/1 events or soft Teacher labels).
        y_score: scores (any real numbers; only their order matters for AUROC).
        sample_weight: optional non-negative row weights.
        name: what the scores are, for error messages (e.g. a model name).

    Returns:
        ``(y, s, w)`` as float64 arrays (``w`` is ``None`` when not given).

    Raises:
        MattaError: on shape mismatches, NaN / inf, labels outside ``[0, 1]``
            or negative weights, naming the offending input.

    Example:

    >>> y, s, w = validate_inputs([0, 1], [0.2, 0.7])
    >>> y.dtype, w is None
    (dtype('float64'), True)
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise MattaError(
            f"{name}: {s.shape[0]} scores but {y.shape[0]} labels; score the same rows "
            "as the labels"
        )
    if y.size == 0:
        raise MattaError(f"{name}: no rows to evaluate; check --data points at non-empty shards")
    if not np.all(np.isfinite(s)):
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise MattaError(
            f"{name}: score at row {bad} is {s[bad]} (not finite); the model produced "
            "NaN/inf, check its inputs and weights"
        )
    if not np.all(np.isfinite(y)) or y.min() < 0.0 or y.max() > 1.0:
        bad = int(np.flatnonzero(~(np.isfinite(y) & (y >= 0) & (y <= 1)))[0])
        raise MattaError(
            f"label at row {bad} is {y[bad]}; labels must be 0/1 events or probabilities "
            "in [0, 1]"
        )
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if w.shape != y.shape:
            raise MattaError(f"{w.shape[0]} weights but {y.shape[0]} labels")
        if not np.all(np.isfinite(w)) or w.min() < 0:
            bad = int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
            raise MattaError(f"weight at row {bad} is {w[bad]}; weights must be finite and >= 0")
    return y, s, w


def _pos_neg(y: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight of every row (soft labels split the row)."""
    if w is None:
        return y, 1.0 - y
    return w * y, w * (1.0 - y)


def _groups(s_sorted: np.ndarray) -> np.ndarray:
    """Start index of every run of equal scores in an ascending array."""
    if s_sorted.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1
    return np.concatenate(([0], change)).astype(np.int64)


def _sorted_groups(s: np.ndarray):
    """``(order, group_starts, group_id_per_sorted_row)`` of scores ``s``."""
    order = np.argsort(s, kind="mergesort")
    starts = _groups(s[order])
    gid = np.zeros(s.size, dtype=np.int64)
    if starts.size > 1:
        gid[starts[1:]] = 1
        np.cumsum(gid, out=gid)
    return order, starts, gid


def _auc_from_grouped(pos_g: np.ndarray, neg_g: np.ndarray) -> np.ndarray:
    """AUROC from per-tie-group positive/negative weights (last axis = groups).

    Groups are in ascending score order.  Works on ``[G]`` or ``[R, G]`` arrays
    (``R`` bootstrap replicates).
    """
    neg_below = np.cumsum(neg_g, axis=-1) - neg_g
    num = np.sum(pos_g * (neg_below + 0.5 * neg_g), axis=-1)
    den = np.sum(pos_g, axis=-1) * np.sum(neg_g, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


# ------------------------------------------------------------------ metrics
def auroc(y_true, y_score, sample_weight=None) -> float:
    """Exact (weighted, soft-label) area under the ROC curve.

    Sort-based: one stable sort of the scores, then per group of tied scores
    the positive weight times (negative weight strictly below + half the
    negative weight in the group).  ``O(n log n)`` time, ``O(n)`` memory.

    Args:
        y_true: 0/1 labels, or soft labels in ``[0, 1]``: a row with label
            ``p`` counts as a positive with weight ``p`` and a negative with
            weight ``1 - p`` (times its sample weight).
        y_score: model scores or probabilities.
        sample_weight: optional non-negative row weights.

    Returns:
        The AUROC in ``[0, 1]``.

    Raises:
        MattaError: bad inputs, or no positive / no negative weight (AUROC is
            undefined).

    Example:

    >>> auroc([1, 0, 1, 0], [0.9, 0.1, 0.5, 0.5])
    0.875
    """
    y, s, w = validate_inputs(y_true, y_score, sample_weight)
    pos, neg = _pos_neg(y, w)
    order = np.argsort(s, kind="mergesort")
    starts = _groups(s[order])
    pos_g = np.add.reduceat(pos[order], starts)
    neg_g = np.add.reduceat(neg[order], starts)
    if pos_g.sum() <= 0 or neg_g.sum() <= 0:
        raise MattaError(
            "AUROC is undefined: the evaluation rows have no "
            + ("positive" if pos_g.sum() <= 0 else "negative")
            + " label weight; evaluate on more rows or another label (--label)"
        )
    return float(_auc_from_grouped(pos_g, neg_g))


def auc_loss(y_true, y_score, sample_weight=None) -> float:
    """AucLoss = 1 - AUROC (the paper's metric; lower is better).

    Args:
        y_true: 0/1 or soft labels in ``[0, 1]``.
        y_score: scores.
        sample_weight: optional row weights.

    Example:

    >>> auc_loss([1, 0, 1, 0], [0.9, 0.1, 0.5, 0.5])
    0.125
    """
    return 1.0 - auroc(y_true, y_score, sample_weight)


def logloss(y_true, y_prob, sample_weight=None, eps: float = 1e-7) -> float:
    """Weighted binary cross-entropy (soft labels allowed), natural log.

    Args:
        y_true: labels in ``[0, 1]``.
        y_prob: predicted probabilities; clipped to ``[eps, 1 - eps]``.
        sample_weight: optional row weights.
        eps: clipping constant.

    Example:

    >>> round(logloss([1, 0], [0.5, 0.5]), 4)
    0.6931
    """
    y, p, w = validate_inputs(y_true, y_prob, sample_weight)
    if p.min() < 0 or p.max() > 1:
        raise MattaError("logloss needs probabilities in [0, 1]; pass sigmoid(logit)")
    p = np.clip(p, eps, 1.0 - eps)
    losses = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    if w is None:
        return float(losses.mean())
    total = w.sum()
    if total <= 0:
        raise MattaError("all sample weights are zero; nothing to evaluate")
    return float(np.dot(w, losses) / total)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Calibration summary.

    Attributes:
        ratio: sum of predicted probabilities / sum of observed labels
            (weighted); 1.0 is calibrated, > 1 over-predicts.
        ece: expected calibration error: bin-weight-averaged
            ``|mean predicted - mean observed|`` over ``bins`` bins.
        bins: number of bins used.
        strategy: ``"uniform"`` (equal-width) or ``"quantile"`` (equal-mass).
    """

    ratio: float
    ece: float
    bins: int
    strategy: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def calibration(
    y_true, y_prob, sample_weight=None, *, bins: int = 10, strategy: str = "uniform"
) -> Calibration:
    """Predicted/observed ratio and expected calibration error (ECE).

    Args:
        y_true: labels in ``[0, 1]``.
        y_prob: predicted probabilities in ``[0, 1]``.
        sample_weight: optional row weights.
        bins: number of probability bins for the ECE.
        strategy: ``"uniform"`` (equal-width bins on [0, 1]) or
            ``"quantile"`` (bins with equal row counts).

    Example:

    >>> c = calibration([0, 1, 1, 0], [0.2, 0.8, 0.6, 0.4], bins=2)
    >>> round(c.ratio, 3), round(c.ece, 3)
    (1.0, 0.3)
    """
    y, p, w = validate_inputs(y_true, y_prob, sample_weight)
    if not isinstance(bins, int) or bins < 1:
        raise MattaError(f"calibration bins must be a positive integer, got {bins!r}")
    if strategy not in ("uniform", "quantile"):
        raise MattaError(f"calibration strategy must be 'uniform' or 'quantile', got {strategy!r}")
    if p.min() < 0 or p.max() > 1:
        raise MattaError("calibration needs probabilities in [0, 1]; pass sigmoid(logit)")
    w = np.ones_like(y) if w is None else w
    total = w.sum()
    if total <= 0:
        raise MattaError("all sample weights are zero; nothing to evaluate")
    observed = float(np.dot(w, y))
    predicted = float(np.dot(w, p))
    ratio = predicted / observed if observed > 0 else math.inf
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    else:
        edges = np.quantile(p, np.linspace(0.0, 1.0, bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    w_b = np.bincount(idx, weights=w, minlength=bins)
    p_b = np.bincount(idx, weights=w * p, minlength=bins)
    y_b = np.bincount(idx, weights=w * y, minlength=bins)
    ece = float(np.sum(np.abs(p_b - y_b)) / total)
    return Calibration(ratio=float(ratio), ece=ece, bins=bins, strategy=strategy)


# ------------------------------------------------------------------- DeLong
def _placements(y: np.ndarray, s: np.ndarray, w: np.ndarray):
    """DeLong structural components for hard labels with frequency weights.

    Returns ``(auc, v10, v01)``: ``v10[i]`` for each positive is the weighted
    fraction of negatives it out-scores (ties 1/2); ``v01[j]`` for each
    negative the weighted fraction of positives that out-score it.
    """
    pos_mask = y > 0.5
    pos_w = np.where(pos_mask, w, 0.0)
    neg_w = np.where(pos_mask, 0.0, w)
    order, starts, gid = _sorted_groups(s)
    pos_g = np.add.reduceat(pos_w[order], starts)
    neg_g = np.add.reduceat(neg_w[order], starts)
    P, N = pos_g.sum(), neg_g.sum()
    neg_below = np.cumsum(neg_g) - neg_g
    pos_above = P - np.cumsum(pos_g)
    # Per sorted row, then scattered back to the original order.
    v_sorted_pos = (neg_below + 0.5 * neg_g)[gid] / N
    v_sorted_neg = (pos_above + 0.5 * pos_g)[gid] / P
    v10_all = np.empty_like(s)
    v01_all = np.empty_like(s)
    v10_all[order] = v_sorted_pos
    v01_all[order] = v_sorted_neg
    auc = float(np.dot(pos_g, neg_below + 0.5 * neg_g) / (P * N))
    return auc, v10_all[pos_mask], v01_all[~pos_mask]


@dataclasses.dataclass(frozen=True)
class DeLongResult:
    """Paired DeLong comparison of a model against a baseline on the same rows.

    Attributes:
        auc_model, auc_baseline: the two AUROCs.
        diff: ``auc_loss_model - auc_loss_baseline`` (negative = model better).
        diff_low, diff_high: confidence interval of ``diff``.
        relative: ``diff / auc_loss_baseline`` (a fraction; x100 for %).
        relative_low, relative_high: its interval (delta method).
        p_value: two-sided p-value of ``AUROC_model == AUROC_baseline``.
        level: confidence level, e.g. 0.95.
    """

    auc_model: float
    auc_baseline: float
    diff: float
    diff_low: float
    diff_high: float
    relative: float
    relative_low: float
    relative_high: float
    p_value: float
    level: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def delong_test(
    y_true, score_model, score_baseline, sample_weight=None, *, level: float = 0.95
) -> DeLongResult:
    """DeLong's test for two correlated AUROCs (fast midrank version, O(n log n)).

    Args:
        y_true: 0/1 labels (soft labels are rejected: use the paired bootstrap).
        score_model: scores of the model being compared.
        score_baseline: scores of the baseline on the same rows.
        sample_weight: optional non-negative frequency weights (a row with
            weight k counts as k identical rows).
        level: confidence level of the intervals.

    Returns:
        A :class:`DeLongResult` (AucLoss difference and relative change with
        normal-approximation intervals).

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 2000)
    >>> r = delong_test(y, y + rng.normal(size=2000), y + 2 * rng.normal(size=2000))
    >>> r.diff < 0 and r.p_value < 0.01
    True
    """
    from scipy.stats import norm

    y, s1, w = validate_inputs(y_true, score_model, sample_weight, name="model")
    _, s2, _ = validate_inputs(y_true, score_baseline, None, name="baseline")
    if not np.all((y == 0) | (y == 1)):
        raise MattaError(
            "DeLong's test needs 0/1 labels; for soft Teacher labels use the paired "
            "bootstrap (--ci bootstrap)"
        )
    if not 0 < level < 1:
        raise MattaError(f"level must be in (0, 1), got {level}")
    w = np.ones_like(y) if w is None else w
    a1, v10_1, v01_1 = _placements(y, s1, w)
    a2, v10_2, v01_2 = _placements(y, s2, w)
    wp, wn = w[y > 0.5], w[y <= 0.5]
    m, n = wp.sum(), wn.sum()
    if m <= 1 or n <= 1:
        raise MattaError("DeLong's test needs more than one positive and one negative row")

    def cov(a, b, a_mean, b_mean, ww, tot):
        return float(np.dot(ww, (a - a_mean) * (b - b_mean)) / (tot - 1.0))

    s10 = np.array(
        [
            [cov(v10_1, v10_1, a1, a1, wp, m), cov(v10_1, v10_2, a1, a2, wp, m)],
            [cov(v10_2, v10_1, a2, a1, wp, m), cov(v10_2, v10_2, a2, a2, wp, m)],
        ]
    )
    s01 = np.array(
        [
            [cov(v01_1, v01_1, a1, a1, wn, n), cov(v01_1, v01_2, a1, a2, wn, n)],
            [cov(v01_2, v01_1, a2, a1, wn, n), cov(v01_2, v01_2, a2, a2, wn, n)],
        ]
    )
    sigma = s10 / m + s01 / n
    z = float(norm.ppf(0.5 + level / 2.0))
    loss1, loss2 = 1.0 - a1, 1.0 - a2
    diff = loss1 - loss2  # = a2 - a1
    var_diff = max(float(sigma[0, 0] + sigma[1, 1] - 2.0 * sigma[0, 1]), 0.0)
    sd = math.sqrt(var_diff)
    p_value = float(2.0 * norm.sf(abs(diff) / sd)) if sd > 0 else (1.0 if diff == 0 else 0.0)
    if loss2 > 0:
        rel = loss1 / loss2 - 1.0
        grad = np.array([-1.0 / loss2, loss1 / loss2**2])  # d rel / d (a1, a2)
        sd_rel = math.sqrt(max(float(grad @ sigma @ grad), 0.0))
    else:
        rel, sd_rel = math.nan, math.nan
    return DeLongResult(
        auc_model=a1,
        auc_baseline=a2,
        diff=diff,
        diff_low=diff - z * sd,
        diff_high=diff + z * sd,
        relative=rel,
        relative_low=rel - z * sd_rel,
        relative_high=rel + z * sd_rel,
        p_value=p_value,
        level=level,
    )
