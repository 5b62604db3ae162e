"""``matta-rec evaluate``: AUROC / AucLoss of models against a production baseline.

Models and the baseline are SavedModels (version directory, size directory
or an export base with ``manifest.json``) or training run directories; the
baseline may be any SavedModel whose ``serving_default`` takes the raw
features by schema name and returns ``probability``.

Before scoring, the command warns (one line on stderr per run) when shards
under ``--data`` are shards a training run recorded as trained
(``RUN_DIR/metrics.json``, ``input.train_shards``): the runs named by
``--models`` / ``--baseline`` (directly or through an export manifest) and
``--runs``.  Scores on rows a model was trained on are optimistic.

Example::

    matta-rec evaluate --data logs/eval --schema logs/schema.yaml \\
        --models exports --baseline prod=/models/ranker/17 --label event --out report
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from matta_rec.cli._args import open_fraction, positive_int
from matta_rec.errors import MattaError

HELP = "AUROC / AucLoss of models against a production baseline"

#: Overlapping shards named in the warning before "and N more".
SHOWN_SHARDS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``matta-rec evaluate``.

    Args:
        parser: the sub-command's parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--data", "d", "--models", "m", "--baseline", "b"]).label
        'auto'
    """
    parser.add_argument("--data", required=True, help="evaluation log shards (directory, glob or file)")
    parser.add_argument("--schema", default=None,
                        help="schema YAML (default: DATA/schema.yaml)")
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="[NAME=]PATH[#LEVEL]: SavedModel, size dir, export base with "
                             "manifest.json, or training run dir")
    parser.add_argument("--baseline", required=True, metavar="MODEL",
                        help="the production baseline ([NAME=]PATH), any SavedModel with the "
                             "raw-feature serving_default signature")
    parser.add_argument("--label", choices=("auto", "event", "teacher"), default="auto",
                        help="event: 0/1 outcomes; teacher: soft Teacher probabilities "
                             "(weighted AUROC); auto: event if the schema has one")
    parser.add_argument("--out", default=None, metavar="REPORT_DIR",
                        help="write report.md, report.json and PNG plots here")
    parser.add_argument("--ci", choices=("bootstrap", "delong"), default="bootstrap",
                        help="confidence intervals: paired bootstrap (default) or DeLong")
    parser.add_argument("--level", type=open_fraction, default=0.95, help="confidence level (default 0.95)")
    parser.add_argument("--n-boot", type=positive_int, default=500,
                        help="bootstrap replicates (default 500); the bootstrap costs "
                             "O(rows x replicates), for many millions of rows --ci delong "
                             "(O(rows log rows)) is much faster")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--batch-size", type=positive_int, default=4096,
                        help="rows per scoring call (default 4096)")
    parser.add_argument("--max-rows", type=positive_int, default=None,
                        help="evaluate on the first N rows only")
    parser.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR",
                        help="extra training runs whose online AucLoss curves are plotted")


def default_schema(data: str, schema: str | None) -> str:
    """``schema`` or ``DATA/schema.yaml``; a clear error when neither exists."""
    if schema:
        return schema
    from matta_rec.data import filesystem as fs

    if fs.is_uri(str(data)):
        raise MattaError(f"no --schema given and --data {data} is on an object store; "
                         "pass --schema FILE (a local file)")
    candidate = os.path.join(str(data), "schema.yaml")
    if os.path.isfile(candidate):
        return candidate
    raise MattaError(f"no --schema given and {candidate} does not exist; pass --schema FILE")


def trained_shards(run_dir: str) -> tuple[str | None, list[dict]] | None:
    """The shards a run recorded as trained, from ``RUN_DIR/metrics.json``.

    Reads ``metrics["input"]["train_shards"]``: shard paths relative to the
    run's data root (``/``-separated), or fingerprints ``{"name", "bytes",
    ...}``; and ``metrics["input"]["root"]``, the data root, when recorded.

    Args:
        run_dir: a training run directory.

    Returns:
        ``(root or None, [{"name": ..., "bytes": ... or None}, ...])``, or
        ``None`` when the run did not record them (or has no metrics.json).

    Example:
        >>> trained_shards("runs/sample")  # doctest: +SKIP
        ('/data/logs', [{'name': 'dt=2024-01-01/hour=00/part-0.parquet', 'bytes': None}, ...])
    """
    try:
        with open(os.path.join(run_dir, "metrics.json"), "r", encoding="utf-8") as handle:
            metrics = json.load(handle)
    except (OSError, ValueError):
        return None
    section = metrics.get("input") if isinstance(metrics, dict) else None
    shards = section.get("train_shards") if isinstance(section, dict) else None
    if not isinstance(shards, list):
        return None
    out = []
    for entry in shards:
        if isinstance(entry, str):
            out.append({"name": entry, "bytes": None})
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            out.append({"name": entry["name"], "bytes": entry.get("bytes")})
    root = section.get("root")
    return (root if isinstance(root, str) else None), out


