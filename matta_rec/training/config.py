"""`RunConfig`: every option of a training run, read from YAML.

A run is described by one YAML file (``pipelines/configs/default.yaml`` lists
every option with its default).  The sections map onto the dataclasses below
and are validated by :func:`matta_rec.utils.config.from_dict`: an unknown key
or a value of the wrong type is an error naming the file and the dotted key.

This module imports neither TensorFlow nor Keras, so the CLI can validate a
config (and print ``--help``) cheaply.

Example:

>>> cfg = RunConfig.from_dict({"mode": "student", "batch_size": 128})
>>> cfg.loss.distill_weight
1.0
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Literal, Mapping

import yaml

from matta_rec.errors import ConfigError
from matta_rec.utils.config import from_dict, load_yaml, to_dict

MODES = ("student", "ta", "matta", "matta_no_distill", "matta_no_sharing")
STRATEGIES = ("default", "mirrored", "multi_worker")
#: ``distribute.collective_timeout_s`` when the run config does not set it.
DEFAULT_COLLECTIVE_TIMEOUT_S = 300.0
RAMP_KINDS = ("linear", "cosine", "constant")
SCHEDULE_KINDS = ("constant", "cosine", "linear", "step")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass
class RampConfig:
    """When the distillation loss is switched on (paper 3.1.1).

    ``w_D(t)`` is 0 for ``t < delay_steps``, then rises to
    ``loss.distill_weight`` over ``ramp_steps`` optimizer steps (linearly or
    along a half cosine); ``kind: constant`` uses the target from ``delay_steps``.

    Args:
        kind: ``"linear"``, ``"cosine"`` or ``"constant"``.
        delay_steps: optimizer steps with ``w_D = 0``.
        ramp_steps: steps from 0 to the target after the delay.
    """

    kind: Literal["linear", "cosine", "constant"] = "linear"
    delay_steps: int = 0
    ramp_steps: int = 0

    def __post_init__(self):
        _check(self.delay_steps >= 0, f"ramp.delay_steps must be >= 0, got {self.delay_steps}")
        _check(self.ramp_steps >= 0, f"ramp.ramp_steps must be >= 0, got {self.ramp_steps}")


@dataclasses.dataclass
class LossConfig:
    """Weights of ``L = w_S L_S + w_TA L_TA + w_D(t) L_D`` (paper eq. 1-3).

    Args:
        student_weight: ``w_S``, weight of the smallest level's loss.
        ta_weight: ``w_TA``, weight of the largest level's loss.
        intermediate_weight: weight of the losses of levels between the two
            (models with more than two levels); ``null`` = ``student_weight``.
        distill_weight: target of ``w_D`` (reached after the ramp).
        temperature: distillation temperature ``T``: ``L_D`` compares
            ``sigmoid(z/T)`` and is scaled by ``T**2``.
        distill_from: ``"ta"`` (every smaller level distils from the TA) or
            ``"next"`` (each level from the next larger one).
        label: which label trains the heads: ``"target"`` (the Teacher
            probability column, soft) or ``"event"`` (the 0/1 event column).
        ramp: schedule of ``w_D``.
    """

    student_weight: float = 1.0
    ta_weight: float = 1.0
    intermediate_weight: float | None = None
    distill_weight: float = 1.0
    temperature: float = 1.0
    distill_from: Literal["ta", "next"] = "ta"
    label: Literal["target", "event"] = "target"
    ramp: RampConfig = dataclasses.field(default_factory=RampConfig)

    def __post_init__(self):
        for name in ("student_weight", "ta_weight", "distill_weight"):
            value = getattr(self, name)
            _check(value >= 0, f"loss.{name} must be >= 0, got {value}")
        if self.intermediate_weight is not None:
            _check(
                self.intermediate_weight >= 0,
                f"loss.intermediate_weight must be >= 0, got {self.intermediate_weight}",
            )
        _check(self.temperature > 0, f"loss.temperature must be > 0, got {self.temperature}")
        _check(
            self.distill_from in ("ta", "next"),
            f"loss.distill_from must be 'ta' or 'next', got {self.distill_from!r}",
        )
        _check(
            self.label in ("target", "event"),
            f"loss.label must be 'target' or 'event', got {self.label!r}",
        )
        if isinstance(self.ramp, Mapping):
            self.ramp = from_dict(RampConfig, self.ramp, key="loss.ramp")

    @classmethod
    def from_any(cls, value: "LossConfig | Mapping | None") -> "LossConfig":
        """A LossConfig from itself, a mapping or ``None`` (defaults)."""
        if isinstance(value, cls):
            return value
        return from_dict(cls, value or {}, key="loss")


@dataclasses.dataclass
class ScheduleConfig:
    """The learning-rate schedule: a linear warmup, then a decay.

    The peak learning rate is ``optimizer.settings.learning_rate``; the
    optimizer step ``t`` (0-based) trains with ``peak * min(1, (t + 1) /
    warmup_steps) * decay(t - warmup_steps)``.  ``kind: constant`` with no
    warmup (the default) passes the learning rate to the optimizer as a plain
    number, as before schedules existed.

    Args:
        kind: the decay after the warmup: ``constant`` (none), ``cosine``
            (half cosine from 1 to ``alpha`` over ``decay_steps``),
            ``linear`` (straight line from 1 to ``alpha`` over
            ``decay_steps``) or ``step`` (times ``decay_rate`` every
            ``decay_steps`` steps, never below ``alpha``).
        warmup_steps: optimizer steps of the linear warmup from
            ``peak / warmup_steps`` to the peak (0 = none).
        decay_steps: ``cosine`` / ``linear``: steps from the peak to the
            floor (after the warmup); ``step``: steps between two drops.
            ``auto`` (cosine / linear only): the run's planned optimizer
            steps minus the warmup, from the training shards' row counts,
            ``epochs`` and ``data.max_rows``; the run's length then cannot
            change on ``--resume``.
        alpha: the floor, as a fraction of the peak, in ``[0, 1]``.
        decay_rate: ``step``: the factor of each drop, in ``(0, 1]``.
    """

    kind: Literal["constant", "cosine", "linear", "step"] = "constant"
    warmup_steps: int = 0
    decay_steps: int | Literal["auto"] = "auto"
    alpha: float = 0.0
    decay_rate: float = 0.5

    def __post_init__(self):
        _check(self.kind in SCHEDULE_KINDS,
               f"optimizer.schedule.kind must be one of {list(SCHEDULE_KINDS)}, got {self.kind!r}")
        _check(self.warmup_steps >= 0,
               f"optimizer.schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_steps != "auto":
            _check(isinstance(self.decay_steps, int) and not isinstance(self.decay_steps, bool)
                   and self.decay_steps > 0,
                   f"optimizer.schedule.decay_steps must be an integer > 0 or auto, "
                   f"got {self.decay_steps!r}")
        _check(self.kind != "step" or self.decay_steps != "auto",
               "optimizer.schedule.kind step needs the steps between two drops: "
               "--set optimizer.schedule.decay_steps=N (auto is for cosine / linear)")
        _check(0.0 <= self.alpha <= 1.0,
               f"optimizer.schedule.alpha must be in [0, 1], got {self.alpha}")
        _check(0.0 < self.decay_rate <= 1.0,
               f"optimizer.schedule.decay_rate must be in (0, 1], got {self.decay_rate}")

    @property
    def is_constant(self) -> bool:
        """No warmup and no decay: the optimizer gets a plain learning rate."""
        return self.kind == "constant" and self.warmup_steps == 0

    @property
    def depends_on_length(self) -> bool:
        """The decay is stretched over the run's planned length (``decay_steps: auto``)."""
        return self.kind in ("cosine", "linear") and self.decay_steps == "auto"


