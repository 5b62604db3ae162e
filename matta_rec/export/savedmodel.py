"""Export one Keras ranking model as a TF Serving SavedModel version.

The exported version directory holds (TF Serving layout)::

    <version>/saved_model.pb
    <version>/variables/
    <version>/assets/
    <version>/assets.extra/tf_serving_warmup_requests   (when rows are given)
    <version>/assets.extra/signature.json               (inputs in call order)
    <version>/assets.extra/schema.yaml                  (the raw feature schema)

Signatures:

* ``serving_default``: the raw features by schema name, raw dtypes, batch
  dimension first (``schema.raw_signature()``) -> ``{"probability": float32
  [B], "logit": float32 [B]}``.  Preprocessing runs inside the graph.  Every
  input is shape-checked in the graph (``tf.ensure_shape`` names the feature)
  and all features must have the same number of rows.  A NaN numeric (or
  dense) value is replaced by the feature's schema ``default``; without one,
  a NaN or infinite value fails the request with an error naming the feature
  (training never accepts one).
* ``tf_example``: ``inputs`` string ``[B]`` of serialized ``tf.Example``
  protos (the TF Serving classify / regress convention), parsed by schema
  (string / int64 / float features; dense ones as a ``float_list`` of ``dim``
  values) -> the same outputs.  A feature missing from an example is an error
  naming it, unless the schema gives it a ``default``.

The SavedModel needs only TensorFlow to load: no ``matta_rec``, no keras-rs.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from matta_rec.data.schema import Schema, load_schema
from matta_rec.export.publish import ExportError, publish_version
from matta_rec.export.warmup import (
    ASSETS_EXTRA,
    build_warmup_requests,
    rows_to_arrays,
    write_warmup,
)

SERVING_SIGNATURE = "serving_default"
EXAMPLE_SIGNATURE = "tf_example"
EXAMPLE_INPUT = "inputs"
OUTPUTS = ("probability", "logit")
SIGNATURE_FILE = "signature.json"
SCHEMA_FILE = "schema.yaml"


def placeholder_rows(schema: Schema, n: int = 2) -> dict[str, np.ndarray]:
    """``n`` rows of neutral raw values (used to probe a model's output)."""
    rows = {}
    for f in schema.features:
        if f.raw_dtype == "string":
            rows[f.name] = np.array([b""] * n, dtype=object)
        elif f.raw_dtype == "int64":
            rows[f.name] = np.zeros((n,), np.int64)
        else:
            rows[f.name] = np.zeros((n,) + f.raw_shape, np.float32)
    return rows


def _logit(model, features):
    import tensorflow as tf

    out = model(features, training=False)
    if isinstance(out, Mapping):
        if len(out) != 1:
            raise ExportError(
                f"the model returns a dict with keys {sorted(out)}; export needs a model "
                "mapping raw features to one logit [B] (extract one size first)"
            )
        out = next(iter(out.values()))
    out = tf.convert_to_tensor(out)
    if out.shape.rank == 2 and out.shape[-1] == 1:
        out = tf.squeeze(out, -1)
    if out.shape.rank != 1:
        raise ExportError(
            f"the model's output has shape {out.shape}; export needs a logit of shape [B]"
        )
    return tf.cast(out, tf.float32)


def _checked_inputs(schema: Schema, features):
    """Shape checks that name the offending feature (TF Serving does none)."""
    import tensorflow as tf

    first = schema.features[0].name
    checked = {}
    batch = None
    for f in schema.features:
        x = tf.ensure_shape(features[f.name], (None,) + f.raw_shape, name=f"check_{f.name}")
        if batch is None:
            batch = tf.shape(x)[0]
        else:
            rows = tf.shape(x)[0]
            check = tf.debugging.assert_equal(
                rows,
                batch,
                message=(
                    f"feature '{f.name}' has a different number of rows than feature "
                    f"'{first}'; every feature needs one value per row"
                ),
            )
            with tf.control_dependencies([check]):
                x = tf.identity(x)
        checked[f.name] = x
    return checked


def _float_default(f):
    """The schema ``default`` of a float feature as a float32 array (``None`` if none)."""
    if f.default is None:
        return None
    if f.kind == "dense" and np.isscalar(f.default):
        return np.full(f.raw_shape, float(f.default), np.float32)
    return np.asarray(f.default, np.float32).reshape(f.raw_shape)


def _finite_inputs(schema: Schema, features):
    """Numeric / dense inputs as training sees them: no NaN, no infinity.

    Training rejects a non-finite numeric (the shard fails validation), so
    a model has never scored one.  At serving a NaN is replaced by the
    feature's schema ``default`` when it declares one (like a missing
    value); otherwise, and for an infinity, the request fails with an
    error naming the feature.  Done here, in the serving signature, and not
    in the preprocessor shared with training.
    """
    import tensorflow as tf

    out = dict(features)
    for f in schema.features:
        if f.raw_dtype != "float32":
            continue
        x = out[f.name]
        default = _float_default(f)
        if default is not None:
            x = tf.where(tf.math.is_nan(x), tf.constant(default), x)
            message = (f"feature '{f.name}' has an infinite value (a NaN is served as its "
                       f"schema default {f.default}); training rejects these: send finite values")
        else:
            message = (f"feature '{f.name}' has a NaN or infinite value; training rejects "
                       "these: send a finite value, or give the feature a `default:` in the "
                       "schema to serve a NaN as that default")
        out[f.name] = tf.debugging.assert_all_finite(x, message=message)
    return out


def example_parse_spec(schema: Schema) -> dict:
    """``tf.io.parse_example`` spec of the raw features."""
    import tensorflow as tf

    dtypes = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
    spec = {}
    for f in schema.features:
        default = f.default
        if default is not None:
            if f.kind == "dense":
                default = [float(default)] * f.dim if np.isscalar(default) else list(default)
            elif f.raw_dtype == "string":
                default = str(default)
            elif f.raw_dtype == "int64":
                default = int(default)
            else:
                default = float(default)
        spec[f.name] = tf.io.FixedLenFeature(f.raw_shape, dtypes[f.raw_dtype], default)
    return spec


def signature_description(schema: Schema) -> dict:
    """JSON description of both signatures (inputs in the flat call order)."""
    names = sorted(schema.feature_names)  # TF orders keyword inputs by name
    by_name = {f.name: f for f in schema.features}
    return {
        SERVING_SIGNATURE: {
            "inputs": [
                {
                    "index": i,
                    "name": n,
                    "dtype": by_name[n].raw_dtype,
                    "shape": [None, *by_name[n].raw_shape],
                }
                for i, n in enumerate(names)
            ],
            "outputs": {o: {"dtype": "float32", "shape": [None]} for o in OUTPUTS},
        },
        EXAMPLE_SIGNATURE: {
            "inputs": [{"index": 0, "name": EXAMPLE_INPUT, "dtype": "string", "shape": [None]}],
            "outputs": {o: {"dtype": "float32", "shape": [None]} for o in OUTPUTS},
        },
    }


def _track_resources(archive, model) -> None:
    """Hand the archive the lookup tables of every layer of ``model``.

    Variables used by the endpoints are collected by ``ExportArchive`` itself;
    only non-variable resources (the preprocessor's lookup tables) must be
    tracked.  They are found layer by layer instead of with
    ``archive.track(model)``, whose walk of the model's whole object graph
    fails on attributes SavedModel cannot represent (e.g. dicts with integer
    keys) although the endpoints never need them.
    """
    import keras
    from tensorflow.saved_model.experimental import TrackableResource

    if not isinstance(model, keras.layers.Layer):
        archive.track(model)
        return
    seen = set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for value in list(vars(layer).values()):
            if isinstance(value, TrackableResource) and id(value) not in seen:
                seen.add(id(value))
                archive.track(value)


def write_savedmodel(model, schema: Schema, path: str, *, warmup=None, model_name="model",
                     metadata: Mapping | None = None) -> None:
    """Write the SavedModel files of ``model`` into the (empty) folder ``path``."""
    import keras
    import tensorflow as tf

    raw_signature = schema.raw_signature()

    def serve(features):
        logit = _logit(model, _finite_inputs(schema, _checked_inputs(schema, features)))
        return {"probability": tf.sigmoid(logit), "logit": logit}

    parse_spec = example_parse_spec(schema)

    def serve_examples(serialized):
        features = tf.io.parse_example(serialized, parse_spec)
        return serve(features)

    archive = keras.export.ExportArchive()
    _track_resources(archive, model)
    archive.add_endpoint(SERVING_SIGNATURE, serve, input_signature=[raw_signature])
    archive.add_endpoint(
        EXAMPLE_SIGNATURE,
        serve_examples,
        input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLE_INPUT)],
    )
    archive.write_out(path, verbose=False)

    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    extra = os.path.join(path, ASSETS_EXTRA)
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, SIGNATURE_FILE), "w", encoding="utf-8") as handle:
        description = signature_description(schema)
        if metadata:
            description["metadata"] = dict(metadata)
        json.dump(description, handle, indent=1, default=str)
    schema.to_yaml(os.path.join(extra, SCHEMA_FILE))
    if warmup is not None:
        logs = build_warmup_requests(warmup, schema, model_name)
        if not logs:
            raise ExportError("warmup rows are empty; pass at least one row or warmup=None")
        write_warmup(path, logs)


