"""Render an evaluation report: terminal table, report.md, report.json, PNG plots.

The report dict is what :func:`matta_rec.evaluation.evaluate_models`
returns.  Plots use matplotlib's Agg backend (no display needed):

* ``pareto.png``: parameters vs AucLoss and latency vs AucLoss of every
  model, the Pareto front (no other model is both smaller/faster and
  better) joined by a line, the baseline marked with a star and a dashed line.
* ``online_auc_loss.png``: the online (progressive-validation) AucLoss
  curves of the training runs, read from each ``RUN_DIR/metrics.json``.

Example:

>>> paths = write_report(report, "reports/today")
>>> sorted(paths)
['json', 'markdown', 'online_curves_png', 'pareto_png']
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

from matta_rec.errors import MattaError
from matta_rec.utils.jsonsafe import to_json_safe
from matta_rec.utils.pareto import non_dominated

__all__ = [
    "load_curves",
    "parse_curves",
    "format_table",
    "render_markdown",
    "plot_pareto",
    "plot_curves",
    "pareto_front",
    "format_p_value",
    "write_report",
]

_ROW_KEYS = ("rows_end", "rows", "examples", "step", "steps")


# ------------------------------------------------------------------ curves
def _label_block(point: Mapping, label: str) -> Mapping | None:
    """``point[label]`` (``{level: {"auc_loss": v}}``), falling back to the other label."""
    order = (label, "target" if label == "event" else "event")
    for key in order:
        block = point.get(key)
        if isinstance(block, Mapping) and block:
            return block
    return None


def _points_to_series(points: Sequence[Mapping], label: str = "event") -> dict:
    """``[{rows_end, <label>: {level: {auc_loss}}} ...]`` -> ``{rows, levels: {level: [v]}}``."""
    rows: list[float] = []
    levels: dict[str, list] = {}
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            continue
        x = next((point[k] for k in _ROW_KEYS if k in point), i + 1)
        values: dict[str, Any] = {}
        block = _label_block(point, label)
        if block is not None:
            for level, m in block.items():
                if isinstance(m, Mapping) and "auc_loss" in m:
                    values[level] = m["auc_loss"]
        loss = point.get("auc_loss")
        if isinstance(loss, Mapping):
            values.update(loss)
        elif isinstance(loss, (int, float)):
            values["model"] = loss
        elif isinstance(point.get("auroc"), Mapping):
            values.update({k: 1.0 - v for k, v in point["auroc"].items() if v is not None})
        for key, value in point.items():
            if key.endswith("_auc_loss") and isinstance(value, (int, float)):
                values[key[: -len("_auc_loss")]] = value
            elif key.startswith("auc_loss/") and isinstance(value, (int, float)):
                values[key.split("/", 1)[1]] = value
        if not values:
            continue
        idx = len(rows)
        rows.append(float(x))
        for level, value in values.items():
            series = levels.setdefault(str(level), [None] * idx)
            series.extend([None] * (idx - len(series)))
            series.append(None if value is None else float(value))
    for series in levels.values():
        series.extend([None] * (len(rows) - len(series)))
    return {"rows": rows, "levels": levels}


def parse_curves(metrics: Mapping, label: str = "event") -> dict:
    """The online AucLoss curve(s) held in a run's ``metrics.json``.

    The training loop writes ``{"online": {"curve": [points]}}`` with a
    point ``{"rows_end": N, "event": {level: {"auc_loss": v}}, "target":
    {...}}``.  Also accepted: ``{"online": [points]}``, points with
    ``"auc_loss": {level: v}`` (or a number, or ``<level>_auc_loss`` keys),
    and ``{"online": {"rows": [...], "auc_loss": {level: [...]}}}``.

    Args:
        metrics: the parsed ``metrics.json``.
        label: ``"event"`` or ``"target"``: which label's AucLoss to take
            (the other is used when a point lacks it).

    Returns:
        ``{"rows": [x...], "levels": {level: [auc_loss or None ...]}}``
        (empty lists when the file holds no curve).

    Example:

    >>> parse_curves({"online": [{"rows_end": 100, "auc_loss": {"student": 0.3}}]})
    {'rows': [100.0], 'levels': {'student': [0.3]}}
    """
    for key in ("online", "online_curve", "curve", "history", "online_metrics"):
        value = metrics.get(key)
        if isinstance(value, list):
            return _points_to_series(value, label)
        if isinstance(value, Mapping):
            for sub in ("points", "curve", "windows"):
                if isinstance(value.get(sub), list):
                    return _points_to_series(value[sub], label)
            rows = next((value[k] for k in _ROW_KEYS if isinstance(value.get(k), list)), None)
            losses = value.get("auc_loss")
            if rows is not None and isinstance(losses, Mapping):
                return {
                    "rows": [float(r) for r in rows],
                    "levels": {
                        str(k): [None if v is None else float(v) for v in vs]
                        for k, vs in losses.items()
                    },
                }
            if rows is not None and isinstance(losses, list):
                return {"rows": [float(r) for r in rows],
                        "levels": {"model": [None if v is None else float(v) for v in losses]}}
    return {"rows": [], "levels": {}}


def load_curves(run_dirs: Sequence[str], label: str = "event") -> dict:
    """``{run name: curve}`` for every run directory with a readable metrics.json.

    Args:
        run_dirs: training run directories.
        label: ``"event"`` or ``"target"`` (see :func:`parse_curves`).

    Example:

    >>> load_curves(["runs/demo/matta"])["matta"]["levels"].keys()
    dict_keys(['student', 'ta'])
    """
    out = {}
    seen = set()
    for run_dir in run_dirs:
        real = os.path.realpath(run_dir)
        if real in seen:  # the same run named twice (relative and absolute paths)
            continue
        seen.add(real)
        path = os.path.join(run_dir, "metrics.json")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, "r", encoding="utf-8") as handle:
                metrics = json.load(handle)
        except (OSError, json.JSONDecodeError):
            continue
        curve = parse_curves(metrics, label)
        if curve["rows"]:
            name = os.path.basename(os.path.normpath(run_dir))
            if name in out:
                name = os.path.normpath(run_dir)
            out[name] = curve
    return out


# ------------------------------------------------------------------- table
def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int) and spec == "int":
        return f"{value:,}"
    if spec == "int":
        return f"{int(value):,}"
    return format(value, spec)


def _ci(pair: Sequence | None, spec: str = "+.2f") -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "-"
    return f"[{format(pair[0], spec)}, {format(pair[1], spec)}]"


def format_p_value(p: float | None, n_boot: int | None = None) -> str:
    """A p-value as text, ``<floor`` when it sits at the bootstrap's floor.

    A bootstrap p-value cannot go below ``1 / replicates``: when no
    replicate falls on the other side of zero the computed value is that
    floor, and the true p-value is smaller.  It prints as ``<0.002`` (500
    replicates), not ``0.002``.  Real bootstrap p-values are multiples of
    ``2 / replicates``, so anything under ``2 / n_boot`` is the floor (also
    when a few replicates were undefined and the floor is ``1 / finite``).

    Args:
        p: the p-value (``None`` / NaN print as ``-``).
        n_boot: bootstrap replicates; ``None`` for an analytic p-value
            (DeLong), which is printed as it is.

    Returns:
        The text, 3 significant digits.

    Example:

    >>> format_p_value(0.002, n_boot=500), format_p_value(0.004, 500)
    ('<0.002', '0.004')
    """
    if p is None or not math.isfinite(p):
        return "-"
    if n_boot and p < 2.0 / n_boot:
        return f"<{p:.3g}"
    return f"{p:.3g}"


def _rows(report: Mapping) -> list[list[str]]:
    lines = []
    entries = [(report["baseline"], True)] + [(m, False) for m in report["models"]]
    for entry, is_base in entries:
        vs = entry.get("vs_baseline") or {}
        lines.append([
            entry["name"] + (" (baseline)" if is_base else ""),
            _fmt(entry.get("params"), "int"),
            _fmt(entry.get("latency_ms"), ".3f"),
            _fmt(entry.get("latency_measured_ms"), ".3f"),
            _fmt(entry.get("auroc")),
            _fmt(entry.get("auc_loss")),
            _fmt(entry.get("logloss")),
            _fmt((entry.get("calibration") or {}).get("ratio"), ".3f"),
            _fmt((entry.get("calibration") or {}).get("ece")),
            "0 (ref)" if is_base else _fmt(vs.get("relative_pct"), "+.2f"),
            "-" if is_base else _ci(vs.get("relative_pct_ci")),
            "-" if is_base else format_p_value(vs.get("p_value"), vs.get("n_boot")),
        ])
    return lines


_HEADER = [
    "model", "params", "latency ms (manifest)", "latency ms (measured, 1 row)", "AUROC",
    "AucLoss", "logloss", "pred/obs", "ECE", "ΔAucLoss %", "95% CI", "p",
]


def _header(report: Mapping) -> list[str]:
    header = list(_HEADER)
    level = (report.get("ci") or {}).get("level", 0.95)
    header[10] = f"{round(100 * level):d}% CI"
    return header


def format_table(report: Mapping) -> str:
    """Fixed-width terminal table of the report (one line per model).

    Args:
        report: the report dict.

    Example:

    >>> print(format_table(report))
    """
    header = _header(report)
    rows = _rows(report)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    sep = "  "
    out = [sep.join(h.ljust(w) for h, w in zip(header, widths))]
    out.append(sep.join("-" * w for w in widths))
    for r in rows:
        out.append(sep.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                            enumerate(zip(r, widths))))
    ci = report.get("ci") or {}
    out.append(
        f"{report.get('rows', 0):,} rows, label {report.get('label')}; ΔAucLoss % = "
        f"relative change vs the baseline (negative is better), CI: {ci.get('method')}"
    )
    return "\n".join(out)


# ---------------------------------------------------------------- markdown
def render_markdown(report: Mapping, plots: Mapping[str, str] | None = None) -> str:
    """The report as Markdown (sections: summary, results, Pareto, curves, notes).

    Args:
        report: the report dict.
        plots: ``{"pareto_png": file, "online_curves_png": file}`` relative to
            the Markdown file.

    Example:

    >>> text = render_markdown(report, {"pareto_png": "pareto.png"})
    """
    plots = dict(plots or {})
    ci = report.get("ci") or {}
    level = ci.get("level", 0.95)
    lines = [f"# {report.get('title', 'Evaluation')}", ""]
    lines += [
        "## Summary",
        "",
        f"* Data: {_describe_data(report.get('data'))} ({report.get('rows', 0):,} rows"
        + (", weighted" if report.get("weighted") else "") + ")",
        f"* Schema: `{report.get('schema')}`",
        f"* Label: {report.get('label')}",
        f"* Baseline: **{report['baseline']['name']}** (`{report['baseline'].get('path')}`), "
        f"AucLoss {_fmt(report['baseline'].get('auc_loss'))}",
        f"* Confidence intervals: {round(100 * level)}% "
        + ("paired Poisson bootstrap over rows, "
           f"{ci.get('n_boot')} replicates, seed {ci.get('seed')}"
           if ci.get("method") == "bootstrap" else "DeLong's test (delta method for the ratio)"),
        f"* Created: {report.get('created')}",
        "",
    ]
    best = None
    for m in report.get("models", []):
        rel = (m.get("vs_baseline") or {}).get("relative_pct")
        if rel is not None and (best is None or rel < best[1]):
            best = (m["name"], rel, (m.get("vs_baseline") or {}).get("relative_pct_ci"))
    if best:
        lines += [
            f"Best model: **{best[0]}**, AucLoss {best[1]:+.2f}% vs the baseline "
            f"(CI {_ci(best[2])}; negative is better).",
            "",
        ]
    lines += ["## Results", ""]
    header = _header(report)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for r in _rows(report):
        lines.append("| " + " | ".join(r) + " |")
    lines += [
        "",
        "AucLoss = 1 − AUROC. ΔAucLoss % = 100 × (AucLoss_model / AucLoss_baseline − 1): "
        "negative means the model ranks better than the baseline. pred/obs is the ratio "
        "of the summed predicted probabilities to the summed labels (1 = calibrated); "
        "ECE is the expected calibration error over "
        f"{(report['baseline'].get('calibration') or {}).get('bins', 10)} equal-width bins.",
        "",
        "## Size / quality Pareto front",
        "",
    ]
    if plots.get("pareto_png"):
        front = pareto_front(report.get("models", []), "params")
        lines += [
            f"![Pareto front]({plots['pareto_png']})",
            "",
            "Models on the parameter / AucLoss Pareto front: "
            + (", ".join(f"**{n}**" for n in front) if front else "none with a parameter count")
            + ".",
            "",
        ]
    else:
        lines += ["No model has a parameter count or latency to plot.", ""]
    lines += ["## Online AucLoss during training", ""]
    curves = report.get("curves") or {}
    if plots.get("online_curves_png") and curves:
        lines += [f"![Online AucLoss]({plots['online_curves_png']})", ""]
        lines += ["| run | level | windows | first AucLoss | last AucLoss |", "|---|---|---:|---:|---:|"]
        for run, curve in curves.items():
            for level_name, values in curve["levels"].items():
                vals = [v for v in values if v is not None]
                if vals:
                    lines.append(f"| {run} | {level_name} | {len(vals)} | {vals[0]:.4f} | "
                                 f"{vals[-1]:.4f} |")
        lines.append("")
    else:
        lines += ["No training run with an online AucLoss curve (metrics.json) was given.", ""]
    lines += ["## Models", ""]
    for entry in [report["baseline"]] + list(report.get("models", [])):
        lines.append(
            f"* **{entry['name']}**: {entry.get('kind')} `{entry.get('path')}`"
            + (f", version {entry['version']}" if entry.get("version") is not None else "")
            + (f", level {entry['level']}" if entry.get("level") else "")
            + (f", Mix'n'Match spec `{entry['spec']}`" if entry.get("spec") else "")
            + (f", FLOPs {_fmt(entry.get('flops'), 'int')}" if entry.get("flops") else "")
            + (f", {_fmt(entry.get('size_bytes'), 'int')} bytes on disk"
               if entry.get("size_bytes") else "")
            + (f", trained in `{entry['run_dir']}`" if entry.get("run_dir") else "")
        )
    lines.append("")
    return "\n".join(lines)


def _describe_data(data: Any) -> str:
    """``dir`` or, for a list of shard files, ``N shards: first … last``."""
    if isinstance(data, (list, tuple)):
        if not data:
            return "no shards"
        if len(data) == 1:
            return f"`{data[0]}`"
        return f"{len(data)} shards, `{data[0]}` … `{data[-1]}`"
    return f"`{data}`"


# ------------------------------------------------------------------- plots
def pareto_front(entries: Sequence[Mapping], cost_key: str) -> list[str]:
    """Names of entries not dominated in (cost, AucLoss), cheapest first.

    Args:
        entries: report entries with ``cost_key`` and ``auc_loss``.
        cost_key: ``"params"``, ``"latency_ms"`` or ``"latency_measured_ms"``.

    Example:

    >>> pareto_front([{"name": "a", "params": 1, "auc_loss": .3},
    ...               {"name": "b", "params": 2, "auc_loss": .4},
    ...               {"name": "c", "params": 3, "auc_loss": .2}], "params")
    ['a', 'c']
    """
    points = sorted(
        (e[cost_key], e["auc_loss"], e["name"]) for e in entries
        if e.get(cost_key) is not None and e.get("auc_loss") is not None
    )
    return [points[i][2] for i in non_dominated([p[:2] for p in points])]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(report: Mapping, path: str) -> str | None:
    """Write ``pareto.png``: params / latency vs AucLoss with the baseline marked.

    Args:
        report: the report dict.
        path: the PNG file to write.

    Returns:
        ``path``, or ``None`` when no model has a size or latency.

    Example:

    >>> plot_pareto(report, "report/pareto.png")
    'report/pareto.png'
    """
    entries = list(report.get("models", []))
    base = report["baseline"]
    # Manifest latencies only when every model (baseline included) has one, so
    # the panel never mixes two ways of measuring.
    latency_key = "latency_ms" if all(e.get("latency_ms") is not None for e in entries + [base]) \
        else "latency_measured_ms"
    panels = [(k, label) for k, label in (
        ("params", "parameters"),
        (latency_key, "latency (ms, " + ("manifest" if latency_key == "latency_ms"
                                         else "measured, 1 row") + ")"),
    ) if any(e.get(k) is not None for e in entries)]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (key, xlabel) in zip(axes[0], panels):
        pts = [e for e in entries if e.get(key) is not None and e.get("auc_loss") is not None]
        ax.scatter([e[key] for e in pts], [e["auc_loss"] for e in pts], color="tab:blue",
                   zorder=3, label="models")
        for e in pts:
            ax.annotate(e["name"], (e[key], e["auc_loss"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        front = pareto_front(pts, key)
        fpts = sorted((e[key], e["auc_loss"]) for e in pts if e["name"] in front)
        if len(fpts) > 1:
            ax.plot([p[0] for p in fpts], [p[1] for p in fpts], color="tab:blue", alpha=0.6,
                    label="Pareto front")
        if base.get("auc_loss") is not None:
            ax.axhline(base["auc_loss"], color="tab:red", linestyle="--", linewidth=1,
                       label="baseline" if base["name"] == "baseline" else f"baseline {base['name']}")
            if base.get(key) is not None:
                ax.scatter([base[key]], [base["auc_loss"]], marker="*", s=180, color="tab:red",
                           zorder=4)
        costs = [e[key] for e in pts] + ([base[key]] if base.get(key) is not None else [])
        if costs and min(costs) > 0 and max(costs) / min(costs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("AucLoss = 1 − AUROC (lower is better)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Size / quality of the models vs the baseline")
    fig.tight_layout()
    _ensure_dir(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(curves: Mapping, path: str, label: str = "event") -> str | None:
    """Write the online AucLoss curves of training runs to a PNG.

    Args:
        curves: ``{run: {"rows": [...], "levels": {level: [...]}}}``.
        path: the PNG file.
        label: the label the curves were computed against (for the title).

    Returns:
        ``path``, or ``None`` when there is no curve.

    Example:

    >>> plot_curves(load_curves(["runs/demo/matta"]), "report/online_auc_loss.png")
    'report/online_auc_loss.png'
    """
    if not curves or not any(c.get("rows") for c in curves.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for run, curve in curves.items():
        for level, values in curve["levels"].items():
            xy = [(x, v) for x, v in zip(curve["rows"], values) if v is not None]
            if xy:
                ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", markersize=3,
                        label=f"{run}: {level}")
    ax.set_xlabel("stream rows")
    ax.set_ylabel("online AucLoss (progressive validation)")
    ax.set_title(f"Online AucLoss during training, label {label} (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _ensure_dir(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label_key(report: Mapping) -> str:
    return "target" if str(report.get("label", "")).startswith("teacher") else "event"


def _ensure_dir(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def write_report(report: dict, out_dir: str) -> dict:
    """Write ``report.md``, ``report.json`` and the PNG plots into ``out_dir``.

    Args:
        report: the report dict (``report["curves"]`` is loaded from
            ``report["runs"]`` when missing).
        out_dir: folder (created).

    Returns:
        ``{"markdown", "json", "pareto_png", "online_curves_png"}`` paths
        (a plot is absent when there was nothing to plot).

    Example:

    >>> write_report(report, "report")["markdown"]
    'report/report.md'
    """
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise MattaError("--out must be a directory path")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if "curves" not in report:
        report["curves"] = load_curves(report.get("runs", []), _label_key(report))
    paths: dict[str, str] = {}
    if plot_pareto(report, os.path.join(out_dir, "pareto.png")):
        paths["pareto_png"] = os.path.join(out_dir, "pareto.png")
    if plot_curves(report["curves"], os.path.join(out_dir, "online_auc_loss.png"),
                   _label_key(report)):
        paths["online_curves_png"] = os.path.join(out_dir, "online_auc_loss.png")
    rel = {k: os.path.basename(v) for k, v in paths.items()}
    report["plots"] = rel
    md = os.path.join(out_dir, "report.md")
    with open(md, "w", encoding="utf-8") as handle:
        handle.write(render_markdown(report, rel))
    js = os.path.join(out_dir, "report.json")
    with open(js, "w", encoding="utf-8") as handle:
        json.dump(to_json_safe(report), handle, indent=2)
    paths["markdown"] = md
    paths["json"] = js
    return paths

