"""``matta-rec demo``: train -> export -> evaluate on ``sample_data/`` end to end.

Runs ``pipelines/demo.py`` of the source checkout (the README's first
command, ``make demo``): MatTA with Shampoo, every Mix'n'Match size exported
for TF Serving, evaluated against an independently trained Student, report
with plots under ``--out``.

Example::

    matta-rec demo --data sample_data --out runs/demo
    matta-rec demo --quick --out /tmp/demo      # shortened, for CI
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from matta_rec.errors import MattaError

HELP = "train -> export -> evaluate on sample_data/ end to end"


def pipeline_path() -> str:
    """Path of ``pipelines/demo.py``: next to the package (editable install) or in the CWD.

    Example:
        >>> pipeline_path().endswith(os.path.join("pipelines", "demo.py"))
        True
    """
    import matta_rec

    candidates = [
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(matta_rec.__file__))),
                     "pipelines", "demo.py"),
        os.path.join(os.getcwd(), "pipelines", "demo.py"),
    ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise MattaError(
        "pipelines/demo.py not found; run `matta-rec demo` from the matta_rec source "
        "checkout (pip install -e .)"
    )


def load_pipeline():
    """Import ``pipelines/demo.py`` as a module."""
    path = pipeline_path()
    spec = importlib.util.spec_from_file_location("matta_rec_demo_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the demo's options (defined next to the pipeline).

    Args:
        parser: the sub-command's parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--quick"]).quick
        True
    """
    load_pipeline().add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the demo.

    Args:
        args: parsed options.

    Example:
        >>> run(parser.parse_args(["--quick"]))  # doctest: +SKIP
        0
    """
    pipeline = load_pipeline()
    pipeline.run_demo(args.data, args.out, config=args.config, quick=args.quick,
                      fresh=args.fresh, holdout_fraction=args.holdout_fraction,
                      sizes=args.sizes, n_boot=args.n_boot, label=args.label)
    return 0
