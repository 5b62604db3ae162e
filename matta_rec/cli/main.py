"""Entry point of the ``matta-rec`` command.

Each sub-command lives in its own module ``matta_rec.cli.<name>`` that
defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``matta-rec --help``
and ``matta-rec generate`` do not pay for importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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

_HELP = {
    "generate": "write synthetic time-ordered log shards and schema.yaml",
    "inspect-data": "summarise and validate a directory of log shards",
    "train": "train a MatTA (Student inside a Teaching Assistant) model on a log stream",
    "export": "export Student sizes as TF Serving SavedModels",
    "evaluate": "AUROC / AucLoss of models against a production baseline",
    "ablate": "run the paper's ablation grid (optimizer x MatTA) over seeds",
    "demo": "train -> export -> evaluate on sample_data/ end to end",
}


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matta-rec",
        description="MatTA training, Mix'n'Match extraction, TF Serving export and "
        "evaluation for ranking models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        p = sub.add_parser(name, help=_HELP[name], description=_HELP[name])
        if name == load:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
        print(f"matta-rec {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"matta-rec {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
