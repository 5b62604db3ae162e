"""Paired Poisson bootstrap of the AucLoss difference between two models.

Both models are scored on the *same* rows; every bootstrap replicate draws
one Poisson(1) weight per row (the streaming-friendly equivalent of
resampling rows with replacement) and recomputes both AUROCs with those
weights, so the interval accounts for the correlation between the models.

Each model's scores are sorted once; a replicate then only gathers its
weights into that order and takes two cumulative sums, so ``R`` replicates
cost ``O(R n)`` after one ``O(n log n)`` sort.  Replicates are processed in chunks that keep the
``[chunk, n]`` weight matrix under ``max_memory_mb``.

Example:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 3000)
>>> res = paired_bootstrap(y, y + rng.normal(size=3000), y + 2 * rng.normal(size=3000),
...                        n_boot=200, seed=1)
>>> res.relative < 0 and res.relative_high < 0
True
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from matta_rec.errors import MattaError
from matta_rec.metrics.auc import _auc_from_grouped, _groups, _pos_neg, validate_inputs

__all__ = ["BootstrapResult", "paired_bootstrap", "bootstrap_auc_losses", "poisson_weights"]


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap comparison of a model against a baseline.

    Attributes:
        auc_loss_model, auc_loss_baseline: point estimates on all rows.
        diff: ``auc_loss_model - auc_loss_baseline`` (negative = better).
        diff_low, diff_high: percentile interval of ``diff``.
        relative: ``diff / auc_loss_baseline`` as a fraction (x100 for %).
        relative_low, relative_high: percentile interval of ``relative``.
        diff_se, relative_se: bootstrap standard errors.
        p_value: two-sided bootstrap p-value of ``diff == 0`` (share of
            replicates on the other side of zero, doubled).
        n_boot: replicates drawn; level: confidence level; seed: RNG seed.
    """

    auc_loss_model: float
    auc_loss_baseline: float
    diff: float
    diff_low: float
    diff_high: float
    relative: float
    relative_low: float
    relative_high: float
    diff_se: float
    relative_se: float
    p_value: float
    n_boot: int
    level: float
    seed: int | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _poisson1_table(bits: int = 16) -> np.ndarray:
    """Lookup table: uniform ``bits``-bit integer -> Poisson(1) count (uint8).

    Each count's probability is the exact Poisson(1) mass rounded to a
    multiple of ``2**-bits`` (error < 1.6e-5), so a draw costs one random
    uint16 and one table lookup instead of a Poisson sample.
    """
    size = 1 << bits
    cdf, term, edges = 0.0, math.exp(-1.0), []
    for k in range(32):
        cdf += term
        term /= k + 1
        edges.append(round(cdf * size))
    return np.searchsorted(np.asarray(edges), np.arange(size), side="right").astype(np.uint8)


_POISSON1 = _poisson1_table()