@dataclasses.dataclass
class OptimizerConfig:
    """The optimizer: a name, its keyword arguments and a learning-rate schedule.

    Args:
        name: ``"shampoo"``, ``"adam"``, ``"adamw"``, ``"adagrad"``, ``"sgd"``
            ... (any name ``matta_rec.optimizers.get`` or
            ``keras.optimizers.get`` knows).
        settings: keyword arguments, e.g. ``{learning_rate: 0.001,
            weight_decay: 0.0001}`` (``learning_rate`` is the peak of the
            schedule).
        schedule: the learning-rate schedule (:class:`ScheduleConfig`).
    """

    name: str = "adam"
    settings: dict = dataclasses.field(default_factory=lambda: {"learning_rate": 0.001})
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)

    def __post_init__(self):
        _check(bool(self.name), "optimizer.name must be a non-empty string such as 'adam'")
        if isinstance(self.schedule, Mapping):
            self.schedule = from_dict(ScheduleConfig, self.schedule, key="optimizer.schedule")


@dataclasses.dataclass
class DataConfig:
    """How the log stream is read and split.

    Args:
        stats_rows: rows at the start of the stream used to fit the
            preprocessing statistics (vocabularies, normalisation).
        holdout_shards: the last N shards are not trained on; the final heads
            are evaluated on them (AUROC / AucLoss in ``metrics.json``).
        holdout_fraction: alternatively, this fraction of the shards (rounded
            up, at least 1); ``null`` = use ``holdout_shards``.
        skip_bad_shards: quarantine shards that fail validation instead of
            stopping.
        max_rows: stop training after this many stream rows (``null`` = all).
        valid: the shards of a validation set (a directory, glob, file or
            URI, outside the training data; ``matta-rec train --valid
            DIR``): scored in inference mode every epoch or every
            ``validation.every_rows`` rows, for ``early_stopping`` and the
            best-weights restore; ``null`` = none.
    """

    stats_rows: int = 50_000
    holdout_shards: int = 0
    holdout_fraction: float | None = None
    skip_bad_shards: bool = False
    max_rows: int | None = None
    valid: str | None = None

    def __post_init__(self):
        _check(self.valid is None or bool(self.valid),
               "data.valid must be a directory, glob or URI of validation shards, or null")
        _check(self.stats_rows > 0, f"data.stats_rows must be > 0, got {self.stats_rows}")
        _check(self.holdout_shards >= 0, "data.holdout_shards must be >= 0")
        if self.holdout_fraction is not None:
            _check(
                0.0 < self.holdout_fraction < 1.0,
                f"data.holdout_fraction must be in (0, 1), got {self.holdout_fraction}",
            )
            _check(
                self.holdout_shards == 0,
                "give data.holdout_shards or data.holdout_fraction, not both",
            )
        if self.max_rows is not None:
            _check(self.max_rows > 0, "data.max_rows must be > 0 or null")


