"""Shampoo against Adam on the relevance model: step time, state size, AucLoss.

Everything is measured side by side in one run:

1. Training step time (forward, backward, optimizer update; one fixed batch
   kept in memory, so data loading is not timed) of `NestedRelevanceModel`
   with `Shampoo` (defaults) and with `keras.optimizers.Adam`, at batch 4096
   and 512 for the default `ModelConfig` and at 4096 for a larger one.
   Shampoo is timed after `start_preconditioning_step`; every timed block is
   `preconditioning_frequency` steps of each optimizer, so it holds exactly
   one root recomputation (the amortised cost). Within a block the two
   optimizers alternate step by step (the order flips every step), so a
   change in machine speed falls on both; the figure is the ratio of the
   medians of the per-step block means, and every block's ratio is printed.
2. Optimizer state in bytes per trainable parameter, Shampoo next to Adam.
3. AucLoss (1 - AUROC) of Student-alone trained with Shampoo vs with Adam
   (the paper's "Shampoo only" row), through `matta_rec.training.train_run`
   when that module is available; Shampoo's roots every `--auc-frequency`
   steps (10: the sample's one pass is only ~330 steps).

Usage:
    .venv/bin/python bench/shampoo_overhead.py [--repeats 3] [--skip-auc]
        [--settings default-4096 default-512 large-4096]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from matta_rec.optimizers import Shampoo  # noqa: E402
from matta_rec.optimizers.keras_internals import learning_rate_variable  # noqa: E402


def sample_logs(rows, seed, out_dir=None):
    """`(data_dir, schema)`: `sample_data/` when it holds logs, else fresh synthetic logs."""
    from matta_rec.data.schema import load_schema
    from matta_rec.data.synthetic import generate_logs

    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sample_data")
    for candidate in (os.path.join(here, "logs"), here):
        schema_path = os.path.join(candidate, "schema.yaml")
        if os.path.exists(schema_path):
            return candidate, load_schema(schema_path)
    out_dir = out_dir or tempfile.mkdtemp(prefix="shampoo_bench_logs_")
    schema = generate_logs(out_dir, rows, seed, days=2)
    return out_dir, schema


def build(schema, stats, model_config, optimizer, seed=0):
    from matta_rec.models import NestedRelevanceModel

    keras.utils.set_random_seed(seed)
    model = NestedRelevanceModel(schema, stats, model_config)
    return model, optimizer


def make_step(model, optimizer):
    @tf.function
    def step(features, target):
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = tf.add_n(
                [
                    tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logit))
                    for logit in logits.values()
                ]
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step


def adam_state_bytes(opt):
    skip = {id(opt.iterations)}
    learning_rate = learning_rate_variable(opt)
    if learning_rate is not None:
        skip.add(id(learning_rate))
    return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in opt.variables if id(v) not in skip)


def time_block(step, features, target, n):
    """`(wall, process CPU)` seconds per step over `n` steps."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        loss = step(features, target)
    float(loss)  # wait for the last step
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


def interleaved_block(runs, features, target, n):
    """`{name: (wall, process CPU) seconds per step}` over `n` steps of each
    optimizer, alternating one step of each (the order flips every step), so
    that drifts in machine speed fall on both alike."""
    wall = {name: 0.0 for name in runs}
    cpu = dict(wall)
    names = list(runs)
    for i in range(n):
        for name in names if i % 2 == 0 else names[::-1]:
            start, c = time.perf_counter(), time.process_time()
            float(runs[name][2](features, target))  # wait for the step
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - c
    return {name: (wall[name] / n, cpu[name] / n) for name in names}


