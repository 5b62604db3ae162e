"""The main job end to end: train MatTA with Shampoo, export the sizes, evaluate.

Steps (everything lands under ``--out``)::

    runs/matta      MatTA (Student nested in a TA) trained online with Shampoo
    runs/baseline   an independently trained Student (same size, Adam): the
                    stand-in for the production baseline
    exports/matta   every Mix'n'Match size of the MatTA run, TF Serving layout
                    + manifest.json (params, FLOPs, latency)
    exports/baseline/student
    report/         report.md, report.json, pareto.png, online_auc_loss.png

Both runs train on the same shards; the last shard(s) of the stream are held
out and every exported size is evaluated on them against the baseline
SavedModel (AucLoss change with a 95% paired-bootstrap interval).

``matta-rec demo`` runs this file; it also runs on its own::

    python pipelines/demo.py --data sample_data --out runs/demo [--quick]

Example:

>>> report = run_demo("sample_data", "runs/demo", quick=True)
>>> report["models"][0]["vs_baseline"]["relative_pct"]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "configs", "demo.yaml")

# --quick: few rows, so the CI test of the whole path takes well under a minute
# per step while still producing every section of the report.
QUICK = {"train_rows": 3_000, "eval_rows": 2_000, "n_boot": 100, "stats_rows": 2_000,
         "window_rows": 500, "sizes": 3, "latency_repeats": 5}


def _shampoo_section(config) -> dict:
    """The demo config's optimizer when it is Shampoo, else Shampoo with its learning rate."""
    if config.optimizer.name.lower() == "shampoo":
        return {"name": "shampoo", "settings": dict(config.optimizer.settings)}
    lr = (config.optimizer.settings or {}).get("learning_rate")
    return {"name": "shampoo", "settings": {"learning_rate": lr} if lr else {}}


def _train(config, train_files, schema, run_dir, overrides, fresh, log) -> None:
    """Train one run, or reuse a finished one trained with the same settings."""
    import json

    from matta_rec.training import train_run

    settings = {"config": config.to_dict(), "overrides": overrides,
                "train_files": [os.path.abspath(f) for f in train_files]}
    stamp = run_dir.rstrip(os.sep) + ".demo.json"
    finished = os.path.isfile(os.path.join(run_dir, "metrics.json")) and \
        os.path.isfile(os.path.join(run_dir, "model.keras"))
    if not fresh and finished and os.path.isfile(stamp):
        with open(stamp, "r", encoding="utf-8") as handle:
            if json.load(handle) == json.loads(json.dumps(settings)):
                log(f"  reusing the finished run {run_dir} (pass --fresh to retrain)")
                return
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    train_run(config, train_files, schema, run_dir, overrides=overrides)
    with open(stamp, "w", encoding="utf-8") as handle:
        json.dump(settings, handle)
    log(f"  trained {run_dir} in {time.perf_counter() - start:.0f}s")


def choose_sizes(run_dir: str, count: int) -> list[str]:
    """Student, TA and ``count - 2`` Mix'n'Match sizes spread evenly by parameters.

    Args:
        run_dir: the trained MatTA run.
        count: how many sizes to export (>= 2).

    Example:

    >>> choose_sizes("runs/demo/runs/matta", 4)
    ['student', 'wnw:4', 'wnw:1@ta', 'ta']
    """
    from matta_rec.training import load_run

    infos = sorted(load_run(run_dir).model.list_submodels(), key=lambda i: (i.params, i.name))
    by_name = {i.name: i for i in infos}
    ends = [n for n in ("student", "ta") if n in by_name]
    middle = [i for i in infos if i.name not in ends]
    picked: list = []
    want = max(0, count - len(ends))
    if middle and want:
        lo, hi = infos[0].params, infos[-1].params
        for k in range(1, want + 1):
            target = lo + (hi - lo) * k / (want + 1)
            best = min((i for i in middle if i not in picked),
                       key=lambda i: abs(i.params - target), default=None)
            if best is not None:
                picked.append(best)
    chosen = [by_name[n] for n in ends] + picked
    return [i.name for i in sorted(chosen, key=lambda i: i.params)]


