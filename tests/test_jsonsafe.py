"""to_json_safe: the one sanitiser behind report.json, ablation.json and the evaluate report."""

import json
import math
import pathlib

import numpy as np

from matta_rec.utils.jsonsafe import to_json_safe


def test_numpy_scalars_and_arrays_become_python_values():
    value = {"auc": np.float32(0.75), "rows": np.int64(12), "ok": np.bool_(True),
             "replicates": np.array([0.5, 0.25]), "grid": np.arange(4).reshape(2, 2)}
    out = to_json_safe(value)
    assert out == {"auc": 0.75, "rows": 12, "ok": True, "replicates": [0.5, 0.25],
                   "grid": [[0, 1], [2, 3]]}
    assert type(out["auc"]) is float and type(out["rows"]) is int and type(out["ok"]) is bool


def test_non_finite_floats_become_null_so_the_file_is_strict_json():
    out = to_json_safe({"p": math.nan, "hi": np.float64(np.inf), "lo": [-math.inf, 1.5]})
    assert out == {"p": None, "hi": None, "lo": [None, 1.5]}
    json.loads(json.dumps(out), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_keys_paths_tuples_and_other_objects():
    out = to_json_safe({1: ("a", pathlib.Path("runs/x")), "obj": object, "b": b"x"})
    assert out["1"] == ["a", "runs/x"]
    assert out["obj"] == str(object) and out["b"] == "x"
    assert to_json_safe(None) is None and to_json_safe("s") == "s"


def test_report_writers_use_it(tmp_path):
    """report.json and ablation.json hold null (not NaN) for an undefined value."""
    from matta_rec.evaluation.report import write_report

    report = {"title": "t", "rows": np.int64(3), "label": "event (0/1)",
              "ci": {"method": "bootstrap", "level": 0.95},
              "baseline": {"name": "b", "auroc": np.float32(0.5), "auc_loss": 0.5,
                           "logloss": float("nan"), "params": 10, "latency_ms": None},
              "models": [], "runs": [], "curves": {}}
    paths = write_report(report, str(tmp_path))
    text = open(paths["json"]).read()
    assert "NaN" not in text
    assert json.loads(text)["rows"] == 3
    assert json.loads(text)["baseline"]["logloss"] is None
