"""Evaluate SavedModels made outside matta_rec against a baseline; reports and plots."""

import json
import os
import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from matta_rec.cli.main import main
from matta_rec.errors import MattaError
from matta_rec.data.schema import Schema
from matta_rec.data.writers import write_shard
from matta_rec.evaluation import evaluate_models, resolve_model, resolve_models
from matta_rec.metrics.auc import auroc, logloss

SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 50},
        "x": {"group": "user", "kind": "numeric"},
        "tags": {"group": "item", "kind": "multi_categorical", "buckets": 20},
        "vec": {"group": "item", "kind": "dense", "dim": 2},
    },
    "labels": {"target": "teacher_prob", "event": "click"},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two parquet shards, 1500 rows each, and the true feature values."""
    root = tmp_path_factory.mktemp("evaldata")
    schema = Schema.from_dict(SCHEMA, source=str(root / "schema.yaml"))
    schema.to_yaml(root / "schema.yaml")
    rng = np.random.default_rng(0)
    xs, vs, ts, cs = [], [], [], []
    for day in range(2):
        n = 1500
        x = rng.normal(size=n).astype(np.float32)
        vec = rng.normal(size=(n, 2)).astype(np.float32)
        teacher = _sigmoid(1.5 * x + 0.8 * vec[:, 0]).astype(np.float32)
        click = (rng.uniform(size=n) < teacher).astype(np.float32)
        write_shard(
            root / f"dt=2024-01-0{day + 1}" / "part-0.parquet",
            {
                "user_id": [f"u{i % 37}" for i in range(n)],
                "x": x,
                "tags": ["a|b" if i % 2 else "c" for i in range(n)],
                "vec": vec,
                "teacher_prob": teacher,
                "click": click,
            },
            schema,
        )
        xs.append(x), vs.append(vec), ts.append(teacher), cs.append(click)
    return {
        "dir": str(root),
        "schema": str(root / "schema.yaml"),
        "x": np.concatenate(xs),
        "vec": np.concatenate(vs),
        "teacher": np.concatenate(ts),
        "click": np.concatenate(cs),
    }


def _export_plain_keras(path, wx, wv, schema_dict=SCHEMA, x_dtype=None):
    """A plain Keras model (not matta_rec) exported with the raw-feature signature."""
    import keras
    import tensorflow as tf

    sig = Schema.from_dict(schema_dict).raw_signature()
    if x_dtype is not None:
        sig["x"] = tf.TensorSpec((None,), x_dtype, name="x")

    class Plain(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)
            self.emb = keras.layers.Embedding(50, 1)

        def call(self, f):
            x = tf.cast(f["x"], tf.float32) if x_dtype is not None else f["x"]
            h = self.emb(tf.strings.to_hash_bucket_fast(f["user_id"], 50))[:, 0]
            z = tf.concat([x[:, None], f["vec"]], axis=-1)
            return self.dense(z)[:, 0] + 0.0 * h

    model = Plain()
    model({
        "user_id": tf.constant(["a"]), "x": tf.zeros([1], sig["x"].dtype),
        "tags": tf.constant(["a"]), "vec": tf.zeros([1, 2]),
    })
    model.dense.set_weights([np.array([[wx], [wv], [0.0]], np.float32), np.zeros(1, np.float32)])
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(features):
        logit = model(features)
        return {"probability": tf.sigmoid(logit), "logit": logit}

    archive.add_endpoint("serving_default", serve, input_signature=[sig])
    archive.write_out(str(path))
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "good": _export_plain_keras(root / "good" / "1", 1.5, 0.8),
        "weak": _export_plain_keras(root / "weak" / "1", 1.0, 0.0),
        "root": str(root),
    }


def test_baseline_savedmodel_made_outside_matta_rec(data, models, tmp_path):
    out = tmp_path / "report"
    rep = evaluate_models(
        [f"good={models['good']}"], f"prod={models['weak']}", data["dir"], data["schema"],
        label="event", n_boot=200, out_dir=str(out),
    )
    p_good = _sigmoid(1.5 * data["x"].astype(np.float64) + 0.8 * data["vec"][:, 0])
    p_weak = _sigmoid(data["x"].astype(np.float64))
    good, base = rep["models"][0], rep["baseline"]
    assert rep["rows"] == 3000 and rep["label"].startswith("event")
    assert good["name"] == "good" and base["name"] == "prod"
    assert good["auroc"] == pytest.approx(roc_auc_score(data["click"], p_good), abs=1e-6)
    assert base["auroc"] == pytest.approx(roc_auc_score(data["click"], p_weak), abs=1e-6)
    assert good["auc_loss"] == pytest.approx(1 - good["auroc"])
    assert good["logloss"] == pytest.approx(logloss(data["click"], p_good), rel=1e-5)
    # The true model is calibrated; the weak one is not far off on average.
    assert good["calibration"]["ratio"] == pytest.approx(1.0, abs=0.06)
    assert 0 <= good["calibration"]["ece"] < 0.06
    vs = good["vs_baseline"]
    expected_rel = 100 * (good["auc_loss"] / base["auc_loss"] - 1)
    assert vs["relative_pct"] == pytest.approx(expected_rel)
    assert vs["relative_pct_ci"][0] < vs["relative_pct"] < vs["relative_pct_ci"][1] < 0
    assert good["params"] == 3 + 1 + 50  # dense kernel + bias + embedding
    assert good["latency_measured_ms"] > 0
    # Files: markdown with every section, JSON round-trip, a valid PNG.
    md = (out / "report.md").read_text()
    for section in ("## Summary", "## Results", "## Size / quality Pareto front",
                    "## Online AucLoss during training", "## Models"):
        assert section in md
    assert "| good |" in md and "prod (baseline)" in md
    saved = json.loads((out / "report.json").read_text())
    assert saved["models"][0]["vs_baseline"]["relative_pct"] == pytest.approx(expected_rel)
    png = (out / "pareto.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    import matplotlib.image

    assert matplotlib.image.imread(str(out / "pareto.png")).shape[0] > 100


def test_teacher_label_uses_weighted_soft_auroc(data, models):
    rep = evaluate_models([models["good"]], models["weak"], data["dir"], data["schema"],
                          label="teacher", ci="bootstrap", n_boot=50)
    p_good = _sigmoid(1.5 * data["x"].astype(np.float64) + 0.8 * data["vec"][:, 0])
    assert rep["label"].startswith("teacher")
    assert rep["models"][0]["auroc"] == pytest.approx(auroc(data["teacher"], p_good), abs=1e-6)
    with pytest.raises(MattaError, match="DeLong's test needs 0/1 labels"):
        evaluate_models([models["good"]], models["weak"], data["dir"], data["schema"],
                        label="teacher", ci="delong")


def test_delong_intervals_and_max_rows(data, models):
    rep = evaluate_models([models["good"]], models["weak"], data["dir"], data["schema"],
                          label="event", ci="delong", max_rows=1000, batch_size=256)
    assert rep["rows"] == 1000
    vs = rep["models"][0]["vs_baseline"]
    assert vs["method"] == "delong" and vs["relative_pct_ci"][1] < 0 and vs["p_value"] < 0.05


def test_size_dir_takes_highest_version_and_manifest_lists_sizes(data, models, tmp_path):
    size_dir = tmp_path / "base" / "small"
    _export_plain_keras(size_dir / "1", 1.0, 0.0)
    _export_plain_keras(size_dir / "2", 1.5, 0.8)
    (tmp_path / "base" / "tiny").mkdir()
    _export_plain_keras(tmp_path / "base" / "tiny" / "7", 1.2, 0.0)
    [h] = resolve_model(str(size_dir))
    assert h.name == "small" and h.version == 2 and h.path.endswith(os.path.join("small", "2"))
    manifest = {
        "sizes": [
            {"name": "tiny", "params": 10, "flops": 20, "latency_ms": 0.5, "version": 7},
            {"name": "small", "params": 40, "flops": 80, "latency_ms": {"p50_ms": 0.9},
             "size_bytes": 1234},
        ]
    }
    (tmp_path / "base" / "manifest.json").write_text(json.dumps(manifest))
    handles = resolve_model(str(tmp_path / "base"))
    assert [(h.name, h.version, h.params, h.latency_ms) for h in handles] == [
        ("tiny", 7, 10, 0.5), ("small", 2, 40, 0.9)]
    rep = evaluate_models([str(tmp_path / "base")], models["weak"], data["dir"], data["schema"],
                          n_boot=50, out_dir=str(tmp_path / "rep"))
    assert [m["name"] for m in rep["models"]] == ["tiny", "small"]
    assert rep["models"][1]["latency_ms"] == 0.9 and rep["models"][1]["params"] == 40
    assert (tmp_path / "rep" / "pareto.png").read_bytes().startswith(PNG_MAGIC)


def test_incompatible_models_fail_with_clear_errors(data, models, tmp_path):
    import tensorflow as tf

    bad = _export_plain_keras(tmp_path / "bad" / "1", 1.0, 0.0, x_dtype=tf.float64)
    with pytest.raises(MattaError, match=r"input 'x' has dtype float64 .* float32"):
        evaluate_models([bad], models["weak"], data["dir"], data["schema"])
    with pytest.raises(MattaError, match="does not exist"):
        resolve_models([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MattaError, match="not a SavedModel"):
        resolve_models([str(tmp_path / "empty")])
    with pytest.raises(MattaError, match="--baseline must be one model"):
        base = tmp_path / "two"
        _export_plain_keras(base / "a" / "1", 1.0, 0.0)
        _export_plain_keras(base / "b" / "1", 1.0, 0.0)
        (base / "manifest.json").write_text(json.dumps({"sizes": [{"name": "a"}, {"name": "b"}]}))
        evaluate_models([models["good"]], str(base), data["dir"], data["schema"])
    no_event = dict(SCHEMA, labels={"target": "teacher_prob"})
    path = tmp_path / "schema_no_event.yaml"
    Schema.from_dict(no_event).to_yaml(path)
    with pytest.raises(MattaError, match="no labels.event column; use --label teacher"):
        evaluate_models([models["good"]], models["weak"], data["dir"], str(path), label="event")


def test_cli_evaluate_prints_table_and_writes_report(data, models, tmp_path, capsys):
    out = tmp_path / "cli_report"
    code = main([
        "evaluate", "--data", data["dir"], "--models", f"good={models['good']}",
        "--baseline", f"prod={models['weak']}", "--label", "event", "--n-boot", "50",
        "--out", str(out),
    ])
    text = capsys.readouterr().out
    assert code == 0
    assert "ΔAucLoss %" in text and "prod (baseline)" in text and "good" in text
    assert (out / "report.md").exists() and (out / "report.json").exists()
    code = main(["evaluate", "--data", data["dir"], "--models", str(tmp_path / "missing"),
                 "--baseline", models["weak"]])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_default_names_are_made_unique_with_parent_folders(models, tmp_path):
    for run in ("a", "b"):
        _export_plain_keras(tmp_path / run / "seed-0" / "1", 1.0, 0.0)
    names = [h.name for h in resolve_models([
        str(tmp_path / "a" / "seed-0"), str(tmp_path / "b" / "seed-0"),
        f"x={models['good']}", f"x={models['weak']}"])]
    assert names == ["a/seed-0", "b/seed-0", "x", "x-2"]


def test_curves_of_one_run_named_twice_are_listed_once(tmp_path):
    """A run reached through a relative and an absolute path is one run."""
    import json

    from matta_rec.evaluation.report import load_curves

    run = tmp_path / "runs" / "matta"
    run.mkdir(parents=True)
    curve = [{"rows_end": 100 * (i + 1), "rows": 100,
              "event": {"student": {"auc_loss": 0.3 - 0.01 * i, "rows": 100}},
              "target": {"student": {"auc_loss": 0.3 - 0.01 * i, "rows": 100}}}
             for i in range(3)]
    (run / "metrics.json").write_text(json.dumps({"levels": ["student"],
                                                  "online": {"curve": curve}}))
    rel = os.path.relpath(run)
    curves = load_curves([str(run), rel, str(run) + "/"])
    assert list(curves) == ["matta"]


def test_metrics_from_their_old_home_warn_and_are_the_metrics_package_s():
    import matta_rec.evaluation as evaluation
    import matta_rec.metrics as metrics

    for name in ("auroc", "paired_bootstrap", "DeLongResult"):
        with pytest.warns(DeprecationWarning, match=rf"matta_rec.metrics.{name}"):
            assert getattr(evaluation, name) is getattr(metrics, name)
    with pytest.raises(AttributeError, match="no attribute 'not_a_metric'"):
        evaluation.not_a_metric


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["matta", "student"])
def test_run_dir_levels_and_params(tmp_path, mode):
    """RUN_DIR#LEVEL: the levels are the model's; params are the level's family entry."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from export_testlib import train_tiny_run

    from matta_rec.training import load_run

    run_dir, logs = train_tiny_run(str(tmp_path), config={"mode": mode})
    schema = Schema.from_yaml(os.path.join(logs, "schema.yaml"))
    family = {i.name: i.params for i in load_run(run_dir).model.list_submodels()}
    levels = ["student", "ta"] if mode == "matta" else ["student"]
    for level in levels:
        (handle,) = resolve_model(f"{run_dir}#{level}", schema)
        assert handle.load(schema).params == family[level]
    with pytest.raises(MattaError, match=re.escape(f"has levels {levels}, not 'teacher'; "
                                                   "use RUN_DIR#<level>")):
        resolve_model(f"{run_dir}#teacher", schema)[0].load(schema)