def export_model(
    model,
    schema,
    version_dir: str,
    *,
    warmup: Mapping | None = None,
    overwrite: bool = False,
    model_name: str | None = None,
    metadata: Mapping | None = None,
) -> str:
    """Export ``model`` as one TF Serving version, published atomically.

    Args:
        model: any Keras model mapping the raw features dict to a logit
            float32 ``[B]`` (``[B, 1]`` is accepted).
        schema: the raw feature schema (:class:`Schema`, YAML path or dict).
        version_dir: ``EXPORT_BASE/<model_name>/<integer version>``.
        warmup: raw rows ``{feature: array}`` (real rows of the stream) written
            as TF Serving warmup requests; ``None`` writes none.
        overwrite: replace an existing version instead of refusing.
        model_name: ``model_spec.name`` of the warmup requests; defaults to
            the name of ``version_dir``'s parent folder.
        metadata: JSON-able facts stored in ``assets.extra/signature.json``.

    Returns:
        The absolute path of the published version directory.

    Example:

    >>> export_model(student, schema, "exports/student/1", warmup=first_rows)
    """
    schema = load_schema(schema)
    version_dir = os.path.abspath(os.fspath(version_dir))
    if model_name is None:
        model_name = os.path.basename(os.path.dirname(version_dir))
    if warmup is not None:
        warmup = rows_to_arrays(warmup, schema)
    probe = warmup if warmup is not None else placeholder_rows(schema)
    try:
        import tensorflow as tf

        probe_out = _logit(model, {k: tf.constant(v[:2]) for k, v in probe.items()})
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"the model cannot be called on the raw features of schema {schema.source} "
            f"({type(exc).__name__}: {exc}); export needs a model mapping the raw "
            "features dict to a logit [B]"
        ) from exc
    if int(probe_out.shape[0]) != min(2, len(next(iter(probe.values())))):
        raise ExportError(
            f"the model returned {probe_out.shape[0]} logits for "
            f"{min(2, len(next(iter(probe.values()))))} rows; it must return one per row"
        )
    return publish_version(
        version_dir,
        lambda tmp: write_savedmodel(
            model, schema, tmp, warmup=warmup, model_name=model_name, metadata=metadata
        ),
        overwrite=overwrite,
    )
