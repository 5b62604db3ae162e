"""Shared fixtures of the nested layer / model / Mix'n'Match tests: a small schema."""

import numpy as np

from matta_rec.data.schema import Schema
from matta_rec.features import FeatureStats

SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 50},
        "age": {"group": "user", "kind": "numeric"},
        "hour": {"group": "context", "kind": "categorical", "vocabulary": "auto"},
        "tags": {"group": "item", "kind": "multi_categorical", "buckets": 20, "max_length": 3},
        "item_vec": {"group": "item", "kind": "dense", "dim": 3},
    },
    "labels": {"target": "teacher_prob"},
}


def make_schema():
    return Schema.from_dict(SCHEMA)


def make_batch(n, seed=0):
    rng = np.random.default_rng(seed)
    tags = ["|".join(rng.choice(list("abcdefg"), size=rng.integers(0, 5))) for _ in range(n)]
    return {
        "user_id": np.array([f"u{i}" for i in rng.integers(0, 30, n)], dtype=object),
        "age": rng.normal(40, 12, n).astype(np.float32),
        "hour": rng.choice(["7", "8", "9", "10"], size=n).astype(object),
        "tags": np.array(tags, dtype=object),
        "item_vec": rng.normal(size=(n, 3)).astype(np.float32),
    }


def make_stats(schema=None):
    schema = schema or make_schema()
    return FeatureStats.fit(schema, [make_batch(300, seed=1)])


def tiny_config(**overrides):
    from matta_rec.models import ModelConfig

    values = dict(d_model=4, gau_blocks=1, gau_expansion=2.0, gau_shared_dim=4,
                  cross_layers=1, mlp_units=(8, 4))
    values.update(overrides)
    return ModelConfig(**values)


def np_gau(x, gau, level, hidden=None, shared=None):
    """Numpy GAU of ``level`` from the TA variables of ``gau`` (prefix slices)."""
    d = x.shape[-1]
    e = gau.units[level] if hidden is None else hidden
    s = gau.shared_dim[level] if shared is None else shared

    def w(layer, m, n):
        k = layer.kernel.numpy()[:m, :n]
        return k, layer.bias.numpy()[:n]

    def swish(v):
        return v / (1.0 + np.exp(-v))

    h = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6)
    ku, bu = w(gau.u_proj, d, e)
    kv, bv = w(gau.v_proj, d, e)
    kz, bz = w(gau.z_proj, d, s)
    ko, bo = w(gau.o_proj, e, d)
    u, v, z = swish(h @ ku + bu), swish(h @ kv + bv), swish(h @ kz + bz)
    gamma, beta = gau.gamma.numpy()[:, :s], gau.beta.numpy()[:, :s]
    q, k = z * gamma[0] + beta[0], z * gamma[1] + beta[1]
    a = np.maximum(np.einsum("bts,bus->btu", q, k) / x.shape[1], 0.0) ** 2
    return x + (u * np.einsum("btu,bue->bte", a, v)) @ ko + bo