@dataclasses.dataclass
class ValidationConfig:
    """When and how the validation set (``data.valid``) is scored.

    Every evaluation scores all of ``data.valid`` with the current weights in
    inference mode (no dropout, batch-norm moving statistics) and records
    each level's exact AUROC / AucLoss / logloss (``metrics.json``
    ``validation``).

    Args:
        every_rows: evaluate after at least this many trained rows since the
            last evaluation; ``null`` = at the end of every epoch (after the
            first batch that reaches into the next epoch: batches span epoch
            boundaries).  The end of the run is always evaluated.
        level: the level that will be served, whose validation AucLoss
            drives early stopping and the best weights; ``null`` = the
            smallest level (the Student).
        label: the label the AucLoss is measured on: ``target`` or
            ``event``; ``null`` = ``loss.label``.
        batch_size: rows per scoring batch; ``null`` = ``max(batch_size,
            1024)``.
    """

    every_rows: int | None = None
    level: str | None = None
    label: Literal["target", "event"] | None = None
    batch_size: int | None = None

    def __post_init__(self):
        if self.every_rows is not None:
            _check(self.every_rows > 0, "validation.every_rows must be > 0 or null")
        _check(self.level is None or bool(self.level),
               "validation.level must name a level (e.g. student) or be null")
        _check(self.label in (None, "target", "event"),
               f"validation.label must be target, event or null, got {self.label!r}")
        if self.batch_size is not None:
            _check(self.batch_size > 0, "validation.batch_size must be > 0 or null")


