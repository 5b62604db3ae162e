"""M-nested layers: Student weights are slices of the TA's, references, serialisation."""

import keras
import keras_rs
import numpy as np
import pytest
import tensorflow as tf

from matta_rec.layers import MNestedCross, MNestedDense, MNestedFeatureEmbedding, MNestedGAU
from nested_testlib import np_gau

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


# ----------------------------------------------------------------- Dense
def test_dense_student_is_top_left_slice_of_ta_variables():
    layer = MNestedDense(units=(3, 6), activation="relu", bias_initializer="random_normal")
    xs, xt = rand(5, 4), rand(5, 8)
    ys, yt = layer((xs, xt))
    assert layer.kernel.shape == (8, 6) and layer.bias.shape == (6,)
    assert len(layer.weights) == 2  # one kernel, one bias: no Student copy
    k, b = layer.kernel.numpy(), layer.bias.numpy()
    np.testing.assert_allclose(ys, np.maximum(xs @ k[:4, :3] + b[:3], 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(yt, np.maximum(xt @ k + b, 0), rtol=1e-5, atol=1e-6)

    # Changing the TA kernel inside the Student's slice changes the Student.
    before = layer((xs, xt))[0].numpy()
    layer.kernel.assign(layer.kernel + np.pad(np.ones((4, 3)), ((0, 4), (0, 3))).astype("f"))
    after_in = layer((xs, xt))[0].numpy()
    assert not np.allclose(before, after_in)
    # ... and outside it does not.
    layer.kernel.assign(layer.kernel + np.pad(np.ones((4, 3)), ((4, 0), (3, 0))).astype("f"))
    np.testing.assert_allclose(layer((xs, xt))[0], after_in)


def test_dense_one_input_is_read_by_every_level_in_one_matmul():
    layer = MNestedDense(units=(2, 3, 5), activation="tanh")
    x = rand(4, 6)
    y0, y1, y2 = layer(x)
    np.testing.assert_allclose(y0, y2[:, :2])
    np.testing.assert_allclose(y1, y2[:, :3])
    # Same as feeding the tensor to every level explicitly.
    z0, z1, z2 = layer((x, x, x))
    for a, b in ((y0, z0), (y1, z1), (y2, z2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dense_three_levels_rank3_and_skipped_level():
    layer = MNestedDense(units=(2, 4, 6))
    x0, x1, x2 = rand(2, 3, 2), rand(2, 3, 5), rand(2, 3, 7)
    outs = layer((x0, x1, x2))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 2), (2, 3, 4), (2, 3, 6)]
    k = layer.kernel.numpy()
    np.testing.assert_allclose(outs[1], x1 @ k[:5, :4], rtol=1e-5, atol=1e-5)
    skipped = layer((None, x1, x2))
    assert skipped[0] is None
    np.testing.assert_allclose(skipped[2], outs[2])


def test_dense_without_sharing_has_independent_variables():
    layer = MNestedDense(units=(3, 6), share_weights=False)
    xs, xt = rand(2, 4), rand(2, 8)
    ys, _ = layer((xs, xt))
    shapes = sorted(tuple(w.shape) for w in layer.weights)
    assert shapes == [(3,), (4, 3), (6,), (8, 6)]
    layer.kernel.assign(layer.kernel + 1.0)  # the TA's kernel
    np.testing.assert_allclose(layer((xs, xt))[0], ys)


def test_dense_student_gradient_stays_in_its_slice():
    layer = MNestedDense(units=(3, 6))
    xs, xt = rand(5, 4), rand(5, 8)
    layer((xs, xt))
    with tf.GradientTape() as tape:
        ys, _ = layer((xs, xt))
        loss = tf.reduce_sum(ys**2)
    gk, gb = tape.gradient(loss, [layer.kernel, layer.bias])
    gk, gb = tf.convert_to_tensor(gk).numpy(), tf.convert_to_tensor(gb).numpy()
    assert np.abs(gk[:4, :3]).sum() > 0 and np.abs(gb[:3]).sum() > 0
    assert np.all(gk[4:, :] == 0) and np.all(gk[:, 3:] == 0) and np.all(gb[3:] == 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": (8, 4)}, "non-decreasing"),
        ({"units": (0, 4)}, "positive integers"),
        ({"units": (2, 5, 4)}, "non-decreasing"),
        ({"units": ()}, "one size per level"),
        ({"units": "16"}, "one size per level"),
        ({"units": None}, r"units=\(16, 32\)"),
        ({"units": (2, 4), "use_bias": "yes"}, "use_bias"),
    ],
)
def test_dense_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MNestedDense(**kwargs)


def test_dense_rejects_wrong_input_count_and_decreasing_input_widths():
    with pytest.raises(ValueError, match="tuple of 2"):
        MNestedDense(units=(2, 4))((rand(1, 3), rand(1, 3), rand(1, 3)))
    with pytest.raises(ValueError, match="non-decreasing"):
        MNestedDense(units=(2, 4))((rand(1, 5), rand(1, 3)))


def test_one_level_dense_is_a_plain_dense():
    layer = MNestedDense(units=3, activation="relu")
    (y,) = layer(rand(2, 4))
    assert layer.num_levels == 1 and layer.kernel.shape == (4, 3) and y.shape == (2, 3)


# ------------------------------------------------------------------- GAU
def test_gau_student_path_matches_numpy_reference_on_ta_slices():
    gau = MNestedGAU(units=(8, 16), shared_dim=(4, 6))
    tokens = rand(3, 5, 8)
    ys, yt = gau((tokens[..., :4], tokens))
    assert ys.shape == (3, 5, 4) and yt.shape == (3, 5, 8)
    # Randomise the non-trivial parameters so every slice matters.
    rng = np.random.default_rng(3)
    for w in gau.weights:
        w.assign(rng.normal(scale=0.3, size=w.shape).astype("float32"))
    # Positive query/key offsets: the squared-ReLU attention is not all zero.
    gau.beta.assign(np.abs(gau.beta.numpy()) + 1.0)
    ys, yt = gau((tokens[..., :4], tokens))
    np.testing.assert_allclose(ys, np_gau(tokens[..., :4], gau, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(yt, np_gau(tokens, gau, 1), rtol=1e-4, atol=1e-5)
    # The Student reads TA variables: bump one inside its slice.
    bump = np.pad(np.ones((4, 8)), ((0, 4), (0, 8))).astype("float32")
    gau.u_proj.kernel.assign(gau.u_proj.kernel + bump)
    assert not np.allclose(gau((tokens[..., :4], tokens))[0], ys)


def test_gau_one_input_equals_tuple_of_the_same_input():
    gau = MNestedGAU(units=(6, 12), shared_dim=(3, 6))
    x = rand(2, 4, 5)
    a = gau(x)
    b = gau((x, x))
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_gau_gradient_of_student_stays_in_student_slices():
    gau = MNestedGAU(units=(8, 16), shared_dim=(4, 6))
    tokens = rand(2, 5, 8)
    with tf.GradientTape() as tape:
        ys, _ = gau((tokens[..., :4], tokens))
        loss = tf.reduce_sum(ys**2)
    grads = dict(zip([w.path for w in gau.weights], tape.gradient(loss, gau.weights)))
    gu = tf.convert_to_tensor(grads[gau.u_proj.kernel.path]).numpy()
    assert np.abs(gu[:4, :8]).sum() > 0
    assert np.all(gu[4:] == 0) and np.all(gu[:, 8:] == 0)
    go = tf.convert_to_tensor(grads[gau.o_proj.kernel.path]).numpy()
    assert np.all(go[8:] == 0) and np.all(go[:, 4:] == 0)


def test_gau_validates_shared_dims():
    with pytest.raises(ValueError, match="one entry per level"):
        MNestedGAU(units=(8, 16), shared_dim=4)
    with pytest.raises(ValueError, match="non-decreasing"):
        MNestedGAU(units=(8, 16), shared_dim=(8, 4))
    with pytest.raises(ValueError, match="shared_dim"):
        MNestedGAU(units=(8, 16))


# ----------------------------------------------------------------- cross
@pytest.mark.parametrize("projection", [None, (2, 4)])
def test_cross_levels_match_numpy_and_keras_rs_feature_cross(projection):
    if projection is None:
        layer = MNestedCross((None, None), bias_initializer="random_normal", diag_scale=0.5)
    else:
        layer = MNestedCross(projection, bias_initializer="random_normal", diag_scale=0.5)
    x0, x = rand(3, 12), rand(3, 12)
    ys, yt = layer((x0[:, :6], x0), (x[:, :6], x))
    w = layer.dense.kernel.numpy()
    b = layer.dense.bias.numpy()
    if projection is None:
        ws = w[:6, :6]
    else:
        u = layer.down_proj.kernel.numpy()
        ws = u[:6, :2] @ w[:2, :6]
    ref = x0[:, :6] * (x[:, :6] @ ws + b[:6] + 0.5 * x[:, :6]) + x[:, :6]
    np.testing.assert_allclose(ys, ref, rtol=1e-4, atol=1e-5)
    # The TA path is exactly keras_rs FeatureCross with the TA weights.
    ref_layer = keras_rs.layers.FeatureCross(
        projection_dim=None if projection is None else projection[1], diag_scale=0.5
    )
    ref_layer(x0, x)
    if projection is None:
        ref_layer.set_weights([w, b])
    else:
        ref_layer.set_weights([layer.down_proj.kernel.numpy(), w, b])
    np.testing.assert_allclose(yt, ref_layer(x0, x), rtol=1e-4, atol=1e-5)


def test_cross_validates_arguments():
    with pytest.raises(ValueError, match="diag_scale"):
        MNestedCross(diag_scale=-1.0)
    with pytest.raises(ValueError, match="all None"):
        MNestedCross(projection_dim=(4, None))
    # A full-rank layer of several levels: one None per level.
    assert MNestedCross(projection_dim=(None, None, None)).num_levels == 3
    assert MNestedCross().num_levels == 1  # a plain FeatureCross


# ------------------------------------------------------------- embedding
FEATURES = [
    {"name": "user_id", "kind": "categorical", "group": "user", "cardinality": 11},
    {"name": "age", "kind": "numeric", "group": "user"},
    {"name": "tags", "kind": "multi_categorical", "group": "item", "cardinality": 7},
    {"name": "vec", "kind": "dense", "group": "context", "dim": 3},
]


def embedding_inputs():
    return {
        "user_id": np.array([3, 0], dtype="int32"),
        "age": np.array([0.5, -1.0], dtype="float32"),
        "tags": np.array([[1, 2, 0], [0, 0, 0]], dtype="int32"),
        "vec": rand(2, 3),
    }


def test_embedding_tokens_are_prefixes_and_match_numpy():
    emb = MNestedFeatureEmbedding(FEATURES, output_dim=(3, 6))
    inputs = embedding_inputs()
    ts, tt = emb(inputs)
    assert ts.shape == (2, 4, 3) and tt.shape == (2, 4, 6)
    np.testing.assert_allclose(ts, tt[..., :3])
    w = {v.name: v.numpy() for v in emb.weights}
    group = w["group_embeddings"]
    np.testing.assert_allclose(tt[:, 0], w["user_id_table"][[3, 0]] + group[0], atol=1e-6)
    np.testing.assert_allclose(
        tt[:, 1], np.array([[0.5], [-1.0]]) * w["age_scale"] + w["age_offset"] + group[0],
        atol=1e-6,
    )
    tags = w["tags_table"]
    np.testing.assert_allclose(tt[0, 2], (tags[1] + tags[2]) / 2 + group[2], atol=1e-6)
    np.testing.assert_allclose(tt[1, 2], group[2], atol=1e-6)  # all padding: zero token
    np.testing.assert_allclose(
        tt[:, 3], inputs["vec"] @ w["vec_kernel"] + w["vec_bias"] + group[1], atol=1e-5
    )


def test_embedding_validates_features():
    with pytest.raises(ValueError, match="cardinality"):
        MNestedFeatureEmbedding([{"name": "a", "kind": "categorical", "group": "user"}], (2, 4))
    with pytest.raises(ValueError, match="kind must be one of"):
        MNestedFeatureEmbedding([{"name": "a", "kind": "text", "group": "user"}], (2, 4))
    with pytest.raises(ValueError, match="unique"):
        MNestedFeatureEmbedding([FEATURES[1], FEATURES[1]], (2, 4))


# --------------------------------------------------------- serialisation
def _roundtrip(layer, inputs, call, tmp_path):
    """get_config/from_config and a .keras file of a functional model around ``layer``."""
    outputs = call(layer, inputs)
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    call(clone, inputs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(outputs, call(clone, inputs)):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    if isinstance(inputs, dict):
        sym = {k: keras.Input(v.shape[1:], dtype=str(v.dtype), name=k) for k, v in inputs.items()}
    else:
        sym = tuple(keras.Input(v.shape[1:]) for v in inputs)
    model = keras.Model(sym, list(call(layer, sym)))
    path = str(tmp_path / "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    feed = inputs if isinstance(inputs, dict) else list(inputs)
    for a, b in zip(model(feed), loaded(feed)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # The loaded layer is the same class, with the same config.
    inner = [l for l in loaded.layers if isinstance(l, layer.__class__)][0]
    assert inner.get_config()["name"] == layer.name


def test_layers_roundtrip_config_and_keras_file(tmp_path):
    x4, x8 = rand(2, 5, 4), rand(2, 5, 8)
    _roundtrip(
        MNestedDense(units=(3, 4, 6), activation="relu", share_weights=False),
        (x4[:, 0], x8[:, 0, :6], x8[:, 0]),
        lambda l, x: l(tuple(x)),
        tmp_path,
    )
    _roundtrip(
        MNestedGAU(units=(8, 16), shared_dim=(4, 6)),
        (x4, x8),
        lambda l, x: l(tuple(x)),
        tmp_path,
    )
    _roundtrip(
        MNestedCross(projection_dim=(2, 4), diag_scale=0.1),
        (x4[:, 0], x8[:, 0]),
        lambda l, x: l(tuple(x)),
        tmp_path,
    )
    _roundtrip(
        MNestedFeatureEmbedding(FEATURES, output_dim=(3, 6), share_weights=False),
        embedding_inputs(),
        lambda l, x: l(x),
        tmp_path,
    )


# --------------------------------------------- deprecated 0.1 keywords
LEGACY = [
    (
        MNestedDense,
        {"student_units": 3, "ta_units": 6, "intermediate_units": [4], "activation": "relu"},
        {"units": [3, 4, 6], "activation": "relu"},
    ),
    (MNestedDense, {"student_units": 3}, {"units": [3]}),
    (
        MNestedGAU,
        {"student_units": 8, "ta_units": 16, "student_shared_dim": 4, "ta_shared_dim": 6},
        {"units": [8, 16], "shared_dim": [4, 6]},
    ),
    # 0.1 defaulted the Student's shared dim to 8.
    (MNestedGAU, {"student_units": 8}, {"units": [8], "shared_dim": [8]}),
    (
        MNestedCross,
        {"student_projection_dim": 2, "ta_projection_dim": 4, "diag_scale": 0.1},
        {"projection_dim": [2, 4], "diag_scale": 0.1},
    ),
    # 0.1's MNestedCross() was two full-rank levels.
    (MNestedCross, {"num_levels": 2}, {"projection_dim": [None, None]}),
    (MNestedCross, {"num_levels": 1, "ta_projection_dim": 4}, {"projection_dim": [None]}),
    (
        MNestedFeatureEmbedding,
        {"features": FEATURES, "student_dim": 3, "ta_dim": 6, "intermediate_dims": [4]},
        {"features": FEATURES, "output_dim": [3, 4, 6]},
    ),
]


@pytest.mark.parametrize("cls, old, new", LEGACY)
def test_deprecated_keywords_warn_and_build_the_tuple_form(cls, old, new):
    with pytest.warns(DeprecationWarning, match="deprecated") as record:
        layer = cls(**old)
    # The warning points at the caller, not at matta_rec.
    assert record[0].filename == __file__
    expected = cls(**new).get_config()
    expected.pop("name")
    config = layer.get_config()
    config.pop("name")
    assert config == expected
    assert not any(key.startswith(("student_", "ta_", "intermediate_")) for key in config)


def test_deprecated_keywords_reject_a_mix_with_the_tuple_form():
    with pytest.raises(ValueError, match="not both"):
        MNestedDense(units=(2, 4), ta_units=4)
    with pytest.raises(ValueError, match="not both"):
        MNestedGAU(units=(8, 16), shared_dim=16, student_shared_dim=4, ta_shared_dim=6)
    with pytest.raises(ValueError, match="num_levels"):
        MNestedCross(num_levels=0)
    # The 0.1 positional form fails loudly instead of binding the TA width to
    # the next argument (activation / diag_scale / group_embeddings).
    with pytest.raises(TypeError):
        MNestedDense(3, 6)
    with pytest.raises(TypeError):
        MNestedCross(2, 4)
    with pytest.raises(TypeError):
        MNestedFeatureEmbedding(FEATURES, 3, 6)


def test_keras_file_saved_with_deprecated_keywords_loads(tmp_path):
    """A .keras file whose layer configs use the 0.1 keywords loads, same outputs."""
    import json
    import zipfile

    x4, x8 = rand(2, 4), rand(2, 8)
    inputs = (keras.Input((4,)), keras.Input((8,)))
    dense = MNestedDense(units=(3, 6), activation="relu", name="dense")
    cross = MNestedCross(projection_dim=(2, 4), diag_scale=0.1, name="cross")
    model = keras.Model(inputs, list(dense(cross(inputs))))
    path = str(tmp_path / "new.keras")
    model.save(path)

    old_path = str(tmp_path / "old.keras")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old_path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    inner = layer["config"]
                    if layer["class_name"] == "MNestedDense":
                        units = inner.pop("units")
                        inner.update(student_units=units[0], ta_units=units[-1],
                                     intermediate_units=units[1:-1])
                    elif layer["class_name"] == "MNestedCross":
                        dims = inner.pop("projection_dim")
                        inner.update(student_projection_dim=dims[0], ta_projection_dim=dims[-1],
                                     intermediate_projection_dims=dims[1:-1],
                                     num_levels=len(dims))
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.warns(DeprecationWarning):
        loaded = keras.saving.load_model(old_path)
    assert loaded.get_layer("dense").units == (3, 6)
    assert loaded.get_layer("cross").get_config()["projection_dim"] == [2, 4]
    for a, b in zip(model([x4, x8]), loaded([x4, x8])):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_each_level_of_a_shared_kernel_starts_at_its_own_initializer_scale():
    """init_per_level: the Student's block is a Glorot draw at the Student's
    shape (variance 2 / (fan_in + fan_out)), not at the TA's."""
    keras.utils.set_random_seed(0)
    layer = MNestedDense(units=(64, 256))
    layer.build((None, 512))
    kernel = layer.kernel.numpy()
    student = kernel[:512, :64]
    ta_only = kernel[:, 64:]
    np.testing.assert_allclose(student.var(), 2.0 / (512 + 64), rtol=0.05)
    np.testing.assert_allclose(ta_only.var(), 2.0 / (512 + 256), rtol=0.05)
    keras.utils.set_random_seed(0)
    flat = MNestedDense(units=(64, 256), init_per_level=False)
    flat.build((None, 512))
    np.testing.assert_allclose(flat.kernel.numpy()[:, :64].var(), 2.0 / (512 + 256), rtol=0.05)
    assert MNestedDense.from_config(flat.get_config()).init_per_level is False
    with pytest.raises(ValueError, match="init_per_level"):
        MNestedDense(units=(4, 8), init_per_level="yes")


def test_per_level_blocks_are_independent_draws():
    """The Student's block is not the TA draw's values again (a Keras
    initializer instance repeats its random stream on every call: the
    Student's row 1 would then be a multiple of the TA's row 0, columns
    32..63)."""
    for initializer in ("glorot_uniform", keras.initializers.GlorotUniform(seed=3)):
        layer = MNestedDense(units=(32, 128), kernel_initializer=initializer)
        layer.build((None, 64))
        kernel = layer.kernel.numpy()
        correlation = np.corrcoef(kernel[1, :32], kernel[0, 32:64])[0, 1]
        assert abs(correlation) < 0.9, correlation


def test_matta_step_slices_levels_with_slice_ops_whose_gradient_is_a_pad():
    """A smaller level's block of a shared weight or activation is a `Slice`
    (gradient `Pad`), never Python indexing (`StridedSliceGrad`, about twice
    as slow: bench/forward_cost.py); the Student's gradient still lands in
    its block only (test_dense_student_gradient_stays_in_its_slice)."""
    from matta_rec.models import NestedRelevanceModel
    from nested_testlib import make_batch, make_schema, make_stats, tiny_config

    schema = make_schema()
    model = NestedRelevanceModel(schema, make_stats(schema), tiny_config())
    batch = {k: tf.constant(v) for k, v in make_batch(16).items()}
    model(batch)

    @tf.function
    def step(features):
        with tf.GradientTape() as tape:
            out = model(features)
            loss = tf.add_n([tf.reduce_sum(out[name]) for name in model.level_names])
        return tape.gradient(loss, model.trainable_variables)

    graph = step.get_concrete_function(batch).graph
    types = [op.type for op in graph.get_operations()]
    assert "StridedSliceGrad" not in types
    assert types.count("Slice") > 0 and types.count("Pad") >= types.count("Slice")
