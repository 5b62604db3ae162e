"""export_model: TF Serving layout, self-contained signatures, warmup, bad requests."""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(__file__))

from export_testlib import make_model, make_rows, make_schema, run_blocked_loader  # noqa: E402

from matta_rec.export import (  # noqa: E402
    ExportError,
    export_model,
    measure_latency,
    read_warmup,
)
from matta_rec.export.warmup import request_inputs  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two sizes of the tiny model exported under one base."""
    base = tmp_path_factory.mktemp("exports")
    rows = make_rows(64, seed=5)
    models = {"small": make_model(width=4, hidden=(8,), seed=1),
              "large": make_model(width=16, hidden=(64, 32), seed=2)}
    paths = {
        name: export_model(m, make_schema(), os.path.join(base, name, "1"), warmup=rows)
        for name, m in models.items()
    }
    return base, models, paths, rows


def test_tf_serving_layout(exported):
    _, _, paths, _ = exported
    for name, path in paths.items():
        assert path.endswith(os.path.join(name, "1"))
        listing = set(os.listdir(path))
        assert {"saved_model.pb", "variables", "assets", "assets.extra"} <= listing
        extra = set(os.listdir(os.path.join(path, "assets.extra")))
        assert {"tf_serving_warmup_requests", "signature.json", "schema.yaml"} <= extra
        # Nothing but the published version in the model folder (no temporaries).
        assert os.listdir(os.path.dirname(path)) == ["1"]


def test_signature_raw_inputs_identical_across_sizes(exported):
    _, _, paths, _ = exported
    expected = {k: (v.dtype, tuple(v.shape)) for k, v in make_schema().raw_signature().items()}
    signatures = []
    for path in paths.values():
        sig = tf.saved_model.load(path).signatures["serving_default"]
        inputs = {k: (v.dtype, tuple(v.shape)) for k, v in sig.structured_input_signature[1].items()}
        assert inputs == expected
        assert sorted(sig.structured_outputs) == ["logit", "probability"]
        signatures.append(inputs)
    assert signatures[0] == signatures[1]
    described = json.load(open(os.path.join(paths["small"], "assets.extra", "signature.json")))
    names = [i["name"] for i in described["serving_default"]["inputs"]]
    assert names == sorted(expected)


@pytest.mark.slow
def test_loads_and_predicts_without_matta_rec(exported, tmp_path):
    """A process that cannot import matta_rec / keras_rs serves the versions."""
    _, models, paths, _ = exported
    rows = make_rows(25, seed=11)
    rows["tags"][0] = ""  # missing value
    rows["hour"][1] = "not-an-hour"  # out of vocabulary
    report = run_blocked_loader(list(paths.values()), rows, str(tmp_path))
    assert report["matta_rec_loaded"] is False
    for name, path in paths.items():
        entry = report["versions"][path]
        expected_logit = models[name](rows).numpy()
        np.testing.assert_allclose(entry["logit"], expected_logit, atol=1e-5)
        np.testing.assert_allclose(
            entry["probability"], 1 / (1 + np.exp(-expected_logit)), atol=1e-5
        )
        # tf.Example signature: same predictions.
        np.testing.assert_allclose(entry["example_probability"], entry["probability"], atol=1e-6)
        errors = entry["errors"]
        assert errors["missing"] is not None and "price" in errors["missing"]
        assert errors["wrong_dtype"] is not None and "int64" in errors["wrong_dtype"]
        assert errors["wrong_shape"] is not None and "vec" in errors["wrong_shape"]
        assert errors["row_mismatch"] is not None
        assert "age" in errors["row_mismatch"] and "number of rows" in errors["row_mismatch"]
        assert errors["example_missing"] is not None and "price" in errors["example_missing"]
        # ...and the process keeps serving.
        assert entry["after_errors"] == entry["probability"]
    assert report["versions"][paths["small"]]["inputs"] == report["versions"][paths["large"]]["inputs"]


def test_example_signature_uses_schema_defaults(exported):
    _, models, paths, _ = exported
    loaded = tf.saved_model.load(paths["small"])
    rows = make_rows(1, seed=12)
    feature = {
        "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows["user_id"][0].encode()])),
        "item_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rows["item_id"][0])])),
        "hour": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows["hour"][0].encode()])),
        "tags": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rows["tags"][0].encode()])),
        "price": tf.train.Feature(float_list=tf.train.FloatList(value=[float(rows["price"][0])])),
        "vec": tf.train.Feature(float_list=tf.train.FloatList(value=rows["vec"][0].tolist())),
    }  # "age" left out: its schema default (30.0) applies
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    got = loaded.signatures["tf_example"](inputs=tf.constant([example.SerializeToString()]))
    rows["age"] = np.array([30.0], np.float32)
    np.testing.assert_allclose(got["logit"].numpy(), models["small"](rows).numpy(), atol=1e-5)


def test_nan_numeric_is_served_as_the_schema_default(exported):
    """'age' declares default 30.0: a NaN age scores exactly like age 30."""
    _, models, paths, _ = exported
    sig = tf.saved_model.load(paths["small"]).signatures["serving_default"]
    rows = make_rows(4, seed=13)
    rows["age"][[0, 2]] = np.nan
    got = sig(**{k: tf.constant(v) for k, v in rows.items()})["logit"].numpy()
    assert np.all(np.isfinite(got))
    filled = dict(rows, age=np.where(np.isnan(rows["age"]), 30.0, rows["age"]).astype(np.float32))
    want = sig(**{k: tf.constant(v) for k, v in filled.items()})["logit"].numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, models["small"](filled).numpy(), atol=1e-5)
    # The tf.Example signature goes through the same replacement.
    example = tf.train.Example()
    for k, v in rows.items():
        x = v[0]
        if v.dtype.kind in "US":
            example.features.feature[k].bytes_list.value.append(str(x).encode())
        elif v.dtype.kind == "i":
            example.features.feature[k].int64_list.value.append(int(x))
        else:
            example.features.feature[k].float_list.value.extend(np.ravel(x).tolist())
    ex = tf.saved_model.load(paths["small"]).signatures["tf_example"]
    out = ex(inputs=tf.constant([example.SerializeToString()]))["logit"].numpy()
    np.testing.assert_allclose(out, want[:1], atol=1e-6)


def test_nan_or_inf_without_a_default_fails_naming_the_feature(exported):
    """'price' has no default: a NaN (or an infinity anywhere) is an error, not a score."""
    _, _, paths, _ = exported
    sig = tf.saved_model.load(paths["small"]).signatures["serving_default"]
    rows = make_rows(3, seed=14)
    rows["price"][1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature 'price'.*default:"):
        sig(**{k: tf.constant(v) for k, v in rows.items()})
    rows = make_rows(3, seed=14)
    rows["vec"][2, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature 'vec'"):
        sig(**{k: tf.constant(v) for k, v in rows.items()})
    rows = make_rows(3, seed=14)
    rows["age"][0] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature 'age' has an infinite"):
        sig(**{k: tf.constant(v) for k, v in rows.items()})
    # Finite requests still serve afterwards.
    ok = sig(**{k: tf.constant(v) for k, v in make_rows(3, seed=14).items()})
    assert np.all(np.isfinite(ok["logit"].numpy()))


def test_warmup_records_readable_and_servable(exported):
    _, _, paths, rows = exported
    logs = read_warmup(paths["large"])
    assert 3 <= len(logs) <= 10
    loaded = tf.saved_model.load(paths["large"])
    sig = loaded.signatures["serving_default"]
    sizes = []
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "large"
        assert request.model_spec.signature_name == "serving_default"
        inputs = request_inputs(log)
        assert set(inputs) == set(make_schema().feature_names)
        n = len(inputs["age"])
        sizes.append(n)
        # Real rows of the given stream, not placeholders.
        idx = [int(np.flatnonzero(rows["age"] == a)[0]) for a in inputs["age"]]
        np.testing.assert_array_equal(inputs["item_id"], rows["item_id"][idx])
        assert [s.decode() for s in inputs["user_id"]] == list(rows["user_id"][idx])
        out = sig(**{k: tf.constant(v) for k, v in inputs.items()})
        assert out["probability"].shape == (n,)
    assert sizes[0] == 1 and max(sizes) > 1


def test_existing_version_refused_unless_overwrite(exported, tmp_path):
    _, models, _, rows = exported
    target = os.path.join(tmp_path, "m", "3")
    export_model(models["small"], make_schema(), target)
    assert not os.path.exists(os.path.join(target, "assets.extra", "tf_serving_warmup_requests"))
    with pytest.raises(ExportError, match="--overwrite"):
        export_model(models["large"], make_schema(), target)
    before = tf.saved_model.load(target).signatures["serving_default"]
    feeds = {k: tf.constant(v[:4]) for k, v in rows.items()}
    np.testing.assert_allclose(before(**feeds)["logit"], models["small"](feeds), atol=1e-5)
    export_model(models["large"], make_schema(), target, overwrite=True, warmup=rows)
    after = tf.saved_model.load(target).signatures["serving_default"]
    np.testing.assert_allclose(after(**feeds)["logit"], models["large"](feeds), atol=1e-5)
    assert sorted(os.listdir(os.path.dirname(target))) == ["3"]


def test_failure_midway_leaves_no_version(exported, tmp_path, monkeypatch):
    _, models, _, rows = exported
    import matta_rec.export.savedmodel as savedmodel

    def broken_warmup(path, logs):
        # The SavedModel files are written by now: fail after them.
        assert os.path.exists(os.path.join(path, "saved_model.pb"))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(savedmodel, "write_warmup", broken_warmup)
    target = os.path.join(tmp_path, "m", "1")
    with pytest.raises(OSError, match="simulated"):
        export_model(models["small"], make_schema(), target, warmup=rows)
    assert os.listdir(os.path.join(tmp_path, "m")) == []


def test_rejects_models_that_do_not_map_raw_features_to_a_logit(tmp_path):
    schema = make_schema()
    inner = make_model()
    dtypes = {"string": "string", "int64": "int64", "float32": "float32"}
    inputs = {f.name: keras.Input(f.raw_shape, dtype=dtypes[f.raw_dtype], name=f.name)
              for f in schema.features}
    two = keras.Model(inputs, {"student": inner(inputs), "ta": inner(inputs)})
    with pytest.raises(ExportError, match="student"):
        export_model(two, schema, os.path.join(tmp_path, "a", "1"))
    wide = keras.Model(inputs, keras.layers.Dense(3)(keras.ops.stack([inner(inputs)] * 2, -1)))
    with pytest.raises(ExportError, match="shape"):
        export_model(wide, schema, os.path.join(tmp_path, "b", "1"))
    with pytest.raises(ExportError, match="integer version"):
        export_model(inner, schema, os.path.join(tmp_path, "c", "latest"))
    assert not os.path.exists(os.path.join(tmp_path, "a", "1"))


def test_measure_latency(exported):
    _, _, paths, rows = exported
    loaded = tf.saved_model.load(paths["small"])
    result = measure_latency(loaded, rows, batch_sizes=(1, 32), repeats=5, warmup=1)
    assert sorted(result) == [1, 32]
    for size, r in result.items():
        assert r["repeats"] == 5
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["per_example_us"] == pytest.approx(r["median_ms"] * 1e3 / size)
    with pytest.raises(ExportError, match="repeats"):
        measure_latency(loaded, rows, repeats=0)
    with pytest.raises(ExportError, match="signature"):
        measure_latency(loaded, rows, signature="nope")


def test_size_dir_names_are_distinct_and_serving_safe():
    from matta_rec.export.run_export import size_dir_name

    names = {
        "student": "student",
        "ta": "ta",
        "wnw:2": "wnw-2",
        "wnw:0@ta": "wnw-0-at-ta",
        "mix@student:ta,student,-,ta": "mix-at-student-ta-student-none-ta",
        "mix@student:ta,student,ta": "mix-at-student-ta-student-ta",
        "mix@student:-,ta": "mix-at-student-none-ta",
    }
    for spec, expected in names.items():
        assert size_dir_name(spec) == expected
        assert not expected.isdigit()
