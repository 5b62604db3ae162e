"""``matta-rec generate``: write synthetic time-ordered log shards and schema.yaml.

Example::

    matta-rec generate --out sample_data --rows 100000 --seed 0 --days 4
    matta-rec generate --out /tmp/bench --rows 5000000 --seed 1 --days 7 --overwrite
    matta-rec generate --out /tmp/test --rows 100000 --seed 0 --days 4 --draw 1
    matta-rec generate --out /tmp/fixed --preset fixed

``--draw N`` (N >= 1) writes another set of rows of the same world (same
users, items, hours and Teacher: a test set).  ``--preset fixed`` writes the
fixed-data preset (``matta_rec.data.synthetic.FIXED_PRESET``): OUT/train and
OUT/valid (one 50,000-row log, valid its last 10% of shards) and OUT/test (a
separate 50,000-row draw of the same world); its sizes cannot be changed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from matta_rec.cli._args import non_negative_int, positive_int
from matta_rec.errors import ConfigError

HELP = "write synthetic time-ordered log shards and schema.yaml"

#: Options a preset fixes, with their defaults when no preset is given.
_PRESET_FIXED = {"rows": 100_000, "days": 4, "start_date": "2024-01-01", "users": None,
                 "items": None, "ctr": 0.10, "rows_per_file": 1_000_000, "draw": 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``matta-rec generate``.

    Args:
        parser: the sub-command's parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--out", "d", "--rows", "10"]).seed
        0
    """
    parser.add_argument("--out", required=True, help="output directory (must be empty unless --overwrite)")
    parser.add_argument("--rows", type=positive_int, default=None, help="total rows (default 100000)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--days", type=positive_int, default=None, help="days of hourly shards (default 4)")
    parser.add_argument(
        "--format",
        choices=("parquet", "csv", "tfrecord"),
        default="parquet",
        help="shard format (default parquet)",
    )
    parser.add_argument("--start-date", default=None, help="first day, YYYY-MM-DD (default 2024-01-01)")
    parser.add_argument("--users", type=positive_int, default=None, help="number of users (default sqrt(rows), at least 100)")
    parser.add_argument("--items", type=positive_int, default=None, help="number of items (default sqrt(rows) / 2, at least 50)")
    parser.add_argument("--ctr", type=float, default=None, help="mean click probability (default 0.10)")
    parser.add_argument(
        "--draw",
        type=non_negative_int,
        default=None,
        help="0 (default): the log; N >= 1: another set of rows of the same world (a test set)",
    )
    parser.add_argument(
        "--preset",
        choices=("fixed",),
        default=None,
        help="fixed: OUT/train + OUT/valid (a 50000-row log, valid = its last 10%% of shards) "
             "and OUT/test (a separate 50000-row draw); sizes fixed, so no --rows/--days/"
             "--start-date/--users/--items/--ctr/--rows-per-file/--draw",
    )
    parser.add_argument(
        "--rows-per-file",
        type=positive_int,
        default=None,
        help="split an hour with more rows into part-0, part-1, ... (default 1000000)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow a non-empty --out; earlier dt=* shards and schema.yaml are replaced",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")


def _fill_defaults(args: argparse.Namespace) -> None:
    """Refuse options a preset fixes; give the others their defaults."""
    given = [key for key in _PRESET_FIXED if getattr(args, key) is not None]
    if args.preset and given:
        flags = ", ".join("--" + key.replace("_", "-") for key in given)
        raise ConfigError(f"--preset {args.preset} fixes the sizes of its data; leave out {flags} "
                          f"(e.g. matta-rec generate --out {args.out} --preset {args.preset})")
    for key, default in _PRESET_FIXED.items():
        if getattr(args, key) is None:
            setattr(args, key, default)


def run(args: argparse.Namespace) -> int:
    """Generate the logs described by ``args``; returns the exit status.

    Args:
        args: parsed options (see :func:`add_arguments`).

    Raises:
        ConfigError: a preset combined with an option it fixes, or bad sizes.

    Example:
        >>> from matta_rec.cli.main import main
        >>> main(["generate", "--out", "/tmp/logs", "--rows", "2000"])  # doctest: +SKIP
        0
    """
    from matta_rec.data.synthetic import generate_fixed_dataset, generate_logs

    _fill_defaults(args)
    start = time.time()
    state = {"files": 0, "rows": 0}

    def progress(path: str, rows: int) -> None:
        state["files"] += 1
        state["rows"] += rows
        if not args.quiet and state["files"] % 24 == 0:
            print(f"  {state['rows']:,} rows, {state['files']} files ({os.path.relpath(path, args.out)})",
                  file=sys.stderr)

    if args.preset == "fixed":
        paths = generate_fixed_dataset(args.out, args.seed, format=args.format,
                                       overwrite=args.overwrite, progress=progress)
        print(f"wrote the fixed-data preset ({state['rows']:,} rows in {state['files']} "
              f"{args.format} shards) to {args.out}: train/, valid/ (the last "
              f"{paths['valid_shards']} shards of the training log) and test/ (a separate draw) "
              f"in {time.time() - start:.1f}s")
        return 0
    schema = generate_logs(
        args.out,
        args.rows,
        args.seed,
        days=args.days,
        format=args.format,
        start_date=args.start_date,
        users=args.users,
        items=args.items,
        ctr=args.ctr,
        rows_per_file=args.rows_per_file,
        overwrite=args.overwrite,
        progress=progress,
        draw=args.draw,
    )
    print(
        f"wrote {state['rows']:,} rows in {state['files']} {args.format} shards and schema.yaml "
        f"({len(schema.features)} features) to {args.out} in {time.time() - start:.1f}s"
    )
    return 0
