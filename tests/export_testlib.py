"""A tiny hand-built ranking model for the export tests (no dependency on
matta_rec.models): FeaturePreprocessor -> embeddings / numeric -> Dense -> logit."""

import keras
import numpy as np

from matta_rec.data.schema import Schema
from matta_rec.features import FeaturePreprocessor, FeatureStats

SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 40},
        "item_id": {"group": "item", "kind": "categorical", "buckets": 30, "dtype": "int64"},
        "hour": {"group": "context", "kind": "categorical", "vocabulary": "auto"},
        "tags": {"group": "item", "kind": "multi_categorical", "buckets": 16, "max_length": 3},
        "age": {"group": "user", "kind": "numeric", "default": 30.0},
        "price": {"group": "item", "kind": "numeric", "normalization": "log"},
        "vec": {"group": "item", "kind": "dense", "dim": 4},
    },
    "labels": {"target": "teacher_prob"},
}


def make_schema():
    return Schema.from_dict(SCHEMA)


def make_rows(n, seed=0):
    """Raw feature rows as numpy arrays (strings as str, ints as int64)."""
    rng = np.random.default_rng(seed)
    tags = ["|".join(rng.choice(list("abcdefgh"), size=rng.integers(0, 5))) for _ in range(n)]
    return {
        "user_id": np.array([f"u{i}" for i in rng.integers(0, 50, n)]),
        "item_id": rng.integers(0, 500, n).astype(np.int64),
        "hour": np.array([str(h) for h in rng.integers(0, 24, n)]),
        "tags": np.array(tags),
        "age": rng.normal(35, 10, n).astype(np.float32),
        "price": rng.lognormal(2, 1, n).astype(np.float32),
        "vec": rng.normal(0, 1, (n, 4)).astype(np.float32),
    }


def make_model(width=8, hidden=(16,), seed=0, rows=None):
    """Functional Keras model: raw features dict -> logit float32 [B]."""
    schema = make_schema()
    stats = FeatureStats.fit(schema, [make_rows(200, seed=99) if rows is None else rows])
    pre = FeaturePreprocessor(schema, stats, name="preprocessor")
    dtypes = {"string": "string", "int64": "int64", "float32": "float32"}
    inputs = {
        f.name: keras.Input(shape=f.raw_shape, dtype=dtypes[f.raw_dtype], name=f.name)
        for f in schema.features
    }
    x = pre(inputs)
    parts = []
    init = keras.initializers.RandomNormal(stddev=0.5, seed=seed)
    for f in schema.features:
        if f.kind == "categorical":
            emb = keras.layers.Embedding(pre.cardinality(f.name), width, embeddings_initializer=init)
            parts.append(emb(x[f.name]))
        elif f.kind == "multi_categorical":
            emb = keras.layers.Embedding(pre.cardinality(f.name), width, embeddings_initializer=init)
            parts.append(keras.ops.mean(emb(x[f.name]), axis=1))
        elif f.kind == "numeric":
            parts.append(keras.ops.expand_dims(x[f.name], -1))
        else:
            parts.append(x[f.name])
    h = keras.layers.Concatenate()(parts)
    for i, units in enumerate(hidden):
        h = keras.layers.Dense(units, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed + i))(h)
    logit = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed + 7))(h)
    logit = keras.layers.Reshape(())(logit)
    return keras.Model(inputs, logit, name="tiny_ranker")


