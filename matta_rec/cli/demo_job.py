"""The demo job: train MatTA with Shampoo, export the sizes, evaluate them.

Steps (everything lands under ``out``)::

    data/           only without ``data``: the sample logs, written by the
                    built-in generator (the rows of the checkout's sample_data/)
    runs/matta      MatTA (Student nested in a TA) trained online with Shampoo
    runs/baseline   an independently trained Student (same size, Adam): the
                    stand-in for the production baseline
    exports/matta   every chosen Mix'n'Match size of the MatTA run, TF Serving
                    layout + manifest.json (params, FLOPs, latency)
    exports/baseline/student
    report/         report.md, report.json, pareto.png, online_auc_loss.png,
                    demo_table.md (the summary table README.md shows)

Both runs train on the same shards; the last shards of the stream are held
out and every exported size is evaluated on them against the baseline
SavedModel (AucLoss change with a 95% paired-bootstrap interval).

Everything the job needs ships with the package: the run config is
``matta_rec/cli/demo.yaml`` (package data) and the logs come from
:mod:`matta_rec.data.synthetic` when no ``data`` is given, so the demo runs
from a plain (non-editable) install, outside any checkout.

Example:

>>> report = run_demo(out="runs/demo")               # generates OUT/data first
>>> report = run_demo("sample_data", "runs/demo")    # the checkout's sample logs
>>> report["models"][0]["vs_baseline"]["relative_pct"]
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

from matta_rec.errors import ConfigError, MattaError

#: The demo's run config, shipped inside the package (setup.cfg package_data).
DEMO_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.yaml")

#: Arguments of the built-in generator that give the checkout's sample_data/
#: byte for byte (sample_data/README.md): 100,000 rows, 4 days of hourly shards.
SAMPLE_LOGS = {"rows": 100_000, "seed": 0, "days": 4}

#: File under ``OUT/report`` with the summary table README.md shows.
TABLE_FILE = "demo_table.md"


def sample_logs_command(out_dir: str) -> str:
    """The ``matta-rec generate`` command equivalent to :func:`write_sample_logs`.

    Args:
        out_dir: where the logs go.

    Returns:
        The command line, e.g. for help texts and logs.

    Example:
        >>> sample_logs_command("runs/demo/data")
        'matta-rec generate --out runs/demo/data --rows 100000 --seed 0 --days 4'
    """
    return (f"matta-rec generate --out {out_dir} --rows {SAMPLE_LOGS['rows']} "
            f"--seed {SAMPLE_LOGS['seed']} --days {SAMPLE_LOGS['days']}")


def write_sample_logs(out_dir: str) -> str:
    """Write the sample logs (the checkout's sample_data/) with the built-in generator.

    The generator is a pure function of its arguments, so this writes the
    same files as the checkout's ``sample_data/`` (about a second, 3 MB);
    files of an earlier call are replaced.

    Args:
        out_dir: output folder (``dt=*/hour=*/part-0.parquet`` + schema.yaml).

    Returns:
        ``out_dir``.

    Example:
        >>> write_sample_logs("/tmp/demo_logs")  # doctest: +SKIP
        '/tmp/demo_logs'
    """
    from matta_rec.data.synthetic import generate_logs

    generate_logs(out_dir, SAMPLE_LOGS["rows"], SAMPLE_LOGS["seed"], days=SAMPLE_LOGS["days"],
                  overwrite=True)
    return out_dir


def choose_sizes(run_dir: str, count: int) -> list[str]:
    """Student, TA and ``count - 2`` Mix'n'Match sizes spread evenly by parameters.

    Args:
        run_dir: the trained MatTA run.
        count: how many sizes to export (>= 2).

    Returns:
        Size specs in increasing parameter count.

    Example:

    >>> choose_sizes("runs/demo/runs/matta", 4)
    ['student', 'wnw:4', 'wnw:2@ta', 'ta']
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


def summary_table(report: Mapping) -> str:
    """The demo's summary as Markdown: the table README.md shows.

    Machine-independent columns only (no latency), so the same seed gives
    the same table on the same kind of machine.

    Args:
        report: the report of :func:`run_demo` (``report.json``).

    Returns:
        A Markdown table and one line saying what it was measured on.

    Example:

    >>> print(summary_table(run_demo("sample_data", "runs/demo")))
    | model | params | AucLoss | ΔAucLoss % vs baseline | 95% CI |
    ...
    """
    roles = {"student": "student (MatTA + Shampoo)", "ta": "ta (the Teaching Assistant)"}
    base = report["baseline"]
    level = round(100 * (report.get("ci") or {}).get("level", 0.95))
    lines = [f"| model | params | AucLoss | ΔAucLoss % vs baseline | {level}% CI |",
             "|---|---:|---:|---:|---:|",
             f"| baseline (the Student alone, Adam) | {base['params']:,} | "
             f"{base['auc_loss']:.4f} | 0 (ref) | |"]
    for model in report["models"]:
        spec = model.get("spec") or model["name"]
        vs = model["vs_baseline"]
        lo, hi = vs["relative_pct_ci"]
        name = roles.get(spec, f"{spec} (Mix'n'Match)")
        lines.append(f"| {name} | {model['params']:,} | {model['auc_loss']:.4f} | "
                     f"{vs['relative_pct']:+.2f} | [{lo:+.2f}, {hi:+.2f}] |")
    ci = report.get("ci") or {}
    replicates = f", {ci['n_boot']} replicates" if ci.get("n_boot") else ""
    lines += ["", f"{report['rows']:,} held-out rows (the last {len(report['data'])} shards), "
                  f"label {report.get('label')}; {level}% intervals: paired "
                  f"{ci.get('method', 'bootstrap')}{replicates}."]
    return "\n".join(lines) + "\n"


def _shampoo_section(config) -> dict:
    """The demo config's optimizer when it is Shampoo, else Shampoo with its learning rate."""
    if config.optimizer.name.lower() == "shampoo":
        return {"name": "shampoo", "settings": dict(config.optimizer.settings)}
    lr = (config.optimizer.settings or {}).get("learning_rate")
    return {"name": "shampoo", "settings": {"learning_rate": lr} if lr else {}}


def _train(config, train_files: Sequence[str], schema, run_dir: str, overrides: dict,
           fresh: bool, log: Callable[..., Any]) -> None:
    """Train one run, or reuse a finished one trained with the same settings."""
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


def _train_both(base, train_files, schema, runs: str, fresh: bool, log) -> tuple[str, str]:
    """Train MatTA + Shampoo and the Adam Student baseline; return their run dirs."""
    matta_dir, baseline_dir = os.path.join(runs, "matta"), os.path.join(runs, "baseline")
    log("1/4 training MatTA (Student nested in a TA) with Shampoo")
    _train(base, train_files, schema, matta_dir,
           {"mode": "matta", "optimizer": _shampoo_section(base)}, fresh, log)
    log("2/4 training the baseline: the Student alone with Adam")
    lr = (base.optimizer.settings or {}).get("learning_rate", 0.001)
    _train(base, train_files, schema, baseline_dir,
           {"mode": "student", "optimizer": {"name": "adam", "settings": {"learning_rate": lr}}},
           fresh, log)
    return matta_dir, baseline_dir


def _export_both(matta_dir: str, baseline_dir: str, exports: str, train_files, count: int,
                 log) -> None:
    """Export ``count`` sizes of the MatTA run and the baseline's Student."""
    from matta_rec.export import export_run

    log("3/4 extracting and exporting the sizes")
    if os.path.isdir(exports):
        shutil.rmtree(exports)
    sizes = choose_sizes(matta_dir, count)
    latency = {"latency_repeats": 30, "batch_sizes": (1, 256)}
    manifest = export_run(matta_dir, os.path.join(exports, "matta"), sizes=sizes,
                          version=1, data=train_files[:1], **latency)
    export_run(baseline_dir, os.path.join(exports, "baseline"), sizes=("student",), version=1,
               data=train_files[:1], **latency)
    log(f"  exported {', '.join(s['spec'] for s in manifest['sizes'])} and the baseline "
        f"to {exports}")


def run_demo(
    data: str | None = None,
    out: str = "runs/demo",
    *,
    config: str = DEMO_CONFIG,
    fresh: bool = False,
    holdout_fraction: float = 0.1,
    sizes: int = 5,
    n_boot: int = 500,
    label: str = "auto",
    log: Callable[..., Any] = print,
) -> dict:
    """Train, export and evaluate; return the report dict.

    Args:
        data: log shards with a ``schema.yaml``; ``None`` writes the sample
            logs to ``OUT/data`` with the built-in generator first
            (:func:`write_sample_logs`: the rows of the checkout's sample_data/).
        out: output folder (data, runs, exports, report).
        config: the run config YAML (default: the packaged ``demo.yaml``).
        fresh: retrain even when a finished run with the same settings is in
            ``out``.
        holdout_fraction: the last fraction of the shards (time order) is the
            evaluation set (0.1: the last tenth).
        sizes: how many Mix'n'Match sizes to export (>= 2: Student, TA and
            the rest spread by parameter count).
        n_boot: bootstrap replicates of the intervals.
        label: evaluation label: ``"auto"``, ``"event"`` or ``"teacher"``.
        log: progress printer.

    Returns:
        The evaluation report (also in ``OUT/report/report.json``; its
        summary table in ``OUT/report/demo_table.md``).

    Raises:
        ConfigError: ``sizes`` < 2, ``holdout_fraction`` outside (0, 1), a bad
            config, or a hold-out that leaves no shard to train on.
        MattaError: missing data or schema.

    Example:

    >>> run_demo("sample_data", "runs/demo")["rows"]
    16437
    """
    from matta_rec.data.holdout import split_holdout
    from matta_rec.data.schema import Schema
    from matta_rec.evaluation import evaluate_models
    from matta_rec.training import RunConfig

    if sizes < 2:
        raise ConfigError(f"the demo exports at least the Student and the TA: expected "
                          f"--sizes 2 or more, got --sizes {sizes}")
    if not 0 < holdout_fraction < 1:
        raise ConfigError(f"expected --holdout-fraction between 0 and 1 (0.1: the last tenth "
                          f"of the shards), got --holdout-fraction {holdout_fraction}")
    started = time.perf_counter()
    if data is None:
        data = os.path.join(out, "data")
        log(f"0/4 writing the sample logs to {data} ({sample_logs_command(data)})")
        write_sample_logs(data)
    schema_path = os.path.join(data, "schema.yaml")
    if not os.path.isfile(schema_path):
        raise MattaError(f"{schema_path} not found; the demo needs log shards with a schema.yaml. "
                         f"Create them with: {sample_logs_command(data)}, or leave out --data")
    schema = Schema.from_yaml(schema_path)
    base = RunConfig.load(config, overrides={"data.holdout_shards": 0,
                                             "data.holdout_fraction": None})
    split = split_holdout(data, schema, holdout_fraction=holdout_fraction,
                          fix="lower --holdout-fraction")
    train_files, eval_files = split.train_files, split.holdout_files
    log(f"demo: {len(train_files)} training shard(s), {len(eval_files)} held-out shard(s) "
        f"from {data}")
    matta_dir, baseline_dir = _train_both(base, train_files, schema, os.path.join(out, "runs"),
                                          fresh, log)
    exports = os.path.join(out, "exports")
    _export_both(matta_dir, baseline_dir, exports, train_files, sizes, log)

    log("4/4 evaluating every size against the baseline on the held-out shards")
    report_dir = os.path.join(out, "report")
    report = evaluate_models(
        [os.path.join(exports, "matta")],
        f"baseline={os.path.join(exports, 'baseline', 'student')}",
        eval_files, schema, label=label, n_boot=n_boot,
        run_dirs=[matta_dir, baseline_dir], out_dir=report_dir,
        title="matta_rec demo: MatTA + Shampoo sizes vs an independently trained Student",
        print_table=True,
    )
    with open(os.path.join(report_dir, TABLE_FILE), "w", encoding="utf-8") as handle:
        handle.write(summary_table(report))
    log(f"demo finished in {time.perf_counter() - started:.0f}s; report: "
        f"{os.path.join(report_dir, 'report.md')}")
    return report
