"""nestify gain: a user-written Keras ranking model, trained alone vs nestified with MatTA.

The user's model (``user_ranker`` below: one embedding per categorical
feature, the numeric features as columns, concatenated, one DCN-v2 cross
layer, an MLP, a sigmoid) is built by a plain Keras factory, as a team with
a production model would write it.  For every seed, on the same stream:

* ``alone``: ``mode: student``: ``matta_rec.nestify`` with one level, i.e.
  the user's model itself trained on logits of the Teacher's labels;
* ``matta``: ``mode: matta``: the model nestified into a TA
  (``--width-factor``, ``--d-model-factor``, ``--extra-layers``) and trained
  with ``L_S + L_TA + w_D(t) L_D``.

Both go through ``train_run`` with ``build_model`` reading ``model.source``
(this file's ``user_ranker`` factory, the schema preprocessing in front).
The statistic is the paired difference of the Student heads' held-out
AucLoss (1 - AUROC on the click events of the held-out last shards):
its mean, a paired t-test and a sign count.

Usage::

    python bench/nestify_gain.py --seeds 0 1 2 3 4
    python bench/nestify_gain.py --d-model-factor 2.0    # embeddings widened too
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_ranker(schema, stats):
    """The user's own model: embeddings -> concatenate -> cross -> MLP -> sigmoid."""
    import keras

    from matta_rec.features import FeaturePreprocessor
    from matta_rec.layers import MNestedCross

    pre = FeaturePreprocessor(schema, stats)
    inputs, parts = {}, []
    for f in schema.features:
        if f.kind == "categorical":
            inputs[f.name] = keras.Input(shape=(), dtype="int32", name=f.name)
            parts.append(keras.layers.Embedding(pre.cardinality(f.name), 8,
                                                name=f"{f.name}_embedding")(inputs[f.name]))
        elif f.kind == "numeric":
            inputs[f.name] = keras.Input(shape=(), name=f.name)
            parts.append(keras.layers.Reshape((1,), name=f"{f.name}_column")(inputs[f.name]))
    x = keras.layers.Concatenate(name="features")(parts)
    x = MNestedCross(projection_dim=8, name="cross")(x)[0]
    x = keras.layers.Dense(32, activation="relu", name="mlp_1")(x)
    x = keras.layers.Dense(16, activation="relu", name="mlp_2")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(inputs, out, name="user_ranker")


def _builder(args):
    from matta_rec.training.run_dir import build_model

    def build(model_config, schema, stats):
        config = types.SimpleNamespace(
            source="nestify_gain:user_ranker", source_preprocessing=True,
            extra_layers=args.extra_layers, levels=model_config.levels,
            width_factors=tuple(args.width_factor if level == "ta" else 1.0
                                for level in model_config.levels),
            d_model_factors=tuple(args.d_model_factor if level == "ta" else 1.0
                                  for level in model_config.levels),
            share_weights=True)
        return build_model(config, schema, stats)

    return build


def _one(args, mode, seed):
    import keras

    from matta_rec.training import train_run

    keras.backend.clear_session()
    out = os.path.join(args.out, f"{mode}-{seed}")
    overrides = {"mode": mode, "seed": seed, "metrics.progress": False,
                 "metrics.tensorboard": False, "checkpoint.every_rows": 10_000_000}
    if args.max_rows:
        overrides["data.max_rows"] = args.max_rows
    metrics = train_run(args.config, args.data, args.schema, out, overrides=overrides,
                        model_builder=_builder(args))
    return metrics["holdout"]["event"]["student"]["auc_loss"], metrics["holdout"]


def paired_statistics(alone, matta) -> dict:
    """Mean paired difference (matta - alone), paired t-test and sign count."""
    import numpy as np
    from scipy import stats

    diff = np.asarray(matta) - np.asarray(alone)
    t = stats.ttest_rel(matta, alone)
    return {"mean_difference": float(diff.mean()), "sd_difference": float(diff.std(ddof=1)),
            "t": float(t.statistic), "p_two_sided": float(t.pvalue),
            "matta_better": int((diff < 0).sum()), "seeds": len(diff)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "sample_data"))
    parser.add_argument("--schema", default=None, help="default: DATA/schema.yaml")
    parser.add_argument("--config", default=os.path.join(ROOT, "pipelines/configs/sample.yaml"))
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "nestify_gain"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--width-factor", type=float, default=4.0)
    parser.add_argument("--d-model-factor", type=float, default=1.0,
                        help="2.0 widens the embeddings too (worse: docs/benchmarks.md)")
    parser.add_argument("--extra-layers", type=int, default=1)
    parser.add_argument("--max-rows", type=int, default=None, help="rows trained per run")
    args = parser.parse_args(argv)
    args.schema = args.schema or os.path.join(args.data, "schema.yaml")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # model.source import
    os.makedirs(args.out, exist_ok=True)
    alone, matta, rows = [], [], []
    for seed in args.seeds:
        t0 = time.time()
        a, _ = _one(args, "student", seed)
        m, hold = _one(args, "matta", seed)
        alone.append(a)
        matta.append(m)
        ta = hold["event"].get("ta", {}).get("auc_loss")
        rows.append((seed, a, m, ta))
        print(f"seed {seed}: alone {a:.4f}  MatTA Student {m:.4f}  TA {ta:.4f}  "
              f"({time.time() - t0:.0f}s)", flush=True)
    summary = paired_statistics(alone, matta)
    print("| seed | user model alone | nestified, MatTA Student | MatTA TA | difference |")
    print("|---:|---:|---:|---:|---:|")
    for seed, a, m, ta in rows:
        print(f"| {seed} | {a:.4f} | {m:.4f} | {ta:.4f} | {m - a:+.4f} |")
    print(f"| mean | {sum(alone) / len(alone):.4f} | {sum(matta) / len(matta):.4f} | | "
          f"{summary['mean_difference']:+.4f} |")
    print(f"paired t = {summary['t']:.2f} (p = {summary['p_two_sided']:.3f}, two-sided), "
          f"MatTA Student better on {summary['matta_better']} of {summary['seeds']} seeds")
    with open(os.path.join(args.out, "nestify_gain.json"), "w", encoding="utf-8") as handle:
        json.dump({"rows": rows, "summary": summary, "args": vars(args)}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
