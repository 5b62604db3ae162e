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
    """Declare the options of ``matta-rec export``.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("--run", required=True, metavar="RUN_DIR",
                        help="training run directory (the --out of `matta-rec train`)")
    parser.add_argument("--out", required=True, metavar="EXPORT_BASE",
                        help="export base: EXPORT_BASE/<size>/<version>/ is written")
    parser.add_argument("--sizes", default="student,ta",
                        help="comma-separated sizes: student, ta, Mix'n'Match specs "
                             "(wnw:K, wnw:K@LEVEL, mix@LEVEL:B1,B2,...), all (every family "
                             "member) or all-pareto (members not dominated on FLOPs and "
                             "held-out AucLoss; needs the run's held-out shards) "
                             "(default: student,ta)")
    parser.add_argument("--version", type=non_negative_int, default=None,
                        help="integer version (default: next after the existing ones)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing version instead of refusing")
    parser.add_argument("--data", default=None,
                        help="log shards to take warmup rows from (default: the example "
                             "rows recorded with the run's checkpoints); also where the run's "
                             "held-out shards are looked up; for all-pareto of a run without "
                             "a hold-out, the held-out shards themselves")
    parser.add_argument("--warmup-rows", type=positive_int, default=64,
                        help="rows used for warmup requests and latency batches (default 64)")
    parser.add_argument("--latency-repeats", type=non_negative_int, default=30,
                        help="timed calls per batch size for the manifest latency; 0 skips "
                             "(default 30)")


def run(args: argparse.Namespace) -> int:
    """Export the sizes, then print their table (progress goes to stderr).

    Args:
        args: parsed options.

    Returns:
        0 (errors are raised as :class:`~matta_rec.export.ExportError`).
    """
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
    print(format_sizes(rows))
    print(f"version {version} -> {args.out} (manifest.json updated)")
    return 0


def format_sizes(entries: list[dict]) -> str:
    """The printed table of exported sizes (manifest entries).

    The held-out AucLoss column is there when any entry has
    ``holdout_auc_loss``; a cell is empty where a value was not measured.

    Args:
        entries: manifest ``sizes`` entries.

    Returns:
        The table, one line per entry under a header line.

    Example:

    >>> print(format_sizes(manifest["sizes"]))  # doctest: +SKIP
    size   spec   params   FLOPs   KiB   held-out AucLoss   ms@1   ms@256
    """
    auc = any("holdout_auc_loss" in e for e in entries)
    header = f"{'size':<24}{'spec':<24}{'params':>12}{'FLOPs':>14}{'KiB':>9}"
    header += f"{'held-out AucLoss':>18}" if auc else ""
    lines = [header + f"{'ms@1':>8}{'ms@256':>9}"]
    for e in entries:
        lat = e.get("latency", {})
        line = (f"{e['name']:<24}{e['spec']:<24}{e['params']:>12,}{(e['flops'] or 0):>14,}"
                f"{e['size_bytes'] / 1024:>9.0f}")
        line += _cell(e.get("holdout_auc_loss"), ".4f", 18) if auc else ""
        line += _cell(lat.get("1", {}).get("median_ms"), ".2f", 8)
        line += _cell(lat.get("256", {}).get("median_ms"), ".2f", 9)
        lines.append(line)
    return "\n".join(lines)


def _cell(value: float | None, spec: str, width: int) -> str:
    """``value`` formatted with ``spec``, right-aligned in ``width`` (blank when ``None``)."""
    return f"{'' if value is None else format(value, spec):>{width}}"
