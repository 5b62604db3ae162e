"""MatTA gain: the TA-vs-Student gap of the data next to what MatTA makes of it.

Default (the calibrated sample): for every seed, trains on the same shards,
under the same config (the demo's, ``matta_rec/cli/demo.yaml``, with clicks
as the label and the last 10% of the shards held out, as the demo holds
them out):

* ``student``: the Student alone;
* ``ta``: the TA alone (same config, ``--mode ta``);
* ``matta``: the Student nested in the TA, ``L_S + L_TA + w_D(t) L_D``;

and compares the AucLoss (``1 - AUROC``) on the held-out click events.
``gap = 1 - AucLoss_TA / AucLoss_Student`` (TA alone vs Student alone) says
how much a bigger model can win on this data (the generator is calibrated
so that it is 10-25% on ``sample_data/``, the range measured on public click
data); ``MatTA change = (MatTA Student - Student alone) / Student alone``
says how much of it MatTA hands to the Student (negative is a gain).

``--preset fixed`` (the fixed-data preset, ``matta-rec generate --preset
fixed``): today's recipe (the same config, no regularisation, no early
stopping) is trained for ``FIXED_PRESET["max_passes"]`` passes over
``train/``; after every pass each head is scored on ``valid/`` and
``test/``; each head's best pass is chosen on ``valid/`` and its ``test/``
AucLoss at that pass is reported (MatTA, and the Student alone as its twin).
The recommended recipe (``RECOMMENDED_CONFIG``,
``pipelines/configs/fixed-dataset.yaml``: MatTA and the Student alone, each
with ``data.valid`` = ``valid/``, early stopping on the Student's validation
AucLoss and the best weights restored) is trained next to it when that file
exists; its saved model is scored on ``test/`` (and on ``valid/``, where the
served level must reproduce the logged best validation AucLoss).  Reported:
the recommended MatTA Student against today's MatTA Student at its best pass
(issue 16: >= 5% lower) and against its twin, the recommended Student alone
(lower); where each level peaked (``metrics.json``'s ``validation`` section)
and whether the TA overfits.  Today's recipe has a constant learning rate, so
``--max-passes N`` gives the first N passes of a longer run; the script warns
when a best pass lies within 3 passes of that cap.

Usage::

    python bench/matta_gain.py                      # sample_data/, seeds 0 1 2
    python bench/matta_gain.py --preset fixed       # writes runs/fixed_data first
    python bench/matta_gain.py --record docs/benchmarks.md

``--record FILE`` replaces the table between the ``<!-- matta_gain:sample -->``
(or ``<!-- matta_gain:fixed -->``) begin / end markers of FILE; the prose
around it is kept.  Results also go to ``OUT/matta_gain.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "matta_rec", "cli", "demo.yaml")
#: The recommended recipe for fixed data sets, compared with today's recipe
#: by ``--preset fixed`` when it exists.
RECOMMENDED_CONFIG = os.path.join(ROOT, "pipelines", "configs", "fixed-dataset.yaml")
#: Overrides of the sample comparison: clicks as the label, the demo's hold-out.
SAMPLE_OVERRIDES = {"loss.label": "event", "data.holdout_fraction": 0.1,
                    "data.holdout_shards": 0}
QUIET = {"metrics.progress": False, "metrics.tensorboard": False}


def _parse_set(items):
    import yaml

    out = {}
    for item in items:
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _mean_sd(values):
    import numpy as np

    values = np.asarray([v for v in values if v is not None], float)
    if not len(values):
        return None, None
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _pct(x, sign=True):
    return "-" if x is None else (f"{100 * x:+.2f}%" if sign else f"{100 * x:.2f}%")


def _f(x):
    return "-" if x is None else f"{x:.4f}"


# ------------------------------------------------------------------ sample
def _train_sample(config, data, schema, out_dir, mode, seed, overrides):
    import keras

    from matta_rec.training import train_run

    keras.backend.clear_session()
    run = dict(SAMPLE_OVERRIDES, **QUIET)
    run.update(overrides, mode=mode, seed=seed)
    t0 = time.time()
    metrics = train_run(config, data, schema, out_dir, overrides=run)
    hold = metrics["holdout"]
    if "event" not in hold:
        raise SystemExit("nothing held out (data.holdout_fraction) or no labels.event column in "
                         "the schema: nothing to evaluate")
    return {"mode": mode, "seed": seed,
            "auc_loss": {level: m["auc_loss"] for level, m in hold["event"].items()},
            "teacher_auc_loss": hold["teacher_vs_event"]["auc_loss"],
            "holdout_rows": hold["rows"], "rows_trained": metrics["rows_trained"],
            "rows_per_s": metrics["rows_per_s"], "wall_s": time.time() - t0}


def summarise_sample(results, seeds):
    """Per seed: Student alone, TA alone, their gap, the MatTA heads and the MatTA change."""
    def get(seed, mode, level):
        run = next((r for r in results if r["seed"] == seed and r["mode"] == mode), None)
        return None if run is None else run["auc_loss"].get(level)

    rows = []
    for seed in seeds:
        s, ta = get(seed, "student", "student"), get(seed, "ta", "ta")
        ms, mta = get(seed, "matta", "student"), get(seed, "matta", "ta")
        rows.append({"seed": seed, "student": s, "ta": ta, "matta_student": ms, "matta_ta": mta,
                     "gap": None if s is None or ta is None else 1 - ta / s,
                     "matta_change": None if s is None or ms is None else (ms - s) / s})
    out = {"per_seed": rows}
    for key in ("student", "ta", "matta_student", "matta_ta", "gap", "matta_change"):
        out[key + "_mean"], out[key + "_sd"] = _mean_sd(r[key] for r in rows)
    out["teacher_auc_loss"] = results[0]["teacher_auc_loss"]
    return out


def sample_table(summary) -> str:
    lines = ["| seed | Student alone | TA alone | TA-vs-Student gap | MatTA Student | MatTA TA | "
             "MatTA Student vs alone |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["per_seed"]:
        lines.append(f"| {r['seed']} | {_f(r['student'])} | {_f(r['ta'])} | "
                     f"{_pct(r['gap'], False)} | {_f(r['matta_student'])} | {_f(r['matta_ta'])} | "
                     f"{_pct(r['matta_change'])} |")
    s = summary
    lines.append(f"| mean (sd) | {_f(s['student_mean'])} | {_f(s['ta_mean'])} | "
                 f"{_pct(s['gap_mean'], False)} ({_pct(s['gap_sd'], False)}) | "
                 f"{_f(s['matta_student_mean'])} | {_f(s['matta_ta_mean'])} | "
                 f"{_pct(s['matta_change_mean'])} ({_pct(s['matta_change_sd'], False)}) |")
    return "\n".join(lines)


def run_sample(args, overrides):
    schema = args.schema or os.path.join(args.data, "schema.yaml")
    if args.generate and not os.path.exists(schema):
        from matta_rec.data.synthetic import generate_logs

        generate_logs(args.data, rows=args.generate, seed=0)
    results = []
    for seed in args.seeds:
        for mode in args.modes:
            res = _train_sample(args.config, args.data, schema,
                                os.path.join(args.out, f"{mode}-seed{seed}"), mode, seed, overrides)
            results.append(res)
            heads = "  ".join(f"{k} {v:.4f}" for k, v in res["auc_loss"].items())
            print(f"seed {seed} {mode:8s} AucLoss on held-out clicks: {heads}  "
                  f"({res['rows_trained']} rows, {res['rows_per_s']:.0f} rows/s)", flush=True)
    summary = summarise_sample(results, args.seeds)
    summary.update(runs=results, holdout_rows=results[0]["holdout_rows"],
                   rows_trained=results[0]["rows_trained"])
    text = sample_table(summary)
    print("\n" + text)
    print(f"\nTA alone vs Student alone (gap): {_pct(summary['gap_mean'], False)} mean over "
          f"{len(args.seeds)} seeds; MatTA Student vs Student alone: "
          f"{_pct(summary['matta_change_mean'])} (sd {_pct(summary['matta_change_sd'], False)}); "
          f"Teacher AucLoss {summary['teacher_auc_loss']:.4f}; "
          f"{summary['holdout_rows']:,} held-out rows")
    footer = (f"Mean over seeds {' '.join(map(str, args.seeds))}; Teacher (`teacher_prob`) on the "
              f"same clicks: AucLoss {summary['teacher_auc_loss']:.4f}; "
              f"{summary['rows_trained']:,} rows trained, {summary['holdout_rows']:,} held out.")
    return summary, text + "\n\n" + footer


# ------------------------------------------------------------------ fixed preset
def _pass_evaluator(valid_dir, test_dir, schema):
    """A training callback scoring every head on valid/ and test/ after each pass."""
    from matta_rec.data.reader import LogStream
    from matta_rec.training.callbacks import TrainingCallback
    from matta_rec.training.online import evaluate_holdout

    class PassScores(TrainingCallback):
        def __init__(self):
            self.passes = []

        def on_train_begin(self, info):
            self.model, self.levels = info.model, info.levels
            self.pass_rows = info.planned_rows // info.config.epochs

        def on_batch_end(self, rows_end, features, labels, logits):
            if rows_end // self.pass_rows <= len(self.passes):
                return
            scores = {"pass": len(self.passes) + 1}
            for name, folder in (("valid", valid_dir), ("test", test_dir)):
                stream = LogStream(folder, schema, batch_size=2048, root=folder)
                scores[name] = {level: m["auc_loss"] for level, m in
                                evaluate_holdout(self.model, stream, self.levels)["event"].items()}
            self.passes.append(scores)

    return PassScores()


def _best(passes, level):
    best = min(passes, key=lambda p: p["valid"][level])
    return {"pass": best["pass"], "valid": best["valid"][level], "test": best["test"][level]}


def _today(config, paths, schema, out_dir, mode, seed, overrides, max_passes):
    """Today's recipe for ``max_passes`` passes; each head's best pass chosen on valid/."""
    import keras

    from matta_rec.training import train_run

    keras.backend.clear_session()
    scores = _pass_evaluator(paths["valid"], paths["test"], schema)
    run = dict(QUIET, **{"loss.label": "event", "data.holdout_fraction": None,
                         "data.holdout_shards": 0, "epochs": max_passes,
                         "checkpoint.every_rows": 10 ** 9})
    run.update(overrides, mode=mode, seed=seed)
    train_run(config, paths["train"], schema, out_dir, overrides=run, callbacks=[scores])
    levels = list(scores.passes[0]["valid"])
    return {"mode": mode, "seed": seed, "passes": scores.passes,
            "best": {level: _best(scores.passes, level) for level in levels}}


#: Keys of ``metrics.json``'s ``validation`` section (ValidationMonitor.report) the bench reads.
VALIDATION_KEYS = ("level", "label", "every_rows", "evaluations", "curve", "best", "levels_best",
                   "early_stopping", "restored", "ta_overfits")


def _validation_section(metrics, out_dir):
    """``metrics["validation"]`` with every key the bench reads, or a clear exit."""
    section = metrics.get("validation")
    if not isinstance(section, dict):
        raise SystemExit(f"{out_dir}/metrics.json has no validation section: the recommended "
                         "recipe must run with data.valid set")
    missing = [k for k in VALIDATION_KEYS if k not in section]
    missing += [f"early_stopping.{k}" for k in ("stopped", "stopped_at")
                if k not in (section.get("early_stopping") or {})]
    if missing or section["best"] is None:
        raise SystemExit(f"{out_dir}/metrics.json validation section lacks {missing or ['best']}")
    if section["every_rows"] is not None:
        raise SystemExit("the bench counts passes: leave validation.every_rows null (one "
                         "validation per pass)")
    return section


def _recommended(paths, schema, out_dir, mode, seed, overrides):
    """The recommended recipe (RECOMMENDED_CONFIG, validating on valid/); test AucLoss per head.

    Trains with ``data.valid`` set to the preset's valid/ folder (early
    stopping on the Student's validation AucLoss restores the best weights of
    the whole nested model before ``model.keras`` is written), loads the run
    back and scores it on test/.  The loaded model is scored on valid/ too:
    its served level must reproduce the logged best validation AucLoss, which
    checks that test/ is scored with the restored best weights.  The recipe
    validates at the end of every pass (``validation.every_rows: null``), so
    evaluation *k* is pass *k*.
    """
    import keras

    from matta_rec.data.reader import LogStream
    from matta_rec.training import load_run, train_run
    from matta_rec.training.online import evaluate_holdout

    keras.backend.clear_session()
    run = dict(QUIET, **{"loss.label": "event", "data.holdout_fraction": None,
                         "data.holdout_shards": 0, "data.valid": paths["valid"]})
    run.update(overrides, mode=mode, seed=seed)
    metrics = train_run(RECOMMENDED_CONFIG, paths["train"], schema, out_dir, overrides=run)
    val = _validation_section(metrics, out_dir)
    loaded = load_run(out_dir)
    levels = list(metrics["levels"])
    scored = {}
    for name in ("valid", "test"):
        stream = LogStream(paths[name], schema, batch_size=2048, root=paths[name])
        scored[name] = {k: v["auc_loss"] for k, v in
                        evaluate_holdout(loaded.model, stream, levels)[val["label"]].items()}
    best = val["best"]
    if val["restored"] and abs(scored["valid"][val["level"]] - best["auc_loss"]) > 1e-4:
        raise SystemExit(f"{out_dir}: the saved model scores {scored['valid'][val['level']]:.6f} "
                         f"on valid/, the logged best is {best['auc_loss']:.6f}: the best "
                         "weights were not restored")
    stopped = val["early_stopping"]
    return {"mode": mode, "seed": seed, "test": scored["test"], "valid": scored["valid"],
            "passes_run": val["evaluations"], "restored": bool(val["restored"]),
            "best_pass": best["evaluation"], "best_valid": best["auc_loss"],
            "levels_best": {lvl: {"pass": b["evaluation"], "valid": b["auc_loss"]}
                            for lvl, b in val["levels_best"].items()},
            "stopped_early": bool(stopped["stopped"]),
            "ta_overfits": val["ta_overfits"],
            "valid_curve": [{lvl: e[val["label"]][lvl]["auc_loss"] for lvl in levels}
                            for e in val["curve"]]}


def _pick(runs, seed, mode):
    return next((r for r in runs if r["seed"] == seed and r["mode"] == mode), None)


def fixed_comparison(today, recommended, seeds):
    """Per seed and mean: the test AucLoss of every arm and the two changes the issue targets.

    ``vs_today = (recommended MatTA Student - today's MatTA Student at its best
    valid pass) / today's`` (target <= -5%); ``vs_twin = (recommended MatTA
    Student - recommended Student alone) / Student alone`` (target < 0).
    """
    rows = []
    for seed in seeds:
        m, s = _pick(today, seed, "matta"), _pick(today, seed, "student")
        rm, rs = _pick(recommended, seed, "matta"), _pick(recommended, seed, "student")
        row = {"seed": seed,
               "today_student": m and m["best"]["student"]["test"],
               "today_ta": m and m["best"]["ta"]["test"],
               "today_alone": s and s["best"]["student"]["test"],
               "rec_student": rm and rm["test"]["student"], "rec_ta": rm and rm["test"]["ta"],
               "rec_alone": rs and rs["test"]["student"]}
        row["vs_today"] = (None if row["rec_student"] is None or row["today_student"] is None
                           else row["rec_student"] / row["today_student"] - 1)
        row["vs_twin"] = (None if row["rec_student"] is None or row["rec_alone"] is None
                          else row["rec_student"] / row["rec_alone"] - 1)
        rows.append(row)
    out = {"per_seed": rows}
    for key in ("today_student", "today_ta", "today_alone", "rec_student", "rec_ta", "rec_alone",
                "vs_today", "vs_twin"):
        out[key + "_mean"], out[key + "_sd"] = _mean_sd(r[key] for r in rows)
    return out


def fixed_table(today, recommended, seeds) -> str:
    """The fixed-preset table: test AucLoss, in brackets the pass chosen on valid/."""
    comparison = fixed_comparison(today, recommended, seeds)

    def cell(value, best_pass=None):
        return _f(value) + ("" if value is None or best_pass is None else f" ({best_pass})")

    lines = ["| seed | today: MatTA Student | today: MatTA TA | today: Student alone | "
             "recommended: MatTA Student | recommended: MatTA TA | recommended: Student alone | "
             "recommended MatTA Student vs today's | vs its twin |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in comparison["per_seed"]:
        seed = row["seed"]
        m, s = _pick(today, seed, "matta"), _pick(today, seed, "student")
        rm, rs = _pick(recommended, seed, "matta"), _pick(recommended, seed, "student")
        lines.append(
            f"| {seed} | {cell(row['today_student'], m and m['best']['student']['pass'])} | "
            f"{cell(row['today_ta'], m and m['best']['ta']['pass'])} | "
            f"{cell(row['today_alone'], s and s['best']['student']['pass'])} | "
            f"{cell(row['rec_student'], rm and rm['best_pass'])} | "
            f"{cell(row['rec_ta'], rm and rm['best_pass'])} | "
            f"{cell(row['rec_alone'], rs and rs['best_pass'])} | "
            f"{_pct(row['vs_today'])} | {_pct(row['vs_twin'])} |")
    c = comparison
    lines.append(f"| mean (sd) | {_f(c['today_student_mean'])} | {_f(c['today_ta_mean'])} | "
                 f"{_f(c['today_alone_mean'])} | {_f(c['rec_student_mean'])} | "
                 f"{_f(c['rec_ta_mean'])} | {_f(c['rec_alone_mean'])} | "
                 f"{_pct(c['vs_today_mean'])} ({_pct(c['vs_today_sd'], False)}) | "
                 f"{_pct(c['vs_twin_mean'])} ({_pct(c['vs_twin_sd'], False)}) |")
    return "\n".join(lines)


def _overfit_lines(today, max_passes):
    """Per MatTA run of today's recipe: where each head peaked, whether the TA ended worse."""
    out = []
    for run in (r for r in today if r["mode"] == "matta"):
        last = run["passes"][-1]["valid"]
        best = run["best"]
        verdict = ("the TA overfits: its last-pass valid AucLoss is above the Student's"
                   if last.get("ta", 0) > last["student"] else "the TA stays below the Student")
        rise = {lvl: last[lvl] / best[lvl]["valid"] - 1 for lvl in ("student", "ta")}
        out.append(f"today's recipe, seed {run['seed']}: Student best at pass "
                   f"{best['student']['pass']}, TA at pass {best['ta']['pass']}; after pass "
                   f"{len(run['passes'])} valid AucLoss TA {last['ta']:.4f} "
                   f"({100 * rise['ta']:+.0f}% from its best) vs Student {last['student']:.4f} "
                   f"({100 * rise['student']:+.0f}%): {verdict}")
    near = sorted({f"seed {r['seed']} {r['mode']} {lvl} (pass {b['pass']})" for r in today
                   for lvl, b in r["best"].items() if b["pass"] > max_passes - 3})
    if near:
        out.append(f"WARNING: best pass within 3 of the cap of {max_passes} for "
                   + ", ".join(near) + ": the cap may cut today's recipe short; rerun with a "
                   "larger --max-passes")
    return out


