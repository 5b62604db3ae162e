"""``matta-rec evaluate``: AUROC / AucLoss of models against a production baseline.

Models and the baseline are SavedModels (version directory, size directory
or an export base with ``manifest.json``) or training run directories; the
baseline may be any SavedModel whose ``serving_default`` takes the raw
features by schema name and returns ``probability``.

Example::

    matta-rec evaluate --data logs/eval --schema logs/schema.yaml \\
        --models exports --baseline prod=/models/ranker/17 --label event --out report
"""

from __future__ import annotations

import argparse
import os

from matta_rec.cli._args import open_fraction, positive_int
from matta_rec.errors import MattaError

HELP = "AUROC / AucLoss of models against a production baseline"


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
    candidate = os.path.join(str(data), "schema.yaml")
    if os.path.isfile(candidate):
        return candidate
    raise MattaError(f"no --schema given and {candidate} does not exist; pass --schema FILE")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table; write the report when ``--out`` is given.

    Args:
        args: parsed options.

    Example:
        >>> run(parser.parse_args([...]))  # doctest: +SKIP
        0
    """
    from matta_rec.evaluation import evaluate_models

    report = evaluate_models(
        args.models,
        args.baseline,
        args.data,
        default_schema(args.data, args.schema),
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
