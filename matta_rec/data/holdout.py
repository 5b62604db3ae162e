"""The hold-out split: the last shards of a stream, in time order, kept out of training.

Shards are read in lexicographic order of their path relative to the data
root, which is time order for ``dt=.../hour=...`` layouts (see
:class:`~matta_rec.data.reader.LogStream`).  The hold-out set is the last
``holdout_shards`` of them (or ``ceil(holdout_fraction * shards)``, at least
one): the model is trained on the past and evaluated on the most recent
traffic, as it would be served.

Training (``data.holdout_shards`` / ``data.holdout_fraction``) and the
ablation (``--holdout-shards`` / ``--holdout-fraction``) both split here, so
the same options give the same shards.

Example:

>>> split = split_holdout("sample_data", "sample_data/schema.yaml", holdout_fraction=0.25)
>>> split.holdout[0], len(split.holdout)
('dt=2024-01-04/hour=00/part-0.parquet', 24)
>>> train_files = split.train_files        # absolute paths, time order
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from matta_rec.errors import ConfigError, DataError
from matta_rec.data import filesystem as fs

__all__ = ["HoldoutSplit", "holdout_count", "split_holdout"]


@dataclasses.dataclass(frozen=True)
class HoldoutSplit:
    """The shards of a stream split into training and hold-out parts.

    Args:
        root: the data root the relative paths are relative to (a local path
            or a URI such as ``s3://bucket/logs``).
        train: relative paths of the training shards, in reading order.
        holdout: relative paths of the held-out shards (the last ones).
    """

    root: str
    train: tuple[str, ...]
    holdout: tuple[str, ...]

    @property
    def train_files(self) -> list[str]:
        """Absolute paths (or URIs, for a root on an object store) of the training shards."""
        return [fs.join(self.root, rel) for rel in self.train]

    @property
    def holdout_files(self) -> list[str]:
        """Absolute paths (or URIs) of the held-out shards."""
        return [fs.join(self.root, rel) for rel in self.holdout]


def holdout_count(shards: int, holdout_shards: int = 0,
                  holdout_fraction: float | None = None) -> int:
    """How many of ``shards`` shards are held out.

    Args:
        shards: number of shards in the stream.
        holdout_shards: hold out this many (used when ``holdout_fraction`` is
            ``None``).
        holdout_fraction: hold out this fraction, rounded up, at least one.

    Returns:
        The number of shards to hold out (may be 0).

    Example:

    >>> holdout_count(8, holdout_fraction=0.1)
    1
    """
    if holdout_fraction is not None:
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        return max(1, math.ceil(holdout_fraction * shards))
    if holdout_shards < 0:
        raise ValueError(f"holdout_shards must be >= 0, got {holdout_shards}")
    return int(holdout_shards)


def split_holdout(data: Any, schema, holdout_shards: int = 0, *,
                  holdout_fraction: float | None = None,
                  fix: str = "lower --set data.holdout_shards=N (or data.holdout_fraction)",
                  source: str | None = None, key: str | None = None) -> HoldoutSplit:
    """Split the shards present now into training and hold-out shards.

    Args:
        data: directory, glob, file or list of log shards.
        schema: a :class:`~matta_rec.data.schema.Schema`, YAML path or dict.
        holdout_shards: the last N shards are held out (0 = none).
        holdout_fraction: or this fraction of the shards (rounded up, >= 1).
        fix: how to hold out fewer shards, in the caller's option syntax
            (part of the error raised when no shard is left to train on).
        source: the config file the options came from, for that error.
        key: the config key, for that error.

    Returns:
        A :class:`HoldoutSplit`.

    Raises:
        DataError: no shards found.
        ConfigError: the hold-out would leave no shard to train on.
    """
    from matta_rec.data.reader import LogStream

    probe = LogStream(data, schema, batch_size=1)
    shards = probe.shards()
    if not shards:
        raise DataError(
            "no log shards found", file=str(data),
            fix="pass --data pointing at a directory of *.parquet / *.csv / *.tfrecord shards",
        )
    k = holdout_count(len(shards), holdout_shards, holdout_fraction)
    if k >= len(shards):
        raise ConfigError(
            f"holding out {k} shard(s) leaves none of the {len(shards)} shard(s) of {data} "
            f"to train on; {fix}",
            source=source, key=key,
        )
    cut = len(shards) - k
    return HoldoutSplit(probe.root, tuple(shards[:cut]), tuple(shards[cut:]))
