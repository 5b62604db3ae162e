"""User-written Keras ranking models for the nestify tests (and a factory for
``model.source: nestify_testlib:user_ranker``)."""

import keras

from matta_rec.layers import MNestedCross


def sequential_ranker(width=6):
    return keras.Sequential(
        [
            keras.Input(shape=(width,), name="x"),
            keras.layers.Dense(8, activation="relu", name="hidden_1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(4, activation="relu", name="hidden_2"),
            keras.layers.Dense(1, activation="sigmoid", name="probability"),
        ],
        name="user_sequential",
    )


def functional_ranker(cardinalities, dim=4, numeric=()):
    """Embeddings -> concatenate -> a cross layer -> MLP -> sigmoid."""
    inputs, parts = {}, []
    for name, cardinality in cardinalities.items():
        inputs[name] = keras.Input(shape=(), dtype="int32", name=name)
        parts.append(keras.layers.Embedding(cardinality, dim, name=f"{name}_embedding")(inputs[name]))
    for name in numeric:
        inputs[name] = keras.Input(shape=(), name=name)
        parts.append(keras.layers.Reshape((1,), name=f"{name}_column")(inputs[name]))
    x = keras.layers.Concatenate(name="concat")(parts)
    x = MNestedCross(projection_dim=4, name="cross")(x)[0]
    x = keras.layers.Dense(16, activation="relu", name="mlp_1")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Dense(8, activation="relu", name="mlp_2")(x)
    x = keras.layers.Dense(1, name="logit")(x)
    out = keras.layers.Activation("sigmoid", name="probability")(x)
    return keras.Model(inputs, out, name="user_ranker")


def user_ranker(schema, stats):
    """Factory for ``model.source``: the functional ranker on the schema's
    categorical and numeric features, tables sized from the statistics."""
    from matta_rec.features import FeaturePreprocessor

    pre = FeaturePreprocessor(schema, stats)
    cards = {f.name: pre.cardinality(f.name) for f in schema.features if f.kind == "categorical"}
    numeric = [f.name for f in schema.features if f.kind == "numeric"]
    return functional_ranker(cards, numeric=numeric)


def keras_rs_dcn(cardinalities, dim=4, projection_dim=None):
    """A DCN-v2 ranker written with keras_rs: embeddings -> two
    ``keras_rs.layers.FeatureCross`` (x0 crossed with the running x) -> MLP."""
    import keras_rs

    inputs = {name: keras.Input(shape=(), dtype="int32", name=name) for name in cardinalities}
    parts = [keras.layers.Embedding(card, dim, name=f"{name}_embedding")(inputs[name])
             for name, card in cardinalities.items()]
    x0 = keras.layers.Concatenate(name="concat")(parts)
    x = keras_rs.layers.FeatureCross(projection_dim=projection_dim, diag_scale=0.1,
                                     name="cross_1")(x0)
    x = keras_rs.layers.FeatureCross(projection_dim=projection_dim, name="cross_2")(x0, x)
    x = keras.layers.Dense(8, activation="relu", name="mlp_1")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(inputs, out, name="keras_rs_dcn")
