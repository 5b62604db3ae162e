"""NestedRelevanceModel: outputs, weight sharing, gradients, configs, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from matta_rec.errors import ConfigError
from matta_rec.models import ModelConfig, NestedRelevanceModel
from matta_rec.utils.config import from_dict
from nested_testlib import make_batch, make_schema, make_stats, tiny_config


@pytest.fixture(scope="module")
def schema_stats():
    schema = make_schema()
    return schema, make_stats(schema)


def _var(model, path_suffix):
    matches = [w for w in model.weights if w.path.endswith(path_suffix)]
    assert len(matches) == 1, [w.path for w in model.weights]
    return matches[0]


def test_default_config_outputs_one_logit_per_level(schema_stats):
    schema, stats = schema_stats
    model = NestedRelevanceModel(schema, stats)
    out = model(make_batch(6))
    assert list(out) == ["student", "ta"] and model.levels == ("student", "ta")
    for logit in out.values():
        assert logit.shape == (6,) and logit.dtype == tf.float32
    assert not np.allclose(out["student"], out["ta"])
    # Preprocessing can run outside the model (e.g. in tf.data).
    batch = make_batch(6)
    processed = model.preprocessor(batch)
    for name, logit in zip(model.levels, model.logits_from_processed(processed)):
        np.testing.assert_allclose(logit, model(batch)[name], rtol=1e-6)
    # Defaults: Student d 8, TA d 16, TA runs one extra GAU block.
    arch = model.architecture
    assert arch["d_model"] == [8, 16]
    assert [(b["kind"], b["min_level"]) for b in arch["blocks"]] == [
        ("gau", 0), ("gau", 1), ("cross", 0), ("mlp", 0), ("mlp", 0)
    ]


def test_student_reads_ta_variables(schema_stats):
    schema, stats = schema_stats
    model = NestedRelevanceModel(schema, stats, tiny_config())
    batch = make_batch(8)
    before = model(batch)
    kernel = _var(model, "mlp_3/kernel")  # TA kernel (4*2*5, 16); Student (4*5, 8)
    m_s, n_s = 4 * 5, 8
    assert tuple(kernel.shape) == (40, 16)
    # Outside the Student's slice: the TA changes, the Student does not.
    outside = np.zeros(kernel.shape, "float32")
    outside[m_s:, :] = 0.5
    kernel.assign(kernel + outside)
    mid = model(batch)
    np.testing.assert_allclose(mid["student"], before["student"], rtol=1e-6)
    assert not np.allclose(mid["ta"], before["ta"])
    # Inside it: the Student changes.
    inside = np.zeros(kernel.shape, "float32")
    inside[:m_s, :n_s] = 0.5
    kernel.assign(kernel + inside)
    assert not np.allclose(model(batch)["student"], mid["student"])


def test_gradients_student_loss_avoids_ta_only_weights(schema_stats):
    schema, stats = schema_stats
    model = NestedRelevanceModel(schema, stats, tiny_config())
    batch = make_batch(16)
    ta_only = [w for w in model.weights if "/gau_1/" in "/" + w.path]
    shared = _var(model, "mlp_3/kernel")
    table = _var(model, "embedding/user_id_table")
    assert ta_only
    variables = model.trainable_variables

    @tf.function
    def grads(level):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(batch)[level]))
        return tape.gradient(loss, variables)

    g_ta = dict(zip([v.path for v in variables], grads("ta")))
    g_s = dict(zip([v.path for v in variables], grads("student")))

    def norm(g):
        return 0.0 if g is None else float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g))))

    # TA loss reaches TA-only blocks and shared weights.
    assert all(norm(g_ta[w.path]) > 0 for w in ta_only)
    assert norm(g_ta[shared.path]) > 0 and norm(g_ta[table.path]) > 0
    # Student loss reaches no TA-only weight, and only its slices of shared ones.
    assert all(norm(g_s[w.path]) == 0 for w in ta_only)
    gk = tf.convert_to_tensor(g_s[shared.path]).numpy()
    assert np.abs(gk[:20, :8]).sum() > 0
    assert np.all(gk[20:] == 0) and np.all(gk[:, 8:] == 0)
    gt = tf.convert_to_tensor(g_s[table.path]).numpy()
    assert np.abs(gt[:, :4]).sum() > 0 and np.all(gt[:, 4:] == 0)


def test_without_sharing_and_embeddings_levels_are_independent(schema_stats):
    schema, stats = schema_stats
    config = tiny_config(share_weights=False, share_embeddings=False)
    model = NestedRelevanceModel(schema, stats, config)
    student = NestedRelevanceModel(schema, stats, config.with_levels(("student",)))
    ta = NestedRelevanceModel(schema, stats, config.with_levels(("ta",)))
    assert model.count_params() == student.count_params() + ta.count_params()
    batch = make_batch(8)
    before = model(batch)
    for w in model.weights:
        if "_level0" not in w.name:  # every TA variable
            w.assign(w + 0.1)
    after = model(batch)
    np.testing.assert_allclose(after["student"], before["student"], rtol=1e-6)
    assert not np.allclose(after["ta"], before["ta"])


def test_unshared_model_keeps_shared_embeddings_by_default(schema_stats):
    """Paper Table 4, "without parameter sharing": the embedding table is
    still shared (and nested) between Student and TA; everything else is not."""
    schema, stats = schema_stats
    config = tiny_config(share_weights=False)
    assert config.share_embeddings and config.architecture()["share_embeddings"]
    model = NestedRelevanceModel(schema, stats, config)
    student = NestedRelevanceModel(schema, stats, config.with_levels(("student",)))
    ta = NestedRelevanceModel(schema, stats, config.with_levels(("ta",)))
    assert model.embedding.share_weights
    assert not any("_level" in w.name for w in model.embedding.weights)
    assert model.count_params() == (student.count_params() + ta.count_params()
                                    - student.embedding.count_params())
    batch = make_batch(8)
    tokens = model.embedding(model.preprocessor(batch))
    np.testing.assert_allclose(tokens[0], np.asarray(tokens[1])[..., :4], rtol=1e-6)
    before = model(batch)
    for w in model.weights:
        if "_level0" not in w.path and not w.path.startswith("embedding/"):
            w.assign(w + 0.1)  # every TA-only variable
    after = model(batch)
    np.testing.assert_allclose(after["student"], before["student"], rtol=1e-6)
    assert not np.allclose(after["ta"], before["ta"])
    for w in model.embedding.weights:
        w.assign(w + 0.1)
    assert not np.allclose(model(batch)["student"], after["student"])
    # Loading a .keras config written before share_embeddings existed keeps
    # its per-level embeddings.
    legacy = model.get_config()
    legacy["config"] = {k: v for k, v in legacy["config"].items() if k != "share_embeddings"}
    assert not NestedRelevanceModel.from_config(legacy).embedding.share_weights


def test_three_levels_each_reads_a_prefix_of_the_next(schema_stats):
    schema, stats = schema_stats
    config = tiny_config(
        levels=("student", "medium", "ta"),
        width_factors=(1.0, 1.5, 2.0),
        d_model_factors=(1.0, 1.5, 2.0),
        extra_gau_blocks=(0, 1, 1),
        extra_cross_layers=(0, 0, 0),
        cross_projection_dim=4,
    )
    model = NestedRelevanceModel(schema, stats, config)
    out = model(make_batch(5))
    assert list(out) == ["student", "medium", "ta"]
    arch = model.architecture
    assert arch["d_model"] == [4, 6, 8]
    assert [b["min_level"] for b in arch["blocks"] if b["kind"] == "gau"] == [0, 1, 2]
    # Three levels share one variable per weight: as many weights as the TA alone.
    ta_alone = NestedRelevanceModel(schema, stats, config.with_levels(("ta",)))
    assert model.count_params() == ta_alone.count_params()
    assert config.with_levels(("student", "ta")).extra_gau_blocks == (0, 2)


def test_model_roundtrips_config_and_keras_file(schema_stats, tmp_path):
    schema, stats = schema_stats
    model = NestedRelevanceModel(schema, stats, tiny_config(cross_projection_dim=3))
    batch = make_batch(7)
    out = model(batch)
    clone = NestedRelevanceModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    for k in out:
        np.testing.assert_allclose(clone(batch)[k], out[k], rtol=1e-6)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, NestedRelevanceModel)
    for k in out:
        np.testing.assert_allclose(loaded(batch)[k], out[k], rtol=1e-6)


@pytest.mark.parametrize("how", ["argument", "global policy"])
def test_model_keeps_its_dtype_policy_through_config_and_keras_file(schema_stats, tmp_path, how):
    """get_config starts from super(): name, trainable and the dtype policy survive."""
    schema, stats = schema_stats
    batch = make_batch(5)
    if how == "argument":
        model = NestedRelevanceModel(schema, stats, tiny_config(), dtype="mixed_bfloat16",
                                     name="bf16_model")
    else:
        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            model = NestedRelevanceModel(schema, stats, tiny_config(), name="bf16_model")
        finally:
            keras.config.set_dtype_policy("float32")
    model.trainable = False
    out = model(batch)
    assert out["ta"].dtype == tf.bfloat16

    def policies(m):
        return {layer.name: layer.dtype_policy.name for layer in m._flatten_layers()}

    # Every layer of the network runs under the model's policy.
    assert set(policies(model).values()) == {"mixed_bfloat16"}
    config = model.get_config()
    assert config["name"] == "bf16_model" and config["trainable"] is False
    assert config["dtype"]["config"]["name"] == "mixed_bfloat16"
    # Rebuilt under the default (float32) global policy, it keeps its own.
    clone = NestedRelevanceModel.from_config(config)
    assert policies(clone) == policies(model)
    assert clone.name == "bf16_model" and clone.trainable is False
    clone.set_weights(model.get_weights())
    for k in out:
        np.testing.assert_array_equal(clone(batch)[k], out[k])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert policies(loaded) == policies(model) and loaded.trainable is False
    for k in out:
        np.testing.assert_array_equal(loaded(batch)[k], out[k])


@pytest.mark.slow
def test_model_trains_with_keras_fit(schema_stats):
    schema, stats = schema_stats
    model = NestedRelevanceModel(schema, stats, tiny_config())
    x = make_batch(256, seed=3)
    y = (x["age"] > 40).astype("float32")
    model.compile(
        jit_compile=False,
        optimizer=keras.optimizers.Adam(0.02),
        loss={"student": keras.losses.BinaryCrossentropy(from_logits=True),
              "ta": keras.losses.BinaryCrossentropy(from_logits=True)},
    )
    ds = tf.data.Dataset.from_tensor_slices((x, {"student": y, "ta": y})).batch(32)
    history = model.fit(ds, epochs=3, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] * 0.9


def test_config_validation_and_from_dict():
    config = from_dict(ModelConfig, {"d_model": 6, "mlp_units": [16], "width_factors": [1, 3]})
    assert config.mlp_units == (16,) and config.width_factors == (1.0, 3.0)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown option"):
        from_dict(ModelConfig, {"d_modle": 6})
    with pytest.raises(ConfigError, match="one value per level"):
        ModelConfig(width_factors=(1.0,))
    with pytest.raises(ConfigError, match="non-decreasing"):
        ModelConfig(d_model_factors=(2.0, 1.0))
    with pytest.raises(ConfigError, match="first must be 'student'"):
        ModelConfig(levels=("small", "ta"))
    with pytest.raises(ConfigError, match="subset"):
        ModelConfig().with_levels(("medium",))
    student = ModelConfig().with_levels(("student",))
    assert student.levels == ("student",) and student.extra_gau_blocks == (0,)
    assert ModelConfig().with_levels(("ta",)).architecture()["d_model"] == [16]



def test_nested_model_writes_a_plain_savedmodel(tmp_path):
    """tf.saved_model.save walks the model's object graph: every tracked
    container must have string keys (per-level indexes are kept untracked),
    and the restored SavedModel computes the same logits."""
    import tensorflow as tf

    schema = make_schema()
    model = NestedRelevanceModel(schema, make_stats(schema), tiny_config())
    batch = make_batch(16, seed=3)
    expected = model(batch)
    serve = tf.function(lambda features: model(features),
                        input_signature=[schema.raw_signature()])
    tf.saved_model.save(model, str(tmp_path / "sm"),
                        signatures={"serving_default": serve.get_concrete_function()})
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in batch.items()})
    for level in model.levels:  # graph vs eager: a few float32 ulps apart
        np.testing.assert_allclose(got[level].numpy(), expected[level].numpy(), rtol=2e-6,
                                   atol=1e-6)
