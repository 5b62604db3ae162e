"""Which config keys may change when a run is resumed, and which may not.

``--resume`` continues a run from its checkpoint: the model, its optimizer
state and the stream position were made under the run's config (its
``config.yaml``). A few keys only steer *how* the run goes on and may change
(:data:`ALLOWED_ON_RESUME`): checkpoint cadence, online metrics, continuous
mode (``follow.*``) and gated publication (``publish.*``), whether bad
shards are quarantined, the multi-worker collective timeout, and how long
the run is (``data.max_rows``,
``epochs``; not when a learning-rate schedule depends on the run's length,
since changing the length would move the schedule under the trained weights).
Every other key (model, loss, optimizer, ``batch_size``, the rest of
``data``, ``seed``, ``mode``, ``strategy``, ...) shapes what was trained and is
refused, all changed keys in one :class:`~matta_rec.errors.ConfigError`.

The comparison is leaf by leaf over the nested dicts (``RunConfig.to_dict()``
form), with keys as dotted paths (``optimizer.settings.learning_rate``); a
key set on one side only is a change from or to ``(not set)``; an empty
section is the same as an absent one. Values compare with ``==`` (so ``256``
equals ``256.0``). Sections are compared as written: pass both sides through
the same normalisation (defaults filled in) if they may spell defaults
differently.

This module imports neither TensorFlow nor Keras.

Example:

>>> old = {"batch_size": 256, "epochs": 1, "checkpoint": {"every_rows": 1000}}
>>> new = {"batch_size": 256, "epochs": 2, "checkpoint": {"every_rows": 500}}
>>> [str(c) for c in check_resume(old, new, schedule_depends_on_length=False)]
['checkpoint.every_rows: 1000 -> 500', 'epochs: 1 -> 2']
>>> check_resume(old, {**new, "batch_size": 128}, schedule_depends_on_length=False)
Traceback (most recent call last):
...
matta_rec.errors.ConfigError: --resume cannot change 1 key of the run's config: batch_size: 256 -> 128. ...
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from matta_rec.errors import ConfigError

__all__ = [
    "ALLOWED_ON_RESUME",
    "LENGTH_KEYS",
    "Change",
    "flatten",
    "config_changes",
    "is_allowed",
    "check_resume",
]

#: Keys (dotted; ``section.*`` = every key of the section) that may change on ``--resume``.
ALLOWED_ON_RESUME = ("checkpoint.*", "metrics.*", "follow.*", "publish.*", "data.skip_bad_shards",
                     "distribute.collective_timeout_s",
                     "data.max_rows", "epochs", "early_stopping.patience",
                     "early_stopping.min_delta", "validation.every_rows")

#: Allowed keys that set the run's length: refused when a learning-rate
#: schedule depends on it.
LENGTH_KEYS = ("data.max_rows", "epochs")


class _Unset:
    """A key set on one side only."""

    def __repr__(self) -> str:
        return "(not set)"


UNSET = _Unset()


@dataclasses.dataclass(frozen=True)
class Change:
    """One changed config key.

    Args:
        key: the dotted key path, e.g. ``optimizer.settings.learning_rate``.
        old: the run's value (:data:`UNSET` when the run did not set it).
        new: the value asked for now (:data:`UNSET` when not set).

    Example:

    >>> str(Change("batch_size", 256, 128))
    'batch_size: 256 -> 128'
    """

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"

    def to_dict(self) -> dict:
        """``{"key", "old", "new"}``, JSON-safe (an unset side is ``None``)."""
        return {
            "key": self.key,
            "old": None if self.old is UNSET else self.old,
            "new": None if self.new is UNSET else self.new,
        }


def _show(value: Any) -> str:
    """A value as it is written on the command line (``--set key=VALUE``)."""
    if value is UNSET:
        return repr(UNSET)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value.strip() == value else json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError:
        return repr(value)


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested sections -> ``{dotted key: leaf value}``.

    Args:
        config: a nested mapping (``RunConfig.to_dict()`` form).
        prefix: prepended to every key (with a dot).

    Returns:
        One entry per leaf; an empty section has no entry; lists are leaves.

    Example:

    >>> flatten({"optimizer": {"name": "adam", "settings": {"learning_rate": 0.001}}})
    {'optimizer.name': 'adam', 'optimizer.settings.learning_rate': 0.001}
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"a config must be a mapping, got {type(config).__name__}")
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def config_changes(old: Mapping, new: Mapping) -> list[Change]:
    """Every leaf that differs between two nested configs, sorted by key.

    Args:
        old: the run's config (its ``config.yaml``).
        new: the config asked for now.

    Returns:
        A :class:`Change` per differing key (set on one side only counts).
    """
    a, b = flatten(old), flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, UNSET), b.get(key, UNSET)
        if before is UNSET or after is UNSET or not _same(before, after):
            changes.append(Change(key, before, after))
    return changes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 is no match here
        return type(a) is type(b) and a == b
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # e.g. arrays (ambiguous truth value): compare what they print
        return repr(a) == repr(b)


def is_allowed(key: str, *, schedule_depends_on_length: bool) -> bool:
    """Whether ``key`` may change on ``--resume``.

    Args:
        key: a dotted key path.
        schedule_depends_on_length: the learning-rate schedule depends on the
            run's length (``data.max_rows`` and ``epochs`` are then refused).
    """
    if key in LENGTH_KEYS and schedule_depends_on_length:
        return False
    for allowed in ALLOWED_ON_RESUME:
        if allowed.endswith(".*") and key.startswith(allowed[:-1]):
            return True
        if key == allowed:
            return True
    return False


def check_resume(
    old: Mapping,
    new: Mapping,
    *,
    schedule_depends_on_length: bool,
    source: str | None = None,
) -> list[Change]:
    """Apply the resume policy to a config change.

    Args:
        old: the run's config as a nested dict (``RunConfig.to_dict()`` of
            its ``config.yaml``).
        new: the config asked for by this ``--resume`` (``--config`` and
            ``--set`` applied), same form.
        schedule_depends_on_length: whether the learning-rate schedule
            depends on the run's length (``data.max_rows`` / ``epochs``).
        source: named in the error (e.g. the run's ``config.yaml``).

    Returns:
        The allowed changes, sorted by key, for the caller to apply, write to
        ``config.yaml`` and record (``Change.to_dict()``) with the row at
        which they took effect. Empty when nothing changed.

    Raises:
        ConfigError: one or more changed keys are not allowed; the message
            lists every one of them as ``key: old -> new`` and the fix.

    Example:

    >>> check_resume({"seed": 0}, {"seed": 1}, schedule_depends_on_length=False)
    Traceback (most recent call last):
    ...
    matta_rec.errors.ConfigError: --resume cannot change 1 key of the run's config: seed: 0 -> 1. ...
    """
    if not isinstance(schedule_depends_on_length, bool):
        raise TypeError(
            f"schedule_depends_on_length must be True or False, got {schedule_depends_on_length!r}"
        )
    changes = config_changes(old, new)
    refused = [c for c in changes if not is_allowed(c.key, schedule_depends_on_length=schedule_depends_on_length)]
    if not refused:
        return changes
    parts = []
    for change in refused:
        text = str(change)
        if change.key in LENGTH_KEYS:
            text += " (the learning-rate schedule depends on the run's length)"
        parts.append(text)
    count = f"{len(refused)} key" + ("s" if len(refused) > 1 else "")
    allowed = [k for k in ALLOWED_ON_RESUME if not (schedule_depends_on_length and k in LENGTH_KEYS)]
    raise ConfigError(
        f"--resume cannot change {count} of the run's config: " + "; ".join(parts)
        + ". Fix: start a new --out, or drop these changes (--resume may change only "
        + ", ".join(allowed) + ")",
        source=source,
    )
