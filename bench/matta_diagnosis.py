"""MatTA diagnosis: why the MatTA Student trails the Student alone, one change at a time.

``bench/matta_gain.py`` found that on ``sample_data/`` (demo config, clicks
as the label, one pass) the MatTA Student has a higher held-out AucLoss than
the Student trained alone, although the TA alone beats the Student alone by
~17%.  This script trains named *variants* of the MatTA run, each one change
against the MatTA default (the demo config with ``loss.label=event``), next to
the Student alone and the TA alone of the same seed, under the same data,
hold-out (the last 10% of the shards) and evaluation as ``matta_gain.py``:

* the TA's loss and the distillation term (``matta_no_distill``,
  ``loss.ta_weight``, ``loss.distill_weight``, ``loss.temperature``, the ramp);
* the label (``loss.label=target``, the Teacher probabilities);
* the optimizer (Adam vs Shampoo, the learning rate);
* sharing (``matta_no_sharing``: independent weights, shared embeddings).

Each variant's arms (the Student alone, the TA alone, the variant) use the
same overrides, so a variant that changes the optimizer or the label is
compared with a Student alone trained the same way (``vs alone``).
``NAME+student_init`` (or ``--student-fan-init`` for every variant) starts
the MatTA arm from the Student-shape initialisation (:func:`student_fan_init`):
the Student's block of every shared kernel rescaled to the Glorot range of
the Student's own shape, as a Student built alone is drawn.  Each row also
gives progressive validation (the training stream's click AucLoss, every
batch scored before it is trained on), which needs no hold-out.

Usage::

    python bench/matta_diagnosis.py --list
    python bench/matta_diagnosis.py --variants default no_distill --seeds 0
    python bench/matta_diagnosis.py --variants default default+student_init --seeds 0 1 2 \\
        --with-ta --record docs/benchmarks.md --marker seeds

Every run's result is kept as ``OUT/<arm>-seed<k>.json`` and reused by later
calls with the same ``--out`` (delete the file, or pass ``--fresh``, to
retrain), so a search can be extended variant by variant.  ``--record FILE``
replaces the table between ``<!-- matta_diagnosis:MARKER:begin -->`` and
``<!-- matta_diagnosis:MARKER:end -->`` of FILE (``--marker``, default
``seeds``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from matta_gain import (  # noqa: E402
    DEMO_CONFIG, QUIET, ROOT, SAMPLE_OVERRIDES, _mean_sd, _pct, record,
)

#: variant name -> (mode, overrides of every arm, overrides of the MatTA arm only,
#: what it changes).  Arm overrides apply to the Student / TA alone too.
VARIANTS = {
    "default": ("matta", {}, {}, "MatTA as the demo trains it (event label)"),
    "no_distill": ("matta_no_distill", {}, {}, "w_D = 0: shared weights, L_S + L_TA only"),
    "ta_weight_0.3": ("matta", {}, {"loss.ta_weight": 0.3}, "w_TA 0.3"),
    "ta_weight_0": ("matta", {}, {"loss.ta_weight": 0.0},
                    "w_TA 0: only L_S and L_D train (control)"),
    "student_loss_only": ("matta", {}, {"loss.ta_weight": 0.0, "loss.distill_weight": 0.0},
                          "w_TA = w_D = 0: the nested Student trained by L_S alone (control: "
                          "what nesting alone does)"),
    "no_sharing_student_loss_only": ("matta_no_sharing", {},
                                     {"loss.ta_weight": 0.0, "loss.distill_weight": 0.0},
                                     "independent weights, w_TA = w_D = 0 (control)"),
    "student_loss_only_adam": ("matta", {"optimizer.name": "adam"},
                               {"loss.ta_weight": 0.0, "loss.distill_weight": 0.0},
                               "w_TA = w_D = 0, every arm with Adam (control)"),
    "distill_0.3": ("matta", {}, {"loss.distill_weight": 0.3}, "w_D 0.3"),
    "distill_3": ("matta", {}, {"loss.distill_weight": 3.0}, "w_D 3"),
    "temperature_2": ("matta", {}, {"loss.temperature": 2.0}, "T = 2"),
    "late_ramp": ("matta", {}, {"loss.ramp.delay_steps": 150, "loss.ramp.ramp_steps": 100},
                  "ramp from step 150 to 250 (of ~326)"),
    "no_sharing": ("matta_no_sharing", {}, {},
                   "independent Student / TA weights, shared embeddings"),
    "no_sharing_no_distill": ("matta_no_sharing", {}, {"loss.distill_weight": 0.0},
                              "independent weights, shared embeddings, w_D = 0"),
    "unshared_embeddings": ("matta_no_sharing", {}, {"model.share_weights": False,
                                                     "model.share_embeddings": False},
                            "independent weights and embeddings: L_D is the only link"),
    "target_label": ("matta", {"loss.label": "target"}, {},
                     "every arm trains on the Teacher probabilities"),
    "adam": ("matta", {"optimizer.name": "adam"}, {}, "every arm with Adam (lr 0.003)"),
    "lr_0.0015": ("matta", {}, {"optimizer.settings.learning_rate": 0.0015},
                  "MatTA at half the learning rate"),
    "lr_0.006": ("matta", {"optimizer.settings.learning_rate": 0.006}, {},
                 "every arm at twice the learning rate"),
    "lr_0.012": ("matta", {"optimizer.settings.learning_rate": 0.012}, {},
                 "every arm at four times the learning rate"),
    "lr_0.024": ("matta", {"optimizer.settings.learning_rate": 0.024}, {},
                 "every arm at eight times the learning rate"),
}


def student_fan_init(model):
    """Rescale the Student's block of every shared nested Dense kernel to its own Glorot range.

    A shared ``MNestedDense`` kernel ``(M, N)`` is drawn from Glorot-uniform
    with limit ``sqrt(6 / (M + N))``, the TA's shape, so the Student's block
    ``kernel[:m, :n]`` starts ``sqrt((M + N) / (m + n))`` times smaller than a
    Student built alone (limit ``sqrt(6 / (m + n))``).  This multiplies that
    block by the ratio (the TA's extra rows and columns are left as drawn):
    the nested Student then starts at the scale of the Student alone.

    Returns:
        ``[(variable path, (m, n), (M, N), factor)]`` of the rescaled blocks.
    """
    import math

    from matta_rec.layers import MNestedDense

    blocks = model.architecture["blocks"]
    student_runs = {f"{b['kind']}_{b['source']}" for b in blocks if b["min_level"] == 0}
    student_runs.add("head")
    done = []
    for layer in model._flatten_layers(include_self=False):
        if not isinstance(layer, MNestedDense) or not layer.share_weights \
                or layer.num_levels < 2:
            continue
        kernel = layer.kernel
        if kernel.path.split("/")[0] not in student_runs:
            continue  # a block only larger levels run (depth nesting)
        big_m, big_n = kernel.shape
        m, n = layer.input_dims[0], layer.units[0]
        if (m, n) == (big_m, big_n):
            continue
        factor = math.sqrt((big_m + big_n) / (m + n))
        value = kernel.numpy()
        value[:m, :n] *= factor
        kernel.assign(value)
        done.append((kernel.path, (m, n), (big_m, big_n), round(factor, 3)))
    return done


def _fan_init_callback():
    from matta_rec.training.callbacks import TrainingCallback

    class StudentFanInit(TrainingCallback):
        def on_train_begin(self, info):
            self.rescaled = student_fan_init(info.model)

    return StudentFanInit()


def _train(args, out_dir, mode, seed, overrides, callbacks=()):
    """One run on the sample as bench/matta_gain.py trains it; AucLoss per head."""
    import time

    import keras

    from matta_rec.training import train_run

    keras.backend.clear_session()
    run = dict(SAMPLE_OVERRIDES, **QUIET)
    run.update(overrides, mode=mode, seed=seed)
    t0 = time.time()
    metrics = train_run(args.config, args.data, args.schema, out_dir, overrides=run,
                        callbacks=list(callbacks))
    hold = metrics["holdout"]
    return {"mode": mode, "seed": seed,
            "auc_loss": {level: m["auc_loss"] for level, m in hold["event"].items()},
            "online": _online(metrics),
            "holdout_rows": hold["rows"], "rows_trained": metrics["rows_trained"],
            "wall_s": time.time() - t0,
            "rescaled": [list(map(str, r)) for r in getattr(callbacks[0], "rescaled", [])]
            if callbacks else []}


def _online(metrics):
    """Progressive validation per head: the training stream's click AucLoss, each batch
    scored before it is trained on, averaged over the windows (no hold-out involved)."""
    summary = metrics["online"]["summary"]["event"]
    return {level: m["auc_loss_mean_over_windows"] for level, m in summary.items()}


def _load_or_train(args, arm, mode, seed, overrides, callbacks=()):
    path = os.path.join(args.out, f"{arm}-seed{seed}.json")
    if os.path.isfile(path) and not args.fresh:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    run_dir = os.path.join(args.out, "runs", f"{arm}-seed{seed}")
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)  # an unfinished (or --fresh) run is trained again
    res = _train(args, run_dir, mode, seed, overrides, callbacks)
    res.update(arm=arm, overrides=overrides)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(res, handle, indent=2)
    heads = "  ".join(f"{k} {v:.4f}" for k, v in res["auc_loss"].items())
    print(f"seed {seed} {arm:32s} {heads}  ({res['wall_s']:.0f}s)", flush=True)
    return res


def _arm_key(base, overrides):
    """The cache name of a Student / TA alone arm trained under ``overrides``."""
    if not overrides:
        return base
    return base + "+" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))


#: Suffix of a variant name whose MatTA arm starts from the Student-shape init.
STUDENT_INIT = "+student_init"


def parse_variant(name):
    """``(base variant, student-shape init?)`` of a ``--variants`` entry."""
    base = name[: -len(STUDENT_INIT)] if name.endswith(STUDENT_INIT) else name
    if base not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; --list shows the variants (any of them "
                         f"may end in {STUDENT_INIT})")
    return base, name.endswith(STUDENT_INIT)


def run(args):
    rows = []
    for entry in args.variants:
        name, fan = parse_variant(entry)
        fan = fan or args.student_fan_init
        mode, common, own, what = VARIANTS[name]
        per_seed = []
        for seed in args.seeds:
            ref = _load_or_train(args, "student", "student", seed, {})
            alone = _load_or_train(args, _arm_key("student", common), "student", seed, common)
            ta = _load_or_train(args, _arm_key("ta", common), "ta", seed, common) \
                if args.with_ta else None
            arm = ("fan-" if fan else "") + f"variant-{name}"
            res = _load_or_train(args, arm, mode, seed, dict(common, **own),
                                 [_fan_init_callback()] if fan else [])
            s_alone = alone["auc_loss"]["student"]
            per_seed.append({
                "seed": seed, "student": res["auc_loss"]["student"],
                "ta": res["auc_loss"].get("ta"), "student_alone": s_alone,
                "ta_alone": None if ta is None else ta["auc_loss"]["ta"],
                "vs_alone": res["auc_loss"]["student"] / s_alone - 1,
                "vs_ref": res["auc_loss"]["student"] / ref["auc_loss"]["student"] - 1,
                "online": res.get("online", {}).get("student"),
                "online_alone": alone.get("online", {}).get("student")})
        if fan:
            what = what + "; MatTA arm from the Student-shape init"
        row = {"variant": name + (STUDENT_INIT if fan else ""),
               "mode": mode, "overrides": dict(common, **own), "what": what,
               "per_seed": per_seed}
        for key in ("student", "ta", "student_alone", "ta_alone", "vs_alone", "vs_ref",
                    "online", "online_alone"):
            row[key + "_mean"], row[key + "_sd"] = _mean_sd(r[key] for r in per_seed)
        rows.append(row)
    return rows


def table(rows, seeds) -> str:
    def f(x):
        return "-" if x is None else f"{x:.4f}"

    lines = ["| variant | change against the MatTA default | MatTA Student | MatTA TA | "
             "Student alone (same arm settings) | TA alone | Student vs alone | per seed | "
             "progressive: MatTA Student / alone |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        sets = " ".join(f"`{k}={v}`" for k, v in r["overrides"].items())
        change = r["what"] + (f" ({sets})" if sets else "") + \
            ("" if r["mode"] == "matta" else f", `--mode {r['mode']}`")
        seeds_cell = " ".join(_pct(p["vs_alone"]) for p in r["per_seed"])
        lines.append(f"| {r['variant']} | {change} | {f(r['student_mean'])} | {f(r['ta_mean'])} | "
                     f"{f(r['student_alone_mean'])} | {f(r['ta_alone_mean'])} | "
                     f"{_pct(r['vs_alone_mean'])} | {seeds_cell} | "
                     f"{f(r['online_mean'])} / {f(r['online_alone_mean'])} |")
    return "\n".join(lines) + (f"\n\nAucLoss on the held-out clicks of `sample_data/`, mean over "
                               f"seeds {' '.join(map(str, seeds))}.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["default"], metavar="NAME",
                        help=f"variants to train (see --list); NAME{STUDENT_INIT} starts the "
                             f"MatTA arm from the Student-shape init (student_fan_init)")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "sample_data"))
    parser.add_argument("--schema", default=None, help="default DATA/schema.yaml")
    parser.add_argument("--config", default=DEMO_CONFIG, help="base config (the demo's)")
    parser.add_argument("--with-ta", action="store_true",
                        help="also train the TA alone under each variant's arm settings")
    parser.add_argument("--student-fan-init", action="store_true",
                        help="start every MatTA arm from the Student-shape initialisation "
                             "(student_fan_init: the Student's block of each shared kernel at "
                             "the Glorot range of its own shape)")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_matta_diagnosis"))
    parser.add_argument("--fresh", action="store_true", help="retrain runs cached in --out")
    parser.add_argument("--record", default=None, metavar="FILE",
                        help="replace the <!-- matta_diagnosis:MARKER --> block of this file")
    parser.add_argument("--marker", default="seeds",
                        help="name of the block --record replaces (default seeds)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (mode, common, own, what) in VARIANTS.items():
            print(f"{name:24s} --mode {mode:18s} {dict(common, **own)}  {what}")
        return 0
    args.schema = args.schema or os.path.join(args.data, "schema.yaml")
    os.makedirs(args.out, exist_ok=True)
    rows = run(args)
    text = table(rows, args.seeds)
    print("\n" + text)
    with open(os.path.join(args.out, "matta_diagnosis.json"), "w", encoding="utf-8") as handle:
        json.dump({"rows": rows, "seeds": args.seeds,
                   "config": os.path.relpath(os.path.abspath(args.config), ROOT)}, handle, indent=2)
    if args.record:
        record(args.record, f"matta_diagnosis:{args.marker}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
