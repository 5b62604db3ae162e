"""``matta-rec export``: export Student sizes of a run as TF Serving SavedModels.

Example::

    matta-rec export --run runs/sample --out exports --sizes student,wnw:1,ta
    matta-rec export --run runs/sample --out exports --sizes all-pareto --version 7
"""

from __future__ import annotations

import argparse
import sys

from matta_rec.cli._args import non_negative_int, positive_int

HELP = "export Student sizes as TF Serving SavedModels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN_DIR",
                        help="training run directory (the --out of `matta-rec train`)")
    parser.add_argument("--out", required=True, metavar="EXPORT_BASE",
                        help="export base: EXPORT_BASE/<size>/<version>/ is written")
    parser.add_argument("--sizes", default="student,ta",
                        help="comma-separated sizes: student, ta, Mix'n'Match specs "
                             "(wnw:K, wnw:K@LEVEL, mix@LEVEL:B1,B2,...) or all-pareto "
                             "(default: student,ta)")
    parser.add_argument("--version", type=non_negative_int, default=None,
                        help="integer version (default: next after the existing ones)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing version instead of refusing")
    parser.add_argument("--data", default=None,
                        help="log shards to take warmup rows from (default: the example "
                             "rows recorded with the run's checkpoints)")
    parser.add_argument("--warmup-rows", type=positive_int, default=64,
                        help="rows used for warmup requests and latency batches (default 64)")
    parser.add_argument("--latency-repeats", type=non_negative_int, default=30,
                        help="timed calls per batch size for the manifest latency; 0 skips "
                             "(default 30)")


def run(args: argparse.Namespace) -> int:
    from matta_rec.export.run_export import export_run

    manifest = export_run(
        args.run,
        args.out,
        sizes=args.sizes,
        version=args.version,
        overwrite=args.overwrite,
        data=args.data,
        warmup_rows=args.warmup_rows,
        latency_repeats=args.latency_repeats,
        log=lambda message: print(message, file=sys.stderr),
    )
    version = manifest["version"]
    rows = [e for e in manifest["sizes"] if e.get("version") == version
            and e.get("run") == manifest["run"]]
    print(f"{'size':<24}{'spec':<24}{'params':>12}{'FLOPs':>14}{'KiB':>9}"
          f"{'ms@1':>8}{'ms@256':>9}")
    for e in rows:
        lat = e.get("latency", {})
        ms1 = lat.get("1", {}).get("median_ms")
        ms256 = lat.get("256", {}).get("median_ms")
        print(f"{e['name']:<24}{e['spec']:<24}{e['params']:>12,}{(e['flops'] or 0):>14,}"
              f"{e['size_bytes'] / 1024:>9.0f}"
              f"{'' if ms1 is None else format(ms1, '.2f'):>8}"
              f"{'' if ms256 is None else format(ms256, '.2f'):>9}")
    print(f"version {version} -> {args.out} (manifest.json updated)")
    return 0
