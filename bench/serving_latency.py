"""Serving latency of exported sizes, as ratios to the TA, next to FLOPs ratios.

Every size is exported as a TF Serving SavedModel, loaded with
``tf.saved_model.load`` and timed on its ``serving_default`` signature with
raw rows (preprocessing included), at batch 1 and 256.  Sizes are timed side
by side in one process: rounds interleave the sizes so that load from other
processes hits all of them alike; the median over all calls is reported.

The check: at batch 256, where compute dominates the fixed per-call cost, the
Student's latency ratio to the TA should follow its FLOPs ratio (within 1.5x).

Usage::

    python bench/serving_latency.py                     # benchmark-size model, untrained
    python bench/serving_latency.py --run runs/sample   # a trained run's sizes
    python bench/serving_latency.py --export-base exports  # already exported sizes

Weights do not change latency, so the default builds an untrained nested
model at a size where compute matters (Student MLP 1024-512, TA 2x wider)
instead of training one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FLOOR = "(call floor)"

SCHEMA = {
    "features": {
        "user_id": {"group": "user", "kind": "categorical", "buckets": 100_000},
        "user_country": {"group": "user", "kind": "categorical", "vocabulary": "auto"},
        "user_age": {"group": "user", "kind": "numeric"},
        "hour": {"group": "context", "kind": "categorical", "vocabulary": "auto"},
        "device": {"group": "context", "kind": "categorical", "buckets": 16},
        "item_id": {"group": "item", "kind": "categorical", "buckets": 50_000, "dtype": "int64"},
        "item_tags": {"group": "item", "kind": "multi_categorical", "buckets": 5000,
                      "max_length": 6},
        "item_price": {"group": "item", "kind": "numeric", "normalization": "log"},
        "item_vec": {"group": "item", "kind": "dense", "dim": 16},
    },
    "labels": {"target": "teacher_prob"},
}

MODEL = {
    "d_model": 16,
    "gau_blocks": 1,
    "gau_shared_dim": 16,
    "cross_layers": 1,
    "mlp_units": (1024, 512),
    "width_factors": (1.0, 2.0),
    "d_model_factors": (1.0, 2.0),
    "extra_gau_blocks": (0, 1),
    "extra_cross_layers": (0, 0),
}


def raw_rows(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tags = ["|".join(f"t{t}" for t in rng.integers(0, 800, rng.integers(0, 8))) for _ in range(n)]
    return {
        "user_id": np.array([f"u{i}" for i in rng.integers(0, 10**6, n)]),
        "user_country": rng.choice(["us", "de", "fr", "jp", "br", "in"], n),
        "user_age": rng.normal(38, 12, n).astype(np.float32),
        "hour": np.array([str(h) for h in rng.integers(0, 24, n)]),
        "device": rng.choice(["ios", "android", "web"], n),
        "item_id": rng.integers(0, 10**7, n).astype(np.int64),
        "item_tags": np.array(tags),
        "item_price": rng.lognormal(3, 1, n).astype(np.float32),
        "item_vec": rng.normal(0, 1, (n, 16)).astype(np.float32),
    }


def export_benchmark_model(base: str, sizes: list[str]) -> tuple[dict, dict]:
    """Untrained benchmark-size nested model -> exported sizes; (paths, flops)."""
    from matta_rec.data.schema import Schema
    from matta_rec.export import export_model
    from matta_rec.export.run_export import size_dir_name
    from matta_rec.features import FeatureStats
    from matta_rec.models import ModelConfig, NestedRelevanceModel

    schema = Schema.from_dict(SCHEMA)
    stats = FeatureStats.fit(schema, [raw_rows(2000, seed=1)])
    model = NestedRelevanceModel(schema, stats, ModelConfig(**MODEL))
    model(raw_rows(4))
    family = {i.name: i for i in model.list_submodels()}
    if sizes == ["all"]:
        sizes = list(family)
    elif "all-pareto" in sizes:
        raise SystemExit("all-pareto needs a trained run's held-out AucLoss: use --run RUN_DIR "
                         "--sizes all-pareto, or --sizes all for the untrained model")
    paths, flops = {}, {}
    for size in sizes:
        name = size_dir_name(size)
        paths[size] = export_model(model.extract(size), schema, os.path.join(base, name, "1"),
                                   warmup=raw_rows(64, seed=2))
        flops[size] = family[size].flops if size in family else None
    return paths, flops


def export_floor(base: str, version_dir: str) -> str:
    """A SavedModel with the same raw signature that does (almost) nothing.

    Its latency is the fixed cost of a signature call from Python (argument
    binding, feeding nine tensors, the in-graph input checks), which TF
    Serving's C++ request path does not pay the same way.
    """
    import keras

    from matta_rec.data.schema import Schema
    from matta_rec.export import export_model

    schema = Schema.from_yaml(os.path.join(version_dir, "assets.extra", "schema.yaml"))
    numeric = next((f.name for f in schema.features if f.kind == "numeric"), None)

    class Floor(keras.Model):
        def call(self, features):
            import tensorflow as tf

            first = features[schema.features[0].name]
            return tf.zeros(tf.shape(first)[:1]) if numeric is None else features[numeric] * 0.0

    return export_model(Floor(), schema, os.path.join(base, "_floor", "1"))


def from_manifest(base: str) -> tuple[dict, dict]:
    with open(os.path.join(base, "manifest.json")) as f:
        manifest = json.load(f)
    paths = {e["spec"]: os.path.join(base, e["path"]) for e in manifest["sizes"]}
    flops = {e["spec"]: e.get("flops") for e in manifest["sizes"]}
    return paths, flops


def rows_for(path: str, n: int) -> dict:
    """Raw rows matching a SavedModel's signature: its warmup rows, tiled."""
    from matta_rec.export.latency import tile_rows
    from matta_rec.export.warmup import read_warmup, request_inputs

    records = read_warmup(path)
    if not records:
        raise SystemExit(f"{path} has no warmup requests to take rows from")
    biggest = max(records, key=lambda r: len(next(iter(request_inputs(r).values()))))
    return tile_rows(request_inputs(biggest), n)


