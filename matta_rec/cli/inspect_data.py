"""``matta-rec inspect-data``: summarise and validate a directory of log shards.

Every shard is read and validated exactly as training would read it
(:mod:`matta_rec.data.validation`). The command prints the shards in reading
order with their rows and label rates, the totals, and per-feature
statistics; every invalid shard is listed with its error (file, column, row,
fix). The exit status is 0 when all shards are valid and 1 otherwise (2 for
a bad ``--data`` / ``--schema``).

Example::

    matta-rec inspect-data --data sample_data --schema sample_data/schema.yaml
    matta-rec inspect-data --data 'logs/dt=2026-11-0*' --schema logs/schema.yaml --json summary.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from matta_rec.cli._args import non_negative_int
from matta_rec.utils.jsonsafe import to_json_safe

HELP = "summarise and validate a directory of log shards"

#: Distinct values tracked per categorical feature before counting stops.
MAX_DISTINCT = 100_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``matta-rec inspect-data``.

    Args:
        parser: the sub-command's parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--data", "logs"]).max_listed
        50
    """
    parser.add_argument("--data", required=True, help="directory, glob or shard file of the logs")
    parser.add_argument(
        "--schema", default=None,
        help="schema YAML (default: DATA/schema.yaml when DATA is a directory)",
    )
    parser.add_argument(
        "--max-listed", type=non_negative_int, default=50,
        help="shards listed one per line (the others are summarised; default 50)",
    )
    parser.add_argument("--top", type=non_negative_int, default=3,
                        help="most frequent values shown per categorical feature (default 3)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the summary as JSON to PATH")


# ------------------------------------------------------------------ statistics
class _Moments:
    """Streaming count / mean / std / min / max (Chan et al. merge)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.min, self.max = float("inf"), float("-inf")

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return
        n, mean = values.size, float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))

    def to_dict(self) -> dict:
        if not self.n:
            return {"count": 0}
        return {
            "count": self.n,
            "mean": self.mean,
            "std": float(np.sqrt(self.m2 / self.n)),
            "min": self.min,
            "max": self.max,
        }


class _Counts:
    """Value counts, exact up to ``limit`` distinct values."""

    def __init__(self, limit: int | None = None):
        self.limit = MAX_DISTINCT if limit is None else limit
        self.counts: dict = {}
        self.overflow = False
        self.total = 0

    def add(self, values) -> None:
        import pandas as pd

        series = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
        self.total += len(series)
        for value, count in series.value_counts(sort=False).items():
            if value in self.counts:
                self.counts[value] += int(count)
            elif len(self.counts) < self.limit:
                self.counts[value] = int(count)
            else:
                self.overflow = True

    def to_dict(self, top: int) -> dict:
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:top]
        return {
            "distinct": len(self.counts),
            "distinct_capped": self.overflow,
            "top": [
                {"value": v if isinstance(v, (int, str)) else str(v), "count": c,
                 "share": c / self.total if self.total else 0.0}
                for v, c in ((int(v) if isinstance(v, np.integer) else v, c) for v, c in ranked)
            ],
        }


class _FeatureSummary:
    """Running statistics of every schema feature over the valid shards.

    Args:
        schema: the :class:`~matta_rec.data.schema.Schema` of the shards.
    """

    def __init__(self, schema):
        self.schema = schema
        self.stats: dict[str, dict[str, Any]] = {}
        for spec in schema.features:
            if spec.kind == "categorical":
                self.stats[spec.name] = {"values": _Counts()}
            elif spec.kind == "multi_categorical":
                self.stats[spec.name] = {"tokens": _Counts(), "per_row": _Moments(), "empty": 0}
            elif spec.kind == "numeric":
                self.stats[spec.name] = {"values": _Moments()}
            else:
                self.stats[spec.name] = {"values": _Moments(), "norm": _Moments()}

    def add(self, features: dict) -> None:
        """Add one valid shard's feature columns (``ShardColumns.features``)."""
        import pandas as pd

        for spec in self.schema.features:
            values = features[spec.name]
            s = self.stats[spec.name]
            if spec.kind in ("categorical", "numeric"):
                s["values"].add(values)
            elif spec.kind == "multi_categorical":
                series = pd.Series(values, dtype=object)
                empty = series == ""
                s["empty"] += int(empty.sum())
                tokens = series[~empty].str.split(spec.separator, regex=False)
                s["per_row"].add(np.where(empty, 0, series.str.count(_escape(spec.separator)) + 1))
                s["tokens"].add(tokens.explode().reset_index(drop=True).astype(object))
            else:
                s["values"].add(values)
                s["norm"].add(np.linalg.norm(values, axis=1))

    def to_dict(self, top: int) -> dict:
        """Per feature: kind, group and its statistics (JSON-safe)."""
        features = {}
        for spec in self.schema.features:
            s = self.stats[spec.name]
            out: dict[str, Any] = {"kind": spec.kind, "group": spec.group}
            if spec.kind == "categorical":
                out.update(s["values"].to_dict(top))
            elif spec.kind == "multi_categorical":
                out.update(s["tokens"].to_dict(top))
                out["tokens_per_row"] = s["per_row"].to_dict()
                out["empty_rows"] = s["empty"]
            elif spec.kind == "numeric":
                out.update(s["values"].to_dict())
            else:
                out["dim"] = spec.dim
                out.update(s["values"].to_dict())
                out["l2_norm"] = s["norm"].to_dict()
            features[spec.name] = out
        return features


