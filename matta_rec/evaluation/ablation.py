"""The paper's ablation grid (Table 3 and Table 4) on one log stream, over seeds.

Variants (all trained on the same training shards, evaluated on the same
held-out shards, one run per variant and seed):

=====================  ==================  =========  ===========================
variant                mode                optimizer  paper
=====================  ==================  =========  ===========================
``baseline``           ``student``         Adam       Student alone (the baseline)
``shampoo_only``       ``student``         Shampoo    Table 3 "Shampoo only"
``matta_no_shampoo``   ``matta``           Adam       Table 3 "MatTA without Shampoo"
``matta_shampoo``      ``matta``           Shampoo    Table 3 "MatTA with Shampoo"
``matta_no_sharing``   ``matta_no_sharing`` Shampoo   Table 4 "Without parameter sharing"
=====================  ==================  =========  ===========================

For each variant and level (Student, and TA for MatTA variants) the report
gives Δ% AucLoss against the baseline Student of the same seed (negative is
better), with a 95% interval: a t-interval over seeds when there are two or
more, else a paired bootstrap over the held-out rows.  Super-additivity
(paper 4.3.1) compares the combined gain with the sum of the two single
interventions: ``excess = Δ(MatTA+Shampoo) - (Δ(Shampoo) + Δ(MatTA))``;
negative excess means the combination beats the sum.

Example:

>>> result = run_ablation("pipelines/configs/sample.yaml", "sample_data",
...                       "sample_data/schema.yaml", "runs/ablation", seeds=3)
>>> result["super_additivity"]["verdict"]
'super-additive'
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from matta_rec.errors import ConfigError, MattaError
from matta_rec.data.holdout import split_holdout as data_split_holdout
from matta_rec.data.schema import Schema, load_schema
from matta_rec.metrics.bootstrap import bootstrap_auc_losses
from matta_rec.metrics.auc import auroc
from matta_rec.evaluation.report import _describe_data
from matta_rec.evaluation.scoring import ModelHandle, score_stream
from matta_rec.utils.jsonsafe import to_json_safe

__all__ = ["Variant", "VARIANTS", "run_ablation", "summarize", "split_holdout",
           "render_ablation_markdown", "format_ablation_table", "write_ablation_report"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One cell of the ablation grid.

    Args:
        name: identifier (run directory name).
        title: row label in the report (the paper's wording).
        mode: the RunConfig mode.
        optimizer: ``"adam"`` or ``"shampoo"``.
        table: ``"3"`` or ``"4"`` (which paper table it reproduces).
    """

    name: str
    title: str
    mode: str
    optimizer: str
    table: str

    @property
    def levels(self) -> tuple[str, ...]:
        return ("student",) if self.mode == "student" else ("student", "ta")


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("baseline", "Student alone, Adam (baseline)", "student", "adam", "3"),
        Variant("shampoo_only", "Shampoo only", "student", "shampoo", "3"),
        Variant("matta_no_shampoo", "MatTA without Shampoo", "matta", "adam", "3"),
        Variant("matta_shampoo", "MatTA with Shampoo", "matta", "shampoo", "3"),
        Variant("matta_no_sharing", "MatTA without parameter sharing", "matta_no_sharing",
                "shampoo", "4"),
    )
}


# ------------------------------------------------------------------- data
def split_holdout(data: Any, schema: Schema, holdout_shards: int | None = None, *,
                  holdout_fraction: float | None = None) -> tuple[list[str], list[str]]:
    """Split the stream's shards (time order) into training and held-out lists.

    The split of :func:`matta_rec.data.holdout.split_holdout` (the one
    training uses), with the ablation's rule that something is held out.

    Args:
        data: directory, glob, file or list of log shards.
        schema: the schema.
        holdout_shards: the last N shards are held out for evaluation.
        holdout_fraction: or this fraction of the shards (rounded up, >= 1).

    Returns:
        ``(train_files, holdout_files)``.

    Raises:
        MattaError: bad arguments or too few shards.

    Example:

    >>> train, held = split_holdout("sample_data", schema, holdout_fraction=0.25)
    """
    if (holdout_shards is None) == (holdout_fraction is None):
        raise MattaError("give exactly one of holdout_shards and holdout_fraction")
    if holdout_fraction is not None and not 0 < holdout_fraction < 1:
        raise MattaError(f"--holdout-fraction must be in (0, 1), got {holdout_fraction}")
    if holdout_shards is not None and holdout_shards < 1:
        raise MattaError("--holdout-shards must be >= 1 (evaluation needs held-out shards)")
    split = data_split_holdout(data, schema, holdout_shards or 0,
                               holdout_fraction=holdout_fraction,
                               fix="lower --holdout-shards / --holdout-fraction or add shards")
    return split.train_files, split.holdout_files


