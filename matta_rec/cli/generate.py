"""``matta-rec generate``: write synthetic time-ordered log shards and schema.yaml.

Example::

    matta-rec generate --out sample_data --rows 100000 --seed 0 --days 4
    matta-rec generate --out /tmp/bench --rows 5000000 --seed 1 --days 7 --overwrite
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from matta_rec.cli._args import non_negative_int, positive_int

HELP = "write synthetic time-ordered log shards and schema.yaml"


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
    parser.add_argument("--rows", type=positive_int, default=100_000, help="total rows (default 100000)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--days", type=positive_int, default=4, help="days of hourly shards (default 4)")
    parser.add_argument(
        "--format",
        choices=("parquet", "csv", "tfrecord"),
        default="parquet",
        help="shard format (default parquet)",
    )
    parser.add_argument("--start-date", default="2024-01-01", help="first day, YYYY-MM-DD (default 2024-01-01)")
    parser.add_argument("--users", type=positive_int, default=None, help="number of users (default sqrt(rows), at least 100)")
    parser.add_argument("--items", type=positive_int, default=None, help="number of items (default sqrt(rows) / 2, at least 50)")
    parser.add_argument("--ctr", type=float, default=0.10, help="mean click probability (default 0.10)")
    parser.add_argument(
        "--rows-per-file",
        type=positive_int,
        default=1_000_000,
        help="split an hour with more rows into part-0, part-1, ... (default 1000000)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow a non-empty --out; earlier dt=* shards and schema.yaml are replaced",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")


def run(args: argparse.Namespace) -> int:
    """Generate the logs described by ``args``; returns the exit status.

    Args:
        args: parsed options (see :func:`add_arguments`).

    Example:
        >>> from matta_rec.cli.main import main
        >>> main(["generate", "--out", "/tmp/logs", "--rows", "2000"])  # doctest: +SKIP
        0
    """
    from matta_rec.data.synthetic import generate_logs

    start = time.time()
    state = {"files": 0, "rows": 0}

    def progress(path: str, rows: int) -> None:
        state["files"] += 1
        state["rows"] += rows
        if not args.quiet and state["files"] % 24 == 0:
            print(f"  {state['rows']:,} rows, {state['files']} files ({os.path.relpath(path, args.out)})",
                  file=sys.stderr)

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
    )
    print(
        f"wrote {state['rows']:,} rows in {state['files']} {args.format} shards and schema.yaml "
        f"({len(schema.features)} features) to {args.out} in {time.time() - start:.1f}s"
    )
    return 0
