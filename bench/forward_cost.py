"""Forward+backward cost of a MatTA step (Student + TA together) against the TA alone.

Measured side by side in one run, for the default ``ModelConfig`` on the
synthetic logs' schema:

* ``matta``: the nested model (Student ⊂ TA, shared weights); loss
  ``BCE(student) + BCE(ta) + BCE(student, stop_gradient(sigmoid(ta)))``;
  gradients with respect to every trainable variable.
* ``ta``: a one-level model with the TA's shapes (``config.with_levels(("ta",))``);
  loss ``BCE(ta)``; gradients with respect to every trainable variable.

Both are ``tf.function`` steps on one fixed batch held in memory (no data
loading, no optimizer update), single-threaded by default (``--threads``).
A one-level Student model (``config.with_levels(("student",))``, loss
``BCE(student)``) is timed in the same rounds: ``(TA + Student alone) / TA``
is what two separate models would cost, so the nested step's own saving or
overhead shows against it.  Blocks of ``--steps`` steps alternate between
the three (the order reverses every round), ``--repeats`` times; the figure
is the ratio of the best (least disturbed) per-step block means.
Wall-clock and process CPU time (all TF threads) are both reported: on a
shared machine CPU time is the less contaminated figure.  It is reported
from raw features (the model's own preprocessing,
string hashing included, which both steps pay once) and from preprocessed
features (embeddings onwards: the part nesting changes).  The FLOPs ratio
``(FLOPs_student + FLOPs_TA) / FLOPs_TA`` from ``list_submodels`` is printed
for reference.

Usage:
    .venv/bin/python bench/forward_cost.py [--batch 1024 4096] [--steps 5] [--repeats 10]
        [--threads 1] [--scale 1] [--jit]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from matta_rec.data.synthetic import SyntheticWorld, simulate  # noqa: E402
from matta_rec.features import FeatureStats  # noqa: E402
from matta_rec.models import ModelConfig, NestedRelevanceModel  # noqa: E402


def make_steps(model, levels, processed_input, jit=False):
    """A tf.function computing the loss and gradients of ``levels`` of ``model``."""
    variables = model.trainable_variables
    bce = tf.keras.losses.binary_crossentropy

    @tf.function(jit_compile=jit)
    def step(features, target):
        with tf.GradientTape() as tape:
            if processed_input:
                logits = model.logits_from_processed(features)
            else:
                out = model(features)
                logits = tuple(out[name] for name in model.level_names)
            out = dict(zip(model.level_names, logits))
            loss = 0.0
            for name in levels:
                loss += tf.reduce_mean(bce(target, out[name], from_logits=True))
            if len(levels) > 1:
                teacher = tf.stop_gradient(tf.sigmoid(out[levels[-1]]))
                loss += tf.reduce_mean(bce(teacher, out[levels[0]], from_logits=True))
        grads = tape.gradient(loss, variables)
        # Touch every gradient (sparse table gradients stay sparse, as an
        # optimizer would apply them).
        touched = [
            tf.reduce_sum(g.values if isinstance(g, tf.IndexedSlices) else g)
            for g in grads
            if g is not None
        ]
        return loss, tf.add_n(touched)

    return step


def time_block(step, features, target, steps):
    """Per-step ``(wall seconds, process CPU seconds)`` over ``steps`` steps."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        result = step(features, target)
    result[1].numpy()  # wait for the last step
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def measure(nested, ta_model, student_model, features, target, processed_input, steps, repeats,
            jit=False):
    """Best per-step blocks ``((matta, ta, student) wall, (matta, ta, student) CPU)``."""
    runs = [(make_steps(nested, ("student", "ta"), processed_input, jit), nested),
            (make_steps(ta_model, ("ta",), processed_input, jit), ta_model),
            (make_steps(student_model, ("student",), processed_input, jit), student_model)]
    feats = [dict(m.preprocessor(features)) if processed_input else features for _, m in runs]
    for (fn, _), f in zip(runs, feats):  # trace and warm up
        time_block(fn, f, target, 3)
    blocks = [[] for _ in runs]
    for r in range(repeats):
        order = range(len(runs)) if r % 2 == 0 else reversed(range(len(runs)))
        for i in order:
            blocks[i].append(time_block(runs[i][0], feats[i], target, steps))
    # Best block (least disturbed by other processes, as timeit recommends) of
    # wall and of CPU time.
    return tuple(tuple(min(b[i] for b in block) for block in blocks) for i in (0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=1,
                        help="TF intra/inter-op threads (0 = TF default); 1 keeps CPU time "
                             "comparable on a shared machine")
    parser.add_argument("--scale", type=int, default=1,
                        help="multiply the default ModelConfig's d_model, GAU shared dim and "
                             "MLP widths (both levels) by this factor: wider, more compute-bound "
                             "shapes than the default")
    parser.add_argument("--jit", action="store_true",
                        help="also time XLA-compiled steps (from preprocessed features)")
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    columns, _ = simulate(args.rows, seed=0, days=1)
    schema = SyntheticWorld(0, days=1, rows_hint=args.rows).schema()
    features_np = {f.name: columns[f.name] for f in schema.features}
    stats = FeatureStats.fit(schema, [features_np])
    config = ModelConfig()
    if args.scale != 1:
        config = dataclasses.replace(
            config,
            d_model=config.d_model * args.scale,
            gau_shared_dim=config.gau_shared_dim * args.scale,
            mlp_units=tuple(u * args.scale for u in config.mlp_units),
        )
    nested = NestedRelevanceModel(schema, stats, config)
    ta_model = NestedRelevanceModel(schema, stats, config.with_levels(("ta",)))
    student_model = NestedRelevanceModel(schema, stats, config.with_levels(("student",)))
    infos = {i.name: i for i in nested.list_submodels()}
    flops_ratio = (infos["student"].flops + infos["ta"].flops) / infos["ta"].flops

    print(f"device: {tf.config.list_logical_devices()[0].device_type}, "
          f"threads: {args.threads or 'TF default'}")
    print(f"schema: {len(schema.features)} features; config: {config}")
    print(f"params: nested {nested.count_params():,}, TA alone {ta_model.count_params():,}, "
          f"Student {infos['student'].params:,}")
    print(f"FLOPs/example: Student {infos['student'].flops:,}, TA {infos['ta'].flops:,}; "
          f"(Student + TA) / TA = {flops_ratio:.3f}")
    print()
    print("| batch | input | MatTA wall ms | TA wall ms | wall ratio "
          "| MatTA CPU ms | TA CPU ms | CPU ratio | Student alone CPU ms "
          "| (TA + Student alone) / TA CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch in args.batch:
        idx = rng.choice(len(columns[schema.features[0].name]), size=batch)
        features = {k: tf.constant(v[idx]) for k, v in features_np.items()}
        target = tf.constant(rng.uniform(size=batch).astype("float32"))
        modes = [(False, False, "raw"), (True, False, "preprocessed")]
        if args.jit:
            modes.append((True, True, "preprocessed, XLA"))
        for processed_input, jit, label in modes:
            (mw, tw, _), (mc, tc, sc) = measure(
                nested, ta_model, student_model, features, target, processed_input,
                args.steps, args.repeats, jit
            )
            print(
                f"| {batch} | {label} | {mw * 1e3:.1f} | {tw * 1e3:.1f} | {mw / tw:.3f} "
                f"| {mc * 1e3:.1f} | {tc * 1e3:.1f} | {mc / tc:.3f} | {sc * 1e3:.1f} "
                f"| {(tc + sc) / tc:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
