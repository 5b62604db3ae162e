"""Mix'n'Match: specs, extraction equals the nested path, sizes, FLOPs, saving."""

import keras
import numpy as np
import pytest

from matta_rec.errors import ConfigError
from matta_rec.models import (
    ExtractedRelevanceModel,
    NestedRelevanceModel,
    SubmodelSpec,
    count_flops,
    count_params,
    submodel_architecture,
)
from nested_testlib import make_batch, make_schema, make_stats, np_gau, tiny_config

GROUPS = ("user", "context", "item")


@pytest.fixture(scope="module")
def trained_like():
    """A nested model with every weight randomised (so every slice matters)."""
    schema = make_schema()
    stats = make_stats(schema)
    model = NestedRelevanceModel(schema, stats, tiny_config(cross_projection_dim=2))
    rng = np.random.default_rng(7)
    for w in model.weights:
        w.assign(rng.normal(scale=0.3, size=w.shape).astype("float32"))
    return model


def np_forward(model, spec, batch):
    """Hand-computed forward pass of ``spec`` from the nested model's TA variables."""
    arch = model.architecture
    d_level, choices = SubmodelSpec.parse(spec).resolve(arch)
    d = arch["d_model"][d_level]
    processed = {k: np.asarray(v) for k, v in model.preprocessor(batch).items()}
    emb = {v.name: v.numpy() for v in model.embedding.weights}
    tokens = []
    for f in model.embedding.features:
        name, x = f["name"], processed[f["name"]]
        if f["kind"] == "categorical":
            t = emb[f"{name}_table"][x, :d]
        elif f["kind"] == "multi_categorical":
            rows = emb[f"{name}_table"][x, :d]
            mask = (x > 0)[..., None]
            t = (rows * mask).sum(1) / np.maximum(mask.sum(1), 1)
        elif f["kind"] == "numeric":
            t = x[:, None] * emb[f"{name}_scale"][:d] + emb[f"{name}_offset"][:d]
        else:
            t = x @ emb[f"{name}_kernel"][:, :d] + emb[f"{name}_bias"][:d]
        tokens.append(t + emb["group_embeddings"][GROUPS.index(f["group"]), :d])
    tokens = np.stack(tokens, axis=1)
    flat = x0 = None
    for block, layer, level in zip(arch["blocks"], model.blocks, choices):
        if level is None:
            continue
        if block["kind"] == "gau":
            tokens = np_gau(tokens, layer, level)
            continue
        if flat is None:
            flat = tokens.transpose(0, 2, 1).reshape(len(tokens), -1)
        width = flat.shape[1]
        if block["kind"] == "cross":
            x0 = flat if x0 is None else x0
            r = block["projection_dims"][level]
            u = layer.down_proj.kernel.numpy()[:width, :r]
            w = layer.dense.kernel.numpy()[:r, :width]
            flat = x0 * (flat @ u @ w + layer.dense.bias.numpy()[:width]) + flat
        else:
            units = block["units"][level]
            k = layer.kernel.numpy()[:width, :units]
            flat = np.maximum(flat @ k + layer.bias.numpy()[:units], 0.0)
    width = flat.shape[1]
    return (flat @ model.head.kernel.numpy()[:width] + model.head.bias.numpy())[:, 0]


# ------------------------------------------------------------------ specs
@pytest.mark.parametrize(
    "text", ["student", "ta", "medium", "wnw:0", "wnw:3", "wnw:2@ta", "mix@student:ta,-,student"]
)
def test_spec_parse_name_roundtrip(text):
    spec = SubmodelSpec.parse(text)
    assert spec.name == text and SubmodelSpec.parse(spec.name) == spec


@pytest.mark.parametrize("text", ["", "wnw:x", "mix@ta:", "mix@ta:student,,ta", "a b"])
def test_spec_parse_rejects_malformed(text):
    with pytest.raises(ConfigError, match="spec"):
        SubmodelSpec.parse(text)


