"""``matta-rec demo``: train -> export -> evaluate end to end on sample logs.

Trains MatTA with Shampoo and an independently trained Student (Adam, the
stand-in for the production baseline), exports Mix'n'Match sizes for TF
Serving, evaluates every size against the baseline on the held-out shards
and writes a report with plots under ``--out``
(:mod:`matta_rec.cli.demo_job`).  Everything it needs ships with the
package, so it runs from a plain ``pip install`` outside a source checkout:
without ``--data`` it writes the sample logs with the built-in generator.

Example::

    matta-rec demo --out runs/demo                      # generates runs/demo/data first
    matta-rec demo --data sample_data --out runs/demo   # the checkout's sample logs (make demo)
"""

from __future__ import annotations

import argparse

from matta_rec.cli._args import open_fraction, positive_int
from matta_rec.cli.demo_job import DEMO_CONFIG, run_demo, sample_logs_command

HELP = "train -> export -> evaluate end to end on sample logs"

_EPILOG = (
    "Data: with --data DIR the demo reads the log shards in DIR (and DIR/schema.yaml). "
    "Without --data it first writes the sample logs with the built-in generator into "
    f"OUT/data ({sample_logs_command('OUT/data')}): the same rows as sample_data/ of the "
    "source checkout, so the demo needs no checkout. The run config ships with the package "
    "(matta_rec/cli/demo.yaml); --config replaces it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``matta-rec demo``.

    Args:
        parser: the sub-command's parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args([]).data is None, p.parse_args([]).out
        (True, 'runs/demo')
    """
    parser.epilog = _EPILOG
    parser.add_argument("--data", default=None,
                        help="log shards with schema.yaml (default: write the sample logs to "
                             "OUT/data with the built-in generator, see below)")
    parser.add_argument("--out", default="runs/demo",
                        help="data, runs, exports and report go here (default runs/demo)")
    parser.add_argument("--config", default=DEMO_CONFIG,
                        help="run config YAML (default: the demo config shipped with the "
                             "package, matta_rec/cli/demo.yaml)")
    parser.add_argument("--fresh", action="store_true",
                        help="retrain even if finished runs with the same settings exist "
                             "under --out")
    parser.add_argument("--holdout-fraction", type=open_fraction, default=0.1,
                        help="last fraction of the shards held out for evaluation "
                             "(default 0.1)")
    parser.add_argument("--sizes", type=positive_int, default=5,
                        help="Mix'n'Match sizes to export, Student and TA included; 2 or more "
                             "(default 5)")
    parser.add_argument("--n-boot", type=positive_int, default=500,
                        help="bootstrap replicates (default 500)")
    parser.add_argument("--label", choices=("auto", "event", "teacher"), default="auto",
                        help="evaluation label (default: event if the schema has one)")


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status.

    Args:
        args: parsed options (see :func:`add_arguments`).

    Example:
        >>> from matta_rec.cli.main import main
        >>> main(["demo", "--out", "/tmp/demo"])  # doctest: +SKIP
        0
    """
    run_demo(args.data, args.out, config=args.config, fresh=args.fresh,
             holdout_fraction=args.holdout_fraction, sizes=args.sizes, n_boot=args.n_boot,
             label=args.label)
    return 0
