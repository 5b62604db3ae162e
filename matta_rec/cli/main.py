"""Entry point of the ``matta-rec`` command.

Each sub-command lives in its own module ``matta_rec.cli.<name>`` that
defines ``HELP`` (one line, shown by ``matta-rec --help``),
``add_arguments(parser)`` and ``run(args) -> int``.  The modules import
TensorFlow (and everything else heavy) only inside ``run`` and
``add_arguments``, so ``matta-rec --help`` imports every module for its
``HELP`` and stays fast, and only the chosen command's options are declared.

Without ``--verbose`` TensorFlow's C++ start-up logging is kept off stderr
(:mod:`matta_rec.cli._quiet`).

Example::

    matta-rec --help
    matta-rec train --help
    matta-rec --verbose train --data logs --schema logs/schema.yaml --out runs/a
"""

from __future__ import annotations

import argparse
import importlib
import sys

from matta_rec.cli import _quiet
from matta_rec.cli._hints import for_command
from matta_rec.errors import MattaError

# name -> module; order is the order shown by --help.
COMMANDS = {
    "generate": "matta_rec.cli.generate",
    "inspect-data": "matta_rec.cli.inspect_data",
    "train": "matta_rec.cli.train",
    "export": "matta_rec.cli.export",
    "evaluate": "matta_rec.cli.evaluate",
    "ablate": "matta_rec.cli.ablate",
    "demo": "matta_rec.cli.demo",
}

_VERBOSE_HELP = "show TensorFlow's C++ logging (hidden by default)"


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """The ``matta-rec`` parser; only the ``load`` command's options are declared.

    Args:
        load: the command whose ``add_arguments`` runs (``None``: none).

    Returns:
        The parser; the loaded command's sub-parser sets ``_run``.

    Example:
        >>> build_parser().parse_args(["--verbose"]).verbose
        True
    """
    parser = argparse.ArgumentParser(
        prog="matta-rec",
        description="MatTA training, Mix'n'Match extraction, TF Serving export and "
        "evaluation for ranking models.",
    )
    parser.add_argument("--verbose", action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        # Also accepted after the command; SUPPRESS keeps the global value otherwise.
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=_VERBOSE_HELP)
        if name == load:
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _wants_verbose(argv: list[str]) -> bool:
    # Decided before any parser is built: add_arguments may import TensorFlow.
    # No abbreviations: ``--ver`` is export's --version, not --verbose.
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--verbose", action="store_true")
    try:
        known, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError:  # e.g. --verbose=1: the real parser reports it
        return False
    return known.verbose


def main(argv: list[str] | None = None) -> int:
    """Run ``matta-rec``; returns the exit status (2 for a usage or input error).

    Args:
        argv: the arguments after ``matta-rec`` (default ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not _wants_verbose(argv):
        _quiet.quiet_tensorflow()
    try:
        return _main(argv)
    finally:
        _quiet.stop_quieting()


def _main(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(load=command)
    args = parser.parse_args(argv)
    if command is None or not hasattr(args, "_run"):
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        return int(args._run(args) or 0)
    except MattaError as exc:
        print(f"matta-rec {command}: error: {for_command(str(exc), command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"matta-rec {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
