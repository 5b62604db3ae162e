"""Ablation summary: Δ% vs the baseline, intervals over seeds, super-additivity."""

import math

import numpy as np
import pytest

from matta_rec.errors import MattaError
from matta_rec.evaluation.ablation import (
    format_ablation_table,
    render_ablation_markdown,
    summarize,
    write_ablation_report,
)


def _seeds(combined, noise=0.001, n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n):
        base = 0.20 + rng.normal(0, noise)
        out.append({"seed": s, "auc_loss": {
            "baseline/student": base,
            "shampoo_only/student": base * 0.95 + rng.normal(0, noise / 10),
            "matta_no_shampoo/student": base * 0.95 + rng.normal(0, noise / 10),
            "matta_no_shampoo/ta": base * 0.93 + rng.normal(0, noise / 10),
            "matta_shampoo/student": base * combined + rng.normal(0, noise / 10),
            "matta_shampoo/ta": base * (combined - 0.02) + rng.normal(0, noise / 10),
            "matta_no_sharing/student": base * (combined - 0.01) + rng.normal(0, noise / 10),
            "matta_no_sharing/ta": base * (combined - 0.03) + rng.normal(0, noise / 10),
        }})
    return out


def test_deltas_and_super_additive_verdict():
    per_seed = _seeds(combined=0.85)  # -15% vs -5% + -5%
    s = summarize(per_seed)
    rows = {f"{r['variant']}/{r['level']}": r for r in s["rows"]}
    exp = np.mean([100 * (p["auc_loss"]["shampoo_only/student"] /
                          p["auc_loss"]["baseline/student"] - 1) for p in per_seed])
    assert rows["shampoo_only/student"]["delta_pct"] == pytest.approx(exp)
    assert rows["baseline/student"]["delta_pct"] == 0
    lo, hi = rows["matta_shampoo/student"]["delta_pct_ci"]
    assert lo < -15 + 0.5 and hi > -15 - 0.5 and hi < 0
    sa = s["super_additivity"]
    assert sa["excess_pct"] == pytest.approx(-5, abs=0.3)
    assert sa["excess_pct_ci"][1] < 0 and sa["verdict"] == "super-additive"
    assert s["sharing"]["student"]["difference_pct"] == pytest.approx(-1, abs=0.3)
    assert s["interval_method"] == "t-interval over seeds"


def test_sub_additive_and_within_noise():
    s = summarize(_seeds(combined=0.97))  # -3% < -10% sum: sub-additive
    assert s["super_additivity"]["verdict"] == "sub-additive"
    assert not s["super_additivity"]["super_additive"]
    noisy = summarize(_seeds(combined=0.90, noise=0.5, n=2, seed=3))
    lo, hi = noisy["super_additivity"]["excess_pct_ci"]
    assert lo < noisy["super_additivity"]["excess_pct"] < hi


def test_single_seed_uses_paired_bootstrap_replicates():
    per_seed = _seeds(combined=0.85, n=1)
    rng = np.random.default_rng(0)
    boot = {k: v * (1 + rng.normal(0, 0.01, 200)) for k, v in per_seed[0]["auc_loss"].items()}
    s = summarize(per_seed, boot=boot)
    assert s["interval_method"].startswith("paired bootstrap")
    row = [r for r in s["rows"] if r["variant"] == "matta_shampoo" and r["level"] == "student"][0]
    assert row["delta_pct_ci"][0] < row["delta_pct"] < row["delta_pct_ci"][1]
    without = summarize(per_seed)
    assert all(math.isnan(v) for v in without["super_additivity"]["excess_pct_ci"])
    assert without["super_additivity"]["verdict"] == "super-additive (point estimate)"


def test_report_files(tmp_path):
    s = summarize(_seeds(combined=0.85))
    s.update({"seeds": [0, 1, 2, 3], "data": "d", "train_shards": 3, "holdout_shards": ["x"],
              "eval_rows": 10, "label": "event", "config": "c.yaml"})
    paths = write_ablation_report(s, str(tmp_path))
    md = open(paths["markdown"]).read()
    for section in ("## Table 3", "## Super-additivity", "## Table 4", "## Per seed", "## Plot"):
        assert section in md
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "super-additive" in format_ablation_table(s)
    assert "MatTA with Shampoo" in render_ablation_markdown(s)


def test_baseline_required():
    with pytest.raises(MattaError, match="baseline"):
        summarize([{"seed": 0, "auc_loss": {"shampoo_only/student": 0.1}}])