@dataclasses.dataclass
class EarlyStoppingConfig:
    """Stop when the served level's validation AucLoss stops improving.

    Needs ``data.valid``.  An evaluation improves when the AucLoss of
    ``validation.level`` is below the best so far by more than ``min_delta``.

    Args:
        patience: evaluations in a row without improvement after which the
            run stops (``null`` = never stop early).
        min_delta: the least decrease of the AucLoss that counts as an
            improvement (>= 0).
        restore_best: when the run ends, load the whole nested model's
            weights from the best evaluation (every level from that same
            point) before ``model.keras`` is written and the hold-out is
            scored; applies whenever ``data.valid`` is set, early stopping
            on or off.  Keeps a copy of every weight in memory and in the
            checkpoints.
    """

    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        if self.patience is not None:
            _check(self.patience >= 1, f"early_stopping.patience must be >= 1 or null, "
                                       f"got {self.patience}")
        _check(self.min_delta >= 0, f"early_stopping.min_delta must be >= 0, got {self.min_delta}")


@dataclasses.dataclass
class CheckpointConfig:
    """Periodic checkpoints of model, optimizer and stream position.

    Args:
        every_rows: save after at least this many rows since the last save.
        every_steps: or after this many optimizer steps (``null`` = off).
        keep: checkpoints kept on disk.
    """

    every_rows: int | None = 100_000
    every_steps: int | None = None
    keep: int = 3

    def __post_init__(self):
        if self.every_rows is not None:
            _check(self.every_rows > 0, "checkpoint.every_rows must be > 0 or null")
        if self.every_steps is not None:
            _check(self.every_steps > 0, "checkpoint.every_steps must be > 0 or null")
        _check(self.keep >= 1, "checkpoint.keep must be >= 1")


@dataclasses.dataclass
class MetricsConfig:
    """Online (progressive-validation) metrics.

    Args:
        window_rows: rows per point of the online AucLoss curve in
            ``metrics.json`` (exact AUROC of the scored-before-trained
            predictions of that window).
        progress: report progress: a progress bar with an ETA on a terminal,
            else a plain line on stderr every 30 seconds; false = silent.
        tensorboard: write TensorBoard scalars to ``RUN_DIR/tensorboard``.
        log_every_steps: steps between TensorBoard points.
    """

    window_rows: int = 10_000
    progress: bool = True
    tensorboard: bool = True
    log_every_steps: int = 10

    def __post_init__(self):
        _check(self.window_rows > 0, "metrics.window_rows must be > 0")
        _check(self.log_every_steps > 0, "metrics.log_every_steps must be > 0")


@dataclasses.dataclass
class FollowConfig:
    """Continuous mode: keep polling the data root for new partitions.

    Args:
        enabled: follow the data root (``matta-rec train --follow``); the
            run then reads a single pass (``epochs: 1``) and ends at the
            first stop condition below, or on SIGTERM / Ctrl-C (a final
            checkpoint is written and the command exits 0).
        poll_interval_s: seconds between two listings of the data root.
        idle_timeout_s: end when no new shard appeared for this long
            (``null``: never).
        sentinel: end once this file exists (relative paths are relative to
            the data root), after reading every shard present then.
    """

    enabled: bool = False
    poll_interval_s: float = 30.0
    idle_timeout_s: float | None = None
    sentinel: str | None = None

    def __post_init__(self):
        _check(self.poll_interval_s > 0, "follow.poll_interval_s must be > 0")
        if self.idle_timeout_s is not None:
            _check(self.idle_timeout_s >= 0, "follow.idle_timeout_s must be >= 0 or null")


@dataclasses.dataclass
class DistributeConfig:
    """Settings of the ``tf.distribute`` strategy (``strategy`` picks it).

    Args:
        collective_timeout_s: under ``strategy: multi_worker``, seconds a
            collective op (the step's all-reduce, the workers' agreement
            before each step) may wait for the other workers before it
            fails. It bounds how long the survivors of a dead worker wait
            before they exit non-zero, and must exceed the longest a healthy
            worker may take between two steps (reading its largest shard; the
            chief fitting the preprocessing statistics at the start).
            Default 300.
    """

    collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S

    def __post_init__(self):
        _check(self.collective_timeout_s > 0,
               "distribute.collective_timeout_s must be a positive number of seconds, got "
               f"{self.collective_timeout_s!r}; e.g. --set distribute.collective_timeout_s=300")


