"""The run directory of a training run, and `load_run` to read one back.

Layout (``RUN_DIR``)::

    config.yaml          the RunConfig the run used (after --set overrides)
    schema.yaml          the feature schema
    preprocessing.json   FeatureStats fitted on the stream's first window
    holdout.json         the hold-out shards, fixed when the run started
    checkpoints/         ckpt-<rows_end>.* (model + optimizer + metrics + rows_end)
                         and state-<rows_end>.json (stream position, online curve)
    tensorboard/         TensorBoard event files (train/)
    progress.json        heartbeat of the running process (rows trained so far)
    metrics.json         online curve, final metrics, hold-out evaluation
    model.keras          the final nested model (all levels)
    publications.jsonl   with --publish: one decision of the publication gate a line
    candidates/          with --publish: candidate exports awaiting their decision

Example:

>>> run = load_run("runs/sample")
>>> run.model(features)["student"]          # logits of every level
>>> run.metrics["holdout"]["event"]["student"]["auc_loss"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable

from matta_rec.errors import ConfigError
from matta_rec.data.schema import Schema
from matta_rec.training.config import RunConfig
from matta_rec.utils.files import write_file_atomic

CONFIG = "config.yaml"
SCHEMA = "schema.yaml"
PREPROCESSING = "preprocessing.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
METRICS = "metrics.json"
MODEL = "model.keras"
PROGRESS = "progress.json"

_STATE = re.compile(r"^state-(\d+)\.json$")


class RunPaths:
    """Paths inside a run directory.

    Args:
        run_dir: the run directory.
    """

    def __init__(self, run_dir: str | os.PathLike):
        from matta_rec.data.filesystem import is_uri

        self.root = os.fspath(run_dir)
        if is_uri(self.root):
            raise ConfigError(
                f"the run directory {self.root} is a URI; run directories are local paths "
                "(logs may be on an object store, the run's checkpoints are written locally); "
                "pass a local --out directory", source="--out")

    def __getattr__(self, name: str) -> str:
        names = {
            "config": CONFIG,
            "schema": SCHEMA,
            "preprocessing": PREPROCESSING,
            "checkpoints": CHECKPOINTS,
            "tensorboard": TENSORBOARD,
            "metrics": METRICS,
            "model": MODEL,
            "progress": PROGRESS,
        }
        if name in names:
            return os.path.join(self.root, names[name])
        raise AttributeError(name)

    def state(self, rows_end: int) -> str:
        return os.path.join(self.checkpoints, f"state-{int(rows_end)}.json")

    def states(self) -> list[int]:
        """``rows_end`` of the state files present, ascending."""
        if not os.path.isdir(self.checkpoints):
            return []
        out = []
        for name in os.listdir(self.checkpoints):
            match = _STATE.match(name)
            if match:
                out.append(int(match.group(1)))
        return sorted(out)

    def example_rows(self) -> dict | None:
        """The raw example rows kept with the newest checkpoint that has them.

        Every ``state-<rows_end>.json`` written by the training loop holds
        ``"example"``: ``{feature: [values of a few raw rows]}`` (what warmup
        requests and latency measurements are built from).  This is the one
        reader of that part of the state-file format outside the loop.
        """
        for rows_end in reversed(self.states()):
            state = read_json(self.state(rows_end))
            example = state.get("example") if isinstance(state, dict) else None
            if example:
                return example
        return None


def write_json_atomic(path: str, data: Any, fsync: bool = True) -> None:
    """Write JSON to ``path`` through a temporary file and a rename.

    ``fsync=False`` still survives a killed process (the page cache is the
    kernel's), only not a machine crash; used for the per-step heartbeat.
    """
    write_file_atomic(path, json.dumps(data, indent=2, sort_keys=False), fsync=fsync)


def read_json(path: str) -> Any:
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def get_optimizer(name: str, settings: dict, *, schedule=None, total_steps: int | None = None,
                  source: str | None = None):
    """An optimizer from ``matta_rec.optimizers.get`` (or Keras when missing).

    Args:
        name: ``optimizer.name``.
        settings: ``optimizer.settings`` (keyword arguments of the optimizer;
            ``learning_rate`` is the schedule's peak).
        schedule: ``optimizer.schedule`` (a
            :class:`~matta_rec.training.config.ScheduleConfig` or its
            mapping); ``None`` or a constant schedule without warmup leaves
            ``learning_rate`` a plain number.  Otherwise the optimizer gets a
            :class:`~matta_rec.training.schedules.WarmupDecay`.
        total_steps: the run's planned optimizer steps, needed for
            ``decay_steps: auto``
            (:func:`~matta_rec.training.schedules.planned_steps`).
        source: the config file named in errors.

    Raises:
        ConfigError: naming ``optimizer`` when the name or settings are wrong,
            or ``optimizer.schedule...`` when the schedule is.

    Example:

    >>> opt = get_optimizer("adam", {"learning_rate": 0.01},
    ...                     schedule={"kind": "cosine", "warmup_steps": 100}, total_steps=1000)
    >>> round(float(opt.learning_rate), 6)   # step 0: 0.01 / 100
    0.0001
    """
    settings = dict(settings or {})
    if schedule is not None:
        from matta_rec.training.schedules import build_schedule

        learning_rate = build_schedule(schedule, settings.get("learning_rate"),
                                       total_steps=total_steps, source=source)
        if learning_rate is not None:
            settings["learning_rate"] = learning_rate
    try:
        from matta_rec.optimizers import get
    except ImportError:  # pragma: no cover - optimizers package always ships
        get = None
    try:
        if get is not None:
            return get(name, **settings)
        import keras

        return keras.optimizers.get({"class_name": name, "config": settings})
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; fix the optimizer section (name: shampoo|adam|adagrad|sgd|..., settings: {{...}})",
            key="optimizer",
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot build optimizer {name!r} with settings {settings}: {exc}", key="optimizer"
        ) from exc


def build_model(model_config, schema: Schema, stats):
    """The nested model of ``model_config``.

    Without ``model.source``: :class:`matta_rec.models.NestedRelevanceModel`.
    With ``model.source`` (a ``.keras`` file, loaded with its weights, or a
    ``package.module:function`` factory called with ``schema`` / ``stats``
    when it names them): the user's model through
    :func:`matta_rec.models.nestify.nestify_from_config`, with our schema
    preprocessing in front unless ``model.source_preprocessing`` is false,
    ``model.width_factors`` / ``d_model_factors`` / ``levels`` /
    ``share_weights`` as for the built-in model and ``model.extra_layers``
    TA-only blocks.  The modes work alike: ``student`` trains the user's
    model alone (one level, on logits), ``ta`` its widened twin.
    """
    if getattr(model_config, "source", None):
        from matta_rec.models.nestify import nestify_from_config

        return nestify_from_config(model_config, schema, stats)
    from matta_rec.models import NestedRelevanceModel

    return NestedRelevanceModel(schema, stats, model_config)


@dataclasses.dataclass
class LoadedRun:
    """A run directory read back.

    Args:
        run_dir: the directory.
        config: its :class:`RunConfig`.
        schema: its :class:`~matta_rec.data.schema.Schema`.
        stats: its :class:`~matta_rec.features.FeatureStats`.
        model: the nested model (``model.keras``, or rebuilt and restored
            from the latest checkpoint when the run did not finish).
        metrics: ``metrics.json`` (``{}`` if the run did not finish).
    """

    run_dir: str
    config: RunConfig
    schema: Schema
    stats: Any
    model: Any
    metrics: dict


def load_run(run_dir: str | os.PathLike, *, model_builder: Callable | None = None) -> LoadedRun:
    """Read a run directory back.

    Args:
        run_dir: a directory written by :func:`matta_rec.training.train_run`.
        model_builder: ``(model_config, schema, stats) -> model`` used when
            the run has no ``model.keras`` (default: ``NestedRelevanceModel``).

    Returns:
        A :class:`LoadedRun`.

    Raises:
        ConfigError: the directory is not a run directory.

    Example:

    >>> run = load_run("runs/sample")
    >>> sorted(run.model(batch))
    ['student', 'ta']
    """
    paths = RunPaths(run_dir)
    for needed in (paths.config, paths.schema, paths.preprocessing):
        if not os.path.exists(needed):
            raise ConfigError(
                f"not a training run directory: {os.path.basename(needed)} is missing; "
                "pass the --out directory of a `matta-rec train` run",
                source=paths.root,
            )
    import keras

    import matta_rec.training.schedules  # noqa: F401  (registers WarmupDecay for optimizers)
    import matta_rec.training.trainer  # noqa: F401  (registers serialisable classes)
    from matta_rec.features import FeatureStats

    config = RunConfig.from_yaml(paths.config)
    schema = Schema.from_yaml(paths.schema)
    stats = FeatureStats.load(paths.preprocessing)
    metrics = read_json(paths.metrics) if os.path.exists(paths.metrics) else {}
    if os.path.exists(paths.model):
        model = keras.saving.load_model(paths.model)
    else:
        model = restore_latest(paths, config, schema, stats, model_builder)
    return LoadedRun(paths.root, config, schema, stats, model, metrics)


def restore_latest(paths: RunPaths, config: RunConfig, schema: Schema, stats,
                   model_builder: Callable | None = None):
    """Rebuild the model and restore its weights from the latest checkpoint."""
    import tensorflow as tf

    builder = model_builder or build_model
    model_config = config.model_for_mode()
    model = builder(model_config, schema, stats)
    latest = tf.train.latest_checkpoint(paths.checkpoints)
    if latest is None:
        raise ConfigError(
            "the run has neither model.keras nor a checkpoint; it stopped before the "
            "first checkpoint: train again",
            source=paths.root,
        )
    state = read_json(paths.state(int(latest.rsplit("-", 1)[1])))
    features = state.get("example")
    if features is None:
        raise ConfigError("the checkpoint state has no example batch to build the model", source=latest)
    model(example_tensors(features, schema), training=False)
    # The checkpoint also holds the optimizer and metrics: only the model's
    # variables must all be found (a model variable left at its initial
    # value would be exported as if trained).
    restore_checkpoint(tf.train.Checkpoint(model=model), latest).expect_partial()
    return model


def restore_checkpoint(checkpoint, path: str):
    """``checkpoint.restore(path)``, every variable of ``checkpoint`` found in it.

    Returns:
        The load status (``expect_partial()`` it when the file may hold more).

    Raises:
        ConfigError: a variable of the model (or optimizer, ...) being
            restored is not in the checkpoint, or has another shape: the model
            that ``config.yaml`` builds is not the one that was trained (a run
            directory of another matta_rec version, or a hand-edited config).
    """
    status = None
    try:
        status = checkpoint.restore(path)
        return status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as exc:
        if status is not None:
            status.expect_partial()  # no warning per unread value on the way out
        missing = re.findall(r"path=([^,\s>]+)", str(exc))
        if missing:
            detail = (f"{len(missing)} variable(s) not in it: {', '.join(missing[:5])}"
                      + (", ..." if len(missing) > 5 else ""))
        else:
            text = str(exc).strip()
            detail = text.splitlines()[0][:200] if text else type(exc).__name__
        raise ConfigError(
            "the checkpoint does not hold the variables of the model that the run's "
            f"config.yaml builds ({detail}); the run was trained with another model "
            "(another matta_rec version or a changed config): load it with the version and "
            "config that wrote it, or train again into a new --out",
            source=path,
        ) from exc


def example_batch(features: dict, rows: int = 2) -> dict:
    """A JSON-safe copy of the first ``rows`` rows of a raw feature batch."""
    out = {}
    for name, values in features.items():
        values = values[:rows]
        if hasattr(values, "numpy"):
            values = values.numpy()
        out[name] = [v.decode("utf-8") if isinstance(v, bytes) else
                     (v.tolist() if hasattr(v, "tolist") else v) for v in values]
    return out


def example_tensors(example: dict, schema: Schema) -> dict:
    """Tensors with the raw dtypes of ``schema`` from :func:`example_batch` output."""
    import numpy as np
    import tensorflow as tf

    out = {}
    for spec in schema.features:
        dtype = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}[spec.raw_dtype]
        values = example[spec.name]
        if spec.raw_dtype == "float32":
            values = np.asarray(values, np.float32)
        out[spec.name] = tf.constant(values, dtype=dtype)
    return out
