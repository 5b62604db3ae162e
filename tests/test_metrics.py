"""Exact AUROC / AucLoss, soft labels, logloss, calibration and DeLong."""

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from matta_rec.errors import MattaError
from matta_rec.metrics.auc import (
    auc_loss,
    auroc,
    calibration,
    delong_test,
    logloss,
)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_continuous_scores(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    y = rng.integers(0, 2, n)
    s = y * 0.7 + rng.normal(size=n)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(100 + seed)
    n = 4000
    y = rng.integers(0, 2, n)
    # Heavy ties: only 7 distinct score values.
    s = np.round(y * 0.5 + rng.normal(size=n), 0) / 3.0
    assert len(np.unique(s)) < 20
    w = rng.exponential(size=n)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    # Float32 predictions (what a SavedModel returns) are handled too.
    s32 = s.astype(np.float32)
    assert auroc(y, s32, w) == pytest.approx(roc_auc_score(y, s32, sample_weight=w), abs=1e-12)


def test_auroc_all_tied_is_half_and_perfect_is_one():
    y = np.array([0, 1, 0, 1])
    assert auroc(y, np.zeros(4)) == 0.5
    assert auroc(y, np.array([0.1, 0.9, 0.2, 0.8])) == 1.0
    assert auc_loss(y, np.array([0.9, 0.1, 0.8, 0.2])) == 1.0


def test_soft_label_auroc_equals_expanded_weighted_rows():
    rng = np.random.default_rng(7)
    n = 3000
    p = rng.beta(0.5, 2.0, size=n)  # Teacher probabilities
    s = np.round(p + 0.3 * rng.normal(size=n), 2)  # scores with ties
    w = rng.uniform(0.5, 2.0, size=n)
    # Expand: each row -> one positive row (weight w p) and one negative (w (1-p)).
    y_exp = np.concatenate([np.ones(n), np.zeros(n)])
    s_exp = np.concatenate([s, s])
    w_exp = np.concatenate([w * p, w * (1 - p)])
    expected = roc_auc_score(y_exp, s_exp, sample_weight=w_exp)
    assert auroc(p, s, w) == pytest.approx(expected, abs=1e-12)
    expected_unweighted = roc_auc_score(
        y_exp, s_exp, sample_weight=np.concatenate([p, 1 - p])
    )
    assert auroc(p, s) == pytest.approx(expected_unweighted, abs=1e-12)


def test_auroc_scales_to_a_million_rows():
    rng = np.random.default_rng(3)
    n = 1_000_000
    y = (rng.random(n) < 0.1).astype(np.float32)
    s = (y + rng.normal(size=n)).astype(np.float32)
    value = auroc(y, s)
    assert value == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_auroc_errors_are_clear():
    with pytest.raises(MattaError, match="no positive"):
        auroc([0, 0], [0.1, 0.2])
    with pytest.raises(MattaError, match="3 scores but 2 labels"):
        auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MattaError, match="not finite"):
        auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(MattaError, match=r"labels must be 0/1 .* \[0, 1\]"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(MattaError, match="weights must be finite and >= 0"):
        auroc([0, 1], [0.1, 0.2], [1, -1])


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = rng.uniform(0.01, 0.99, 500)
    w = rng.uniform(0.1, 3, 500)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-10)
    assert logloss(y, p, w) == pytest.approx(log_loss(y, p, sample_weight=w), rel=1e-10)
    # Soft labels: the cross-entropy of the expanded rows.
    t = rng.uniform(size=500)
    expanded = log_loss(
        np.r_[np.ones(500), np.zeros(500)], np.r_[p, p], sample_weight=np.r_[t, 1 - t]
    )
    assert logloss(t, p) == pytest.approx(expanded, rel=1e-10)


def test_calibration_ratio_and_ece():
    rng = np.random.default_rng(2)
    n = 200_000
    p = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p).astype(float)  # calibrated by construction
    cal = calibration(y, p)
    assert cal.ratio == pytest.approx(1.0, abs=0.01)
    assert cal.ece < 0.01
    # Doubling the odds-free probabilities over-predicts: ratio ~ 1.5 for p/2+0.5.
    over = calibration(y, 0.5 + p / 2)
    assert over.ratio == pytest.approx(1.5, abs=0.02)
    assert over.ece == pytest.approx(0.25, abs=0.01)
    q = calibration(y, p, bins=20, strategy="quantile")
    assert q.ece < 0.015 and q.bins == 20
    with pytest.raises(MattaError, match="strategy"):
        calibration(y, p, strategy="nope")


def _delong_reference(y, s1, s2):
    """O(n_pos * n_neg) textbook DeLong, for a small cross-check."""
    pos1, neg1 = s1[y == 1], s1[y == 0]
    pos2, neg2 = s2[y == 1], s2[y == 0]

    def psi(a, b):
        return (a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])

    k1, k2 = psi(pos1, neg1), psi(pos2, neg2)
    a1, a2 = k1.mean(), k2.mean()
    v10 = np.stack([k1.mean(1), k2.mean(1)])
    v01 = np.stack([k1.mean(0), k2.mean(0)])
    s = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    return a1, a2, s[0, 0] + s[1, 1] - 2 * s[0, 1]


def test_delong_matches_textbook_formula_with_ties():
    rng = np.random.default_rng(4)
    n = 600
    y = rng.integers(0, 2, n)
    s1 = np.round(y + rng.normal(size=n), 1)
    s2 = np.round(y + 1.5 * rng.normal(size=n), 1)
    a1, a2, var = _delong_reference(y, s1, s2)
    res = delong_test(y, s1, s2)
    assert res.auc_model == pytest.approx(a1, abs=1e-12)
    assert res.auc_baseline == pytest.approx(a2, abs=1e-12)
    half = (res.diff_high - res.diff_low) / 2
    assert half == pytest.approx(1.959963984540054 * math.sqrt(var), rel=1e-9)
    # Integer frequency weights equal repeating rows.
    k = rng.integers(1, 4, n)
    rep = delong_test(np.repeat(y, k), np.repeat(s1, k), np.repeat(s2, k))
    wtd = delong_test(y, s1, s2, k)
    assert wtd.diff == pytest.approx(rep.diff, abs=1e-12)
    assert wtd.diff_high == pytest.approx(rep.diff_high, rel=1e-9)
    assert wtd.relative_low == pytest.approx(rep.relative_low, rel=1e-9)


def test_delong_rejects_soft_labels():
    with pytest.raises(MattaError, match="bootstrap"):
        delong_test([0.2, 0.9], [0.1, 0.5], [0.2, 0.3])


def test_delong_coverage_in_simulation():
    """The 95% interval covers the known true AUROC difference ~95% of the time."""
    from scipy.stats import norm

    rng = np.random.default_rng(11)
    n, sims = 1500, 200
    mu1, mu2 = 1.0, 0.7
    true_diff = norm.cdf(mu2 / math.sqrt(2)) - norm.cdf(mu1 / math.sqrt(2))  # loss1-loss2
    covered = 0
    for _ in range(sims):
        y = rng.integers(0, 2, n)
        shared = rng.normal(size=n)
        s1 = mu1 * y + 0.6 * shared + 0.8 * rng.normal(size=n)
        s2 = mu2 * y + 0.6 * shared + 0.8 * rng.normal(size=n)
        r = delong_test(y, s1, s2)
        covered += r.diff_low <= true_diff <= r.diff_high
    assert 0.90 <= covered / sims <= 0.99