@dataclasses.dataclass
class PublishConfig:
    """Gated publication of new versions to TF Serving during training.

    Args:
        export_base: the folder TF Serving watches (``matta-rec train
            --publish EXPORT_BASE``); ``null`` = no publication.
        sizes: sizes exported per candidate; the first one gates.
        every_rows: trained rows between two candidates.
        every_minutes: or minutes between two candidates (``null`` = off).
        eval_rows: rows of the stream after a candidate, scored by it and
            by the published version before they are trained on.
        tolerance: publish when the candidate's AucLoss is at most the
            published one's plus this.
    """

    export_base: str | None = None
    sizes: list = dataclasses.field(default_factory=lambda: ["student"])
    every_rows: int | None = 1_000_000
    every_minutes: float | None = None
    eval_rows: int = 50_000
    tolerance: float = 0.0

    def __post_init__(self):
        _check(bool(self.sizes), "publish.sizes must name at least one size")
        if self.every_rows is not None:
            _check(self.every_rows > 0, "publish.every_rows must be > 0 or null")
        if self.every_minutes is not None:
            _check(self.every_minutes > 0, "publish.every_minutes must be > 0 or null")
        _check(self.every_rows is not None or self.every_minutes is not None,
               "publish needs publish.every_rows or publish.every_minutes")
        _check(self.eval_rows > 0, "publish.eval_rows must be > 0")
        _check(self.tolerance >= 0, "publish.tolerance must be >= 0")


