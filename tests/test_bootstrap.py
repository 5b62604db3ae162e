"""Paired Poisson bootstrap of the AucLoss difference."""

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from matta_rec.errors import MattaError
from matta_rec.metrics.bootstrap import (
    bootstrap_auc_losses,
    paired_bootstrap,
    poisson_weights,
)
from matta_rec.metrics.auc import auc_loss


def _simulate(rng, n, mu1, mu2):
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)
    s1 = mu1 * y + 0.6 * shared + 0.8 * rng.normal(size=n)
    s2 = mu2 * y + 0.6 * shared + 0.8 * rng.normal(size=n)
    return y, s1, s2


def test_interval_covers_true_difference_in_simulation():
    """Scores are N(mu*y, 1): true AUROC = Phi(mu / sqrt 2), so the difference is known."""
    rng = np.random.default_rng(5)
    mu1, mu2 = 1.0, 0.7
    loss1 = 1 - norm.cdf(mu1 / math.sqrt(2))
    loss2 = 1 - norm.cdf(mu2 / math.sqrt(2))
    true_diff, true_rel = loss1 - loss2, loss1 / loss2 - 1
    sims, covered_d, covered_r = 120, 0, 0
    for i in range(sims):
        y, s1, s2 = _simulate(rng, 1500, mu1, mu2)
        r = paired_bootstrap(y, s1, s2, n_boot=200, seed=i)
        covered_d += r.diff_low <= true_diff <= r.diff_high
        covered_r += r.relative_low <= true_rel <= r.relative_high
    # Binomial(120, 0.95) lies in [0.89, 0.99] with > 99% probability.
    assert 0.89 <= covered_d / sims <= 0.995
    assert 0.89 <= covered_r / sims <= 0.995


def test_point_estimates_and_direction():
    rng = np.random.default_rng(0)
    y, s1, s2 = _simulate(rng, 4000, 1.2, 0.6)
    r = paired_bootstrap(y, s1, s2, n_boot=300, seed=3)
    assert r.auc_loss_model == pytest.approx(1 - roc_auc_score(y, s1), abs=1e-12)
    assert r.auc_loss_baseline == pytest.approx(1 - roc_auc_score(y, s2), abs=1e-12)
    assert r.diff == pytest.approx(r.auc_loss_model - r.auc_loss_baseline)
    assert r.relative == pytest.approx(r.auc_loss_model / r.auc_loss_baseline - 1)
    assert r.diff_high < 0 and r.relative_high < 0 and r.p_value < 0.01
    assert r.diff_low < r.diff < r.diff_high


def test_identical_models_give_zero_width_interval_and_p_one():
    rng = np.random.default_rng(1)
    y, s1, _ = _simulate(rng, 500, 1.0, 1.0)
    r = paired_bootstrap(y, s1, s1.copy(), n_boot=50, seed=0)
    assert r.diff == 0 and r.diff_low == 0 and r.diff_high == 0 and r.p_value == 1.0


def test_seed_reproducible_and_chunking_invariant():
    rng = np.random.default_rng(2)
    y, s1, s2 = _simulate(rng, 3000, 1.0, 0.8)
    a = paired_bootstrap(y, s1, s2, n_boot=64, seed=9)
    b = paired_bootstrap(y, s1, s2, n_boot=64, seed=9, max_memory_mb=0.5)  # many chunks
    c = paired_bootstrap(y, s1, s2, n_boot=64, seed=10)
    assert a == b
    assert a.diff_low != c.diff_low


def test_replicates_are_weighted_aurocs_with_poisson_weights():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1], dtype=float)
    s = np.array([0.1, 0.8, 0.4, 0.4, 0.9, 0.2, 0.7, 0.3])
    reps = bootstrap_auc_losses(y, {"a": s}, n_boot=20, seed=4)
    w = poisson_weights(np.random.default_rng(4), (20, 8)).astype(float)
    for r in range(20):
        if w[r][y == 1].sum() > 0 and w[r][y == 0].sum() > 0:
            assert reps["a"][r] == pytest.approx(auc_loss(y, s, w[r]), abs=1e-12)
        else:
            assert math.isnan(reps["a"][r])


def test_soft_labels_and_weights_supported():
    rng = np.random.default_rng(6)
    n = 2000
    p = rng.beta(1, 3, n)
    s1 = p + 0.1 * rng.normal(size=n)
    s2 = p + 0.3 * rng.normal(size=n)
    w = rng.uniform(0.5, 1.5, n)
    r = paired_bootstrap(p, s1, s2, w, n_boot=100, seed=0)
    assert r.auc_loss_model == pytest.approx(auc_loss(p, s1, w), abs=1e-12)
    assert r.diff_high < 0


def test_bad_arguments():
    with pytest.raises(MattaError, match="n_boot"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.2, 0.1], n_boot=2)
    with pytest.raises(MattaError, match="level"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.2, 0.1], level=1.5)
    with pytest.raises(MattaError, match="baseline: 3 scores but 2 labels"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.2, 0.1, 0.3])


def test_poisson_weights_follow_poisson_one():
    from scipy.stats import poisson

    w = poisson_weights(np.random.default_rng(0), (200, 10_000))
    freq = np.bincount(w.ravel(), minlength=8)[:8] / w.size
    assert np.allclose(freq, poisson.pmf(np.arange(8), 1.0), atol=3e-4)
    assert w.mean() == pytest.approx(1.0, abs=2e-3) and w.var() == pytest.approx(1.0, abs=5e-3)