def _canonical(path: str) -> str:
    """One spelling per shard: the real path on disk, the normalised URI on a store."""
    from matta_rec.data import filesystem as fs

    return fs.normalize(path) if fs.is_uri(path) else os.path.realpath(path)


def _overlap(shards: list[str], paths: dict, root: str | None, trained: list[dict]) -> list[str]:
    """The evaluation shards (relative names) that are among ``trained``."""
    from matta_rec.data import filesystem as fs

    if root is not None and fs.kind(root) == "dir":
        wanted = {_canonical(fs.join(root, t["name"])) for t in trained}
        return [rel for rel in shards if paths[rel] in wanted]
    # The run's data root is unknown here: the same relative name (and size, when recorded).
    by_name = {t["name"]: t for t in trained}
    out = []
    for rel in shards:
        parts = paths[rel].replace(os.sep, "/").split("/")
        for k in range(1, len(parts)):
            match = by_name.get("/".join(parts[-k:]))
            if match is not None and match["bytes"] in (None, fs.file_size(paths[rel])):
                out.append(rel)
                break
    return out


def overlap_warnings(data: Any, schema: Any, run_dirs: Sequence[str]) -> list[str]:
    """One warning line per run that trained on shards under ``data``.

    Args:
        data: the evaluation shards (directory, glob, file or list).
        schema: their schema (a Schema or YAML path).
        run_dirs: training run directories; runs that did not record their
            trained shards (:func:`trained_shards`) are skipped.

    Returns:
        Lines naming the run, how many shards overlap and the first
        :data:`SHOWN_SHARDS` of them (relative to the evaluation data root).

    Example:
        >>> overlap_warnings("logs", "logs/schema.yaml", ["runs/a"])  # doctest: +SKIP
        ['matta-rec evaluate: warning: 2 of the 4 shard(s) under --data were trained on by run runs/a ...']
    """
    from matta_rec.data import filesystem as fs
    from matta_rec.data.reader import LogStream

    stream = LogStream(data, schema, batch_size=1)
    shards = stream.shards()
    paths = {rel: _canonical(fs.join(stream.root, rel)) for rel in shards}
    lines, seen = [], set()
    for run_dir in run_dirs:
        if os.path.realpath(run_dir) in seen:
            continue
        seen.add(os.path.realpath(run_dir))
        recorded = trained_shards(run_dir)
        if recorded is None:
            continue
        both = _overlap(shards, paths, *recorded)
        if not both:
            continue
        more = len(both) - SHOWN_SHARDS
        names = ", ".join(both[:SHOWN_SHARDS]) + (f" and {more} more" if more > 0 else "")
        lines.append(
            f"matta-rec evaluate: warning: {len(both)} of the {len(shards)} shard(s) under --data "
            f"were trained on by run {run_dir} ({names}); its scores there are optimistic: "
            "evaluate it on its hold-out shards (metrics.json holdout.shards) or on later logs"
        )
    return lines


def _run_dirs(args: argparse.Namespace) -> list[str]:
    """The runs behind ``--models``, ``--baseline`` (directly or by manifest) and ``--runs``."""
    from matta_rec.evaluation import resolve_models

    handles = resolve_models(list(args.models)) + resolve_models([args.baseline])
    return [h.run_dir for h in handles if h.run_dir and os.path.isdir(h.run_dir)] + list(args.runs)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table; write the report when ``--out`` is given.

    Args:
        args: parsed options.

    Example:
        >>> run(parser.parse_args([...]))  # doctest: +SKIP
        0
    """
    from matta_rec.evaluation import evaluate_models

    schema = default_schema(args.data, args.schema)
    for line in overlap_warnings(args.data, schema, _run_dirs(args)):
        print(line, file=sys.stderr)
    report = evaluate_models(
        args.models,
        args.baseline,
        args.data,
        schema,
        label=args.label,
        ci=args.ci,
        level=args.level,
        n_boot=args.n_boot,
        seed=args.seed,
        batch_size=args.batch_size,
        max_rows=args.max_rows,
        run_dirs=args.runs,
        out_dir=args.out,
        print_table=True,
    )
    if args.out:
        print(f"report: {os.path.join(args.out, 'report.md')} (+ report.json, "
              f"{', '.join(report.get('plots', {}).values()) or 'no plots'})")
    return 0
