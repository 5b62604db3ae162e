"""Regularisation (issue 16): dropout, MLP norms, lookup L2 in the nested layers and
model, regularisation losses in MatTATrainer's gradient, inference-mode online
scores, and the config keys that switch them on (all off by default)."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from matta_rec.errors import ConfigError
from matta_rec.layers import MNestedDense, MNestedFeatureEmbedding
from matta_rec.models import ModelConfig, NestedRelevanceModel
from matta_rec.training.trainer import MatTATrainer

from nested_testlib import make_batch, make_schema, make_stats, tiny_config

REGULARISED = dict(mlp_dropout=0.3, gau_dropout=0.2, cross_dropout=0.1, mlp_norm="batch",
                   embedding_l2=1e-2)


@pytest.fixture(scope="module")
def schema_stats():
    schema = make_schema()
    return schema, make_stats(schema)


def _labels(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"target": rng.random(n).astype(np.float32)}


# ------------------------------------------------------------------ config
def test_config_keys_default_off_validate_and_round_trip():
    cfg = ModelConfig()
    assert (cfg.mlp_dropout, cfg.gau_dropout, cfg.cross_dropout, cfg.mlp_norm,
            cfg.embedding_l2, cfg.share_embeddings) == (0.0, 0.0, 0.0, None, 0.0, True)
    custom = ModelConfig(**REGULARISED)
    assert ModelConfig.from_dict(custom.to_dict()) == custom
    for bad, key in [({"mlp_dropout": 1.0}, "mlp_dropout"), ({"gau_dropout": -0.1}, "gau_dropout"),
                     ({"cross_dropout": "x"}, "cross_dropout"), ({"mlp_norm": "group"}, "mlp_norm"),
                     ({"embedding_l2": -1.0}, "embedding_l2"),
                     ({"share_embeddings": False}, "share_embeddings")]:
        with pytest.raises(ConfigError, match=key):
            ModelConfig(**bad)
    assert not ModelConfig(share_weights=False, share_embeddings=False).share_embeddings


def test_default_model_has_no_training_dependent_layers_or_losses(schema_stats):
    model = NestedRelevanceModel(*schema_stats, tiny_config())
    model(make_batch(8), training=True)
    assert not model.training_dependent and model.losses == []
    assert all(layer.seed_generator is None for layer in model.blocks)
    assert not any("norm" in w.path for w in model.weights)


# ------------------------------------------------------------------ layers
def test_dense_dropout_is_training_only_with_one_mask_per_level():
    layer = MNestedDense(units=(32, 64), dropout=0.5, seed=3)
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    plain = [np.asarray(y) for y in layer(x, training=False)]
    assert np.all(plain[0] == plain[1][:, :32])
    dropped = [np.asarray(y) for y in layer(x, training=True)]
    for p, d in zip(plain, dropped):
        kept = d != 0
        assert 0.3 < kept.mean() < 0.7
        np.testing.assert_allclose(d[kept], p[kept] / 0.5, rtol=1e-5)
    # Each level draws its own mask (the Student's is not the TA's prefix).
    assert np.any((dropped[0] != 0) != (dropped[1][:, :32] != 0))
    config = layer.get_config()
    assert (config["dropout"], config["seed"]) == (0.5, 3)
    assert MNestedDense.from_config(config).dropout == 0.5
    with pytest.raises(ValueError, match="dropout"):
        MNestedDense(units=(2, 4), dropout=1.0)


@pytest.mark.parametrize("method", ["batch", "layer"])
def test_dense_norm_uses_each_levels_own_activations(method):
    rng = np.random.default_rng(1)
    layer = MNestedDense(units=(3, 5), activation="relu", normalization=method)
    xs, xt = rng.normal(size=(16, 4)).astype("float32"), rng.normal(2.0, 3.0, (16, 6)).astype("float32")
    layer.build(((None, 4), (None, 6)))
    gamma = rng.normal(1.0, 0.3, 5).astype("float32")
    beta = rng.normal(0.0, 0.3, 5).astype("float32")
    layer.norm.level_scale_offset(1, 5)[0].assign(gamma)
    layer.norm.level_scale_offset(1, 5)[1].assign(beta)
    outs = layer((xs, xt), training=True)
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    for level, (x, n) in enumerate(((xs, 3), (xt, 5))):
        h = x @ kernel[: x.shape[1], :n] + bias[:n]
        if method == "batch":
            mean, var = h.mean(0), h.var(0)
        else:
            mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        want = np.maximum((h - mean) / np.sqrt(var + 1e-3) * gamma[:n] + beta[:n], 0)
        np.testing.assert_allclose(outs[level], want, rtol=1e-4, atol=1e-5)
        if method == "batch":
            # Every level keeps its own moving statistics, from its own batch.
            moving_mean, _ = layer.norm.level_statistics(level)
            np.testing.assert_allclose(moving_mean.numpy(), 0.01 * mean, rtol=1e-4, atol=1e-6)
    if method == "batch":
        inference = layer((xs, xt), training=False)
        assert not np.allclose(inference[1], outs[1])


def test_lookup_l2_penalises_looked_up_rows_once_per_shared_row():
    features = [{"name": "u", "kind": "categorical", "group": "user", "cardinality": 7},
                {"name": "t", "kind": "multi_categorical", "group": "item", "cardinality": 5}]
    ids = {"u": np.array([1, 1, 4]), "t": np.array([[1, 2, 0], [0, 0, 0], [3, 3, 0]])}
    for share in (True, False):
        layer = MNestedFeatureEmbedding(features, output_dim=(2, 4), share_weights=share,
                                        lookup_l2=0.5, group_embeddings=False)
        layer.build()
        layer(ids, training=False)
        assert layer.losses == []
        layer(ids, training=True)
        assert len(layer.losses) == (1 if share else 2)  # one per table set
        loss = sum(float(v) for v in layer.losses)
        want = 0.0
        for level in ([1] if share else [0, 1]):
            u_table, t_table = (p[0].numpy() for p in layer._params[level].values())
            rows = np.concatenate([u_table[ids["u"]], t_table[ids["t"][ids["t"] > 0]]])
            want += 0.5 * np.sum(rows ** 2) / 3
        np.testing.assert_allclose(float(loss), want, rtol=1e-5)


# ------------------------------------------------------------------ trainer
def _sgd_trainer(model, lr=0.1):
    levels = None if hasattr(model, "levels") else ("student", "ta")
    trainer = MatTATrainer(model, {"distill_weight": 0.5}, levels=levels)
    trainer.compile(optimizer=keras.optimizers.SGD(lr))
    return trainer


def test_lookup_l2_reaches_the_gradient_by_the_analytic_amount(schema_stats):
    """One SGD step with and without ``embedding_l2`` from the same weights:
    the tables differ by ``lr * 2 * l2 * count(row) / B * row``."""
    l2, lr, n = 0.05, 0.1, 16
    batch, labels = make_batch(n, seed=3), _labels(n)
    with_l2 = NestedRelevanceModel(*schema_stats, tiny_config(embedding_l2=l2))
    without = NestedRelevanceModel(*schema_stats, tiny_config())
    without.set_weights(with_l2.get_weights())
    start = with_l2.embedding._params[1]["user_id"][0].numpy()
    for model in (with_l2, without):
        _sgd_trainer(model, lr).train_batch(batch, labels)
    ids = np.asarray(with_l2.preprocessor(batch)["user_id"]).reshape(-1)
    counts = np.bincount(ids, minlength=start.shape[0])[:, None]
    diff = (with_l2.embedding._params[1]["user_id"][0].numpy()
            - without.embedding._params[1]["user_id"][0].numpy())
    np.testing.assert_allclose(diff, -lr * 2 * l2 * counts / n * start, rtol=1e-4, atol=1e-7)
    assert np.abs(diff).max() > 1e-5
    # A table no lookup L2 reaches (dense kernels) moved the same.
    np.testing.assert_allclose(with_l2.blocks[-1].kernel.numpy(),
                               without.blocks[-1].kernel.numpy(), rtol=1e-5, atol=1e-7)


def test_weight_regularizer_losses_enter_the_loss_and_the_update():
    """The issue's case: a layer with an L2 kernel regularizer.  The trainer's
    loss is the label loss plus ``model.losses``, and with zero-weighted
    labels the SGD update is exactly the L2 gradient ``2 * l2 * W``."""
    inp = keras.Input((3,), name="x")
    h = keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.3), name="h")(inp)
    out = {k: keras.layers.Reshape(())(keras.layers.Dense(1, name=f"{k}_head")(h))
           for k in ("student", "ta")}
    model = keras.Model({"x": inp}, out)
    x = {"x": np.random.default_rng(0).normal(size=(8, 3)).astype("float32")}
    y = {"target": np.full(8, 0.5, "float32"), "weight": np.zeros(8, "float32")}
    trainer = MatTATrainer(model, {"distill_weight": 0.0}, levels=("student", "ta"))
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    kernel = model.get_layer("h").kernel.numpy()
    penalty = 0.3 * np.sum(kernel ** 2)
    logs, _ = trainer.train_batch(x, y)
    np.testing.assert_allclose(float(logs["loss"]), penalty, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("h").kernel.numpy(),
                               kernel - 0.1 * 2 * 0.3 * kernel, rtol=1e-5)


def test_online_scores_are_inference_mode_when_the_model_has_dropout(schema_stats):
    batch, labels = make_batch(32, seed=5), _labels(32)
    model = NestedRelevanceModel(*schema_stats, tiny_config(**REGULARISED))
    trainer = _sgd_trainer(model)
    assert trainer.scores_need_inference_pass()
    model(batch, training=False)
    before = {k: np.asarray(v) for k, v in model(batch, training=False).items()}
    _, logits = trainer.train_batch(batch, labels)
    for level in before:
        np.testing.assert_allclose(logits[level], before[level], rtol=1e-6)
    # The default model scores on its one (training) pass: no extra forward.
    plain = _sgd_trainer(NestedRelevanceModel(*schema_stats, tiny_config()))
    assert not plain.scores_need_inference_pass()


def test_foreign_model_with_a_dropout_layer_is_detected():
    inp = keras.Input((3,), name="x")
    h = keras.layers.Dropout(0.5)(keras.layers.Dense(4)(inp))
    out = {k: keras.layers.Reshape(())(keras.layers.Dense(1)(h)) for k in ("student", "ta")}
    trainer = MatTATrainer(keras.Model({"x": inp}, out), levels=("student", "ta"))
    assert trainer.scores_need_inference_pass()


def test_regularised_updates_under_mirrored_strategy_equal_single_device(mirrored_strategy):
    """Regularisation losses are scaled per replica like the labels' loss:
    two replicas give the single-device update (kernel L2 and an activity
    loss added in the forward pass, SGD)."""
    rng = np.random.default_rng(7)
    x = {"x": rng.normal(size=(32, 3)).astype("float32")}
    y = {"target": rng.random(32).astype("float32")}
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    results = []
    for strategy in (tf.distribute.get_strategy(), mirrored_strategy):
        with strategy.scope():
            keras.utils.set_random_seed(11)
            inp = keras.Input((3,), name="x")
            h = keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.2),
                                   activity_regularizer=keras.regularizers.L2(0.1))(inp)
            out = {k: keras.layers.Reshape(())(keras.layers.Dense(1)(h)) for k in ("student", "ta")}
            model = keras.Model({"x": inp}, out)
            trainer = _sgd_trainer(model, lr=0.5)
        trainer.fit(ds, epochs=1, verbose=0)
        results.append([w.numpy() for w in model.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_regularised_model_round_trips_and_extracts(schema_stats, tmp_path, norm):
    """New config keys survive get_config / .keras; extracted sub-models (with
    each level's own batch-norm statistics) equal the nested paths."""
    config = tiny_config(**{**REGULARISED, "mlp_norm": norm})
    model = NestedRelevanceModel(*schema_stats, config)
    batch = make_batch(32, seed=2)
    _sgd_trainer(model).train_batch(batch, _labels(32))
    want = {k: np.asarray(v) for k, v in model(batch).items()}
    assert model.get_config()["config"]["mlp_norm"] == norm
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.config == config
    for level, value in loaded(batch).items():
        np.testing.assert_allclose(value, want[level], rtol=1e-5, atol=1e-6)
    for info in model.list_submodels():
        sub = model.extract(info.spec)
        assert sub.count_params() == info.params, info.name
        if info.spec.kind == "level":
            np.testing.assert_allclose(sub(batch), want[info.name], rtol=1e-5, atol=1e-6)


def test_batch_norm_statistics_are_synchronised_across_replicas(mirrored_strategy):
    """Under MirroredStrategy the batch statistics are those of the global
    batch (replicas see different halves), and every replica's copy of the
    moving statistics holds the same value."""
    with mirrored_strategy.scope():
        layer = MNestedDense(units=(2, 3), normalization="batch")
        layer.build((None, 4))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    x[4:] += 5.0  # the second replica's half has another mean
    ds = mirrored_strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(8))

    @tf.function
    def step(b):
        return mirrored_strategy.run(lambda v: layer(v, training=True)[1], (b,))

    for b in ds:
        step(b)
    h = x @ layer.kernel.numpy() + layer.bias.numpy()
    moving_mean = layer.norm.level_statistics(1)[0]
    copies = [v.numpy() for v in moving_mean.value.values]
    for copy in copies:
        np.testing.assert_allclose(copy, 0.01 * h.mean(0), rtol=1e-4, atol=1e-6)