def overhead(schema, stats, data, model_config, batch_size, repeats, shampoo_kwargs, label):
    from matta_rec.data.reader import LogStream

    stream = LogStream(data, schema, batch_size=batch_size)
    features, labels = next(iter(stream.dataset()))
    target = labels["target"]

    shampoo = Shampoo(**shampoo_kwargs)
    adam = keras.optimizers.Adam(learning_rate=shampoo_kwargs.get("learning_rate", 1e-3))
    runs = {}
    for name, opt in (("adam", adam), ("shampoo", shampoo)):
        model, opt = build(schema, stats, model_config, opt)
        runs[name] = (model, opt, make_step(model, opt))
    # Warm up: tracing, then Shampoo past its start so that it preconditions.
    warm = shampoo.start_preconditioning_step + 2
    for name in ("adam", "shampoo"):
        time_block(runs[name][2], features, target, warm if name == "shampoo" else 5)
    times = {"adam": [], "shampoo": []}
    for _ in range(repeats):
        for name, t in interleaved_block(runs, features, target, shampoo.preconditioning_frequency).items():
            times[name].append(t)
    params = sum(int(np.prod(v.shape)) for v in runs["adam"][0].trainable_variables)
    a = statistics.median(w for w, _ in times["adam"])
    s = statistics.median(w for w, _ in times["shampoo"])
    a_cpu = statistics.median(c for _, c in times["adam"])
    s_cpu = statistics.median(c for _, c in times["shampoo"])
    failures = shampoo.diagnostics()
    row = {
        "label": label,
        "batch": batch_size,
        "params": params,
        "adam_ms": 1e3 * a,
        "shampoo_ms": 1e3 * s,
        "ratio": s / a,
        "cpu_ratio": s_cpu / a_cpu,
        "adam_cpu_ms": 1e3 * a_cpu,
        "shampoo_cpu_ms": 1e3 * s_cpu,
        "pair_ratios": [si[0] / ai[0] for si, ai in zip(times["shampoo"], times["adam"])],
        "cpu_pair_ratios": [si[1] / ai[1] for si, ai in zip(times["shampoo"], times["adam"])],
        "adam_bytes_per_param": adam_state_bytes(runs["adam"][1]) / params,
        "shampoo_bytes_per_param": shampoo.state_bytes() / params,
        "root_failures": failures["shampoo_root_failures"],
    }
    print(
        f"{label:>10s} batch {batch_size:5d} params {params:8d}: Adam {row['adam_ms']:7.2f} ms/step, "
        f"Shampoo {row['shampoo_ms']:7.2f} ms/step, ratio {row['ratio']:.3f} "
        f"(per repeat {', '.join(f'{r:.3f}' for r in row['pair_ratios'])}); process CPU ms/step "
        f"Adam {row['adam_cpu_ms']:.2f}, Shampoo {row['shampoo_cpu_ms']:.2f}, ratio {row['cpu_ratio']:.3f} "
        f"(per repeat {', '.join(f'{r:.3f}' for r in row['cpu_pair_ratios'])}); "
        f"state bytes/param "
        f"Adam {row['adam_bytes_per_param']:.1f}, Shampoo {row['shampoo_bytes_per_param']:.1f}; "
        f"root failures {row['root_failures']}",
        flush=True,
    )
    return row


SAMPLE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pipelines", "configs", "sample.yaml")


def auc_comparison(data, schema, shampoo_settings, out_root, seeds=(0,)):
    """Student alone (`mode: student`) trained with Adam and with Shampoo.

    Uses `pipelines/configs/sample.yaml` (its Adam learning rate; Shampoo with
    Adam grafting at the same learning rate) and `train_run`'s hold-out
    metrics. Returns `{optimizer: [metrics.json per seed]}`, or None when
    `matta_rec.training.train_run` is not available.
    """
    try:
        from matta_rec.training import RunConfig, train_run
    except ImportError as e:
        print(f"AucLoss comparison skipped: matta_rec.training.train_run is not available ({e}).")
        return None
    base = RunConfig.from_yaml(SAMPLE_CONFIG) if os.path.exists(SAMPLE_CONFIG) else None
    lr = base.optimizer.settings.get("learning_rate", 1e-3) if base is not None else 1e-3
    results = {"adam": [], "shampoo": []}
    for seed in seeds:
        for name, settings in (("adam", {"learning_rate": lr}), ("shampoo", {"learning_rate": lr, **shampoo_settings})):
            overrides = {
                "mode": "student",
                "seed": seed,
                "optimizer.name": name,
                "optimizer.settings": settings,
                "metrics.progress": False,
                "metrics.tensorboard": False,
            }
            out = os.path.join(out_root, f"{name}-seed{seed}")
            start = time.perf_counter()
            metrics = train_run(SAMPLE_CONFIG if base is not None else {}, data, schema, out, overrides=overrides)
            print(f"  trained Student alone with {name} (seed {seed}) in {time.perf_counter() - start:.0f} s", flush=True)
            results[name].append(metrics)
    return results


