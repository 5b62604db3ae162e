"""The end-to-end demo: train -> export -> evaluate -> report, and README's table of it (slow).

The demo runs once per module, exactly as ``make demo`` runs it (on
``sample_data/``, about a minute on two CPU cores).  Its runs are seeded,
so README.md's summary table must equal the ``demo_table.md`` it writes, on
the kind of machine the tests run on (CI runs on the same kind; float
reductions may differ in the last bits elsewhere).
"""

import filecmp
import json
import math
import os
import re

import pytest

from matta_rec.cli.demo_job import SAMPLE_LOGS, TABLE_FILE, write_sample_logs
from matta_rec.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "sample_data")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("## Summary", "## Results", "## Size / quality Pareto front",
            "## Online AucLoss during training", "## Models")
PLACEHOLDERS = ("No model has a parameter count", "No training run with an online AucLoss")
TABLE_MARKERS = re.compile(r"<!-- demo-table:begin -->\n(.*?)<!-- demo-table:end -->", re.S)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo_out"))
    code = main(["demo", "--data", SAMPLE, "--out", out, "--fresh"])
    assert code == 0
    return {"data": SAMPLE, "out": out}


def _valid_png(path):
    import matplotlib.image

    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # not a blank canvas


def _files(root):
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names
                  if name == "schema.yaml" or folder != root)


def test_sample_logs_are_the_checkouts_sample_data(tmp_path):
    """Without --data the demo generates these logs: the same bytes as sample_data/."""
    out = write_sample_logs(str(tmp_path / "logs"))
    expected = _files(SAMPLE)
    assert _files(out) == expected and len(expected) == 4 * 24 + 1
    _, mismatch, errors = filecmp.cmpfiles(SAMPLE, out, expected, shallow=False)
    assert not mismatch and not errors
    readme = open(os.path.join(SAMPLE, "README.md"), encoding="utf-8").read()
    assert (f"--rows {SAMPLE_LOGS['rows']} --seed {SAMPLE_LOGS['seed']} "
            f"--days {SAMPLE_LOGS['days']}") in readme


def test_demo_help_says_where_the_data_comes_from(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Without --data it first writes the sample logs with the built-in generator" in text
    assert "matta-rec generate --out OUT/data --rows 100000 --seed 0 --days 4" in text


def test_demo_rejects_fewer_than_two_sizes(capsys, tmp_path):
    assert main(["demo", "--data", SAMPLE, "--out", str(tmp_path), "--sizes", "1"]) == 2
    assert "expected --sizes 2 or more, got --sizes 1" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # refused before anything was written


@pytest.mark.slow
def test_demo_report_has_every_section_filled(demo):
    report_dir = os.path.join(demo["out"], "report")
    md = open(os.path.join(report_dir, "report.md"), encoding="utf-8").read()
    for section in SECTIONS:
        assert section in md, section
    for placeholder in PLACEHOLDERS:
        assert placeholder not in md, placeholder
    report = json.load(open(os.path.join(report_dir, "report.json"), encoding="utf-8"))
    assert report["rows"] > 10_000 and len(report["data"]) == 10  # the last 10% of 96 shards
    assert report["baseline"]["params"] and report["baseline"]["auroc"] is not None
    names = [m["name"] for m in report["models"]]
    assert len(names) == 5 and "student" in names and "ta" in names
    for m in report["models"]:
        assert m["params"] > 0 and m["latency_ms"] > 0 and m["flops"] > 0
        assert 0 < m["auroc"] < 1 and math.isfinite(m["logloss"])
        assert m["calibration"]["ratio"] > 0 and 0 <= m["calibration"]["ece"] <= 1
        lo, hi = m["vs_baseline"]["relative_pct_ci"]
        assert lo <= m["vs_baseline"]["relative_pct"] <= hi
        assert f"| {m['name']} |" in md
    params = [m["params"] for m in report["models"]]
    assert params == sorted(params) and names[0] == "student" and names[-1] == "ta"
    curves = report["curves"]
    assert set(curves) == {"matta", "baseline"}
    assert set(curves["matta"]["levels"]) == {"student", "ta"}
    assert len(curves["matta"]["rows"]) >= 3
    for name in ("pareto.png", "online_auc_loss.png"):
        _valid_png(os.path.join(report_dir, name))
    manifest = json.load(open(os.path.join(demo["out"], "exports", "matta", "manifest.json")))
    assert sorted(s["name"] for s in manifest["sizes"]) == sorted(names)


@pytest.mark.slow
def test_readme_shows_the_demos_table(demo):
    """README.md's table between the demo-table markers is the demo's demo_table.md."""
    report_dir = os.path.join(demo["out"], "report")
    table = open(os.path.join(report_dir, TABLE_FILE), encoding="utf-8").read()
    report = json.load(open(os.path.join(report_dir, "report.json"), encoding="utf-8"))
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + len(report["models"])  # header, baseline, one per model
    assert f"{report['rows']:,} held-out rows" in table
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    found = TABLE_MARKERS.findall(readme)
    assert len(found) == 1, "README.md needs one <!-- demo-table:begin/end --> block"
    assert found[0] == table, (
        "README.md's demo table differs from what the demo printed; if the change is "
        f"intended, run `make demo` and copy runs/demo/report/{TABLE_FILE} between the "
        f"demo-table markers. The demo wrote:\n{table}")


@pytest.mark.slow
def test_run_directory_scores_like_its_exported_student(demo):
    """A run dir is a valid model reference; its Student equals the exported Student."""
    from matta_rec.data.holdout import split_holdout
    from matta_rec.data.schema import Schema
    from matta_rec.evaluation import evaluate_models

    schema = Schema.from_yaml(os.path.join(demo["data"], "schema.yaml"))
    held = split_holdout(demo["data"], schema, holdout_fraction=0.25).holdout_files
    run = os.path.join(demo["out"], "runs", "matta")
    exported = os.path.join(demo["out"], "exports", "matta", "student")
    rep = evaluate_models([f"run={run}", f"runta={run}#ta", f"exp={exported}"],
                          os.path.join(demo["out"], "exports", "baseline"),
                          held, schema, max_rows=600, n_boot=20)
    by = {m["name"]: m for m in rep["models"]}
    assert by["run"]["kind"] == "run" and by["run"]["level"] == "student"
    assert by["run"]["auroc"] == pytest.approx(by["exp"]["auroc"], abs=1e-4)
    assert by["runta"]["params"] > by["run"]["params"]
