"""Compare models with a production baseline on the same rows.

:func:`evaluate_models` scores the evaluation data with every model and the
baseline (one pass over the stream), then reports per model AUROC, AucLoss
(1 - AUROC), logloss, calibration, size and latency, and the relative change
of AucLoss against the baseline in % (negative is better) with a confidence
interval from a paired bootstrap (default) or DeLong's test.

Example:

>>> report = evaluate_models(["exports"], "prod=/models/ranker/17", "logs/eval",
...                          "logs/schema.yaml", label="event", out_dir="report")
>>> report["models"][0]["vs_baseline"]["relative_pct"]      # e.g. -4.2
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Sequence

import numpy as np

from matta_rec.errors import MattaError
from matta_rec.data.schema import Schema, load_schema
from matta_rec.metrics.bootstrap import paired_bootstrap
from matta_rec.metrics.auc import auroc, calibration, delong_test, logloss
from matta_rec.utils.jsonsafe import to_json_safe
from matta_rec.evaluation.scoring import (
    ModelHandle,
    ScoredRows,
    finite_or_none,
    resolve_models,
    score_stream,
)

__all__ = ["evaluate_models", "compare_scores", "CI_METHODS"]

CI_METHODS = ("bootstrap", "delong")


def _model_metrics(rows: ScoredRows, name: str, bins: int) -> dict:
    y, w, p = rows.labels, rows.weights, rows.predictions[name]
    a = auroc(y, p, w)
    cal = calibration(y, p, w, bins=bins)
    return {
        "auroc": a,
        "auc_loss": 1.0 - a,
        "logloss": logloss(y, p, w),
        "calibration": {"ratio": finite_or_none(cal.ratio), "ece": cal.ece, "bins": cal.bins},
        "mean_prediction": float(np.average(p, weights=w)),
    }


def _versus(rows: ScoredRows, name: str, baseline: str, ci: str, level: float,
            n_boot: int, seed: int | None) -> dict:
    y, w = rows.labels, rows.weights
    pm, pb = rows.predictions[name], rows.predictions[baseline]
    if ci == "delong":
        r = delong_test(y, pm, pb, w, level=level)
        method, extra = "delong", {}
    else:
        r = paired_bootstrap(y, pm, pb, w, n_boot=n_boot, level=level, seed=seed)
        method, extra = "paired_bootstrap", {"n_boot": n_boot, "seed": seed}
    return {
        "method": method,
        "diff": r.diff,
        "diff_ci": [r.diff_low, r.diff_high],
        "relative_pct": 100.0 * r.relative,
        "relative_pct_ci": [100.0 * r.relative_low, 100.0 * r.relative_high],
        "p_value": r.p_value,
        "level": level,
        **extra,
    }


def compare_scores(
    rows: ScoredRows,
    handles: Sequence[ModelHandle],
    baseline: ModelHandle,
    *,
    ci: str = "bootstrap",
    level: float = 0.95,
    n_boot: int = 500,
    seed: int | None = 0,
    bins: int = 10,
) -> dict:
    """Metrics of already-scored models against the baseline.

    Args:
        rows: labels and predictions of every model and the baseline.
        handles: the models (order kept in the report).
        baseline: the baseline handle (its name is a key of ``rows.predictions``).
        ci: ``"bootstrap"`` (paired Poisson bootstrap; works with soft labels
            and weights) or ``"delong"`` (0/1 labels only).
        level: confidence level.
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
        bins: calibration bins.

    Returns:
        ``{"baseline": entry, "models": [entry, ...]}``; each entry holds the
        handle's description, metrics and (models only) ``vs_baseline``.

    Example:

    >>> out = compare_scores(rows, handles, baseline, ci="delong")
    """
    if ci not in CI_METHODS:
        raise MattaError(f"--ci must be one of {list(CI_METHODS)}, got {ci!r}")
    if ci == "delong" and not np.all((rows.labels == 0) | (rows.labels == 1)):
        raise MattaError(
            "DeLong's test needs 0/1 labels but the evaluation labels are soft "
            "(--label teacher); use --ci bootstrap"
        )

    def entry(h: ModelHandle) -> dict:
        out = h.describe()
        out["latency_measured_ms"] = rows.latency_ms.get(h.name)
        out.update(_model_metrics(rows, h.name, bins))
        return out

    base = entry(baseline)
    models = []
    for h in handles:
        e = entry(h)
        e["vs_baseline"] = _versus(rows, h.name, baseline.name, ci, level, n_boot, seed)
        models.append(e)
    return {"baseline": base, "models": models}


def evaluate_models(
    models: Sequence[str] | Sequence[ModelHandle],
    baseline: str | ModelHandle,
    data: Any,
    schema: Schema | str,
    *,
    label: str = "auto",
    ci: str = "bootstrap",
    level: float = 0.95,
    n_boot: int = 500,
    seed: int | None = 0,
    batch_size: int = 4096,
    max_rows: int | None = None,
    bins: int = 10,
    run_dirs: Sequence[str] = (),
    out_dir: str | None = None,
    title: str = "Evaluation against the production baseline",
    print_table: bool = False,
) -> dict:
    """Evaluate models against a baseline on the same rows and (optionally) write a report.

    Args:
        models: model references (``[NAME=]PATH[#LEVEL]``: SavedModel, size
            directory, export base with manifest.json, run directory) or
            :class:`ModelHandle` objects.
        baseline: one reference or handle: the production baseline.
        data: evaluation log shards (directory, glob, file or list).
        schema: :class:`Schema` or YAML path.
        label: ``"event"`` (0/1), ``"teacher"`` (soft Teacher labels,
            weighted AUROC) or ``"auto"`` (event when the schema has one).
        ci: ``"bootstrap"`` or ``"delong"``.
        level: confidence level of the intervals.
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
        batch_size: rows per scoring call.
        max_rows: evaluate on the first ``max_rows`` rows only.
        bins: calibration bins.
        run_dirs: extra training run directories whose online AucLoss curves
            are plotted (runs named by the models' manifests are added).
        out_dir: when given, ``report.md``, ``report.json`` and PNG plots
            are written there.
        title: report title.
        print_table: print the terminal table.

    Returns:
        The report dict (what ``report.json`` holds).

    Raises:
        MattaError: bad references, incompatible signatures, undefined AUROC.

    Example:

    >>> rep = evaluate_models(["exports"], "runs/baseline", "sample_data", "sample_data/schema.yaml")
    >>> sorted(rep)[:3]
    ['baseline', 'ci', 'created']
    """
    schema = load_schema(schema)
    handles = [m for m in models if isinstance(m, ModelHandle)] + resolve_models(
        [m for m in models if not isinstance(m, ModelHandle)], schema
    )
    if not handles:
        raise MattaError("no models to evaluate; pass --models")
    base = baseline if isinstance(baseline, ModelHandle) else resolve_models([baseline], schema)
    if isinstance(base, list):
        if len(base) != 1:
            raise MattaError(
                f"--baseline must be one model, but '{baseline}' holds {len(base)} "
                f"({[b.name for b in base]}); point it at one size directory"
            )
        base = base[0]
    names = [h.name for h in handles]
    if base.name in names:
        base.name = f"baseline:{base.name}"
    if len(set(names)) != len(names):
        raise MattaError(f"model names must be unique, got {names}; use NAME=PATH")
    rows = score_stream(
        handles + [base], data, schema, label=label, batch_size=batch_size, max_rows=max_rows
    )
    result = compare_scores(rows, handles, base, ci=ci, level=level, n_boot=n_boot, seed=seed,
                            bins=bins)
    runs = list(dict.fromkeys(
        [h.run_dir for h in handles + [base] if h.run_dir] + [str(r) for r in run_dirs]
    ))
    report = {
        "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data if isinstance(data, (str, list)) else str(data),
        "schema": schema.source,
        "label": "event (0/1)" if rows.label == "event" else "teacher (soft, weighted AUROC)",
        "rows": rows.rows,
        "weighted": rows.weights is not None,
        "ci": {"method": ci, "level": level, "n_boot": n_boot if ci == "bootstrap" else None,
               "seed": seed},
        **result,
        "runs": runs,
    }
    report = to_json_safe(report)
    if out_dir is not None or print_table:
        from matta_rec.evaluation import report as report_mod

        report["curves"] = report_mod.load_curves(runs, rows.label)
        if print_table:
            print(report_mod.format_table(report))
        if out_dir is not None:
            report_mod.write_report(report, out_dir)
    return report

