"""``matta-rec ablate``: the paper's ablation grid (Table 3 / Table 4) over seeds.

Trains Student alone with Adam (the baseline), Shampoo only, MatTA without
Shampoo, MatTA with Shampoo and MatTA without parameter sharing on the same
training shards, evaluates every Student (and TA) on the held-out shards and
reports Δ% AucLoss vs the baseline with intervals over seeds, and whether
MatTA and Shampoo are super-additive.

Example::

    matta-rec ablate --data sample_data --schema sample_data/schema.yaml \\
        --config pipelines/configs/sample.yaml --seeds 3 --out runs/ablation
"""

from __future__ import annotations

import argparse

from matta_rec.cli._args import key_value, open_fraction, positive_int
from matta_rec.cli.evaluate import default_schema

HELP = "run the paper's ablation grid (optimizer x MatTA) over seeds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``matta-rec ablate``.

    Args:
        parser: the sub-command's parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--data", "d", "--config", "c.yaml"]).seeds
        3
    """
    from matta_rec.evaluation.ablation import VARIANTS

    parser.add_argument("--data", required=True, help="log shards (directory, glob or file)")
    parser.add_argument("--schema", default=None, help="schema YAML (default: DATA/schema.yaml)")
    parser.add_argument("--config", required=True, help="run config YAML shared by every variant")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per variant (default 3)")
    parser.add_argument("--out", default="runs/ablation",
                        help="runs and ablation.md/json/png go here (default runs/ablation)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="subset of the grid (the baseline always runs)")
    holdout = parser.add_mutually_exclusive_group()
    holdout.add_argument("--holdout-shards", type=positive_int, default=None,
                         help="last N shards held out for evaluation (default: the config's "
                              "data.holdout_shards / holdout_fraction, else the last quarter)")
    holdout.add_argument("--holdout-fraction", type=open_fraction, default=None,
                         help="or this fraction of the shards, rounded up, at least one "
                              "(e.g. 0.25)")
    parser.add_argument("--label", choices=("auto", "event", "teacher"), default="auto",
                        help="evaluation label (default: event if the schema has one)")
    parser.add_argument("--n-boot", type=positive_int, default=500,
                        help="bootstrap replicates for single-seed intervals (default 500)")
    parser.add_argument("--level", type=open_fraction, default=0.95, help="confidence level (default 0.95)")
    parser.add_argument("--set", dest="overrides", action="append", type=key_value, default=[],
                        metavar="KEY=VALUE", help="override a config option for every run")


def run(args: argparse.Namespace) -> int:
    """Run the grid and print the table.

    Args:
        args: parsed options.

    Example:
        >>> run(parser.parse_args([...]))  # doctest: +SKIP
        0
    """
    from matta_rec.evaluation.ablation import run_ablation

    summary = run_ablation(
        args.config,
        args.data,
        default_schema(args.data, args.schema),
        args.out,
        seeds=args.seeds,
        variants=args.variants,
        holdout_shards=args.holdout_shards,
        holdout_fraction=args.holdout_fraction,
        label=args.label,
        n_boot=args.n_boot,
        level=args.level,
        overrides=dict(args.overrides) or None,
    )
    print(f"report: {args.out}/ablation.md (+ ablation.json, ablation.png); "
          f"{len(summary['rows'])} rows")
    return 0