def summarize(data: Any, schema: Any, *, top: int = 3) -> dict:
    """Validate every shard and collect statistics.

    Args:
        data: directory, glob, shard file or list of files (as for
            :class:`~matta_rec.data.reader.LogStream`).
        schema: a Schema, a YAML path or a dict.
        top: most frequent values kept per categorical feature.

    Returns:
        A JSON-safe dict with ``shards`` (per shard: path, format, rows,
        label means, error), ``totals``, ``labels`` and ``features``.
        Errors carry their fix in ``matta-rec inspect-data`` terms
        (:func:`matta_rec.cli._hints.for_command`).

    Example:
        >>> summary = summarize("sample_data", "sample_data/schema.yaml")  # doctest: +SKIP
        >>> summary["totals"]["invalid_shards"]  # doctest: +SKIP
        0
    """
    from matta_rec.data.reader import LogStream
    from matta_rec.data.schema import load_schema
    from matta_rec.errors import DataError

    schema = load_schema(schema)
    stream = LogStream(data, schema, batch_size=1)
    shards = stream.shards()
    if not shards:
        raise DataError(
            "no shards found (*.parquet, *.csv, *.tfrecord)",
            file=stream.root,
            fix="check --data; names starting with '.' or '_' are ignored",
        )
    label_stats = {key: _Moments() for key in stream.label_keys}
    features = _FeatureSummary(schema)
    entries = []
    for rel in shards:
        entry, cols = _check_shard(stream.root, rel, schema)
        entries.append(entry)
        if cols is None:
            continue
        for key, values in cols.labels.items():
            entry[f"{key}_mean"] = float(values.mean())
            label_stats[key].add(values)
        features.add(cols.features)
    columns = [c for c in (schema.labels.target, schema.labels.event, schema.labels.weight) if c]
    return {
        "root": stream.root,
        "schema": schema.source,
        "shards": entries,
        "totals": _totals(entries),
        "labels": {
            key: {"column": column, **label_stats[key].to_dict()}
            for key, column in zip(stream.label_keys, columns)
        },
        "features": features.to_dict(top),
    }


def _check_shard(root: str, rel: str, schema) -> tuple[dict, Any]:
    """Read and validate one shard: its summary entry, and its columns when valid (else None)."""
    from matta_rec.cli._hints import for_command
    from matta_rec.data.formats import read_shard
    from matta_rec.data.validation import validate_table
    from matta_rec.data.writers import format_of
    from matta_rec.errors import DataError

    path = os.path.join(root, rel)
    entry: dict[str, Any] = {"shard": rel, "format": format_of(rel), "rows": None}
    table = None
    try:
        table = read_shard(path, schema)
        cols = validate_table(table, schema, path)
    except DataError as exc:
        entry["error"] = for_command(str(exc), "inspect-data")
        if table is not None:
            entry["rows"] = table.num_rows
        return entry, None
    entry["rows"] = cols.num_rows
    return entry, cols


def _totals(entries: list[dict]) -> dict:
    invalid = [e for e in entries if "error" in e]
    return {
        "shards": len(entries),
        "valid_shards": len(entries) - len(invalid),
        "invalid_shards": len(invalid),
        "rows": sum(e["rows"] for e in entries if "error" not in e),
        "rows_in_invalid_shards": sum(e["rows"] or 0 for e in invalid),
        "unreadable_shards": sum(e["rows"] is None for e in invalid),
    }