def _holdout_option(config, holdout_shards: int | None,
                    holdout_fraction: float | None) -> tuple[int | None, float | None]:
    """``(holdout_shards, holdout_fraction)`` for :func:`split_holdout`, exactly one set.

    The caller's option when given, else the config's ``data.holdout_shards``
    / ``data.holdout_fraction``, else the last quarter of the shards.
    """
    if holdout_shards is not None and holdout_fraction is not None:
        raise MattaError("give at most one of --holdout-shards and --holdout-fraction")
    if holdout_shards is None and holdout_fraction is None:
        holdout_shards = config.data.holdout_shards or None
        holdout_fraction = config.data.holdout_fraction
        if holdout_fraction is not None:
            holdout_shards = None  # training reads the fraction first, too
        elif holdout_shards is None:
            holdout_fraction = 0.25
    return holdout_shards, holdout_fraction


def _optimizer_section(config, name: str) -> dict:
    """The optimizer section for ``name``: the config's own when it names it,
    else ``name`` with the config's learning rate only."""
    current = config.optimizer
    if current.name.lower() == name:
        return {"name": name, "settings": dict(current.settings)}
    settings = {}
    if "learning_rate" in (current.settings or {}):
        settings["learning_rate"] = current.settings["learning_rate"]
    return {"name": name, "settings": settings}


# -------------------------------------------------------------- statistics
def _t_interval(values: Sequence[float], level: float) -> tuple[float, float, float]:
    from scipy.stats import t

    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, mean - half, mean + half


def _pct(loss: np.ndarray | float, base: np.ndarray | float):
    return 100.0 * (np.asarray(loss) / np.asarray(base) - 1.0)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _verdict(mean: float, lo: float, hi: float) -> str:
    if math.isfinite(hi) and hi < 0:
        return "super-additive"
    if math.isfinite(lo) and lo > 0:
        return "sub-additive"
    if not math.isfinite(lo):
        return "super-additive (point estimate)" if mean <= 0 else "sub-additive (point estimate)"
    return "additive within noise (combined ≈ sum of the two)"


