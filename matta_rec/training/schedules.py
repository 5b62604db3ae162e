"""Learning-rate schedules of ``optimizer.schedule``: a linear warmup, then a decay.

:class:`WarmupDecay` is a serialisable
``keras.optimizers.schedules.LearningRateSchedule`` (Keras and
:class:`~matta_rec.optimizers.Shampoo` take it as ``learning_rate``, and an
optimizer's ``get_config`` round-trips it).  :func:`build_schedule` turns the
config section (:class:`~matta_rec.training.config.ScheduleConfig`) and the
peak learning rate into one; :func:`resolve_schedule` fixes ``decay_steps:
auto`` from the run's planned number of optimizer steps.

The learning rate of optimizer step ``t`` (``optimizer.iterations``, 0-based)
is ``peak * warm(t) * decay(max(t - warmup_steps, 0))`` with
``warm(t) = min(1, (t + 1) / warmup_steps)`` (1 without warmup) and, for
``s`` steps after the warmup and ``D = decay_steps``:

* ``constant``: ``1``;
* ``cosine``: ``alpha + (1 - alpha) * (1 + cos(pi * min(s, D) / D)) / 2``;
* ``linear``: ``1 - (1 - alpha) * min(s, D) / D``;
* ``step``: ``max(decay_rate ** floor(s / D), alpha)``.

Example:

>>> schedule = WarmupDecay(0.01, kind="cosine", warmup_steps=100, decay_steps=900)
>>> round(float(schedule(0)), 6)          # first warmup step: peak / 100
0.0001
>>> optimizer = keras.optimizers.Adam(learning_rate=schedule)
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from matta_rec.errors import ConfigError
from matta_rec.training.config import (
    SCHEDULE_KINDS,
    RunConfig,
    ScheduleConfig,
    schedule_depends_on_length,
)

__all__ = [
    "WarmupDecay",
    "build_schedule",
    "planned_steps",
    "resolve_schedule",
    "schedule_depends_on_length",
]


@keras.saving.register_keras_serializable(package="matta_rec")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warmup to ``learning_rate``, then a constant, cosine, linear or step decay.

    Args:
        learning_rate: the peak learning rate (> 0).
        kind: ``"constant"``, ``"cosine"``, ``"linear"`` or ``"step"``.
        warmup_steps: steps of the linear warmup (0 = none).
        decay_steps: ``cosine`` / ``linear``: steps from the peak to
            ``alpha * learning_rate``; ``step``: steps between two drops.
            Needed (> 0) unless ``kind="constant"``.
        alpha: the floor as a fraction of the peak, in ``[0, 1]``.
        decay_rate: ``step``: factor of each drop, in ``(0, 1]``.
        name: optional name of the ops.

    Call arguments:
        step: the optimizer step (``optimizer.iterations``), 0-based.

    A call returns the learning rate of that step, a float32 scalar tensor.

    Example:

    >>> schedule = WarmupDecay(0.1, kind="step", decay_steps=10, decay_rate=0.5)
    >>> [round(float(schedule(t)), 4) for t in (0, 9, 10, 25)]
    [0.1, 0.1, 0.05, 0.025]
    >>> WarmupDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()
    True
    """

    def __init__(self, learning_rate, kind: str = "constant", warmup_steps: int = 0,
                 decay_steps: int | None = None, alpha: float = 0.0, decay_rate: float = 0.5,
                 name: str | None = None):
        super().__init__()
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                or not learning_rate > 0:
            raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"kind must be one of {list(SCHEDULE_KINDS)}, got {kind!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if kind != "constant" and (isinstance(decay_steps, bool) or not isinstance(decay_steps, int)
                                   or decay_steps < 1):
            raise ValueError(f"decay_steps must be an integer > 0 for kind={kind!r}, "
                             f"got {decay_steps!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if not 0.0 < decay_rate <= 1.0:
            raise ValueError(f"decay_rate must be in (0, 1], got {decay_rate!r}")
        self.learning_rate = float(learning_rate)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = None if decay_steps is None else int(decay_steps)
        self.alpha = float(alpha)
        self.decay_rate = float(decay_rate)
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "WarmupDecay"):
            t = tf.cast(tf.convert_to_tensor(step), tf.float32)
            peak = tf.constant(self.learning_rate, tf.float32)
            factor = tf.constant(1.0, tf.float32)
            if self.warmup_steps:
                factor = tf.minimum(1.0, (t + 1.0) / float(self.warmup_steps))
            s = tf.maximum(t - float(self.warmup_steps), 0.0)
            alpha = tf.constant(self.alpha, tf.float32)
            if self.kind in ("cosine", "linear"):
                done = tf.minimum(s, float(self.decay_steps)) / float(self.decay_steps)
                if self.kind == "cosine":
                    decay = alpha + (1.0 - alpha) * 0.5 * (1.0 + tf.cos(math.pi * done))
                else:
                    decay = 1.0 - (1.0 - alpha) * done
                factor = factor * decay
            elif self.kind == "step":
                drops = tf.floor(s / float(self.decay_steps))
                factor = factor * tf.maximum(tf.pow(self.decay_rate, drops), alpha)
            return peak * factor

    def get_config(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "kind": self.kind,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "decay_rate": self.decay_rate,
            "name": self.name,
        }