def test_spec_resolution(trained_like):
    arch = trained_like.architecture  # gau_0, gau_1 (TA-only), cross_2, mlp_3, mlp_4
    assert SubmodelSpec.parse("student").resolve(arch) == (0, (0, None, 0, 0, 0))
    assert SubmodelSpec.parse("ta").resolve(arch) == (1, (1, 1, 1, 1, 1))
    # Wide-narrow-wide: ceil(K/2) bottom and floor(K/2) top blocks wide.
    assert SubmodelSpec.parse("wnw:0").resolve(arch) == (0, (0, 0, 0, 0, 0))
    assert SubmodelSpec.parse("wnw:3").resolve(arch) == (0, (1, 1, 0, 0, 1))
    assert SubmodelSpec.parse("wnw:5@ta").resolve(arch) == (1, (1, 1, 1, 1, 1))
    with pytest.raises(ConfigError, match="at most"):
        SubmodelSpec.parse("wnw:6").resolve(arch)
    with pytest.raises(ConfigError, match="unknown level"):
        SubmodelSpec.parse("medium").resolve(arch)
    with pytest.raises(ConfigError, match="lists 2 blocks"):
        SubmodelSpec.parse("mix@ta:ta,ta").resolve(arch)
    with pytest.raises(ConfigError, match="drops MLP"):
        SubmodelSpec.parse("mix@ta:ta,ta,ta,-,ta").resolve(arch)