def summarize(per_seed: Sequence[Mapping], *, level: float = 0.95, n_boot: int = 500,
              boot: Mapping | None = None) -> dict:
    """Aggregate per-seed AucLosses into Δ% vs the baseline with intervals.

    Args:
        per_seed: one mapping per seed ``{"seed": s, "auc_loss": {"variant/level": L}}``.
        level: confidence level.
        n_boot: replicates used (reported).
        boot: for a single seed, ``{"variant/level": replicate AucLosses}``
            drawn on the same Poisson weights (paired), used for the intervals.

    Returns:
        ``{"rows": [...], "super_additivity": {...}, "sharing": {...}}``.

    Example:

    >>> summarize([{"seed": 0, "auc_loss": {"baseline/student": .2, "shampoo_only/student": .19}}])
    """
    if not per_seed:
        raise MattaError("no finished runs to summarise")
    keys = list(per_seed[0]["auc_loss"])
    base_key = "baseline/student"
    if base_key not in keys:
        raise MattaError("the ablation needs the 'baseline' variant (Student alone with Adam)")
    method = "t-interval over seeds" if len(per_seed) >= 2 else (
        "paired bootstrap over rows (one seed)" if boot else "none (one seed)")

    def deltas(key: str) -> np.ndarray:
        return np.array([_pct(s["auc_loss"][key], s["auc_loss"][base_key]) for s in per_seed])

    def interval_of(values: np.ndarray, boot_values: np.ndarray | None):
        if len(per_seed) >= 2:
            return _t_interval(values, level)
        mean = float(values.mean())
        if boot_values is not None:
            lo, hi = _interval(boot_values, level)
            return mean, lo, hi
        return mean, math.nan, math.nan

    rows = []
    for key in keys:
        variant, lvl = key.split("/")
        losses = np.array([s["auc_loss"][key] for s in per_seed])
        d = deltas(key)
        bvals = None
        if boot and len(per_seed) < 2 and key in boot:
            bvals = _pct(boot[key], boot[base_key])
        mean, lo, hi = interval_of(d, bvals)
        if key == base_key:
            lo = hi = 0.0 if len(per_seed) < 2 else lo
        rows.append({
            "variant": variant,
            "title": VARIANTS[variant].title if variant in VARIANTS else variant,
            "table": VARIANTS[variant].table if variant in VARIANTS else "-",
            "level": lvl,
            "auc_loss_mean": float(losses.mean()),
            "auc_loss_per_seed": [float(v) for v in losses],
            "delta_pct": mean,
            "delta_pct_ci": [lo, hi],
            "delta_pct_per_seed": [float(v) for v in d],
        })
    out: dict[str, Any] = {"rows": rows, "interval_method": method, "level": level}
    need = ("shampoo_only/student", "matta_no_shampoo/student", "matta_shampoo/student")
    if all(k in keys for k in need):
        excess = deltas(need[2]) - (deltas(need[0]) + deltas(need[1]))
        bvals = None
        if boot and len(per_seed) < 2 and all(k in boot for k in need):
            b = {k: _pct(boot[k], boot[base_key]) for k in need}
            bvals = b[need[2]] - (b[need[0]] + b[need[1]])
        mean, lo, hi = interval_of(excess, bvals)
        combined = float(deltas(need[2]).mean())
        total = float((deltas(need[0]) + deltas(need[1])).mean())
        out["super_additivity"] = {
            "combined_delta_pct": combined,
            "sum_of_single_delta_pct": total,
            "excess_pct": mean,
            "excess_pct_ci": [lo, hi],
            "super_additive": bool(mean <= 0),
            "verdict": _verdict(mean, lo, hi),
        }
    pairs = [(lvl, f"matta_shampoo/{lvl}", f"matta_no_sharing/{lvl}") for lvl in ("student", "ta")]
    sharing = {}
    for lvl, with_key, without_key in pairs:
        if with_key in keys and without_key in keys:
            diff = deltas(without_key) - deltas(with_key)
            bvals = None
            if boot and len(per_seed) < 2 and with_key in boot and without_key in boot:
                bvals = _pct(boot[without_key], boot[base_key]) - _pct(boot[with_key],
                                                                      boot[base_key])
            mean, lo, hi = interval_of(diff, bvals)
            sharing[lvl] = {
                "with_sharing_delta_pct": float(deltas(with_key).mean()),
                "without_sharing_delta_pct": float(deltas(without_key).mean()),
                "difference_pct": mean,
                "difference_pct_ci": [lo, hi],
            }
    if sharing:
        out["sharing"] = sharing
    return out


# ---------------------------------------------------------------- running
def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise MattaError("--seeds must be >= 1")
    return seed_list