def planned_steps(rows: int | None, batch_size: int) -> int | None:
    """Optimizer steps of a run that trains ``rows`` stream rows.

    Batches span shard and epoch boundaries, so a run of ``rows`` rows takes
    ``ceil(rows / batch_size)`` steps (the last batch may be short).

    Args:
        rows: the rows the run will train (e.g.
            :func:`matta_rec.training.monitor.planned_rows` of the training
            shards, ``epochs`` and ``data.max_rows``), or ``None`` if unknown.
        batch_size: the global batch size.

    Returns:
        The number of steps, ``None`` when ``rows`` is ``None``.
    """
    if rows is None:
        return None
    return -(-int(rows) // int(batch_size))


def resolve_schedule(schedule: ScheduleConfig, total_steps: int | None, *,
                     source: str | None = None) -> ScheduleConfig:
    """``schedule`` with ``decay_steps: auto`` replaced by a number of steps.

    ``auto`` (cosine / linear) becomes ``total_steps - warmup_steps``: the
    decay reaches its floor at the run's last planned step.  Any other
    schedule is returned unchanged.

    Args:
        schedule: the ``optimizer.schedule`` section.
        total_steps: the optimizer steps the whole run plans
            (:func:`planned_steps`), or ``None`` if unknown.
        source: the config file named in errors.

    Returns:
        A :class:`ScheduleConfig` whose ``decay_steps`` is an integer
        wherever the decay uses it.

    Raises:
        ConfigError: ``auto`` with an unknown length (CSV / TFRecord shards,
            whose row counts are not read ahead, or follow mode), or a run
            no longer than its warmup.
    """
    if not schedule.depends_on_length:
        return schedule
    key = "optimizer.schedule.decay_steps"
    if total_steps is None:
        raise ConfigError(
            "decay_steps: auto needs the run's length, which is unknown here (row counts "
            "are read ahead from Parquet footers only, and follow mode has no end); set the "
            "steps: --set optimizer.schedule.decay_steps=N", source=source, key=key)
    decay = int(total_steps) - schedule.warmup_steps
    if decay < 1:
        raise ConfigError(
            f"decay_steps: auto leaves no step to decay: the run plans {total_steps} steps and "
            f"the warmup takes {schedule.warmup_steps}; lower "
            "--set optimizer.schedule.warmup_steps=N", source=source, key=key)
    return dataclasses.replace(schedule, decay_steps=decay)


def build_schedule(schedule: ScheduleConfig | dict | None, learning_rate, *,
                   total_steps: int | None = None, source: str | None = None):
    """The ``learning_rate`` argument of the optimizer for ``schedule``.

    Args:
        schedule: the ``optimizer.schedule`` section (a
            :class:`ScheduleConfig`, its mapping, or ``None`` = constant).
        learning_rate: the peak learning rate
            (``optimizer.settings.learning_rate``).
        total_steps: the run's planned optimizer steps, for
            ``decay_steps: auto`` (see :func:`resolve_schedule`).
        source: the config file named in errors.

    Returns:
        ``learning_rate`` itself for a constant schedule without warmup (the
        optimizer is built exactly as without a schedule), else a
        :class:`WarmupDecay`.

    Raises:
        ConfigError: the schedule section is invalid, ``learning_rate`` is
            not a number, or ``decay_steps: auto`` cannot be resolved.
    """
    from matta_rec.utils.config import from_dict

    if schedule is None:
        return learning_rate
    if not isinstance(schedule, ScheduleConfig):
        schedule = from_dict(ScheduleConfig, schedule, source=source or "<dict>",
                             key="optimizer.schedule")
    if schedule.is_constant:
        return learning_rate
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
            or not learning_rate > 0:
        raise ConfigError(
            f"a learning-rate schedule needs a peak learning rate > 0, got {learning_rate!r}: "
            "--set optimizer.settings.learning_rate=0.001", source=source,
            key="optimizer.settings.learning_rate")
    schedule = resolve_schedule(schedule, total_steps, source=source)
    return WarmupDecay(float(learning_rate), kind=schedule.kind,
                       warmup_steps=schedule.warmup_steps,
                       decay_steps=None if schedule.kind == "constant" else schedule.decay_steps,
                       alpha=schedule.alpha, decay_rate=schedule.decay_rate)