def _recommended_lines(recommended):
    """Per recommended MatTA run: each level's best pass, the stop and the TA-overfits verdict."""
    out = []
    for run in (r for r in recommended if r["mode"] == "matta"):
        best, over = run["levels_best"], run["ta_overfits"] or {}
        verdict = ("the TA's valid AucLoss is above the Student's at "
                   + ", ".join(f"pass {p['evaluation']}" for p in over["points"])
                   if over.get("any") else "the TA stays below the Student on every pass")
        out.append(f"recommended recipe, seed {run['seed']}: Student best at pass "
                   f"{best['student']['pass']} (valid {best['student']['valid']:.4f}), TA at pass "
                   f"{best['ta']['pass']} (valid {best['ta']['valid']:.4f}); "
                   + ("stopped early" if run["stopped_early"] else "ran to the epoch cap")
                   + f" after {run['passes_run']} passes, best weights "
                   + ("restored" if run["restored"] else "NOT restored") + f"; {verdict}")
    return out


def run_fixed(args, overrides):
    from matta_rec.data.synthetic import FIXED_PRESET, generate_fixed_dataset

    paths = {name: os.path.join(args.data, name) for name in ("train", "valid", "test")}
    if not all(os.path.isfile(os.path.join(p, "schema.yaml")) for p in paths.values()):
        print(f"writing the fixed-data preset to {args.data}", flush=True)
        generate_fixed_dataset(args.data, 0, overwrite=True)
    schema = os.path.join(paths["train"], "schema.yaml")
    max_passes = args.max_passes or FIXED_PRESET["max_passes"]
    have_recipe = os.path.isfile(RECOMMENDED_CONFIG)
    if not have_recipe:
        print(f"{os.path.relpath(RECOMMENDED_CONFIG, ROOT)} not found: reporting today's recipe "
              f"only (the recommended recipe is compared once that file exists)", flush=True)
    today, recommended = [], []
    for seed in args.seeds:
        for mode in ("matta", "student"):
            res = _today(args.config, paths, schema, os.path.join(args.out, f"today-{mode}-{seed}"),
                         mode, seed, overrides, max_passes)
            today.append(res)
            print(f"seed {seed} today's {mode:7s}: " + "  ".join(
                f"{lvl} best pass {b['pass']} (valid {b['valid']:.4f}, test {b['test']:.4f})"
                for lvl, b in res["best"].items()), flush=True)
            if have_recipe:
                rec = _recommended(paths, schema, os.path.join(args.out, f"rec-{mode}-{seed}"),
                                   mode, seed, overrides)
                recommended.append(rec)
                print(f"seed {seed} recommended {mode:7s}: best pass {rec['best_pass']} of "
                      f"{rec['passes_run']}; test " + "  ".join(
                          f"{lvl} {v:.4f}" for lvl, v in rec["test"].items()), flush=True)
    text = fixed_table(today, recommended, args.seeds)
    comparison = fixed_comparison(today, recommended, args.seeds)
    notes = _overfit_lines(today, max_passes) + _recommended_lines(recommended)
    print("\n" + text + "\n\n" + "\n".join(notes))
    rel = os.path.relpath(RECOMMENDED_CONFIG, ROOT)
    footer = (f"Test AucLoss on `test/` (a separate 50,000-row draw), clicks as the label. Today's "
              f"recipe: in brackets each head's pass (of {max_passes}) chosen on `valid/`. "
              + (f"Recommended (`{rel}`): in brackets the pass whose weights early stopping "
                 f"restored (the Student's best on `valid/`; the TA is scored at that pass too). "
                 if have_recipe else f"The recommended recipe (`{rel}`) did not exist when "
                 "this ran. ")
              + f"Seeds {' '.join(map(str, args.seeds))}."
              + "\n\n" + "\n".join(f"* {line}" for line in notes))
    return {"today": today, "recommended": recommended, "max_passes": max_passes,
            "comparison": comparison,
            "recommended_config": RECOMMENDED_CONFIG if have_recipe else None}, \
        text + "\n\n" + footer


