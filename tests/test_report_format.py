"""evaluate's report text: p-values at the bootstrap floor print as '<floor'."""

import math

import numpy as np

from matta_rec.evaluation.report import format_p_value, format_table, render_markdown
from matta_rec.metrics.bootstrap import paired_bootstrap


def test_floor_prints_as_less_than():
    assert format_p_value(1 / 500, 500) == "<0.002"
    assert format_p_value(1 / 1000, 1000) == "<0.001"
    # 3 of 500 replicates undefined: the floor is 1/497.
    assert format_p_value(1 / 497, 500) == "<0.00201"
    # One replicate across zero: a real p-value, 2/500.
    assert format_p_value(2 / 500, 500) == "0.004"
    assert format_p_value(0.5, 500) == "0.5"


def test_analytic_and_missing_p_values_print_as_they_are():
    assert format_p_value(1e-5) == "1e-05"  # DeLong: no floor
    assert format_p_value(None, 500) == "-"
    assert format_p_value(math.nan, 500) == "-"


def test_a_clear_win_reads_less_than_the_floor_in_the_table_and_markdown():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000).astype(float)
    good = y + rng.normal(0, 0.5, y.size)
    bad = y + rng.normal(0, 2.0, y.size)
    r = paired_bootstrap(y, good, bad, n_boot=500, seed=0)
    assert r.p_value == 1 / 500  # no replicate on the other side: the floor
    base = {"name": "prod", "auroc": 0.7, "auc_loss": 0.3}
    model = {"name": "student", "auroc": 0.9, "auc_loss": 0.1,
             "vs_baseline": {"method": "paired_bootstrap", "relative_pct": -60.0,
                             "relative_pct_ci": [-65.0, -55.0], "p_value": r.p_value,
                             "n_boot": 500}}
    report = {"baseline": base, "models": [model], "rows": 4000, "label": "event (0/1)",
              "ci": {"method": "bootstrap", "level": 0.95, "n_boot": 500, "seed": 0}}
    line = [ln for ln in format_table(report).splitlines() if ln.startswith("student")][0]
    assert line.rstrip().endswith("<0.002")
    assert "| <0.002 |" in render_markdown(report)