# ------------------------------------------------------------- extraction
def test_extracted_levels_equal_nested_paths(trained_like):
    batch = make_batch(16, seed=5)
    out = trained_like(batch)
    for level in ("student", "ta"):
        sub = trained_like.extract(level)
        assert isinstance(sub, ExtractedRelevanceModel)
        y = sub(batch)
        assert y.shape == (16,) and y.dtype == "float32"
        np.testing.assert_allclose(y, out[level], rtol=1e-5, atol=1e-5)
    # The numpy reference agrees with the nested model on its own paths too.
    np.testing.assert_allclose(np_forward(trained_like, "student", batch), out["student"],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("text", ["mix@student:ta,student,ta,student,ta", "wnw:3@ta",
                                  "mix@ta:-,student,-,ta,student"])
def test_extracted_mixnmatch_equals_hand_computed_forward(trained_like, text):
    batch = make_batch(12, seed=6)
    sub = trained_like.extract(text)
    y = sub(batch)
    np.testing.assert_allclose(y, np_forward(trained_like, text, batch), rtol=1e-4, atol=1e-5)
    # A different path gives different logits (the comparison is not vacuous).
    assert not np.allclose(y, np_forward(trained_like, "ta", batch), atol=1e-3)


def test_extracted_student_is_physically_a_student_sized_model(trained_like):
    student = trained_like.extract("student")
    plain = NestedRelevanceModel(
        trained_like.schema, trained_like.stats, trained_like.config.with_levels(("student",))
    )
    assert student.count_params() == plain.count_params() < trained_like.count_params()
    assert [tuple(w.shape) for w in student.weights] == [tuple(w.shape) for w in plain.weights]
    # Changing the nested model afterwards does not touch the extracted copy.
    batch = make_batch(4)
    before = student(batch)
    trained_like.head.kernel.assign(trained_like.head.kernel + 1.0)
    np.testing.assert_allclose(student(batch), before)
    trained_like.head.kernel.assign(trained_like.head.kernel - 1.0)


def test_list_submodels_counts_match_built_models(trained_like):
    infos = trained_like.list_submodels()
    names = [i.name for i in infos]
    assert names[:2] == ["student", "ta"] and "wnw:0" in names and "wnw:2@ta" in names
    assert len(set(names)) == len(names)
    for info in infos:
        sub = trained_like.extract(info.spec)
        assert info.params == sub.count_params(), info.name
    by_name = {i.name: i for i in infos}
    assert by_name["student"].params < by_name["wnw:0"].params < by_name["ta"].params
    wnw = [by_name[f"wnw:{k}"] for k in range(5) if f"wnw:{k}" in by_name]
    assert all(a.flops <= b.flops for a, b in zip(wnw, wnw[1:]))


def test_flops_match_a_hand_count(trained_like):
    arch = submodel_architecture(trained_like.architecture, "student")
    features = trained_like.embedding.features
    t, d, dense_dim = 5, 4, 3
    e, s, r = 8, 4, 2
    width = d * t
    expected = (
        2 * dense_dim * d                                   # dense feature projection
        + t * (2 * 2 * d * e + 2 * d * s + 2 * e * d)       # GAU U, V, Z, O
        + 2 * t * t * (s + e)                               # attention scores and A @ V
        + 4 * width * r                                     # low-rank cross
        + 2 * width * 8 + 2 * 8 * 4 + 2 * 4                 # MLP and head
    )
    assert count_flops(arch, features) == expected
    assert count_params(arch, features) == trained_like.extract("student").count_params()


def test_unshared_model_extracts_levels_only():
    schema = make_schema()
    model = NestedRelevanceModel(schema, make_stats(schema), tiny_config(share_weights=False))
    batch = make_batch(8)
    out = model(batch)
    np.testing.assert_allclose(model.extract("student")(batch), out["student"], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(model.extract("ta")(batch), out["ta"], rtol=1e-5, atol=1e-6)
    assert [i.name for i in model.list_submodels()] == ["student", "ta"]
    with pytest.raises(ConfigError, match="share_weights"):
        model.extract("wnw:1")


def test_three_level_model_extracts_medium():
    schema = make_schema()
    config = tiny_config(
        levels=("student", "medium", "ta"),
        width_factors=(1.0, 1.5, 2.0),
        d_model_factors=(1.0, 1.5, 2.0),
        extra_gau_blocks=(0, 1, 1),
        extra_cross_layers=(0, 0, 0),
    )
    model = NestedRelevanceModel(schema, make_stats(schema), config)
    batch = make_batch(8)
    out = model(batch)
    for level in config.levels:
        np.testing.assert_allclose(model.extract(level)(batch), out[level], rtol=1e-5,
                                   atol=1e-5)
    plain = NestedRelevanceModel(schema, model.stats, config.with_levels(("medium",)))
    assert model.extract("medium").count_params() == plain.count_params()


def test_extracted_model_roundtrips_config_and_keras_file(trained_like, tmp_path):
    sub = trained_like.extract("wnw:2")
    batch = make_batch(6)
    y = sub(batch)
    clone = ExtractedRelevanceModel.from_config(sub.get_config())
    clone.set_weights(sub.get_weights())
    np.testing.assert_allclose(clone(batch), y, rtol=1e-6)
    path = str(tmp_path / "sub.keras")
    sub.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ExtractedRelevanceModel) and loaded.spec == "wnw:2"
    np.testing.assert_allclose(loaded(batch), y, rtol=1e-6)


def test_extracted_model_keeps_the_nested_models_dtype_policy(tmp_path):
    schema = make_schema()
    model = NestedRelevanceModel(schema, make_stats(schema), tiny_config(), dtype="float64")
    batch = make_batch(5)
    nested = model(batch)
    sub = model.extract("student")
    assert {layer.dtype_policy.name for layer in sub._flatten_layers()} == {"float64"}
    np.testing.assert_allclose(sub(batch), nested["student"], rtol=1e-12)
    config = sub.get_config()
    assert config["dtype"]["config"]["name"] == "float64"
    assert config["name"] == "submodel_student" and config["trainable"] is True
    clone = ExtractedRelevanceModel.from_config(config)
    assert clone.dtype_policy.name == "float64" and clone.name == "submodel_student"
    path = str(tmp_path / "sub.keras")
    sub.save(path)
    loaded = keras.saving.load_model(path)
    assert {layer.dtype_policy.name for layer in loaded._flatten_layers()} == {"float64"}
    np.testing.assert_array_equal(loaded(batch), sub(batch))


def test_mixnmatch_descriptions_do_not_import_the_models():
    """One import direction: relevance reads mixnmatch, never the reverse."""
    import ast
    import inspect

    import matta_rec.models.mixnmatch as mixnmatch

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(mixnmatch))):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {m for m in imported if m.startswith("matta_rec.models")}, imported
    assert not {m for m in imported if m.split(".")[0] in ("keras", "tensorflow")}, imported