# ------------------------------------------------------------------ record / main
def record(path, marker, text):
    """Replace the text between ``<!-- MARKER:begin -->`` and ``<!-- MARKER:end -->`` of ``path``."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    with open(path, encoding="utf-8") as handle:
        old = handle.read()
    if begin not in old or end not in old:
        raise SystemExit(f"{path} has no {begin} ... {end} block to replace")
    head, rest = old.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(head + begin + "\n" + text.rstrip() + "\n" + end + tail)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("sample", "fixed"), default="sample",
                        help="sample (default): the TA gap and MatTA on --data; fixed: the "
                             "fixed-data preset, today's recipe over passes vs the recommended one")
    parser.add_argument("--data", default=None,
                        help="log shards (default sample_data/; with --preset fixed "
                             "runs/fixed_data, written first when missing)")
    parser.add_argument("--schema", default=None, help="schema YAML (default DATA/schema.yaml)")
    parser.add_argument("--config", default=DEMO_CONFIG,
                        help="run config of every arm (default: the demo's, matta_rec/cli/demo.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="model seeds (>= 3 for the reported figure)")
    parser.add_argument("--modes", nargs="+", default=["student", "ta", "matta"],
                        help="modes trained per seed on the sample (default student ta matta)")
    parser.add_argument("--max-passes", type=int, default=None,
                        help="--preset fixed: passes of today's recipe (default the preset's 30)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every arm (repeatable)")
    parser.add_argument("--out", default=None,
                        help="runs and matta_gain.json (default runs/bench_matta_gain[_fixed])")
    parser.add_argument("--generate", type=int, default=None, metavar="ROWS",
                        help="write synthetic logs to --data first when it holds no shards")
    parser.add_argument("--record", default=None, metavar="FILE",
                        help="replace the matta_gain:<preset> block of this markdown file")
    args = parser.parse_args(argv)
    fixed = args.preset == "fixed"
    args.data = args.data or os.path.join(ROOT, "runs", "fixed_data" if fixed else "sample_data")
    if not fixed and args.data == os.path.join(ROOT, "runs", "sample_data"):
        args.data = os.path.join(ROOT, "sample_data")
    args.out = args.out or os.path.join(ROOT, "runs", "bench_matta_gain" + ("_fixed" if fixed else ""))
    overrides = _parse_set(args.overrides)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    summary, text = (run_fixed if fixed else run_sample)(args, overrides)
    summary.update(preset=args.preset, data=os.path.relpath(os.path.abspath(args.data), ROOT),
                   config=os.path.relpath(os.path.abspath(args.config), ROOT), seeds=args.seeds,
                   overrides=overrides, machine=f"{platform.machine()}, {os.cpu_count()} CPUs")
    with open(os.path.join(args.out, "matta_gain.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    if args.record:
        record(args.record, f"matta_gain:{args.preset}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