def student_auc_losses(metrics):
    """`{label: auc_loss}` of the Student on the hold-out shards of a metrics.json dict."""
    holdout = metrics.get("holdout") or {}
    out = {}
    for label, per_level in holdout.items():
        if isinstance(per_level, dict) and isinstance(per_level.get("student"), dict):
            value = per_level["student"].get("auc_loss")
            if value is not None:
                out[label] = float(value)
    if not out:
        raise KeyError(f"no Student hold-out auc_loss in metrics.json (holdout keys: {sorted(holdout)})")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per optimizer and setting")
    parser.add_argument("--rows", type=int, default=40000, help="synthetic rows when sample_data/ is empty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-auc", action="store_true", help="only time and size the optimizers")
    parser.add_argument("--skip-timing", action="store_true", help="only the AucLoss comparison")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds of the AucLoss comparison")
    parser.add_argument(
        "--preconditioning-frequency", type=int, default=None, help="override Shampoo's default"
    )
    parser.add_argument(
        "--auc-frequency",
        type=int,
        default=10,
        help="Shampoo's preconditioning_frequency and start_preconditioning_step in the AucLoss "
        "comparison (default 10: the sample's one pass is ~330 steps, which the default of 100 "
        "would precondition with two roots); 0 keeps the timing's settings",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=("default-4096", "default-512", "large-4096"),
        default=["default-4096", "default-512", "large-4096"],
        help="the timed settings, in this order",
    )
    args = parser.parse_args(argv)

    from matta_rec.data.reader import LogStream
    from matta_rec.features import FeatureStats
    from matta_rec.models import ModelConfig

    data, schema = sample_logs(args.rows, args.seed)
    stats = FeatureStats.fit(schema, LogStream(data, schema, batch_size=4096).iter_numpy(), max_rows=20000)
    shampoo_kwargs = {"learning_rate": 1e-3}
    if args.preconditioning_frequency:
        shampoo_kwargs.update(
            preconditioning_frequency=args.preconditioning_frequency,
            start_preconditioning_step=args.preconditioning_frequency,
        )
    defaults = Shampoo(**shampoo_kwargs).get_config()
    print(
        f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs; Shampoo "
        f"block_size {defaults['block_size']}, preconditioning_frequency "
        f"{defaults['preconditioning_frequency']}, statistics_frequency {defaults['statistics_frequency']}, "
        f"start {defaults['start_preconditioning_step']}, grafting {defaults['grafting']}",
        flush=True,
    )

    rows = []
    if not args.skip_timing:
        large = ModelConfig(d_model=32, gau_shared_dim=32, mlp_units=(512, 256), cross_projection_dim=None)
        settings = {
            "default-4096": ("default", ModelConfig(), 4096),
            "default-512": ("default", ModelConfig(), 512),
            "large-4096": ("large", large, 4096),
        }
        for name in args.settings:
            label, cfg, batch = settings[name]
            rows.append(overhead(schema, stats, data, cfg, batch, args.repeats, shampoo_kwargs, label))

    if not args.skip_auc:
        out_root = tempfile.mkdtemp(prefix="shampoo_bench_runs_")
        settings = {k: v for k, v in shampoo_kwargs.items() if k != "learning_rate"}
        if args.auc_frequency:
            settings.update(
                preconditioning_frequency=args.auc_frequency, start_preconditioning_step=args.auc_frequency
            )
        print(f"AucLoss comparison: Shampoo settings {settings or 'defaults'}", flush=True)
        results = auc_comparison(data, schema, settings, out_root, seeds=tuple(range(args.seeds)))
        if results is not None:
            adam = [student_auc_losses(m) for m in results["adam"]]
            shampoo = [student_auc_losses(m) for m in results["shampoo"]]
            for label in adam[0]:
                a = float(np.mean([x[label] for x in adam]))
                s = float(np.mean([x[label] for x in shampoo]))
                print(
                    f"Student alone, hold-out AucLoss ({label}, mean of {len(adam)} seed(s)): "
                    f"Adam {a:.5f}, Shampoo {s:.5f}, change {100 * (s - a) / a:+.2f}% "
                    f"(per seed Adam {[round(x[label], 5) for x in adam]}, "
                    f"Shampoo {[round(x[label], 5) for x in shampoo]})",
                    flush=True,
                )
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
