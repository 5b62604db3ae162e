"""``matta-rec train``: MatTA training on a log stream into a run directory."""

from __future__ import annotations

import argparse
import textwrap

from matta_rec.cli._args import key_value

HELP = "train a MatTA (Student inside a Teaching Assistant) model on a log stream"

_EPILOG_HEAD = """\
The YAML config (--config) holds every other option; its keys and defaults are
listed below (pipelines/configs/default.yaml is a commented copy).  --set
KEY=VALUE overrides one key (dotted path, YAML value), e.g.
  --set mode=student --set loss.ramp.delay_steps=500 --set optimizer.name=shampoo

The run directory gets config.yaml, schema.yaml, preprocessing.json,
holdout.json, checkpoints/, tensorboard/, progress.json, metrics.json and
model.keras (with --publish also publications.jsonl and candidates/).
After a crash, run the same command with --resume: training continues from
the last checkpoint without skipping or repeating a row.

Single-pass streaming logs: pipelines/configs/sample.yaml.  Fixed data sets
trained for several passes: pipelines/configs/fixed-dataset.yaml with
--valid DIR (a validation split outside --data): early stopping on the
Student's validation AucLoss restores the best weights.

config keys (KEY = default, as written in YAML and --set):
"""

_WIDTH = 88


def config_reference() -> str:
    """Every config key with its default and description, the model keys included.

    Returns:
        The text listed under "config keys" by ``matta-rec train --help``:
        per key a line ``KEY = DEFAULT`` (YAML spelling) followed by its
        description, indented; a section heading (``loss:``) before its keys.

    Example:
        >>> "loss.ramp.delay_steps = 0" in config_reference()
        True
    """
    from matta_rec.models.config import ModelConfig
    from matta_rec.training.config import RunConfig
    from matta_rec.utils.config import config_keys, yaml_value

    lines: list[str] = []
    for entry in config_keys(RunConfig, sections={"model": ModelConfig}):
        indent = "  " * (entry.key.count(".") + 1)
        head = f"{indent}{entry.key}:" if entry.section else \
            f"{indent}{entry.key} = {yaml_value(entry.default)}"
        lines.append(head)
        if entry.doc:
            lines += textwrap.wrap(entry.doc, _WIDTH, initial_indent=indent + "    ",
                                   subsequent_indent=indent + "    ")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG_HEAD + config_reference()
    parser.add_argument("--data", required=True,
                        help="log shards: a directory (recursive), a glob or a file; shards are "
                             "read in lexicographic (time) order")
    parser.add_argument("--schema", default=None,
                        help="feature schema YAML (default with --resume: the run's schema.yaml)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR",
                        help="run directory (created; must not hold a run unless --resume)")
    parser.add_argument("--valid", default=None, metavar="DIR",
                        help="validation shards (directory, glob or URI, outside --data): "
                             "scored every epoch (or validation.every_rows rows) for early "
                             "stopping and the best weights; shortcut for --set data.valid=DIR")
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="run config YAML (default: built-in defaults); with --resume "
                             "compared with RUN_DIR/config.yaml under the resume policy")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        type=key_value, metavar="KEY=VALUE", help="override a config key (repeatable)")
    parser.add_argument("--mode", default=None,
                        choices=["student", "ta", "matta", "matta_no_distill", "matta_no_sharing"],
                        help="shortcut for --set mode=...")
    parser.add_argument("--strategy", default=None, choices=["default", "mirrored", "multi_worker"],
                        help="shortcut for --set strategy=... (multi_worker reads TF_CONFIG)")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR from its last checkpoint; --config and --set may "
                             "change only checkpoint.*, metrics.*, follow.*, publish.*, "
                             "data.skip_bad_shards, data.max_rows and epochs")
    parser.add_argument("--follow", action="store_true",
                        help="continuous mode: keep polling --data for new partitions "
                             "(shortcut for --set follow.enabled=true); SIGTERM or Ctrl-C "
                             "checkpoints and exits 0")
    parser.add_argument("--publish", default=None, metavar="EXPORT_BASE",
                        help="publish a candidate export every publish.every_rows rows when it "
                             "is not worse than the served version (publications.jsonl)")
    parser.add_argument("--sizes", default=None, metavar="SIZES",
                        help="comma-separated sizes each candidate exports with --publish "
                             "(default: publish.sizes = student); the first one gates")


def overrides_of(args: argparse.Namespace) -> dict:
    """The ``--set`` overrides with the shortcut options applied.

    Args:
        args: parsed ``matta-rec train`` arguments.

    Returns:
        ``{dotted key: value}``: every ``--set KEY=VALUE``, then ``--mode``,
        ``--strategy``, ``--follow``, ``--publish``, ``--sizes`` and
        ``--valid`` as their keys (a shortcut wins over a ``--set`` of the
        same key).

    Example:
        >>> from matta_rec.cli.main import build_parser
        >>> args = build_parser(load="train").parse_args(
        ...     ["train", "--data", "d", "--out", "o", "--valid", "v/"])
        >>> overrides_of(args)
        {'data.valid': 'v/'}
    """
    overrides = dict(args.overrides)
    if args.mode:
        overrides["mode"] = args.mode
    if args.strategy:
        overrides["strategy"] = args.strategy
    if args.follow:
        overrides["follow.enabled"] = True
    if args.publish:
        overrides["publish.export_base"] = args.publish
    if args.sizes:
        overrides["publish.sizes"] = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.valid:
        overrides["data.valid"] = args.valid
    return overrides


def run(args: argparse.Namespace) -> int:
    import json

    from matta_rec.training.config import RunConfig

    overrides = overrides_of(args)
    if not args.resume:
        if args.schema is None:
            from matta_rec.errors import ConfigError

            raise ConfigError("--schema FILE is required (except with --resume)", source="--schema")
        config = RunConfig.from_yaml(args.config, overrides) if args.config else \
            RunConfig.from_dict({}, overrides=overrides)
    else:
        config = args.config  # compared with the run's config.yaml by the resume policy

    from matta_rec.export.gate import PublishCallback
    from matta_rec.training.loop import train_run

    metrics = train_run(config, args.data, args.schema, args.out, resume=args.resume,
                        overrides=overrides if args.resume else None,
                        callbacks=[PublishCallback()])
    summary = {"rows_trained": metrics["rows_trained"], "steps": metrics["steps"],
               "rows_per_s": round(metrics["rows_per_s"], 1)}
    hold = metrics.get("holdout", {})
    label = "event" if "event" in hold else "target"
    if label in hold:
        summary["holdout_auc_loss"] = {k: round(v["auc_loss"], 5) for k, v in hold[label].items()
                                       if v.get("auc_loss") is not None}
    print(json.dumps(summary))
    return 0