def _escape(separator: str) -> str:
    import re

    return re.escape(separator)


# ------------------------------------------------------------------ printing
def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return str(value)


def format_summary(summary: dict, max_listed: int = 50) -> str:
    """The text report printed by the command.

    Args:
        summary: the result of :func:`summarize`.
        max_listed: shards listed one per line; invalid shards are always
            listed.
    """
    lines = [f"data:   {summary['root']}", f"schema: {summary['schema']}", ""]
    shards = summary["shards"]
    label_keys = list(summary["labels"])
    header = f"{'shard':<48} {'format':<8} {'rows':>10}" + "".join(f" {k + ' mean':>12}" for k in label_keys)
    lines += ["shards (reading order):", header]
    shown = 0
    for entry in shards:
        bad = "error" in entry
        if not bad and shown >= max_listed:
            continue
        shown += not bad
        rows = "unreadable" if entry["rows"] is None else _num(entry["rows"])
        line = f"{entry['shard']:<48} {entry['format']:<8} {rows:>10}"
        if bad:
            line += "  INVALID"
        else:
            line += "".join(f" {entry[k + '_mean']:>12.4f}" for k in label_keys)
        lines.append(line)
    hidden = sum("error" not in e for e in shards) - shown
    if hidden > 0:
        lines.append(f"... {hidden} more valid shard(s) (use --max-listed)")
    t = summary["totals"]
    lines += [
        "",
        f"totals: {t['shards']} shard(s), {_num(t['rows'])} valid row(s); "
        f"{t['invalid_shards']} invalid shard(s)"
        + (
            f" ({_num(t['rows_in_invalid_shards'])} rows, {t['unreadable_shards']} unreadable)"
            if t["invalid_shards"]
            else ""
        ),
        "",
        "labels:",
    ]
    for key, s in summary["labels"].items():
        if not s.get("count"):
            lines.append(f"  {key:<7} ({s['column']}): no valid rows")
            continue
        what = {"target": "mean", "event": "rate", "weight": "mean"}[key]
        lines.append(
            f"  {key:<7} ({s['column']}): {what} {s['mean']:.4f}  std {s['std']:.4f}  "
            f"min {s['min']:.4g}  max {s['max']:.4g}"
        )
    lines += ["", "features:"]
    for name, f in summary["features"].items():
        prefix = f"  {name:<24} {f['kind']:<18}"
        if f["kind"] in ("categorical", "multi_categorical"):
            distinct = _num(f["distinct"]) + ("+" if f["distinct_capped"] else "")
            top = ", ".join(f"{t['value']!r} {t['share']:.1%}" for t in f["top"])
            extra = ""
            if f["kind"] == "multi_categorical" and f["tokens_per_row"].get("count"):
                extra = (
                    f"  tokens/row {f['tokens_per_row']['mean']:.2f}  empty rows {_num(f['empty_rows'])}"
                )
            label = "distinct tokens" if f["kind"] == "multi_categorical" else "distinct"
            lines.append(f"{prefix} {label} {distinct}  top: {top}{extra}")
        elif not f.get("count"):
            lines.append(f"{prefix} no valid rows")
        else:
            extra = f"  dim {f['dim']}  mean L2 norm {f['l2_norm']['mean']:.4g}" if f["kind"] == "dense" else ""
            lines.append(
                f"{prefix} mean {f['mean']:.4g}  std {f['std']:.4g}  min {f['min']:.4g}  "
                f"max {f['max']:.4g}{extra}"
            )
    invalid = [e for e in shards if "error" in e]
    if invalid:
        lines += ["", f"invalid shards ({len(invalid)}):"]
        lines += [f"  {e['shard']}: {e['error']}" for e in invalid]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``matta-rec inspect-data``; 0 when every shard is valid, 1 otherwise."""
    from matta_rec.cli.evaluate import default_schema

    summary = summarize(args.data, default_schema(args.data, args.schema), top=args.top)
    print(format_summary(summary, max_listed=args.max_listed))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(to_json_safe(summary), handle, indent=2)
    invalid = summary["totals"]["invalid_shards"]
    if invalid:
        print(
            f"matta-rec inspect-data: error: {invalid} of {summary['totals']['shards']} shard(s) "
            "are invalid (listed above with the fix)",
            file=sys.stderr,
        )
        return 1
    return 0