# A script run in a fresh interpreter where matta_rec and keras_rs cannot be
# imported: it loads SavedModels with TensorFlow alone, predicts the rows of an
# .npz file, tries bad requests, and writes what it saw to a JSON file.
BLOCKED_LOADER = r'''
import sys

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("matta_rec", "keras_rs"):
            raise ImportError(f"{name} is blocked in this process")
        return None

sys.meta_path.insert(0, _Blocker())
sys.modules["matta_rec"] = None
sys.modules["keras_rs"] = None

import json
import numpy as np
import tensorflow as tf

versions, rows_path, out_path = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
rows = dict(np.load(rows_path))
feeds = {k: tf.constant(v) for k, v in rows.items()}
report = {"versions": {}}
for version in versions:
    loaded = tf.saved_model.load(version)
    sig = loaded.signatures["serving_default"]
    entry = {
        "inputs": {k: [v.dtype.name, v.shape.as_list()]
                   for k, v in sig.structured_input_signature[1].items()},
        "outputs": sorted(sig.structured_outputs),
        "probability": sig(**feeds)["probability"].numpy().tolist(),
        "logit": sig(**feeds)["logit"].numpy().tolist(),
    }
    errors = {}
    def attempt(label, fn):
        try:
            fn()
            errors[label] = None
        except Exception as exc:  # a bad request must raise, not kill us
            errors[label] = f"{type(exc).__name__}: {exc}"
    name = sorted(feeds)[0]
    missing = {k: v for k, v in feeds.items() if k != "price"}
    attempt("missing", lambda: sig(**missing))
    wrong = dict(feeds, item_id=tf.constant(rows["item_id"].astype(str)))
    attempt("wrong_dtype", lambda: sig(**wrong))
    shape = dict(feeds, vec=tf.zeros([len(rows["age"]), 3]))
    attempt("wrong_shape", lambda: sig(**shape))
    short = dict(feeds, age=feeds["age"][:1])
    attempt("row_mismatch", lambda: sig(**short))
    examples = []
    for i in range(len(rows["age"])):
        feat = {}
        for k, v in rows.items():
            x = v[i]
            if v.dtype.kind in "US":
                feat[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(x).encode()]))
            elif v.dtype.kind == "i":
                feat[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x)]))
            else:
                feat[k] = tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(x).tolist()))
        examples.append(tf.train.Example(features=tf.train.Features(feature=feat)))
    ex = loaded.signatures["tf_example"]
    serialized = tf.constant([e.SerializeToString() for e in examples])
    entry["example_probability"] = ex(inputs=serialized)["probability"].numpy().tolist()
    bad = tf.train.Example()
    bad.CopyFrom(examples[0])
    del bad.features.feature["price"]
    attempt("example_missing", lambda: ex(inputs=tf.constant([bad.SerializeToString()])))
    # The process still serves after the bad requests.
    entry["after_errors"] = sig(**feeds)["probability"].numpy().tolist()
    entry["errors"] = errors
    report["versions"][version] = entry
report["matta_rec_loaded"] = any(
    m is not None and k.split(".")[0] in ("matta_rec", "keras_rs") for k, m in sys.modules.items()
)
json.dump(report, open(out_path, "w"))
'''


def run_blocked_loader(versions, rows, tmp_path):
    """Run BLOCKED_LOADER in a subprocess; return its JSON report."""
    import json
    import os
    import subprocess
    import sys

    script = os.path.join(tmp_path, "blocked_loader.py")
    with open(script, "w") as f:
        f.write(BLOCKED_LOADER)
    rows_path = os.path.join(tmp_path, "rows.npz")
    np.savez(rows_path, **{k: np.asarray(v) for k, v in rows.items()})
    out = os.path.join(tmp_path, "report.json")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, script, ",".join(versions), rows_path, out],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


TINY_RUN = {
    "model": {
        "d_model": 4,
        "gau_blocks": 1,
        "gau_shared_dim": 4,
        "cross_layers": 1,
        "mlp_units": [8],
        "width_factors": [1, 2],
        "d_model_factors": [1, 2],
        "extra_gau_blocks": [0, 0],
        "extra_cross_layers": [0, 1],
    },
    "batch_size": 64,
    "optimizer": {"name": "adam", "settings": {"learning_rate": 0.01}},
    "data": {"stats_rows": 128},
    "checkpoint": {"every_rows": 10_000},
    "metrics": {"window_rows": 128, "progress": False},
}


def write_logs(root, shards=2, rows=128, seed=0):
    """Parquet shards of make_rows() plus a Teacher probability label."""
    import os

    from matta_rec.data.writers import write_shard

    schema = make_schema()
    for s in range(shards):
        cols = make_rows(rows, seed=seed + s)
        logit = 0.03 * (cols["age"] - 35) + 0.5 * cols["vec"][:, 0]
        cols["teacher_prob"] = (1 / (1 + np.exp(-logit))).astype(np.float32)
        write_shard(os.path.join(root, f"dt=2026-01-01/hour={s:02d}/part-0.parquet"), cols, schema)
    schema.to_yaml(os.path.join(root, "schema.yaml"))
    return schema


def train_tiny_run(tmp, config=None):
    """A finished training run directory (tiny nested model) and its log folder."""
    import os

    from matta_rec.training import train_run

    logs = os.path.join(tmp, "logs")
    schema = write_logs(logs)
    run_dir = os.path.join(tmp, "run")
    train_run(dict(TINY_RUN, **(config or {})), logs, schema, run_dir)
    return run_dir, logs
