"""The shortened end-to-end demo: train -> export -> evaluate -> report (slow)."""

import json
import math
import os

import pytest

from matta_rec.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("## Summary", "## Results", "## Size / quality Pareto front",
            "## Online AucLoss during training", "## Models")
PLACEHOLDERS = ("No model has a parameter count", "No training run with an online AucLoss")


def _data(tmp_path_factory):
    sample = os.path.join(REPO, "sample_data")
    if os.path.isfile(os.path.join(sample, "schema.yaml")):
        return sample
    from matta_rec.data.synthetic import generate_logs

    out = str(tmp_path_factory.mktemp("demo_logs"))
    generate_logs(out, 12_000, 0, days=2)
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data = _data(tmp_path_factory)
    out = str(tmp_path_factory.mktemp("demo_out"))
    code = main(["demo", "--quick", "--data", data, "--out", out, "--fresh"])
    assert code == 0
    return {"data": data, "out": out}


def _valid_png(path):
    import matplotlib.image

    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # not a blank canvas


@pytest.mark.slow
def test_demo_report_has_every_section_filled(demo):
    report_dir = os.path.join(demo["out"], "report")
    md = open(os.path.join(report_dir, "report.md"), encoding="utf-8").read()
    for section in SECTIONS:
        assert section in md, section
    for placeholder in PLACEHOLDERS:
        assert placeholder not in md, placeholder
    report = json.load(open(os.path.join(report_dir, "report.json"), encoding="utf-8"))
    assert report["rows"] == 2000
    assert report["baseline"]["params"] and report["baseline"]["auroc"] is not None
    names = [m["name"] for m in report["models"]]
    assert len(names) == 3 and "student" in names and "ta" in names
    for m in report["models"]:
        assert m["params"] > 0 and m["latency_ms"] > 0 and m["flops"] > 0
        assert 0 < m["auroc"] < 1 and math.isfinite(m["logloss"])
        assert m["calibration"]["ratio"] > 0 and 0 <= m["calibration"]["ece"] <= 1
        lo, hi = m["vs_baseline"]["relative_pct_ci"]
        assert lo <= m["vs_baseline"]["relative_pct"] <= hi
        assert f"| {m['name']} |" in md
    params = {m["name"]: m["params"] for m in report["models"]}
    assert params["student"] < params["ta"]
    curves = report["curves"]
    assert set(curves) == {"matta", "baseline"}
    assert set(curves["matta"]["levels"]) == {"student", "ta"}
    assert len(curves["matta"]["rows"]) >= 3
    for name in ("pareto.png", "online_auc_loss.png"):
        _valid_png(os.path.join(report_dir, name))
    manifest = json.load(open(os.path.join(demo["out"], "exports", "matta", "manifest.json")))
    assert sorted(s["name"] for s in manifest["sizes"]) == sorted(names)


@pytest.mark.slow
def test_run_directory_scores_like_its_exported_student(demo):
    """A run dir is a valid model reference; its Student equals the exported Student."""
    from matta_rec.evaluation import evaluate_models
    from matta_rec.evaluation.ablation import split_holdout
    from matta_rec.data.schema import Schema

    schema = Schema.from_yaml(os.path.join(demo["data"], "schema.yaml"))
    _, held = split_holdout(demo["data"], schema, holdout_fraction=0.25)
    run = os.path.join(demo["out"], "runs", "matta")
    exported = os.path.join(demo["out"], "exports", "matta", "student")
    rep = evaluate_models([f"run={run}", f"runta={run}#ta", f"exp={exported}"],
                          os.path.join(demo["out"], "exports", "baseline"),
                          held, schema, max_rows=600, n_boot=20)
    by = {m["name"]: m for m in rep["models"]}
    assert by["run"]["kind"] == "run" and by["run"]["level"] == "student"
    assert by["run"]["auroc"] == pytest.approx(by["exp"]["auroc"], abs=1e-4)
    assert by["runta"]["params"] > by["run"]["params"]
