"""FeatureStats and FeaturePreprocessor: ids, normalisation, serialisation."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from matta_rec.errors import ConfigError, DataError
from matta_rec.data.schema import Schema
from matta_rec.features import FeaturePreprocessor, FeatureStats

SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 50},
        "user_num": {"group": "user", "kind": "categorical", "buckets": 50, "dtype": "int64"},
        "hour": {
            "group": "context",
            "kind": "categorical",
            "vocabulary": "auto",
            "max_vocabulary": 3,
        },
        "device": {"group": "context", "kind": "categorical", "vocabulary": ["ios", "android"]},
        "tags": {
            "group": "item",
            "kind": "multi_categorical",
            "buckets": 20,
            "max_length": 3,
            "separator": "|",
        },
        "age": {"group": "user", "kind": "numeric"},
        "price": {"group": "item", "kind": "numeric", "normalization": "log"},
        "raw": {"group": "item", "kind": "numeric", "normalization": "none"},
        "vec": {"group": "item", "kind": "dense", "dim": 3},
    },
    "labels": {"target": "teacher_prob"},
}


def make_schema():
    return Schema.from_dict(SCHEMA)


def make_batch(rng, n):
    hours = rng.choice(["7", "8", "9", "10", "11"], size=n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    tags = ["|".join(rng.choice(list("abcdefg"), size=rng.integers(0, 6))) for _ in range(n)]
    return {
        "user_id": np.array([f"u{i}" for i in rng.integers(0, 30, n)], dtype=object),
        "user_num": rng.integers(0, 1000, n).astype(np.int64),
        "hour": hours.astype(object),
        "device": rng.choice(["ios", "android", "web"], size=n).astype(object),
        "tags": np.array(tags, dtype=object),
        "age": rng.normal(40, 12, n).astype(np.float32),
        "price": rng.lognormal(3, 1, n).astype(np.float32),
        "raw": rng.normal(0, 1, n).astype(np.float32),
        "vec": rng.normal([0, 5, -3], [1, 2, 0.5], (n, 3)).astype(np.float32),
    }


def concat(batches):
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(0)
    return [make_batch(rng, n) for n in (64, 17, 50)]


@pytest.fixture(scope="module")
def stats(batches):
    return FeatureStats.fit(make_schema(), batches)


# ---------------------------------------------------------------- statistics
def test_stats_numeric_match_numpy(batches, stats):
    data = concat(batches)
    age = data["age"].astype(np.float64)
    assert stats["age"]["count"] == len(age)
    np.testing.assert_allclose(stats["age"]["mean"], age.mean(), rtol=1e-10)
    np.testing.assert_allclose(stats["age"]["std"], age.std(), rtol=1e-8)
    assert stats["age"]["min"] == pytest.approx(age.min())
    assert stats["age"]["max"] == pytest.approx(age.max())
    logp = np.log1p(data["price"].astype(np.float64))
    np.testing.assert_allclose(stats["price"]["mean"], logp.mean(), rtol=1e-10)
    np.testing.assert_allclose(stats["price"]["std"], logp.std(), rtol=1e-8)
    vec = data["vec"].astype(np.float64)
    np.testing.assert_allclose(stats["vec"]["mean"], vec.mean(0), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(stats["vec"]["std"], vec.std(0), rtol=1e-8)


def test_stats_vocabulary_most_frequent_with_deterministic_ties():
    schema = make_schema()
    batch = make_batch(np.random.default_rng(1), 8)
    batch["hour"] = np.array(["b", "a", "c", "c", "d", "b", "a", ""], dtype=object)
    stats = FeatureStats.fit(schema, [batch])
    # a, b, c twice each (tie broken by value), d once and cut by max_vocabulary=3.
    assert stats["hour"]["vocabulary"] == ["a", "b", "c"]
    assert stats["hour"]["counts"] == [2, 2, 2]
    assert stats["hour"]["missing"] == 1
    assert stats["hour"]["distinct"] == 4
    # Explicit vocabularies are used as given.
    assert stats["device"]["vocabulary"] == ["ios", "android"]


def test_stats_several_batches_equal_concatenation(batches, stats):
    whole = FeatureStats.fit(make_schema(), [concat(batches)])
    a, b = stats.to_dict(), whole.to_dict()
    assert a["rows"] == b["rows"] == sum(len(x["age"]) for x in batches)
    for name, entry in a["features"].items():
        for key, value in entry.items():
            if isinstance(value, float) or (isinstance(value, list) and key in ("mean", "std")):
                np.testing.assert_allclose(value, b["features"][name][key], rtol=1e-9, atol=1e-12)
            else:
                assert value == b["features"][name][key], (name, key)


def test_stats_max_rows_cuts_the_window(batches):
    capped = FeatureStats.fit(make_schema(), batches, max_rows=70)
    first = concat(batches)
    first = {k: v[:70] for k, v in first.items()}
    direct = FeatureStats.fit(make_schema(), [first])
    assert capped.rows == 70
    assert capped["age"]["mean"] == pytest.approx(direct["age"]["mean"], rel=1e-12)
    assert capped["hour"] == direct["hour"]


def test_stats_accepts_feature_label_tuples(batches):
    tuples = [(b, {"target": np.zeros(len(b["age"]), np.float32)}) for b in batches]
    assert FeatureStats.fit(make_schema(), tuples) == FeatureStats.fit(make_schema(), batches)


def test_stats_missing_column_is_a_clear_error(batches):
    bad = dict(batches[0])
    del bad["price"]
    with pytest.raises(DataError, match="price"):
        FeatureStats.fit(make_schema(), [bad])


def test_stats_json_round_trip(tmp_path, stats):
    path = tmp_path / "preprocessing.json"
    stats.save(path)
    loaded = FeatureStats.load(path)
    assert loaded == stats
    assert FeatureStats.from_dict(json.loads(path.read_text())).to_dict() == stats.to_dict()
    with pytest.raises(ConfigError, match="not found"):
        FeatureStats.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        FeatureStats.load(tmp_path / "bad.json")


# ------------------------------------------------------------- preprocessing
def test_hashed_ids_and_missing(stats):
    pre = FeaturePreprocessor(make_schema(), stats)
    values = ["u1", "u2", "", "zzz"]
    batch = make_batch(np.random.default_rng(2), 4)
    batch["user_id"] = np.array(values, dtype=object)
    ids = pre(batch)["user_id"].numpy()
    expected = 1 + tf.strings.to_hash_bucket_fast(values, 50).numpy()
    expected[2] = 0
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, expected)
    assert pre.cardinality("user_id") == 51
    assert ids.min() >= 0 and ids.max() < pre.cardinality("user_id")


def test_vocabulary_ids_and_oov(stats):
    pre = FeaturePreprocessor(make_schema(), stats)
    vocab = stats["hour"]["vocabulary"]
    assert vocab == ["7", "8", "9"]
    batch = make_batch(np.random.default_rng(3), 5)
    batch["hour"] = np.array(["7", "9", "8", "11", ""], dtype=object)
    batch["device"] = np.array(["android", "ios", "web", "", "ios"], dtype=object)
    out = pre(batch)
    np.testing.assert_array_equal(out["hour"].numpy(), [1, 3, 2, 0, 0])
    np.testing.assert_array_equal(out["device"].numpy(), [2, 1, 0, 0, 1])
    assert pre.cardinality("hour") == 4
    assert pre.cardinality("device") == 3
    with pytest.raises(ConfigError, match="age"):
        pre.cardinality("age")


def test_multi_categorical_split_truncate_pad(stats):
    pre = FeaturePreprocessor(make_schema(), stats)
    batch = make_batch(np.random.default_rng(4), 4)
    batch["tags"] = np.array(["a|b", "", "||c||", "a|b|c|d|e"], dtype=object)
    ids = pre(batch)["tags"].numpy()
    h = dict(zip("abc", 1 + tf.strings.to_hash_bucket_fast(list("abc"), 20).numpy()))
    assert ids.shape == (4, 3) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[0], [h["a"], h["b"], 0])
    np.testing.assert_array_equal(ids[1], [0, 0, 0])
    np.testing.assert_array_equal(ids[2], [h["c"], 0, 0])
    np.testing.assert_array_equal(ids[3], [h["a"], h["b"], h["c"]])


def test_multi_categorical_auto_vocabulary():
    schema = Schema.from_dict(
        {
            "features": {
                "tags": {
                    "group": "item",
                    "kind": "multi_categorical",
                    "vocabulary": "auto",
                    "max_length": 2,
                },
            },
            "labels": {"target": "y"},
        }
    )
    stats = FeatureStats.fit(schema, [{"tags": np.array(["x|y", "y", "y|z|x|x"], object)}])
    # Only the first max_length tokens of a row count: y x3, x x2, z x1.
    assert stats["tags"]["vocabulary"] == ["y", "x", "z"]
    pre = FeaturePreprocessor(schema, stats)
    out = pre({"tags": tf.constant(["z|q|y", "", "x"])})["tags"].numpy()
    np.testing.assert_array_equal(out, [[3, 0], [0, 0], [2, 0]])


def test_int64_and_string_categoricals_give_the_same_ids():
    def schema_with(dtype, vocabulary):
        spec = {"group": "user", "kind": "categorical", "dtype": dtype}
        spec.update({"vocabulary": vocabulary} if vocabulary else {"buckets": 97})
        return Schema.from_dict({"features": {"c": spec}, "labels": {"target": "y"}})

    ints = np.array([5, 12, 5, -3, 12345678901, 5], np.int64)
    strings = np.array([str(v) for v in ints], object)
    for vocabulary in (None, "auto"):
        s_int, s_str = schema_with("int64", vocabulary), schema_with("string", vocabulary)
        st_int = FeatureStats.fit(s_int, [{"c": ints}])
        st_str = FeatureStats.fit(s_str, [{"c": strings}])
        assert st_int["c"].get("vocabulary") == st_str["c"].get("vocabulary")
        ids_int = FeaturePreprocessor(s_int, st_int)({"c": tf.constant(ints)})["c"].numpy()
        ids_str = FeaturePreprocessor(s_str, st_str)({"c": tf.constant(strings.astype(str))})
        np.testing.assert_array_equal(ids_int, ids_str["c"].numpy())
        assert ids_int.min() > 0


def test_normalisation_equals_numpy(batches, stats):
    pre = FeaturePreprocessor(make_schema(), stats, clip=3.0)
    batch = make_batch(np.random.default_rng(5), 40)
    batch["age"][0] = np.nan
    batch["age"][1] = 1e6  # clipped
    batch["price"][2] = -20.0  # signed log
    out = pre(batch)

    def standard(x, s):
        z = (x - np.asarray(s["mean"])) / np.asarray(s["std"])
        z = np.clip(z, -3.0, 3.0)
        return np.where(np.isfinite(x), z, 0.0)

    age = batch["age"].astype(np.float64)
    np.testing.assert_allclose(out["age"].numpy(), standard(age, stats["age"]), atol=1e-5)
    assert out["age"].numpy()[0] == 0.0 and out["age"].numpy()[1] == 3.0
    price = batch["price"].astype(np.float64)
    logp = np.sign(price) * np.log1p(np.abs(price))
    np.testing.assert_allclose(out["price"].numpy(), standard(logp, stats["price"]), atol=1e-5)
    np.testing.assert_allclose(out["raw"].numpy(), batch["raw"], atol=0)
    vec = batch["vec"].astype(np.float64)
    np.testing.assert_allclose(out["vec"].numpy(), standard(vec, stats["vec"]), atol=1e-5)
    assert out["vec"].dtype == tf.float32 and out["vec"].shape == (40, 3)


def test_empty_vocabulary_and_constant_feature_still_work():
    schema = make_schema()
    batch = make_batch(np.random.default_rng(6), 10)
    batch["hour"] = np.array([""] * 10, dtype=object)
    batch["age"] = np.full(10, 7.0, np.float32)
    stats = FeatureStats.fit(schema, [batch])
    assert stats["hour"]["vocabulary"] == [] and stats["age"]["std"] == 0.0
    pre = FeaturePreprocessor(schema, stats)
    assert pre.cardinality("hour") == 1
    test = make_batch(np.random.default_rng(7), 3)
    test["age"] = np.array([7.0, 8.0, 6.5], np.float32)
    out = pre(test)
    np.testing.assert_array_equal(out["hour"].numpy(), [0, 0, 0])
    np.testing.assert_allclose(out["age"].numpy(), [0.0, 1.0, -0.5])
    # Fitting on nothing gives a working preprocessor too.
    empty = FeatureStats.fit(schema, [])
    assert empty.rows == 0
    out = FeaturePreprocessor(schema, empty)(test)
    assert np.all(np.isfinite(out["vec"].numpy()))


def test_bad_inputs_and_stats_are_clear_errors(stats):
    pre = FeaturePreprocessor(make_schema(), stats)
    batch = make_batch(np.random.default_rng(8), 2)
    del batch["price"]
    with pytest.raises(ValueError, match="price"):
        pre(batch)
    batch = make_batch(np.random.default_rng(8), 2)
    batch["age"] = np.array(["x", "y"], dtype=object)
    with pytest.raises(ValueError, match="age"):
        pre(batch)
    partial = stats.to_dict()
    del partial["features"]["vec"]
    with pytest.raises(ConfigError, match="vec"):
        FeaturePreprocessor(make_schema(), partial)
    with pytest.raises(ConfigError, match="clip"):
        FeaturePreprocessor(make_schema(), stats, clip=0)


def test_in_tf_function_with_raw_signature(stats):
    schema = make_schema()
    pre = FeaturePreprocessor(schema, stats)
    batch = make_batch(np.random.default_rng(9), 6)
    fn = tf.function(lambda feats: pre(feats), input_signature=[schema.raw_signature()])
    graph_out = fn({k: tf.constant(v if v.dtype != object else v.astype(str)) for k, v in batch.items()})
    eager_out = pre(batch)
    for name in schema.feature_names:
        np.testing.assert_allclose(graph_out[name].numpy(), eager_out[name].numpy())


def _functional(schema, pre):
    dtypes = {"string": "string", "int64": "int64", "float32": "float32"}
    inputs = {
        f.name: keras.Input(shape=f.raw_shape, dtype=dtypes[f.raw_dtype], name=f.name)
        for f in schema.features
    }
    return keras.Model(inputs, pre(inputs))


def test_get_config_and_keras_file_round_trip(tmp_path, stats):
    schema = make_schema()
    pre = FeaturePreprocessor(schema, stats, clip=4.0, name="pre")
    config = pre.get_config()
    json.dumps(config)  # plain JSON types only
    assert isinstance(config["schema"], dict) and isinstance(config["stats"], dict)
    clone = FeaturePreprocessor.from_config(config)
    assert clone.get_config() == config
    batch = make_batch(np.random.default_rng(10), 7)
    model = _functional(schema, pre)
    path = os.path.join(tmp_path, "pre.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    a, b, c = model(batch), loaded(batch), clone(batch)
    for name in schema.feature_names:
        np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
        np.testing.assert_array_equal(a[name].numpy(), c[name].numpy())


def test_saved_model_export_with_string_inputs(tmp_path, stats):
    schema = make_schema()
    pre = FeaturePreprocessor(schema, stats)
    archive = keras.export.ExportArchive()
    archive.track(pre)
    archive.add_endpoint(
        "serve", lambda feats: pre(feats)["hour"], input_signature=[schema.raw_signature()]
    )
    archive.write_out(str(tmp_path / "sm"), verbose=False)
    del pre
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    batch = make_batch(np.random.default_rng(11), 4)
    batch["hour"] = np.array(["8", "7", "nope", ""], dtype=object)
    feats = {k: tf.constant(v if v.dtype != object else v.astype(str)) for k, v in batch.items()}
    np.testing.assert_array_equal(loaded.serve(feats).numpy(), [2, 1, 0, 0])


def test_mirrored_strategy(stats, mirrored_strategy):
    strategy = mirrored_strategy
    schema = make_schema()
    with strategy.scope():
        pre = FeaturePreprocessor(schema, stats)
    batch = make_batch(np.random.default_rng(12), 8)
    feats = {k: v if v.dtype != object else v.astype(str) for k, v in batch.items()}
    dataset = tf.data.Dataset.from_tensor_slices(feats).batch(8)
    dist = strategy.experimental_distribute_dataset(dataset)

    @tf.function
    def step(x):
        return strategy.run(lambda f: pre(f)["hour"], args=(x,))

    per_replica = step(next(iter(dist)))
    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(per_replica)])
    np.testing.assert_array_equal(got, pre(batch)["hour"].numpy())


def test_stats_accept_list_columns_and_reject_text_in_numerics():
    schema = make_schema()
    batch = make_batch(np.random.default_rng(13), 6)
    as_lists = dict(batch)
    as_lists["vec"] = np.empty(6, dtype=object)
    for i, row in enumerate(batch["vec"]):
        as_lists["vec"][i] = list(row)
    assert FeatureStats.fit(schema, [as_lists])["vec"] == FeatureStats.fit(schema, [batch])["vec"]
    bad = dict(batch)
    bad["age"] = np.array(["x"] * 6, dtype=object)
    with pytest.raises(DataError, match="age"):
        FeatureStats.fit(schema, [bad])