def _variant_names(variants: Sequence[str]) -> list[str]:
    """``baseline`` first, then the other requested variants (checked)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}",
                          key="variants")
    return ["baseline"] + [v for v in variants if v != "baseline"]


def _train_variant(base_config, variant: Variant, seed: int, run_dir: str, train_files,
                   schema: Schema, log) -> None:
    """Train one cell of the grid into ``run_dir`` unless it already finished there."""
    from matta_rec.training import train_run

    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        log(f"  reusing {run_dir}")
        return
    log(f"  training {variant.name} (seed {seed}) -> {run_dir}")
    run_overrides = {
        "mode": variant.mode,
        "seed": seed,
        "optimizer": _optimizer_section(base_config, variant.optimizer),
        "data.holdout_shards": 0,
        "data.holdout_fraction": None,
    }
    train_run(base_config, train_files, schema, run_dir, overrides=run_overrides)


def _run_seed(seed: int, names: Sequence[str], base_config, out_dir: str, train_files,
              eval_files, schema: Schema, *, label: str, batch_size: int,
              max_eval_rows: int | None, log):
    """Train (or reuse) every variant of one seed and score its heads on the held-out rows.

    Returns:
        ``(per-seed entry, scored rows)``.
    """
    handles = []
    for name in names:
        run_dir = os.path.join(out_dir, "runs", name, f"seed-{seed}")
        _train_variant(base_config, VARIANTS[name], seed, run_dir, train_files, schema, log)
        for lvl in VARIANTS[name].levels:
            handles.append(ModelHandle(name=f"{name}/{lvl}", kind="run", path=run_dir,
                                       level=lvl, run_dir=run_dir))
    log(f"  scoring {len(handles)} heads on the held-out shards (seed {seed})")
    rows = score_stream(handles, eval_files, schema, label=label, batch_size=batch_size,
                        max_rows=max_eval_rows, measure_latency=False)
    losses = {h.name: 1.0 - auroc(rows.labels, rows.predictions[h.name], rows.weights)
              for h in handles}
    entry = {"seed": seed, "auc_loss": losses, "rows": rows.rows,
             "params": {h.name: h.params for h in handles}}
    return entry, rows


def run_ablation(
    config: Any,
    data: Any,
    schema: Schema | str,
    out_dir: str,
    *,
    seeds: int | Sequence[int] = 3,
    variants: Sequence[str] = tuple(VARIANTS),
    holdout_shards: int | None = None,
    holdout_fraction: float | None = None,
    label: str = "auto",
    n_boot: int = 500,
    level: float = 0.95,
    overrides: Mapping | None = None,
    batch_size: int = 4096,
    max_eval_rows: int | None = None,
    log=print,
) -> dict:
    """Train and evaluate the ablation grid; write ``ablation.md/json/png`` in ``out_dir``.

    Finished runs (``RUN_DIR/metrics.json`` present) are reused, so an
    interrupted ablation continues where it stopped.

    Args:
        config: RunConfig, YAML path or mapping (the shared settings).
        data: log shards (directory, glob, file, list).
        schema: Schema or YAML path.
        out_dir: output folder: ``runs/<variant>/seed-<s>/`` and the report.
        seeds: number of seeds (0..N-1) or the explicit seeds.
        variants: subset of :data:`VARIANTS` (``baseline`` is always run).
        holdout_shards: last N shards held out for evaluation (default: the
            config's ``data.holdout_shards`` / ``holdout_fraction``, else the
            last quarter of the shards).
        holdout_fraction: or this fraction of the shards (rounded up, at
            least one); give at most one of the two.
        label: ``"auto"``, ``"event"`` or ``"teacher"``.
        n_boot: bootstrap replicates (single-seed intervals).
        level: confidence level.
        overrides: extra RunConfig overrides applied to every run.
        batch_size: scoring batch size.
        max_eval_rows: evaluate on at most this many held-out rows.
        log: progress printer (``None`` for silence).

    Returns:
        The summary dict (what ``ablation.json`` holds).

    Example:

    >>> run_ablation("pipelines/configs/sample.yaml", "sample_data",
    ...              "sample_data/schema.yaml", "runs/ablation", seeds=2)["rows"][0]["variant"]
    'baseline'
    """
    from matta_rec.training import RunConfig

    log = log or (lambda *a, **k: None)
    schema = load_schema(schema)
    base_config = RunConfig.load(config, overrides=overrides)
    names = _variant_names(variants)
    seed_list = _seed_list(seeds)
    holdout_shards, holdout_fraction = _holdout_option(base_config, holdout_shards,
                                                       holdout_fraction)
    train_files, eval_files = split_holdout(data, schema, holdout_shards,
                                            holdout_fraction=holdout_fraction)
    log(f"ablation: {len(names)} variants x {len(seed_list)} seed(s); training on "
        f"{len(train_files)} shard(s), evaluating on the last {len(eval_files)}")
    os.makedirs(out_dir, exist_ok=True)
    per_seed, boot = [], None
    for seed in seed_list:
        entry, rows = _run_seed(seed, names, base_config, out_dir, train_files, eval_files,
                                schema, label=label, batch_size=batch_size,
                                max_eval_rows=max_eval_rows, log=log)
        per_seed.append(entry)
        if len(seed_list) == 1:
            boot = bootstrap_auc_losses(rows.labels, rows.predictions, rows.weights,
                                        n_boot=n_boot, seed=seed)
    summary = summarize(per_seed, level=level, n_boot=n_boot, boot=boot)
    summary.update({
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data if isinstance(data, (str, list)) else str(data),
        "schema": schema.source,
        "config": base_config.source,
        "seeds": seed_list,
        "label": rows.label,
        "train_shards": len(train_files),
        "holdout_shards": list(eval_files),
        "eval_rows": per_seed[0]["rows"],
        "n_boot": n_boot if boot else None,
        "per_seed": per_seed,
    })
    write_ablation_report(summary, out_dir)
    log(format_ablation_table(summary))
    return summary


# ---------------------------------------------------------------- output
def _f(value: Any, spec: str = "+.2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _ci(pair: Sequence) -> str:
    if not pair or any(p is None or not math.isfinite(p) for p in pair):
        return "-"
    return f"[{pair[0]:+.2f}, {pair[1]:+.2f}]"


def _table_rows(summary: Mapping) -> list[list[str]]:
    out = []
    for r in summary["rows"]:
        out.append([r["title"], r["table"], r["level"], _f(r["auc_loss_mean"], ".4f"),
                    "0 (ref)" if r["variant"] == "baseline" else _f(r["delta_pct"]),
                    "-" if r["variant"] == "baseline" else _ci(r["delta_pct_ci"])])
    return out


_HEAD = ["intervention", "table", "level", "AucLoss", "Δ% vs baseline", "CI"]


def format_ablation_table(summary: Mapping) -> str:
    """Terminal table of the ablation summary.

    Args:
        summary: what :func:`run_ablation` returns.

    Example:

    >>> print(format_ablation_table(summary))
    """
    rows = _table_rows(summary)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEAD)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(_HEAD, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(r, widths))) for r in rows]
    sa = summary.get("super_additivity")
    if sa:
        lines.append(
            f"MatTA+Shampoo {sa['combined_delta_pct']:+.2f}% vs sum of single interventions "
            f"{sa['sum_of_single_delta_pct']:+.2f}%: excess {sa['excess_pct']:+.2f}% "
            f"{_ci(sa['excess_pct_ci'])} -> {sa['verdict']}"
        )
    lines.append(f"Δ% = relative change of AucLoss vs the baseline Student (negative is better); "
                 f"intervals: {summary.get('interval_method')}")
    return "\n".join(lines)


def render_ablation_markdown(summary: Mapping, plot: str | None = None) -> str:
    """``ablation.md``: Table 3 / Table 4 layout, super-additivity, per-seed values.

    Args:
        summary: what :func:`run_ablation` returns.
        plot: file name of the bar chart, relative to the Markdown file.

    Example:

    >>> text = render_ablation_markdown(summary, "ablation.png")
    """
    level = summary.get("level", 0.95)
    lines = [
        "# Ablations: MatTA x Shampoo (paper Table 3) and parameter sharing (Table 4)",
        "",
        "## Setup",
        "",
        f"* Data: `{summary.get('data')}`; trained on {summary.get('train_shards')} shard(s), "
        f"evaluated on the held-out {_describe_data(summary.get('holdout_shards'))} "
        f"({summary.get('eval_rows', 0):,} rows, label {summary.get('label')})",
        f"* Config: `{summary.get('config')}`; seeds {summary.get('seeds')}",
        f"* Intervals: {round(100 * level)}% {summary.get('interval_method')}",
        "",
        "## Table 3: MatTA and Shampoo",
        "",
        "| " + " | ".join(_HEAD) + " |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in _table_rows(summary):
        lines.append("| " + " | ".join(r) + " |")
    lines.append("")
    sa = summary.get("super_additivity")
    lines += ["## Super-additivity", ""]
    if sa:
        lines += [
            f"Combined (MatTA with Shampoo): {sa['combined_delta_pct']:+.2f}%; sum of the single "
            f"interventions (Shampoo only + MatTA without Shampoo): "
            f"{sa['sum_of_single_delta_pct']:+.2f}%. Excess = combined − sum = "
            f"{sa['excess_pct']:+.2f}% {_ci(sa['excess_pct_ci'])}: **{sa['verdict']}** "
            "(negative excess: the combination gains more than the sum).",
            "",
        ]
    else:
        lines += ["Not computed: run the baseline, shampoo_only, matta_no_shampoo and "
                  "matta_shampoo variants.", ""]
    lines += ["## Table 4: parameter sharing", ""]
    sharing = summary.get("sharing")
    if sharing:
        lines += ["| level | with sharing Δ% | without sharing Δ% | without − with | CI |",
                  "|---|---:|---:|---:|---:|"]
        for lvl, s in sharing.items():
            lines.append(f"| {lvl} | {s['with_sharing_delta_pct']:+.2f} | "
                         f"{s['without_sharing_delta_pct']:+.2f} | {s['difference_pct']:+.2f} | "
                         f"{_ci(s['difference_pct_ci'])} |")
        lines.append("")
    else:
        lines += ["Not computed: run the matta_shampoo and matta_no_sharing variants.", ""]
    if plot:
        lines += ["## Plot", "", f"![Δ% AucLoss vs baseline]({plot})", ""]
    lines += ["## Per seed", "", "| seed | " + " | ".join(
        r["variant"] + "/" + r["level"] for r in summary["rows"]) + " |",
        "|---|" + "---:|" * len(summary["rows"])]
    for i, seed in enumerate(summary.get("seeds", [])):
        lines.append(f"| {seed} | " + " | ".join(
            f"{r['auc_loss_per_seed'][i]:.4f}" for r in summary["rows"]) + " |")
    lines.append("")
    return "\n".join(lines)


def plot_ablation(summary: Mapping, path: str) -> str:
    """Bar chart of Δ% AucLoss vs the baseline with intervals.

    Args:
        summary: the ablation summary.
        path: PNG path.

    Example:

    >>> plot_ablation(summary, "runs/ablation/ablation.png")
    'runs/ablation/ablation.png'
    """
    from matta_rec.evaluation.report import _pyplot

    plt = _pyplot()
    rows = [r for r in summary["rows"] if r["variant"] != "baseline"]
    labels = [f"{r['title']}\n({r['level']})" for r in rows]
    values = [r["delta_pct"] for r in rows]
    err = [[max(0.0, r["delta_pct"] - r["delta_pct_ci"][0]) if _finite(r["delta_pct_ci"][0])
            else 0.0 for r in rows],
           [max(0.0, r["delta_pct_ci"][1] - r["delta_pct"]) if _finite(r["delta_pct_ci"][1])
            else 0.0 for r in rows]]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.5))
    colors = ["tab:green" if v < 0 else "tab:red" for v in values]
    ax.bar(range(len(rows)), values, yerr=err, color=colors, capsize=4)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("Δ% AucLoss vs baseline (negative is better)")
    ax.set_title("Ablations (Table 3 / Table 4)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def write_ablation_report(summary: dict, out_dir: str) -> dict:
    """Write ``ablation.md``, ``ablation.json`` and ``ablation.png``.

    Args:
        summary: the ablation summary.
        out_dir: folder.

    Example:

    >>> write_ablation_report(summary, "runs/ablation")["markdown"]
    'runs/ablation/ablation.md'
    """
    os.makedirs(out_dir, exist_ok=True)
    png = plot_ablation(summary, os.path.join(out_dir, "ablation.png"))
    md = os.path.join(out_dir, "ablation.md")
    with open(md, "w", encoding="utf-8") as handle:
        handle.write(render_ablation_markdown(summary, os.path.basename(png)))
    js = os.path.join(out_dir, "ablation.json")
    with open(js, "w", encoding="utf-8") as handle:
        json.dump(to_json_safe(summary), handle, indent=2)
    return {"markdown": md, "json": js, "png": png}