def run_demo(
    data: str = "sample_data",
    out: str = "runs/demo",
    *,
    config: str = DEFAULT_CONFIG,
    quick: bool = False,
    fresh: bool = False,
    holdout_fraction: float = 0.1,
    sizes: int = 5,
    n_boot: int = 500,
    label: str = "auto",
    log: Callable[..., Any] = print,
) -> dict:
    """Train, export and evaluate; return the report dict.

    Args:
        data: log shards with a ``schema.yaml`` (``sample_data/``).
        out: output folder (runs, exports, report).
        config: the run config YAML (``pipelines/configs/demo.yaml``).
        quick: a shortened demo (a few thousand rows) for CI.
        fresh: retrain even when a finished run is in ``out``.
        holdout_fraction: the last fraction of the shards (time order) is the
            evaluation set (0.1: the last tenth).
        sizes: how many Mix'n'Match sizes to export (Student, TA and the
            rest spread by parameter count; 3 with ``quick``).
        n_boot: bootstrap replicates of the intervals.
        label: evaluation label: ``"auto"``, ``"event"`` or ``"teacher"``.
        log: progress printer.

    Returns:
        The evaluation report (also in ``OUT/report/report.json``).

    Raises:
        MattaError: missing data or schema, bad config.

    Example:

    >>> run_demo("sample_data", "runs/demo", quick=True)["rows"]
    2000
    """
    from matta_rec.errors import MattaError
    from matta_rec.data.schema import Schema
    from matta_rec.evaluation import evaluate_models
    from matta_rec.evaluation.ablation import split_holdout
    from matta_rec.export import export_run
    from matta_rec.training import RunConfig

    started = time.perf_counter()
    schema_path = os.path.join(data, "schema.yaml")
    if not os.path.isfile(schema_path):
        raise MattaError(
            f"{schema_path} not found; the demo needs log shards with a schema.yaml. Create "
            f"them with: matta-rec generate --out {data}"
        )
    schema = Schema.from_yaml(schema_path)
    overrides: dict[str, Any] = {"data.holdout_shards": 0, "data.holdout_fraction": None}
    eval_rows = None
    if quick:
        overrides.update({"data.max_rows": QUICK["train_rows"],
                          "data.stats_rows": QUICK["stats_rows"],
                          "metrics.window_rows": QUICK["window_rows"]})
        eval_rows = QUICK["eval_rows"]
        n_boot = min(n_boot, QUICK["n_boot"])
    base = RunConfig.load(config, overrides=overrides)
    train_files, eval_files = split_holdout(data, schema, holdout_fraction=holdout_fraction)
    log(f"demo: {len(train_files)} training shard(s), {len(eval_files)} held-out shard(s) "
        f"from {data}" + (" (quick)" if quick else ""))

    runs = os.path.join(out, "runs")
    matta_dir, baseline_dir = os.path.join(runs, "matta"), os.path.join(runs, "baseline")
    log("1/4 training MatTA (Student nested in a TA) with Shampoo")
    _train(base, train_files, schema, matta_dir,
           {"mode": "matta", "optimizer": _shampoo_section(base)}, fresh, log)
    log("2/4 training the baseline: the Student alone with Adam")
    adam = {"name": "adam", "settings": {"learning_rate":
                                         (base.optimizer.settings or {}).get("learning_rate",
                                                                             0.001)}}
    _train(base, train_files, schema, baseline_dir, {"mode": "student", "optimizer": adam},
           fresh, log)

    log("3/4 extracting and exporting the sizes")
    exports = os.path.join(out, "exports")
    if os.path.isdir(exports):
        shutil.rmtree(exports)
    sizes = choose_sizes(matta_dir, QUICK["sizes"] if quick else sizes)
    latency = {"latency_repeats": QUICK["latency_repeats"] if quick else 30,
               "batch_sizes": (1,) if quick else (1, 256)}
    manifest = export_run(matta_dir, os.path.join(exports, "matta"), sizes=sizes,
                          version=1, data=train_files[:1], **latency)
    export_run(baseline_dir, os.path.join(exports, "baseline"), sizes=("student",), version=1,
               data=train_files[:1], **latency)
    log(f"  exported {', '.join(s['spec'] for s in manifest['sizes'])} and the baseline "
        f"to {exports}")

    log("4/4 evaluating every size against the baseline on the held-out shards")
    report = evaluate_models(
        [os.path.join(exports, "matta")],
        f"baseline={os.path.join(exports, 'baseline', 'student')}",
        eval_files,
        schema,
        label=label,
        n_boot=n_boot,
        max_rows=eval_rows,
        run_dirs=[matta_dir, baseline_dir],
        out_dir=os.path.join(out, "report"),
        title="matta_rec demo: MatTA + Shampoo sizes vs an independently trained Student",
        print_table=True,
    )
    log(f"demo finished in {time.perf_counter() - started:.0f}s; report: "
        f"{os.path.join(out, 'report', 'report.md')}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line of this file (``matta-rec demo`` has the same options)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    run_demo(args.data, args.out, config=args.config, quick=args.quick, fresh=args.fresh,
             holdout_fraction=args.holdout_fraction, sizes=args.sizes, n_boot=args.n_boot,
             label=args.label)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the demo (shared with ``matta-rec demo``).

    Args:
        parser: the parser to fill.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args([]).out
        'runs/demo'
    """
    parser.add_argument("--data", default="sample_data",
                        help="log shards with schema.yaml (default sample_data)")
    parser.add_argument("--out", default="runs/demo",
                        help="runs, exports and report go here (default runs/demo)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="run config YAML (default pipelines/configs/demo.yaml)")
    parser.add_argument("--quick", action="store_true",
                        help="shortened demo (a few thousand rows) for tests / CI")
    parser.add_argument("--fresh", action="store_true",
                        help="retrain even if finished runs exist under --out")
    parser.add_argument("--holdout-fraction", type=float, default=0.1,
                        help="last fraction of the shards held out for evaluation "
                             "(default 0.1)")
    parser.add_argument("--sizes", type=int, default=5,
                        help="Mix'n'Match sizes to export, Student and TA included (default 5)")
    parser.add_argument("--n-boot", type=int, default=500,
                        help="bootstrap replicates (default 500)")
    parser.add_argument("--label", choices=("auto", "event", "teacher"), default="auto",
                        help="evaluation label (default: event if the schema has one)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    sys.exit(main())