def poisson_weights(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Poisson(1) bootstrap counts (uint8) of the given shape.

    Args:
        rng: a numpy Generator (seeded for reproducible intervals).
        shape: e.g. ``(replicates, rows)``.

    Example:

    >>> w = poisson_weights(np.random.default_rng(0), (4, 100000))
    >>> abs(w.mean() - 1.0) < 0.01
    True
    """
    return _POISSON1[rng.integers(0, _POISSON1.size, size=shape, dtype=np.uint16)]


class _SortedScores:
    """One model's scores sorted once, with its tie groups and the sorted
    positive / negative label weights.

    A replicate then costs one gather of the bootstrap weights and two
    cumulative sums (group sums are differences of the cumulative sums at the
    group ends), not a sort.
    """

    def __init__(self, s: np.ndarray, pos: np.ndarray, neg: np.ndarray):
        self.order = np.argsort(s, kind="mergesort")
        starts = _groups(s[self.order])
        self.starts = starts
        self.ends = np.append(starts[1:], s.size) - 1
        self.pos = pos[self.order]
        self.neg = neg[self.order]

    def auc(self) -> float:
        """Exact AUROC on all rows (no bootstrap weights)."""
        pos_g = np.add.reduceat(self.pos, self.starts)
        neg_g = np.add.reduceat(self.neg, self.starts)
        return float(_auc_from_grouped(pos_g, neg_g))

    def auc_replicates(self, boot_w: np.ndarray) -> np.ndarray:
        """AUROC of every replicate; ``boot_w`` is ``[R, n]`` in row order."""
        g = boot_w[:, self.order]  # uint8 counts: a cheap gather; products are float64
        cp = np.cumsum(g * self.pos, axis=-1)[:, self.ends]
        cn = np.cumsum(g * self.neg, axis=-1)[:, self.ends]
        pos_g = np.diff(cp, axis=-1, prepend=0.0)
        neg_g = np.diff(cn, axis=-1, prepend=0.0)
        return _auc_from_grouped(pos_g, neg_g)


def _check_common(n_boot: int, level: float, max_memory_mb: float) -> None:
    if not isinstance(n_boot, int) or n_boot < 10:
        raise MattaError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    if not 0 < level < 1:
        raise MattaError(f"level must be in (0, 1), got {level!r}")
    if max_memory_mb <= 0:
        raise MattaError(f"max_memory_mb must be > 0, got {max_memory_mb!r}")


def bootstrap_auc_losses(
    y_true,
    scores: dict,
    sample_weight=None,
    *,
    n_boot: int = 500,
    seed: int | None = 0,
    max_memory_mb: float = 256.0,
) -> dict:
    """AucLoss of several models on the same Poisson-bootstrap replicates.

    Args:
        y_true: 0/1 or soft labels in ``[0, 1]``.
        scores: ``{name: scores}``, every array scoring the same rows.
        sample_weight: optional non-negative row weights (multiplied with the
            bootstrap weights).
        n_boot: number of replicates.
        seed: RNG seed (``None`` for fresh entropy).
        max_memory_mb: cap on the per-chunk weight matrices.

    Returns:
        ``{name: float64 array [n_boot]}`` of replicate AucLosses; replicate
        ``r`` uses the same row weights for every model (paired).

    Example:

    >>> out = bootstrap_auc_losses([0, 1, 0, 1], {"a": [.1, .9, .3, .6]}, n_boot=20)
    >>> out["a"].shape
    (20,)
    """
    _check_common(n_boot, 0.95, max_memory_mb)
    if not scores:
        raise MattaError("bootstrap needs at least one model's scores")
    validated = {name: validate_inputs(y_true, s, sample_weight, name=str(name))
                 for name, s in scores.items()}
    y, _, w = next(iter(validated.values()))
    pos, neg = _pos_neg(y, w)
    sorted_scores = {name: _SortedScores(v[1], pos, neg) for name, v in validated.items()}
    n = y.size
    # Per chunk: uint16 draws, uint8 counts and their gathered copy, then a
    # float64 product and its cumulative sum (twice): about 5 float64 arrays.
    chunk = max(1, min(n_boot, int(max_memory_mb * 2**20 // (n * 8 * 5))))
    rng = np.random.default_rng(seed)
    out = {name: np.empty(n_boot, dtype=np.float64) for name in scores}
    done = 0
    while done < n_boot:
        r = min(chunk, n_boot - done)
        boot_w = poisson_weights(rng, (r, n))
        for name, ss in sorted_scores.items():
            out[name][done : done + r] = 1.0 - ss.auc_replicates(boot_w)
        done += r
    return out


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_bootstrap(
    y_true,
    score_model,
    score_baseline,
    sample_weight=None,
    *,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int | None = 0,
    max_memory_mb: float = 256.0,
) -> BootstrapResult:
    """Percentile interval of the AucLoss difference and relative change.

    Args:
        y_true: 0/1 or soft labels in ``[0, 1]`` (soft labels use the
            weighted AUROC, see :func:`matta_rec.metrics.auc.auroc`).
        score_model: scores of the model being compared.
        score_baseline: scores of the baseline on the same rows.
        sample_weight: optional row weights.
        n_boot: number of bootstrap replicates (>= 10).
        level: confidence level, e.g. 0.95.
        seed: RNG seed; the same seed gives the same interval.
        max_memory_mb: memory cap for a chunk of replicates.

    Returns:
        A :class:`BootstrapResult`.

    Example:

    >>> r = paired_bootstrap([0, 1, 0, 1, 1, 0], [.1, .9, .3, .6, .7, .2],
    ...                      [.4, .5, .3, .2, .9, .1], n_boot=50, seed=0)
    >>> r.diff <= 0
    True
    """
    _check_common(n_boot, level, max_memory_mb)
    y, s1, w = validate_inputs(y_true, score_model, sample_weight, name="model")
    _, s2, _ = validate_inputs(y_true, score_baseline, None, name="baseline")
    pos, neg = _pos_neg(y, w)
    loss_m = 1.0 - _SortedScores(s1, pos, neg).auc()
    loss_b = 1.0 - _SortedScores(s2, pos, neg).auc()
    if not (math.isfinite(loss_m) and math.isfinite(loss_b)):
        raise MattaError(
            "AUROC is undefined on these rows (no positive or no negative label weight); "
            "evaluate on more rows or another label (--label)"
        )
    reps = bootstrap_auc_losses(
        y, {"m": s1, "b": s2}, w, n_boot=n_boot, seed=seed, max_memory_mb=max_memory_mb
    )
    d = reps["m"] - reps["b"]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(reps["b"] > 0, reps["m"] / reps["b"] - 1.0, np.nan)
    diff = loss_m - loss_b
    relative = loss_m / loss_b - 1.0 if loss_b > 0 else math.nan
    d_lo, d_hi = _percentile_interval(d, level)
    r_lo, r_hi = _percentile_interval(rel, level)
    finite_d = d[np.isfinite(d)]
    if finite_d.size:
        p = 2.0 * min(np.mean(finite_d >= 0), np.mean(finite_d <= 0))
        p_value = float(min(1.0, max(p, 1.0 / finite_d.size)))
    else:
        p_value = math.nan
    return BootstrapResult(
        auc_loss_model=loss_m,
        auc_loss_baseline=loss_b,
        diff=diff,
        diff_low=d_lo,
        diff_high=d_hi,
        relative=relative,
        relative_low=r_lo,
        relative_high=r_hi,
        diff_se=float(np.nanstd(d, ddof=1)),
        relative_se=float(np.nanstd(rel, ddof=1)),
        p_value=p_value,
        n_boot=n_boot,
        level=level,
        seed=seed,
    )