TINY_CONFIG = {
    "model": {"d_model": 4, "gau_blocks": 0, "cross_layers": 1, "mlp_units": [8],
              "width_factors": [1, 2], "d_model_factors": [1, 2],
              "extra_gau_blocks": [0, 0], "extra_cross_layers": [0, 0]},
    "batch_size": 128,
    "optimizer": {"name": "adam", "settings": {"learning_rate": 0.01}},
    "data": {"stats_rows": 500},
    "checkpoint": {"every_rows": 100000},
    "metrics": {"window_rows": 500, "progress": False, "tensorboard": False},
}


class _Stop(Exception):
    """Raised by the log callback: the split is decided before anything trains."""


def _stop(message):
    raise _Stop(message)


@pytest.mark.parametrize("options, data_section, held_out", [
    ({}, {}, 6),                                                    # default: the last quarter
    ({}, {"holdout_shards": 2}, 2),                                 # the config's shards
    ({}, {"holdout_fraction": 0.5}, 12),                            # the config's fraction
    ({"holdout_fraction": 0.1}, {"holdout_shards": 2}, 3),          # the option wins
    ({"holdout_shards": 4}, {"holdout_fraction": 0.5}, 4),
])
def test_holdout_options_override_the_config(tmp_path, options, data_section, held_out):
    from matta_rec.data.synthetic import generate_logs
    from matta_rec.evaluation.ablation import run_ablation

    data = tmp_path / "logs"
    generate_logs(str(data), 480, 0, days=1)  # 24 hourly shards
    config = dict(TINY_CONFIG, data=dict(TINY_CONFIG["data"], **data_section))
    with pytest.raises(_Stop, match=rf"training on {24 - held_out} shard\(s\), evaluating on "
                                    rf"the last {held_out}$"):
        run_ablation(config, str(data), str(data / "schema.yaml"), str(tmp_path / "out"),
                     log=_stop, **options)


def test_ablate_cli_takes_one_holdout_option(tmp_path, capsys):
    import argparse

    from matta_rec.cli import ablate
    from matta_rec.evaluation.ablation import run_ablation

    parser = argparse.ArgumentParser()
    ablate.add_arguments(parser)
    base = ["--data", "d", "--config", "c.yaml"]
    assert parser.parse_args(base + ["--holdout-fraction", "0.25"]).holdout_fraction == 0.25
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--holdout-shards", "2", "--holdout-fraction", "0.25"])
    assert "not allowed with argument" in capsys.readouterr().err
    from matta_rec.data.synthetic import generate_logs

    data = tmp_path / "logs"
    generate_logs(str(data), 480, 0, days=1)
    with pytest.raises(MattaError, match="at most one of --holdout-shards and --holdout-fraction"):
        run_ablation(TINY_CONFIG, str(data), str(data / "schema.yaml"), str(tmp_path / "out"),
                     holdout_shards=2, holdout_fraction=0.25, log=_stop)


@pytest.mark.slow
def test_ablate_cli_trains_and_evaluates_the_grid(tmp_path):
    import json

    import yaml

    from matta_rec.cli.main import main
    from matta_rec.data.synthetic import generate_logs

    data = tmp_path / "logs"
    generate_logs(str(data), 3000, 0, days=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    out = tmp_path / "ablation"
    code = main(["ablate", "--data", str(data), "--config", str(config), "--seeds", "1",
                 "--out", str(out), "--n-boot", "50", "--holdout-shards", "6"])
    assert code == 0
    summary = json.loads((out / "ablation.json").read_text())
    keys = {f"{r['variant']}/{r['level']}" for r in summary["rows"]}
    assert keys == {"baseline/student", "shampoo_only/student", "matta_no_shampoo/student",
                    "matta_no_shampoo/ta", "matta_shampoo/student", "matta_shampoo/ta",
                    "matta_no_sharing/student", "matta_no_sharing/ta"}
    for row in summary["rows"]:
        assert 0 < row["auc_loss_mean"] < 1
        if row["variant"] != "baseline":
            lo, hi = row["delta_pct_ci"]
            assert lo <= row["delta_pct"] <= hi
    sa = summary["super_additivity"]
    assert sa["excess_pct"] == pytest.approx(
        sa["combined_delta_pct"] - sa["sum_of_single_delta_pct"])
    assert summary["interval_method"].startswith("paired bootstrap")
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "runs" / "matta_no_sharing" / "seed-0" / "model.keras").exists()
    # The runs used the right modes and optimizers.
    cfg = yaml.safe_load((out / "runs" / "shampoo_only" / "seed-0" / "config.yaml").read_text())
    assert cfg["mode"] == "student" and cfg["optimizer"]["name"] == "shampoo"
    cfg = yaml.safe_load((out / "runs" / "matta_no_shampoo" / "seed-0" / "config.yaml").read_text())
    assert cfg["mode"] == "matta" and cfg["optimizer"]["name"] == "adam"
    assert cfg["optimizer"]["settings"]["learning_rate"] == 0.01
