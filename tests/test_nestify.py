"""nestify: a user's Keras model M-nested into a TA, trained, extracted back."""

import os
import sys
import types

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from nestify_testlib import functional_ranker, sequential_ranker  # noqa: E402

import matta_rec  # noqa: E402
from matta_rec.errors import ConfigError  # noqa: E402
from matta_rec.layers import MNestedBatchNormalization, MNestedDense, MNestedEmbedding  # noqa: E402
from matta_rec.layers.variable_roles import is_embedding_table  # noqa: E402
from matta_rec.models.nestify import NestifiedModel, load_source  # noqa: E402
from matta_rec.training.config import LossConfig  # noqa: E402
from matta_rec.training.trainer import MatTATrainer  # noqa: E402

CARDS = {"user_id": 30, "item_id": 40}


def seq_batch(n=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 6)).astype("float32")


def fn_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"user_id": rng.integers(0, 30, n).astype("int32"),
            "item_id": rng.integers(0, 40, n).astype("int32")}


def sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, np.float64).reshape(-1)))


def trained(model, x, seed=1):
    """``model`` with weights moved off their initial values (a 'production' model)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(variable.numpy() + rng.normal(scale=0.3, size=variable.shape))
    model(x)
    return model


CASES = {
    "sequential": (sequential_ranker, seq_batch),
    "functional": (lambda: functional_ranker(CARDS), fn_batch),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_factors_one_both_heads_equal_the_original(case):
    build, batch = CASES[case]
    x = batch()
    user = trained(build(), x)
    nested = matta_rec.nestify(user, width_factor=1.0, d_model_factor=1.0)
    out = nested(x)
    assert list(out) == ["student", "ta"]
    expected = user(x).numpy().reshape(-1)
    for level in ("student", "ta"):
        # The heads are logits; the user's model ends with its sigmoid.
        np.testing.assert_allclose(sigmoid(out[level]), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_extracted_student_is_the_original_architecture(case):
    build, batch = CASES[case]
    x = batch()
    user = trained(build(), x)
    nested = matta_rec.nestify(user, width_factor=2.0, d_model_factor=2.0, extra_layers=1)
    # Warm start: before MatTA trains, the Student is the user's model.
    np.testing.assert_allclose(sigmoid(nested(x)["student"]), user(x).numpy().reshape(-1),
                               atol=1e-6, rtol=0)
    # Train a step so the Student slice differs from the user's weights.
    trainer = MatTATrainer(nested, LossConfig(), levels=nested.levels)
    trainer.compile(optimizer=keras.optimizers.Adam(0.05))
    trainer.train_batch(x, {"target": np.full(batch_len(x), 0.3, "float32")})
    student = nested.extract("student")
    assert student.get_config() == user.get_config()
    assert [w.shape for w in student.weights] == [w.shape for w in user.weights]
    np.testing.assert_allclose(student(x).numpy().reshape(-1), sigmoid(nested(x)["student"]),
                               atol=1e-6, rtol=0)
    as_logits = nested.extract("student", logits=True)
    np.testing.assert_allclose(as_logits(x).numpy().reshape(-1), nested(x)["student"].numpy(),
                               atol=1e-6, rtol=0)
    ta = nested.extract("ta")
    assert any(layer.name.endswith("_ta_extra_0") for layer in ta.layers)
    np.testing.assert_allclose(ta(x).numpy().reshape(-1), sigmoid(nested(x)["ta"]), atol=1e-6,
                               rtol=0)
    assert ta.count_params() > student.count_params()


def batch_len(x):
    return len(x["user_id"]) if isinstance(x, dict) else len(x)


def test_twins_and_widths_of_the_functional_model():
    nested = matta_rec.nestify(functional_ranker(CARDS), width_factor=2.0, d_model_factor=1.5)
    emb = nested.twin("user_id_embedding")
    assert isinstance(emb, MNestedEmbedding) and emb.output_dim == (4, 6)
    assert is_embedding_table(emb.embeddings)
    assert nested.twin("mlp_1").units == (16, 32)
    assert nested.twin("cross").projection_dim == (4, 8)
    head = nested.twin("logit")
    assert isinstance(head, MNestedDense) and head.units == (1, 1)  # the output keeps its width
    assert nested.final_sigmoid == ("activation", "probability")
    only = matta_rec.nestify(functional_ranker(CARDS), layers=["mlp_1"])
    assert only.twin("mlp_1").units == (16, 32) and only.twin("mlp_2").units == (8, 8)
    assert only.twin("user_id_embedding").output_dim == (4, 4)


def test_batch_norm_keeps_statistics_per_level():
    nested = matta_rec.nestify(sequential_ranker(), width_factor=2.0)
    bn = nested.twin("bn")
    assert isinstance(bn, MNestedBatchNormalization)
    before = [v.numpy().copy() for v in bn.weights if not v.trainable]
    nested(seq_batch(16), training=True)
    after = [v.numpy() for v in bn.weights if not v.trainable]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))
    assert sorted(v.shape[0] for v in bn.weights if "moving_mean" in v.name) == [8, 16]


def test_unnestable_layers_are_refused_by_name():
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(6, name="widened")(inp)
    h = keras.layers.Reshape((2, 3), name="fixed_reshape")(h)
    out = keras.layers.Dense(1, name="out")(keras.layers.Flatten(name="flat")(h))
    with pytest.raises(ConfigError, match="fixed_reshape"):
        matta_rec.nestify(keras.Model(inp, out))
    # Keeping the layer that feeds it at its width makes it nestable.
    matta_rec.nestify(keras.Model(inp, out), layers=[])

    conv_in = keras.Input((5, 3), name="seq")
    c = keras.layers.Dense(4, name="proj")(conv_in)
    c = keras.layers.Conv1D(2, 2, name="conv")(c)
    c_out = keras.layers.Dense(1, name="out")(keras.layers.Flatten()(c))
    with pytest.raises(ConfigError, match="conv"):
        matta_rec.nestify(keras.Model(conv_in, c_out))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ConfigError, match="functional"):
        matta_rec.nestify(Sub())
    with pytest.raises(ConfigError, match="width_factor"):
        matta_rec.nestify(sequential_ranker(), width_factor=(2.0, 1.0))


def test_keras_file_round_trip(tmp_path):
    x = fn_batch()
    nested = matta_rec.nestify(functional_ranker(CARDS), width_factor=2.0, extra_layers=1)
    path = str(tmp_path / "nested.keras")
    nested.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, NestifiedModel) and loaded.levels == ("student", "ta")
    for level, value in nested(x).items():
        np.testing.assert_array_equal(loaded(x)[level].numpy(), value.numpy())
    assert loaded.extract("student").get_config() == functional_ranker(CARDS).get_config()


def test_load_source_keras_file_and_factory(tmp_path):
    user = trained(sequential_ranker(), seq_batch())
    path = str(tmp_path / "prod.keras")
    user.save(path)
    loaded = load_source(path)
    np.testing.assert_allclose(loaded(seq_batch()).numpy(), user(seq_batch()).numpy())
    assert load_source("nestify_testlib:sequential_ranker").name == "user_sequential"
    with pytest.raises(ConfigError, match="model.source"):
        load_source(str(tmp_path / "missing.keras"))
    with pytest.raises(ConfigError, match="model.source"):
        load_source("no_such_module_xyz:f")


def test_train_run_with_a_user_model_source(tmp_path):
    """train_run with model.source in the config (as ``--set model.source=...``);
    the run exports with ``matta-rec export``'s code path and serves the
    nestified Student's logit."""
    import tensorflow as tf
    from train_testlib import tiny_config, write_logs

    from matta_rec.export import export_run
    from matta_rec.training import train_run
    from matta_rec.training.run_dir import load_run

    schema = write_logs(str(tmp_path / "logs"), shards=2, rows=128)
    config = tiny_config(**{"data.holdout_shards": 1, "model.source": "nestify_testlib:user_ranker",
                            "model.extra_layers": 1})
    metrics = train_run(config, str(tmp_path / "logs"), schema, str(tmp_path / "run"))
    assert set(metrics["holdout"]["event"]) == {"student", "ta"}  # both levels scored
    run = load_run(str(tmp_path / "run"))
    assert isinstance(run.model, NestifiedModel)
    rows = {"user_id": np.array(["u1", "u7"], dtype=object),
            "item_id": np.array(["i3", "i9"], dtype=object),
            "hour": np.array(["h00", "h01"], dtype=object),
            "x": np.array([0.1, -0.4], np.float32), "row_id": np.array([0.0, 1.0], np.float32)}
    serving = run.model.serving_model("student")
    np.testing.assert_allclose(serving(rows).numpy(), run.model(rows)["student"].numpy(),
                               atol=1e-6)
    manifest = export_run(str(tmp_path / "run"), str(tmp_path / "exports"), sizes="student,ta",
                          latency_repeats=0)
    assert [e["name"] for e in manifest["sizes"]] == ["student", "ta"]
    served = tf.saved_model.load(str(tmp_path / "exports" / "student" / "1"))
    logit = served.signatures["serving_default"](**{k: tf.constant(v) for k, v in rows.items()})
    np.testing.assert_allclose(logit["logit"].numpy(), serving(rows).numpy(), atol=1e-5)