def measure(paths: dict, batch_sizes, rounds: int, calls: int) -> tuple[dict, dict]:
    """Interleaved timing: wall and process-CPU ms, each {size: {batch: [ms, ...]}}."""
    import tensorflow as tf

    from matta_rec.utils.timing import time_calls

    sigs = {s: tf.saved_model.load(p).signatures["serving_default"] for s, p in paths.items()}
    first = next(iter(paths.values()))
    feeds = {b: {k: tf.constant(v) for k, v in rows_for(first, b).items()} for b in batch_sizes}
    times = {s: {b: [] for b in batch_sizes} for s in sigs}
    cpu = {s: {b: [] for b in batch_sizes} for s in sigs}
    for s, sig in sigs.items():  # warm every graph first
        for b in batch_sizes:
            for _ in range(3):
                sig(**feeds[b])["probability"].numpy()
    for r in range(rounds):
        order = list(sigs) if r % 2 == 0 else list(reversed(list(sigs)))
        for s in order:
            for b in batch_sizes:
                timed = time_calls(lambda: sigs[s](**feeds[b])["probability"].numpy(), calls)
                times[s][b] += timed.wall_ms
                cpu[s][b] += timed.cpu_ms
    return times, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="training run directory to export and time")
    source.add_argument("--export-base", help="already exported sizes (manifest.json)")
    parser.add_argument("--sizes", default="student,wnw:2,ta",
                        help="sizes to export (default student,wnw:2,ta; all for the whole "
                             "family; all-pareto with --run)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5, help="calls per size per round")
    parser.add_argument("--threads", type=int, default=1,
                        help="TF intra/inter-op threads (default 1: stable on a shared machine; "
                             "0 = TF default)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        if args.export_base:
            paths, flops = from_manifest(args.export_base)
        elif args.run:
            from matta_rec.export import export_run

            base = os.path.join(tmp, "exports")
            export_run(args.run, base, sizes=sizes, latency_repeats=0)
            paths, flops = from_manifest(base)
        else:
            paths, flops = export_benchmark_model(os.path.join(tmp, "exports"), sizes)
        if "ta" not in paths:
            raise SystemExit("the TA must be among the sizes (ratios are to the TA)")
        paths[FLOOR] = export_floor(os.path.join(tmp, "floor"), paths["ta"])
        flops[FLOOR] = None
        batch_sizes = (1, 256)
        start = time.time()
        wall_times, cpu_times = measure(paths, batch_sizes, args.rounds, args.calls)
        wall = time.time() - start

    print(f"serving latency, {len(paths)} sizes, {args.rounds} interleaved rounds x "
          f"{args.calls} calls, threads={args.threads or 'default'}, {wall:.0f}s, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    out = {"rounds": args.rounds, "calls": args.calls, "threads": args.threads,
           "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    for label, times in (("wall-clock", wall_times), ("process CPU time", cpu_times)):
        med = {s: {b: statistics.median(v) for b, v in t.items()} for s, t in times.items()}
        floor = med.pop(FLOOR)
        print(f"\n{label} (median ms per call; ratio = size / TA; 'net' subtracts the "
              f"call floor: {floor[1]:.2f} ms @1, {floor[256]:.2f} ms @256)")
        print(f"{'size':<14}{'FLOPs/ex':>12}{'FLOPs/TA':>10}{'ms@1':>9}{'ratio@1':>9}"
              f"{'ms@256':>9}{'ratio@256':>11}{'/FLOPs':>8}{'net@256':>9}{'/FLOPs':>8}")
        results = {}
        for s in med:
            f_ratio = flops[s] / flops["ta"] if flops.get(s) and flops.get("ta") else None
            r1 = med[s][1] / med["ta"][1]
            r256 = med[s][256] / med["ta"][256]
            net = (med[s][256] - floor[256]) / (med["ta"][256] - floor[256])
            results[s] = {
                "flops": flops.get(s), "flops_ratio": f_ratio,
                "median_ms": {str(b): med[s][b] for b in batch_sizes},
                "ratio": {"1": r1, "256": r256}, "net_ratio_256": net,
                "ratio_over_flops_ratio_256": r256 / f_ratio if f_ratio else None,
                "net_ratio_over_flops_ratio_256": net / f_ratio if f_ratio else None,
            }
            nan = float("nan")
            print(f"{s:<14}{(flops.get(s) or 0):>12,}{(f_ratio or nan):>10.3f}"
                  f"{med[s][1]:>9.2f}{r1:>9.3f}{med[s][256]:>9.2f}{r256:>11.3f}"
                  f"{(results[s]['ratio_over_flops_ratio_256'] or nan):>8.2f}{net:>9.3f}"
                  f"{(results[s]['net_ratio_over_flops_ratio_256'] or nan):>8.2f}")
        student = results.get("student")
        verdict = {}
        if student and student["flops_ratio"]:
            for kind, key in (("raw", "ratio_over_flops_ratio_256"),
                              ("net of the call floor", "net_ratio_over_flops_ratio_256")):
                ok = 1 / 1.5 <= student[key] <= 1.5
                verdict[kind] = ok
                print(f"Student {label} ratio at batch 256 ({kind}) follows its FLOPs ratio "
                      f"within 1.5x: {'yes' if ok else 'NO'} ({student[key]:.2f}x)")
        out[label] = {"results": results, "floor_ms": {str(b): floor[b] for b in batch_sizes},
                      "student_follows_flops": verdict}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