@dataclasses.dataclass
class RunConfig:
    """Everything a training run needs besides the data and the schema.

    Args:
        model: the model section, a mapping for ``matta_rec.models.ModelConfig``.
        loss: loss weights, temperature and ramp (:class:`LossConfig`).
        optimizer: optimizer name and settings (:class:`OptimizerConfig`).
        batch_size: global batch size (split across replicas).
        epochs: passes over the training shards (1 = one online pass).
        mode: ``"student"`` (Student alone), ``"ta"`` (TA alone), ``"matta"``,
            ``"matta_no_distill"`` (``w_D = 0``) or ``"matta_no_sharing"``
            (independent Student and TA weights).
        strategy: ``"default"`` (one device), ``"mirrored"`` (all local
            devices) or ``"multi_worker"`` (``TF_CONFIG``).
        distribute: the strategy's settings (:class:`DistributeConfig`).
        seed: random seed of weight initialisation.
        data: stream options (:class:`DataConfig`).
        validation: scoring of the validation set ``data.valid``
            (:class:`ValidationConfig`).
        early_stopping: stopping and best weights on the validation set
            (:class:`EarlyStoppingConfig`).
        checkpoint: checkpoint cadence (:class:`CheckpointConfig`).
        metrics: online metrics (:class:`MetricsConfig`).
        follow: continuous mode (:class:`FollowConfig`).
        publish: gated publication to TF Serving (:class:`PublishConfig`).

    Example:

    >>> cfg = RunConfig.from_yaml("pipelines/configs/sample.yaml")
    >>> cfg.mode
    'matta'
    """

    model: dict = dataclasses.field(default_factory=dict)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    batch_size: int = 512
    epochs: int = 1
    mode: Literal["student", "ta", "matta", "matta_no_distill", "matta_no_sharing"] = "matta"
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    follow: FollowConfig = dataclasses.field(default_factory=FollowConfig)
    publish: PublishConfig = dataclasses.field(default_factory=PublishConfig)
    source: str = dataclasses.field(default="<dict>", compare=False)

    def __post_init__(self):
        _check(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.mode in MODES, f"mode must be one of {list(MODES)}, got {self.mode!r}")
        _check(
            self.strategy in STRATEGIES,
            f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}",
        )
        _check(not (self.follow.enabled and self.epochs != 1),
               f"follow mode reads a single pass: epochs must be 1, got {self.epochs}")
        _check(self.early_stopping.patience is None or self.data.valid is not None,
               "early_stopping.patience needs a validation set: pass --valid DIR "
               "(--set data.valid=DIR), or --set early_stopping.patience=null")

    # ----------------------------------------------------------------- I/O
    @classmethod
    def from_dict(
        cls, mapping: Mapping | None, source: str = "<dict>", overrides: Mapping | None = None
    ) -> "RunConfig":
        """Build from a mapping; ``overrides`` (nested or dotted keys) win."""
        data = dict(mapping or {})
        data.pop("source", None)
        if overrides:
            data = apply_overrides(data, overrides, source)
        config = from_dict(cls, data, source=str(source))
        config.source = str(source)
        config.model_config()  # validate the model section now, naming the key
        return config

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Mapping | None = None) -> "RunConfig":
        return cls.from_dict(load_yaml(path), source=os.fspath(path), overrides=overrides)

    @classmethod
    def load(cls, config: "RunConfig | str | os.PathLike | Mapping | None",
             overrides: Mapping | None = None) -> "RunConfig":
        """Accept a RunConfig, a YAML path, a mapping or None (defaults)."""
        if isinstance(config, RunConfig):
            if not overrides:
                return config
            return cls.from_dict(config.to_dict(), source=config.source, overrides=overrides)
        if config is None or isinstance(config, Mapping):
            return cls.from_dict(config or {}, overrides=overrides)
        return cls.from_yaml(config, overrides=overrides)

    def to_dict(self) -> dict:
        out = to_dict(self)
        out.pop("source", None)
        return out

    def to_yaml(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.to_dict(), handle, sort_keys=False)

    # ------------------------------------------------------------ derived
    def model_config(self):
        """The ``matta_rec.models.ModelConfig`` of the nested model.

        Raises:
            ConfigError: naming ``model.<key>`` when the section is invalid.
        """
        from matta_rec.models.config import ModelConfig  # Keras-free

        try:
            return from_dict(ModelConfig, self.model, source=self.source, key="model")
        except ConfigError as exc:
            key = exc.key or ""
            if not key.startswith("model"):
                key = f"model.{key}" if key else "model"
            message = str(exc)
            for prefix in (f"{exc.source}: " if exc.source else "", f"key '{exc.key}': "):
                if prefix and message.startswith(prefix):
                    message = message[len(prefix):]
            raise ConfigError(message, source=self.source, key=key) from exc

    def model_for_mode(self):
        """The ModelConfig the mode trains (one level for ``student`` / ``ta``)."""
        model = self.model_config()
        if self.mode in ("student", "ta"):
            return model.with_levels((self.mode,))
        if self.mode == "matta_no_sharing":
            return dataclasses.replace(model, share_weights=False)
        return model

    def effective_loss(self) -> LossConfig:
        """The loss config after the mode is applied (``w_D = 0`` without distillation)."""
        loss = copy.deepcopy(self.loss)
        if self.mode == "matta_no_distill":
            loss.distill_weight = 0.0
        return loss


def schedule_depends_on_length(config: RunConfig) -> bool:
    """Whether the run's learning-rate schedule is stretched over its length.

    True for a ``cosine`` / ``linear`` decay with ``decay_steps: auto``: its
    decay steps come from the training rows, ``epochs`` and
    ``data.max_rows``, so ``--resume`` must not change those (the resume
    policy's ``schedule_depends_on_length``).

    Args:
        config: the run's :class:`RunConfig`.

    Example:

    >>> schedule_depends_on_length(RunConfig.from_dict(
    ...     {"optimizer": {"schedule": {"kind": "cosine"}}}))
    True
    >>> schedule_depends_on_length(RunConfig.from_dict({}))
    False
    """
    return config.optimizer.schedule.depends_on_length


def apply_overrides(data: Mapping, overrides: Mapping, source: str = "<overrides>") -> dict:
    """Deep-merge ``overrides`` into ``data``; keys may be dotted (``loss.ramp.kind``)."""
    out = copy.deepcopy(dict(data))
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, Mapping):
                raise ConfigError(
                    f"cannot set '{key}': '{'.'.join(parts[:depth + 1])}' is not a section",
                    source=source,
                    key=key,
                )
            node[part] = dict(child)
            node = node[part]
        last = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(last), Mapping):
            node[last] = apply_overrides(node[last], value, source)
        else:
            node[last] = copy.deepcopy(value)
    return out