@pytest.mark.parametrize("projection_dim", [None, 3])
def test_keras_rs_feature_cross_is_nested_and_extracted(projection_dim, tmp_path):
    """A DCN-v2 written with keras_rs: its FeatureCross layers get MNestedCross
    twins (wider inputs, and wider projections), the Student starts as the
    user's model and is extracted back into keras_rs layers."""
    import keras_rs

    from matta_rec.layers import MNestedCross
    from nestify_testlib import keras_rs_dcn

    x = fn_batch()
    user = trained(keras_rs_dcn(CARDS, projection_dim=projection_dim), x)
    same = matta_rec.nestify(user, width_factor=1.0, d_model_factor=1.0)
    for level in ("student", "ta"):
        np.testing.assert_allclose(sigmoid(same(x)[level]), user(x).numpy().reshape(-1),
                                   atol=1e-6, rtol=0)
    nested = matta_rec.nestify(user, width_factor=2.0, d_model_factor=2.0)
    cross = nested.twin("cross_2")
    assert isinstance(cross, MNestedCross)
    assert cross.projection_dim == ((None, None) if projection_dim is None else (3, 6))
    np.testing.assert_allclose(sigmoid(nested(x)["student"]), user(x).numpy().reshape(-1),
                               atol=1e-6, rtol=0)
    trainer = MatTATrainer(nested, LossConfig(), levels=nested.levels)
    trainer.compile(optimizer=keras.optimizers.Adam(0.05))
    trainer.train_batch(x, {"target": np.full(batch_len(x), 0.3, "float32")})
    for level in ("student", "ta"):
        plain = nested.extract(level)
        assert isinstance(plain.get_layer("cross_2"), keras_rs.layers.FeatureCross)
        np.testing.assert_allclose(plain(x).numpy().reshape(-1), sigmoid(nested(x)[level]),
                                   atol=1e-6, rtol=0)
    student = nested.extract("student")
    assert student.get_config() == user.get_config()
    assert nested.extract("ta").count_params() > student.count_params()
    path = str(tmp_path / "nested.keras")
    nested.save(path)
    loaded = keras.saving.load_model(path)
    for level, value in nested(x).items():
        np.testing.assert_array_equal(loaded(x)[level].numpy(), value.numpy())
