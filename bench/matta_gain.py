"""MatTA gain: the MatTA Student vs the independently trained Student.

For every seed, trains the same Student size on the same log stream twice:

* ``student`` mode: the Student alone on the Teacher's labels (the usual
  production recipe);
* ``matta`` mode: the Student nested in the TA, ``L_S + L_TA + w_D(t) L_D``;

and compares the AucLoss (``1 - AUROC``) of their Student heads on the events
of the held-out last shards (``data.holdout_fraction`` / ``holdout_shards`` of
the config).  Prints a table, the mean relative change and its spread over
seeds, and writes ``OUT/matta_gain.json``; ``--record FILE`` writes the
"## MatTA gain" section of ``docs/benchmarks.md``.

Usage::

    python bench/matta_gain.py --data sample_data --seeds 0 1 2
    python bench/matta_gain.py --data sample_data --set optimizer.name=shampoo

When ``--data`` holds no shards, ``--generate ROWS`` writes synthetic logs
there first (``matta_rec.data.synthetic.generate_logs``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse_set(items):
    import yaml

    out = {}
    for item in items:
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _one(config_path, data, schema, out_dir, mode, seed, overrides):
    import keras

    from matta_rec.training import train_run

    keras.backend.clear_session()
    run_overrides = dict(overrides, mode=mode, seed=seed)
    run_overrides.setdefault("metrics.progress", False)
    run_overrides.setdefault("metrics.tensorboard", False)
    t0 = time.time()
    metrics = train_run(config_path, data, schema, out_dir, overrides=run_overrides)
    hold = metrics["holdout"]
    if "event" not in hold:
        raise SystemExit("the config holds no shards out (set data.holdout_fraction) or the "
                         "schema has no labels.event column: nothing to evaluate")
    return {
        "mode": mode,
        "seed": seed,
        "student_auc_loss_event": hold["event"]["student"]["auc_loss"],
        "student_auc_loss_target": hold["target"]["student"]["auc_loss"],
        "student_logloss_event": hold["event"]["student"]["logloss"],
        "ta_auc_loss_event": hold["event"].get("ta", {}).get("auc_loss"),
        "teacher_auc_loss_event": hold["teacher_vs_event"]["auc_loss"],
        "holdout_rows": hold["rows"],
        "rows_trained": metrics["rows_trained"],
        "rows_per_s": metrics["rows_per_s"],
        "wall_s": time.time() - t0,
    }


def _mean_std(values):
    import numpy as np

    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise(results, seeds, arm="matta"):
    rows = []
    rel = []
    for seed in seeds:
        s = next(r for r in results if r["seed"] == seed and r["mode"] == "student")
        m = next(r for r in results if r["seed"] == seed and r["mode"] == arm)
        change = (m["student_auc_loss_event"] - s["student_auc_loss_event"]) / s["student_auc_loss_event"]
        rel.append(change)
        rows.append((seed, s["student_auc_loss_event"], m["student_auc_loss_event"],
                     m["ta_auc_loss_event"], change))
    mean, std = _mean_std(rel)
    s_mean, _ = _mean_std([r[1] for r in rows])
    m_mean, _ = _mean_std([r[2] for r in rows])
    return {
        "per_seed": [
            {"seed": seed, "student_mode": a, "matta_student": b, "matta_ta": c, "relative_change": d}
            for seed, a, b, c, d in rows
        ],
        "student_mode_mean": s_mean,
        "matta_student_mean": m_mean,
        "relative_change_mean": mean,
        "relative_change_std": std,
        "relative_change_of_means": (m_mean - s_mean) / s_mean,
        "teacher_auc_loss_event": results[0]["teacher_auc_loss_event"],
    }


def table(summary) -> str:
    lines = ["| seed | Student alone | MatTA Student | MatTA TA | relative change |",
             "|---:|---:|---:|---:|---:|"]
    for r in summary["per_seed"]:
        ta = "-" if r["matta_ta"] is None else f"{r['matta_ta']:.4f}"
        lines.append(f"| {r['seed']} | {r['student_mode']:.4f} | {r['matta_student']:.4f} | {ta} | "
                     f"{100 * r['relative_change']:+.2f}% |")
    lines.append(f"| mean | {summary['student_mode_mean']:.4f} | {summary['matta_student_mean']:.4f} | | "
                 f"{100 * summary['relative_change_mean']:+.2f}% "
                 f"(sd {100 * summary['relative_change_std']:.2f}%) |")
    return "\n".join(lines)


def record(path, text):
    """Replace (or append) the '## MatTA gain' section of ``path``."""
    head = "## MatTA gain"
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            old = handle.read()
    else:
        old = "# Benchmarks\n"
    if head in old:
        start = old.index(head)
        nxt = old.find("\n## ", start + len(head))
        new = old[:start] + text.rstrip() + "\n" + (old[nxt:] if nxt != -1 else "")
    else:
        new = old.rstrip() + "\n\n" + text.rstrip() + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(ROOT, "sample_data"),
                        help="log shards (default sample_data/)")
    parser.add_argument("--schema", default=None, help="schema YAML (default DATA/schema.yaml)")
    parser.add_argument("--config", default=os.path.join(ROOT, "pipelines", "configs", "sample.yaml"),
                        help="run config shared by both modes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="model seeds (>= 3 for the reported figure)")
    parser.add_argument("--modes", nargs="+", default=["student", "matta"],
                        help="modes to train per seed; 'student' is the baseline every other "
                             "mode is compared with (e.g. add matta_no_sharing)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to both modes (repeatable)")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_matta_gain"),
                        help="directory for the runs and matta_gain.json")
    parser.add_argument("--generate", type=int, default=None, metavar="ROWS",
                        help="write synthetic logs to --data first when it holds no shards")
    parser.add_argument("--record", default=None, metavar="FILE",
                        help="write the '## MatTA gain' section of this markdown file")
    args = parser.parse_args(argv)

    import shutil

    from matta_rec.data.reader import LogStream

    schema = args.schema or os.path.join(args.data, "schema.yaml")
    if args.generate and not os.path.exists(schema):
        from matta_rec.data.synthetic import generate_logs

        generate_logs(args.data, rows=args.generate, seed=0)
    shards = LogStream(args.data, schema, batch_size=1).shards()
    overrides = _parse_set(args.overrides)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    results = []
    for seed in args.seeds:
        for mode in args.modes:
            res = _one(args.config, args.data, schema, os.path.join(args.out, f"{mode}-seed{seed}"),
                       mode, seed, overrides)
            results.append(res)
            print(f"seed {seed} {mode:8s} Student AucLoss (held-out events) "
                  f"{res['student_auc_loss_event']:.5f}  ({res['rows_trained']} rows, "
                  f"{res['rows_per_s']:.0f} rows/s)", flush=True)
    if "student" not in args.modes or len(args.modes) < 2:
        raise SystemExit("--modes needs 'student' (the baseline) and at least one other mode")
    arms = [m for m in args.modes if m != "student"]
    summary = summarise(results, args.seeds, arms[0])
    summary["arm"] = arms[0]
    summary["other_arms"] = {m: summarise(results, args.seeds, m) for m in arms[1:]}
    summary.update({
        "data": os.path.relpath(os.path.abspath(args.data), ROOT),
        "shards": len(shards),
        "config": os.path.relpath(os.path.abspath(args.config), ROOT),
        "overrides": overrides,
        "rows_trained": results[0]["rows_trained"],
        "holdout_rows": results[0]["holdout_rows"],
        "runs": results,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    })
    with open(os.path.join(args.out, "matta_gain.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print()
    print(table(summary))
    for name, other in summary["other_arms"].items():
        print(f"\n{name}:\n" + table(other))
    print(f"\nMatTA Student vs Student alone, AucLoss on held-out events: "
          f"{100 * summary['relative_change_mean']:+.2f}% mean over {len(args.seeds)} seeds "
          f"(sd {100 * summary['relative_change_std']:.2f}%); Teacher AucLoss "
          f"{summary['teacher_auc_loss_event']:.4f}")
    if args.record:
        text = "\n".join([
            "## MatTA gain",
            "",
            f"`python bench/matta_gain.py --seeds {' '.join(map(str, args.seeds))}"
            + "".join(f" --set {k}={v}" for k, v in overrides.items()) + "`"
            f" on `{summary['data']}` ({summary['shards']} shards, {summary['rows_trained']} "
            f"rows trained, {summary['holdout_rows']} held-out rows), config `{summary['config']}`, "
            f"{summary['machine']}, {summary['date']}.",
            "AucLoss = 1 - AUROC of the Student head on the click events of the held-out "
            "last shards (lower is better); relative change = (MatTA - alone) / alone.",
            "",
            table(summary),
            "",
            f"Teacher (the label source) on the same events: AucLoss "
            f"{summary['teacher_auc_loss_event']:.4f}.",
        ])
        record(args.record, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
