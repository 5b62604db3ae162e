"""The streaming log reader: validated, time-ordered, resumable batches.

:class:`LogStream` reads a directory (or glob, file, list of files) of log
shards in lexicographic order of their path relative to the data root, which
is time order for layouts like ``dt=2026-11-01/hour=07/part-0.parquet``.
Each shard is read and validated as a whole (:mod:`matta_rec.data.validation`)
before any of its rows is delivered; rows are then cut into batches of
``batch_size`` that may span shard boundaries (the last batch may be short).

* Single pass by default (``epochs=1``): online training never sees a row
  twice.
* ``follow=FollowOptions(...)`` keeps polling for new shards until a stop
  condition: an idle timeout, a row budget, or a sentinel file.
* Every batch can carry ``rows_end``, the stream row count up to and including
  it; :meth:`LogStream.position_at` turns that into a :class:`StreamPosition`
  to save (``to_dict``) and resume from (``start=``) without skipping or
  repeating a row.
* ``skip_bad_shards=True`` quarantines shards that fail validation instead of
  raising, counts their rows and reports them (:meth:`LogStream.report` and a
  logged warning); nothing is dropped silently.
* A shard's name, its identity in positions, quarantine entries and reports,
  is its path relative to the data root (``root=``, e.g. ``--data``), so a
  position saved while reading a list of files still resolves once the list
  grows. A position carries the fingerprints of the shards trained before it
  (:mod:`matta_rec.data.fingerprints`): a resume refuses logs that differ
  from them, and a late shard (landed before the position, never trained) is
  an error naming it, or quarantined with ``skip_bad_shards``.

Memory is bounded by the shard being delivered, ``read_ahead`` shards loaded
in the background and the ``tf.data`` prefetch queue, however long the stream.

The data may be local or on an object store: every listing and every byte
goes through :mod:`matta_rec.data.filesystem` (local paths and ``file://``
read in place; ``s3://`` and ``gs://`` through ``pyarrow.fs``, with
endpoints and credentials from the standard environment; ``hdfs://`` the
same way, untested). Names, positions, quarantine entries and follow mode
work the same on every scheme; errors name a remote shard by its URI.

Example:

>>> stream = LogStream("logs/", "logs/schema.yaml", batch_size=1024)
>>> for features, labels, rows_end in stream.dataset(with_position=True):
...     train_step(features, labels)
...     if should_checkpoint():
...         save(stream.position_at(int(rows_end)).to_dict())
>>> stream.report().rows_read
1048576
>>> # later, in a new process:
>>> stream = LogStream("logs/", schema, batch_size=1024,
...                    start=StreamPosition.from_dict(saved))
"""

from __future__ import annotations

import bisect
import dataclasses
import glob as globlib
import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from matta_rec.errors import DataError
from matta_rec.data import filesystem as fs
from matta_rec.data.fingerprints import ShardFingerprint, check_fingerprints, count_rows
from matta_rec.data.formats import read_shard
from matta_rec.data.schema import Schema, load_schema
from matta_rec.data.validation import LABEL_KEYS, ShardColumns, validate_table
from matta_rec.data.writers import format_of

__all__ = ["LogStream", "StreamPosition", "FollowOptions", "StreamReport", "QuarantinedShard"]

logger = logging.getLogger(__name__)

AUTOTUNE = -1
_GROUP_ROWS = 1 << 13  # rows handed to tf.data per from_generator element
_GLOB_CHARS = set("*?[")


# ------------------------------------------------------------------ options
@dataclasses.dataclass(frozen=True)
class FollowOptions:
    """Follow mode: keep polling the data root for new shards.

    The stream stops at the first stop condition met; with none given it
    follows until the consumer stops iterating.

    Args:
        poll_interval_s: seconds between two listings of the data root.
        idle_timeout_s: stop when no new shard appeared for this many
            seconds (``None``: never).
        max_rows: stop after delivering this many rows in this stream (rows
            before ``start`` do not count; ``None``: no limit). The last batch
            is cut so that exactly ``max_rows`` rows are delivered.
        sentinel: stop once this file exists, after reading every shard
            present when it appeared (a producer writes it when done). A
            relative path is relative to the data root.

    Example:

    >>> FollowOptions(poll_interval_s=30, idle_timeout_s=3600, sentinel="_DONE")
    """

    poll_interval_s: float = 5.0
    idle_timeout_s: float | None = None
    max_rows: int | None = None
    sentinel: str | None = None

    def __post_init__(self):
        if isinstance(self.poll_interval_s, bool) or not isinstance(
            self.poll_interval_s, (int, float)
        ) or not self.poll_interval_s > 0:
            raise ValueError(
                f"poll_interval_s must be a positive number of seconds, got {self.poll_interval_s!r}"
            )
        if self.idle_timeout_s is not None and (
            isinstance(self.idle_timeout_s, bool)
            or not isinstance(self.idle_timeout_s, (int, float))
            or self.idle_timeout_s < 0
        ):
            raise ValueError(
                f"idle_timeout_s must be None or a number of seconds >= 0, got {self.idle_timeout_s!r}"
            )
        if self.max_rows is not None and (
            isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int) or self.max_rows < 1
        ):
            raise ValueError(f"max_rows must be None or a positive integer, got {self.max_rows!r}")
        if self.sentinel is not None and (not isinstance(self.sentinel, (str, os.PathLike)) or not os.fspath(self.sentinel)):
            raise ValueError(f"sentinel must be None or a file path, got {self.sentinel!r}")


@dataclasses.dataclass(frozen=True)
class StreamPosition:
    """Where a stream resumes: the next row read is row ``row`` of ``shard``.

    A position made by :meth:`LogStream.position_at` also carries the
    stream's history: the fingerprints of the shards trained so far and the
    names of the shards quarantined before it, across every process of the
    run. On resume the stream checks the trained shards are the same files
    (:func:`~matta_rec.data.fingerprints.check_fingerprints`) and tells a
    late shard (sorting before ``shard``, never trained) from one already
    read; see :class:`LogStream`.

    Args:
        shard: shard path relative to the data root (``/``-separated); ``""``
            is the start of the stream.
        row: 0-based row inside ``shard`` to resume at.
        rows_consumed: stream rows delivered before this position, counted
            from the stream's origin (kept across resumes).
        epoch: 0-based pass over the data (always 0 for a single pass).
        trained: :class:`~matta_rec.data.fingerprints.ShardFingerprint`
            (or their dicts) of every shard with at least one row before this
            position. ``None``: no history (a position saved by an earlier
            version, or written by hand): every shard sorting before
            ``shard`` is then taken as read and nothing is compared.
        quarantined: names of the shards quarantined before this position
            (not trained, not compared; ``None`` counts as none).

    Example:

    >>> pos = stream.position_at(4096)
    >>> StreamPosition.from_dict(json.loads(json.dumps(pos.to_dict()))) == pos
    True
    >>> [fp.name for fp in pos.trained]
    ['dt=2026-11-01/hour=00/part-0.parquet']
    """

    shard: str = ""
    row: int = 0
    rows_consumed: int = 0
    epoch: int = 0
    trained: tuple | None = None
    quarantined: tuple | None = None

    def __post_init__(self):
        if not isinstance(self.shard, str):
            raise ValueError(f"shard must be a relative path string, got {self.shard!r}")
        for name in ("row", "rows_consumed", "epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.trained is not None:
            if isinstance(self.trained, (str, bytes, Mapping)) or not isinstance(self.trained, (list, tuple)):
                raise ValueError(f"trained must be None or a list of shard fingerprints, got {self.trained!r}")
            prints = {fp.name: fp for fp in map(ShardFingerprint.from_dict, self.trained)}
            object.__setattr__(self, "trained", tuple(prints[name] for name in sorted(prints)))
        if self.quarantined is not None:
            if isinstance(self.quarantined, (str, bytes)) or not isinstance(self.quarantined, (list, tuple)) or not all(
                isinstance(name, str) for name in self.quarantined
            ):
                raise ValueError(f"quarantined must be None or a list of shard names, got {self.quarantined!r}")
            object.__setattr__(self, "quarantined", tuple(sorted(set(self.quarantined))))

    def to_dict(self) -> dict:
        """A JSON-safe dict (fingerprints as dicts), read back by :meth:`from_dict`."""
        return {
            "shard": self.shard,
            "row": self.row,
            "rows_consumed": self.rows_consumed,
            "epoch": self.epoch,
            "trained": None if self.trained is None else [fp.to_dict() for fp in self.trained],
            "quarantined": None if self.quarantined is None else list(self.quarantined),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "StreamPosition":
        """Inverse of :meth:`to_dict`; a dict without ``trained`` has no history."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a stream position must be a mapping, got {type(data).__name__}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown stream position key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**dict(data))

    @property
    def trained_names(self) -> frozenset | None:
        """Names of the shards in :attr:`trained` (``None``: no history)."""
        return None if self.trained is None else frozenset(fp.name for fp in self.trained)


@dataclasses.dataclass(frozen=True)
class QuarantinedShard:
    """A shard set aside by ``skip_bad_shards``.

    Args:
        shard: path relative to the data root.
        rows: its row count, or ``None`` when the file could not be read.
        error: the validation error message (file, column, row, fix).
    """

    shard: str
    rows: int | None
    error: str


@dataclasses.dataclass
class StreamReport:
    """What a stream has read so far.

    Args:
        shards_read: shards validated and delivered (relative paths).
        rows_read: rows delivered by this stream (not counting rows before
            ``start``). With :meth:`LogStream.dataset` this counts rows
            handed to ``tf.data``, which may run ahead of the consumer by
            the prefetch buffer; use ``rows_end`` for what was consumed.
        quarantined: shards set aside by ``skip_bad_shards``.
        stopped_by: ``"end"``, ``"idle_timeout"``, ``"max_rows"``,
            ``"sentinel"``, ``"requested"`` (:meth:`LogStream.request_stop`), ``"error"``
            or ``None`` while still running.
    """

    shards_read: list = dataclasses.field(default_factory=list)
    rows_read: int = 0
    quarantined: list = dataclasses.field(default_factory=list)
    stopped_by: str | None = None

    @property
    def rows_quarantined(self) -> int:
        """Rows in quarantined shards that could be counted."""
        return sum(q.rows or 0 for q in self.quarantined)

    @property
    def unreadable_shards(self) -> int:
        return sum(q.rows is None for q in self.quarantined)

    def to_dict(self) -> dict:
        return {
            "shards_read": len(self.shards_read),
            "rows_read": self.rows_read,
            "rows_quarantined": self.rows_quarantined,
            "quarantined": [dataclasses.asdict(q) for q in self.quarantined],
            "stopped_by": self.stopped_by,
        }

    def summary(self) -> str:
        """Human-readable lines, one per quarantined shard."""
        lines = [
            f"{len(self.shards_read)} shard(s), {self.rows_read} row(s) read; "
            f"{len(self.quarantined)} shard(s) quarantined"
            + (f" ({self.rows_quarantined} rows" if self.quarantined else "")
            + (f", {self.unreadable_shards} unreadable)" if self.quarantined else "")
        ]
        for q in self.quarantined:
            count = "unreadable" if q.rows is None else f"{q.rows} rows"
            lines.append(f"  quarantined {q.shard} ({count}): {q.error}")
        return "\n".join(lines)


# ------------------------------------------------------------------ listing
def _outside(path: str, root: str) -> DataError:
    return DataError(
        f"the shard is outside the data root '{root}', so it has no name relative to it",
        file=path,
        fix="pass --data (the data root) as a directory that holds every shard read",
    )


@dataclasses.dataclass(frozen=True)
class _Source:
    root: str  # names are relative to it (a local path or a URI)
    files: tuple | None  # an explicit list of files
    pattern: str | None  # a glob
    single: str | None  # a single file
    folder: str | None = None  # a directory searched recursively
    exclude: frozenset = frozenset()  # names never listed (a run's hold-out shards)
    fixed: str | None = None  # the folder before a glob's first wildcard
    keep: Any = None  # names -> bool: listed only when true (a worker's own shards)

    def list(self) -> list[tuple[str, str]]:
        """Sorted ``(relative path, absolute path or URI)`` of the shards present now."""
        if self.files is not None:
            paths = list(self.files)
        elif self.single is not None:
            paths = [self.single] if fs.kind(self.single) is not None else []
        elif self.pattern is not None and fs.is_uri(self.pattern):
            paths = fs.glob_files(self.pattern, self.fixed)
        elif self.pattern is not None:
            paths = [p for p in globlib.glob(self.pattern, recursive=True) if os.path.isfile(p)]
        else:
            paths = fs.list_files(self.folder)
        out = []
        for path in paths:
            name = path.rsplit("/", 1)[-1] if fs.is_uri(path) else os.path.basename(path)
            if name.startswith(fs.HIDDEN_PREFIXES) or not format_of(path):
                continue
            rel = fs.relative(path, self.root)
            if rel is None:
                raise _outside(fs.normalize(path), self.root)
            if rel not in self.exclude and (self.keep is None or self.keep(rel)):
                out.append((rel, fs.normalize(path)))
        out.sort()
        return out


def _source(data: Any, root: Any = None) -> _Source:
    """The listing of ``data``, with names relative to ``root`` (or its default)."""
    source = _default_source(data)
    if root is None:
        return source
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a directory path or None, got {type(root).__name__}")
    root = fs.normalize(root)
    if fs.kind(root) != "dir":
        raise DataError("the data root is not a directory", file=root,
                        fix="pass --data as the directory holding the log shards")
    if source.files is not None:
        held = source.files
    elif source.single is not None:
        held = (source.single,)
    else:  # a directory, or the fixed prefix of a glob
        held = (source.folder or source.root,)
    for path in held:
        if path != root and fs.relative(path, root) is None:
            raise _outside(path, root)
    return dataclasses.replace(source, root=root)


def _default_source(data: Any) -> _Source:
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("data is an empty list; give a directory, a glob or shard files")
        files = tuple(fs.normalize(p) for p in data)
        for path in files:
            if fs.kind(path) != "file":
                raise DataError("no such shard file", file=path, fix="check --data")
            if not format_of(path):
                raise DataError(
                    "not a shard: unknown extension", file=path,
                    fix="name shards *.parquet, *.csv or *.tfrecord",
                )
        return _Source(fs.common_folder(list(files)), files, None, None)
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(
            f"data must be a directory, glob, file path or list of files, got {type(data).__name__}"
        )
    data = fs.normalize(data)
    found = fs.kind(data) if not (fs.is_uri(data) and _GLOB_CHARS & set(data)) else None
    if found == "dir":
        return _Source(data, None, None, None, data)
    if found == "file":
        if not format_of(data):
            raise DataError(
                "not a shard: unknown extension", file=data,
                fix="name shards *.parquet, *.csv or *.tfrecord, or pass their directory",
            )
        return _Source(fs.common_folder([data]), None, None, data)
    if _GLOB_CHARS & set(data):
        sep = "/" if fs.is_uri(data) else os.sep
        fixed = []
        for part in data.split(sep):
            if _GLOB_CHARS & set(part):
                break
            fixed.append(part)
        root = sep.join(fixed) or sep
        return _Source(root, None, data, None, fixed=root)
    raise DataError(
        "no such directory, file or glob",
        file=data,
        fix="pass --data as the directory holding the log shards (or a glob such as 'logs/**/*.parquet')",
    )


# ------------------------------------------------------------------ batching
class _Buffer:
    """Rows waiting to be cut into batches; pieces may come from several shards."""

    def __init__(self):
        self.pieces: list[ShardColumns] = []
        self.rows = 0

    def add(self, piece: ShardColumns) -> None:
        if piece.num_rows:
            self.pieces.append(piece)
            self.rows += piece.num_rows

    def take(self, n: int) -> ShardColumns:
        n = min(n, self.rows)
        first = self.pieces[0]
        if first.num_rows >= n:
            out = first.slice(0, n)
            if first.num_rows == n:
                self.pieces.pop(0)
            else:
                self.pieces[0] = first.slice(n, first.num_rows)
            self.rows -= n
            return out
        parts, need = [], n
        while need:
            piece = self.pieces[0]
            k = min(need, piece.num_rows)
            parts.append(piece.slice(0, k))
            if k == piece.num_rows:
                self.pieces.pop(0)
            else:
                self.pieces[0] = piece.slice(k, piece.num_rows)
            need -= k
        self.rows -= n
        return ShardColumns(
            {k: _concat([p.features[k] for p in parts]) for k in parts[0].features},
            {k: _concat([p.labels[k] for p in parts]) for k in parts[0].labels},
            n,
        )


def _concat(parts: list):
    if isinstance(parts[0], pa.Array):
        return pa.concat_arrays(parts)
    return np.concatenate(parts)


def _string_buffers(array: "pa.StringArray") -> tuple[bytes, np.ndarray]:
    """(UTF-8 bytes of all values, int64 offsets [n + 1] into them)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[
        array.offset : array.offset + len(array) + 1
    ].astype(np.int64)
    data = array.buffers()[2]
    start, stop = int(offsets[0]), int(offsets[-1])
    payload = data[start:stop].to_pybytes() if data is not None and stop > start else b""
    return payload, offsets - start


@dataclasses.dataclass(frozen=True)
class _Segment:
    """Stream rows ``[g0, g1)`` are rows ``row0 ..`` of ``shard`` in ``epoch``."""

    g0: int
    g1: int
    epoch: int
    shard: str
    row0: int


# ------------------------------------------------------------------ stream
class LogStream:
    """Validated, time-ordered, resumable batches from log shards.

    Args:
        data: a directory (searched recursively; names starting with ``.`` or
            ``_`` are ignored), a glob, a single shard file or a list of
            shard files. Shards are ``*.parquet``, ``*.csv`` or
            ``*.tfrecord`` (``tf.Example``) and are read in lexicographic
            order of their path relative to the data root. Each may be a
            local path, a ``file://`` URI, or an object-store URI:
            ``s3://bucket/logs`` (AWS S3 or any S3-compatible server, found
            through ``AWS_ENDPOINT_URL``; credentials and region from
            ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
            ``AWS_DEFAULT_REGION`` or the AWS config files), ``gs://bucket/
            logs`` (Google Cloud Storage, ``GOOGLE_APPLICATION_CREDENTIALS``)
            and ``hdfs://namenode:port/logs`` (needs libhdfs and a JVM;
            untested). Globs work on URIs too (``s3://b/logs/dt=2026-11-0*/
            **/*.parquet``). See :mod:`matta_rec.data.filesystem`.
        root: the data root: a shard's name (its identity in positions,
            quarantine entries, reports and errors) is its path relative to
            it, partition folders included (``dt=2026-11-01/hour=07/
            part-0.parquet``). Default: ``data`` itself for a directory, the
            part before the first wildcard for a glob, the file's folder for
            one file, the files' common folder for a list. A training run
            passes ``--data`` here, so that the names stay the same whether it
            reads the directory, a glob or a list of its files, however the
            list grows, and however ``--data`` is spelled (relative, absolute,
            trailing slash). Every shard must lie under it, on the same
            file system (a URI root for URI shards).
        schema: a :class:`~matta_rec.data.schema.Schema`, a YAML path or a
            dict.
        batch_size: rows per batch (batches span shard boundaries; the last
            one may be short).
        follow: :class:`FollowOptions` to keep polling for new shards;
            ``None`` reads the shards present when iteration starts.
        skip_bad_shards: quarantine shards that fail validation (reported by
            :meth:`report` and a logged warning) instead of raising.
        start: a :class:`StreamPosition` (or its dict) to resume from.
        epochs: passes over the data (``1``: a single pass; must be 1 in
            follow mode).
        prefetch: ``tf.data`` prefetch buffer in batches
            (``tf.data.AUTOTUNE`` = -1 by default).
        read_ahead: shards loaded and validated in a background thread while
            the current one is delivered (0 = none).
        exclude: shard names (relative to ``root``) this stream never reads,
            also when they appear later in follow mode; a training run passes
            its hold-out shards, so it can read the growing data root itself.
        shard_filter: ``name -> bool``: the stream reads only the shards it
            accepts (the others are as if absent: never read, never late,
            never compared). A worker of a multi-worker run passes its own
            shards (``lambda name: assignment.get(name) == worker``), so
            its positions and late-shard checks concern its part alone.

    Resuming (``start`` from :meth:`position_at`): the shards the position
    records as trained must be the same files now (same size and row count;
    new shards and shards that were quarantined are not compared), else a
    :class:`~matta_rec.errors.DataError` says ``--data`` points at different
    logs. A *late* shard, one that sorts before the resume position but was
    neither trained nor quarantined by the run (it landed after the run went
    past its place), is never skipped silently: it is a ``DataError`` naming
    it, since training it now would break time order and skipping it would
    lose its rows; with ``skip_bad_shards=True`` it is quarantined instead
    (counted and reported like a bad shard) and the stream goes on. A
    position without history (``trained=None``) resumes as before: every
    shard sorting before it is taken as read.

    Example:

    >>> stream = LogStream("sample_data/logs", "sample_data/schema.yaml", batch_size=256)
    >>> features, labels = next(iter(stream.iter_numpy()))
    >>> labels["target"].shape
    (256,)
    >>> # AWS_ENDPOINT_URL=http://127.0.0.1:9000 for an S3-compatible server
    >>> LogStream("s3://logs/day", "schema.yaml", batch_size=256).shards()[:1]
    ['dt=2026-11-01/hour=00/part-0.parquet']
    """

    def __init__(
        self,
        data: Any,
        schema: "Schema | str | os.PathLike | Mapping",
        *,
        batch_size: int,
        follow: FollowOptions | None = None,
        skip_bad_shards: bool = False,
        start: StreamPosition | Mapping | None = None,
        epochs: int = 1,
        prefetch: int = AUTOTUNE,
        read_ahead: int = 1,
        root: "str | os.PathLike | None" = None,
        exclude: "Sequence[str] | None" = None,
        shard_filter: "Callable[[str], bool] | None" = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if follow is not None and not isinstance(follow, FollowOptions):
            raise TypeError(f"follow must be a FollowOptions or None, got {type(follow).__name__}")
        if not isinstance(skip_bad_shards, bool):
            raise TypeError(f"skip_bad_shards must be True or False, got {skip_bad_shards!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if follow is not None and epochs != 1:
            raise ValueError("follow mode reads a single pass: epochs must be 1")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < AUTOTUNE:
            raise ValueError(
                f"prefetch must be a number of batches >= 0 or tf.data.AUTOTUNE (-1), got {prefetch!r}"
            )
        if isinstance(read_ahead, bool) or not isinstance(read_ahead, int) or read_ahead < 0:
            raise ValueError(f"read_ahead must be an integer >= 0, got {read_ahead!r}")
        if start is None:
            start = StreamPosition()
        elif isinstance(start, Mapping):
            start = StreamPosition.from_dict(start)
        elif not isinstance(start, StreamPosition):
            raise TypeError(f"start must be a StreamPosition, its dict or None, got {type(start).__name__}")
        if start.epoch >= epochs:
            raise ValueError(f"start.epoch is {start.epoch} but the stream has only {epochs} epoch(s)")
        if start.trained is None and start.shard == "" and start.epoch == 0:
            start = dataclasses.replace(start, trained=(), quarantined=())  # nothing before the origin
        self.schema = load_schema(schema)
        self.batch_size = int(batch_size)
        self.follow = follow
        self.skip_bad_shards = skip_bad_shards
        self.start = start
        self.epochs = epochs
        self.prefetch = prefetch
        self.read_ahead = read_ahead
        if exclude is not None and (isinstance(exclude, str)
                                    or not all(isinstance(name, str) for name in exclude)):
            raise TypeError(f"exclude must be a list of shard names, got {exclude!r}")
        if shard_filter is not None and not callable(shard_filter):
            raise TypeError(f"shard_filter must be a function name -> bool or None, got {shard_filter!r}")
        self._source = dataclasses.replace(_source(data, root), exclude=frozenset(exclude or ()),
                                           keep=shard_filter)
        self._halt = threading.Event()
        if follow is not None and self._source.files is not None:
            raise ValueError("follow mode needs a directory or glob to poll, not a fixed list of files")
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._loaded: dict[str, ShardFingerprint] = {}
        self._report = StreamReport()
        self.error: Exception | None = None

    # ---------------------------------------------------------------- public
    def request_stop(self) -> None:
        """End the stream early, from any thread (e.g. on SIGTERM in follow mode).

        Shards already being delivered finish; no new shard is listed and a
        follow-mode wait for new shards returns at once.  The report's
        ``stopped_by`` is ``"requested"``.  Safe to call from a watcher thread
        while the consumer is blocked waiting for the next batch.
        """
        self._halt.set()

    @property
    def root(self) -> str:
        """The data root that shard paths in positions are relative to."""
        return self._source.root

    def shards(self) -> list[str]:
        """Shards present now, in reading order (relative paths)."""
        return [rel for rel, _ in self._source.list()]

    def iter_numpy(self) -> Iterator[tuple[dict, dict]]:
        """Batches ``(features, labels)`` as numpy dicts (strings as ``str``).

        Each call starts again from ``start``.
        """
        for features, labels, _ in self._generate(strings="str"):
            yield features, labels

    def iter_numpy_with_position(self) -> Iterator[tuple[dict, dict, int]]:
        """Like :meth:`iter_numpy` with ``rows_end`` as a third item."""
        for features, labels, rows_end in self._generate(strings="str"):
            yield features, labels, int(rows_end[0])

    def dataset(self, with_position: bool = False):
        """The batches as a prefetching ``tf.data.Dataset``.

        Args:
            with_position: add ``rows_end`` (int64 scalar) to every element.

        Returns:
            A dataset of ``(features, labels)`` or ``(features, labels,
            rows_end)``. A :class:`~matta_rec.errors.DataError` raised
            while reading surfaces as a ``tf.errors`` exception carrying its
            message; the original is kept in ``stream.error``.
        """
        import tensorflow as tf

        raw = self.schema.raw_signature()
        strings = [name for name, spec in raw.items() if spec.dtype == tf.string]
        # The generator hands over groups of k whole batches so that the
        # per-element cost of from_generator is paid once per group, and packs
        # each group into few components (from_generator also costs ~60 us
        # per component and element: 27 separate columns cost more than their
        # data). String columns travel as one UTF-8 buffer straight from
        # Arrow plus one offsets vector, with no Python object per value, and
        # are cut back into strings in-graph by a parallel map (the generator
        # holds the GIL; the cutting does not, so it runs on the other core).
        # Every other column, feature or label, is stacked with the columns
        # of its dtype and per-row shape. unbatch() then splits the group into
        # batches in C++. deterministic=True keeps the stream order.
        group = max(1, _GROUP_ROWS // self.batch_size)
        columns = [("features", name, spec.dtype, tuple(spec.shape[1:])) for name, spec in raw.items()]
        columns += [("labels", key, tf.float32, ()) for key in self.label_keys]
        stacks = {}  # (dtype, per-row shape) -> [(part, name)], in schema order
        for part, name, dtype, shape in columns:
            if dtype != tf.string:
                stacks.setdefault((dtype, shape), []).append((part, name))
        stacks = list(stacks.items())

        def generator():
            for features, labels, rows_end in self._generate(strings="arrow", group=group):
                k = len(rows_end)
                parts = {"features": features, "labels": labels}
                packed = []
                if strings:
                    buffers = [_string_buffers(features[name]) for name in strings]
                    starts = np.cumsum([0] + [len(data) for data, _ in buffers])
                    packed.append(np.array(b"".join(data for data, _ in buffers), dtype=object))
                    packed.append(
                        np.concatenate(
                            [offsets[:-1] + base for (_, offsets), base in zip(buffers, starts)]
                            + [starts[-1:]]
                        )
                    )
                for (_, shape), members in stacks:
                    packed.append(np.stack([parts[part][name].reshape((k, -1) + shape) for part, name in members]))
                yield tuple(packed), rows_end

        specs = []
        if strings:
            specs += [tf.TensorSpec((), tf.string), tf.TensorSpec((None,), tf.int64)]
        specs += [tf.TensorSpec((len(members), None, None) + shape, dtype) for (dtype, shape), members in stacks]
        grouped = (tuple(specs), tf.TensorSpec((None,), tf.int64))

        @tf.autograph.experimental.do_not_convert
        def rebuild(packed, rows_end):
            k = tf.shape(rows_end)[0]
            out = {"features": {}, "labels": {}}
            rest = list(packed)
            if strings:
                data, offsets = rest.pop(0), rest.pop(0)
                values = tf.strings.substr(data, offsets[:-1], offsets[1:] - offsets[:-1])
                values = tf.reshape(values, [len(strings), k, -1])
                for i, name in enumerate(strings):
                    out["features"][name] = values[i]
            for stacked, (_, members) in zip(rest, stacks):
                for i, (part, name) in enumerate(members):
                    out[part][name] = stacked[i]
            features = {name: out["features"][name] for name in raw}
            labels = {key: out["labels"][key] for key in self.label_keys}
            return (features, labels, rows_end) if with_position else (features, labels)

        ds = (
            tf.data.Dataset.from_generator(generator, output_signature=grouped)
            .map(rebuild, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .unbatch()
        )
        if self.prefetch:
            ds = ds.prefetch(self.prefetch)
        return ds

    @property
    def label_keys(self) -> tuple[str, ...]:
        """Keys of the labels dict: ``"target"`` and, if the schema has them,
        ``"event"``, ``"weight"``."""
        labels = self.schema.labels
        return tuple(
            key for key, col in zip(LABEL_KEYS, (labels.target, labels.event, labels.weight)) if col
        )

    def position_at(self, rows_end: int) -> StreamPosition:
        """The position to resume from so that the next row is stream row ``rows_end``.

        Args:
            rows_end: a ``rows_end`` value delivered by the current (or last)
                iteration, or the start's ``rows_consumed``.
        """
        rows_end = int(rows_end)
        with self._lock:
            segments = list(self._segments)
            loaded = dict(self._loaded)
            quarantined = [q.shard for q in self._report.quarantined]
        if rows_end == self.start.rows_consumed and not segments:
            return self.start
        if not segments or rows_end < segments[0].g0:
            raise ValueError(
                f"rows_end {rows_end} was not delivered by this stream (it starts at "
                f"{self.start.rows_consumed} and has read {segments[-1].g1 if segments else self.start.rows_consumed} rows)"
            )
        index = bisect.bisect_right([s.g0 for s in segments], rows_end) - 1
        seg = segments[index]
        if rows_end > seg.g1:
            raise ValueError(
                f"rows_end {rows_end} is beyond the rows read so far ({segments[-1].g1})"
            )
        shard = seg.shard
        trained = passed = None
        if self.start.trained is not None:
            prints = {fp.name: fp for fp in self.start.trained}
            prints.update((s.shard, loaded[s.shard]) for s in segments if s.g0 < rows_end)
            trained = tuple(prints.values())
            passed = set(self.start.quarantined or ()) | {name for name in quarantined if name < shard}
            passed = tuple(passed - set(prints))
        return StreamPosition(shard, seg.row0 + rows_end - seg.g0, rows_end, seg.epoch, trained, passed)

    def check_start(self) -> list[str]:
        """Check the resume position against the shards present now.

        Iteration runs the same checks; call this to fail before anything
        costly (building a model, say).

        Returns:
            Late shards (sorting before ``start`` in its epoch, neither
            trained nor quarantined) that ``skip_bad_shards=True`` will
            quarantine; empty when the position has no history.

        Raises:
            DataError: a trained shard differs from its fingerprint (``--data``
                points at different logs), or a late shard is present and
                ``skip_bad_shards`` is off.
        """
        return [rel for rel, _ in self._late_shards(self._source.list(), quarantine=False)]

    def report(self) -> StreamReport:
        """Shards and rows read, and quarantined shards, of the current (or last) iteration."""
        with self._lock:
            return dataclasses.replace(
                self._report,
                shards_read=list(self._report.shards_read),
                quarantined=list(self._report.quarantined),
            )

    # -------------------------------------------------------------- internals
    def _quarantine(self, rel: str, rows: int | None, error: Exception) -> None:
        entry = QuarantinedShard(rel, rows, str(error))
        with self._lock:
            self._report.quarantined.append(entry)
        count = "unreadable" if rows is None else f"{rows} rows"
        logger.warning("quarantined shard %s (%s): %s", rel, count, error)

    def _load(self, rel: str, path: str, strings: str) -> ShardColumns | None:
        """Read + validate one shard; ``None`` when quarantined."""
        table = None
        try:
            size = fs.file_size(path)
            table = read_shard(path, self.schema)
            cols = validate_table(table, self.schema, path, strings=strings)
        except DataError as exc:
            if not self.skip_bad_shards:
                raise
            self._quarantine(rel, None if table is None else table.num_rows, exc)
            return None
        except OSError as exc:  # gone between the listing and the read
            error = DataError(f"the shard cannot be opened ({exc})", file=path,
                              fix="do not delete or move shards while they are read")
            if not self.skip_bad_shards:
                raise error from exc
            self._quarantine(rel, None, error)
            return None
        with self._lock:
            self._loaded[rel] = ShardFingerprint(rel, int(size), int(table.num_rows))
        return cols

    def _set_aside(self, rel: str, path: str, error: DataError) -> None:
        """Raise ``error``, or quarantine the shard with ``skip_bad_shards``."""
        if not self.skip_bad_shards:
            raise error
        try:
            rows = count_rows(path)
        except DataError:
            rows = None
        self._quarantine(rel, rows, error)

    def _out_of_order(self, rel: str, path: str, last: str) -> None:
        self._set_aside(rel, path, DataError(
            f"new shard appeared after '{last}' was already read but sorts before it; reading it "
            "now would break time order",
            file=path,
            fix="publish shards under names that sort after those already written (e.g. a later "
            "dt=/hour= folder), or pass --set data.skip_bad_shards=true to quarantine it and go on, "
            "or start a new --out to train on every shard in order",
        ))

    def _late_shards(self, listing: list, quarantine: bool) -> list[tuple[str, str]]:
        """Check the start's history against ``listing``; return the late shards.

        A late shard raises, or with ``skip_bad_shards`` is quarantined when
        ``quarantine`` is true (and only returned otherwise).
        """
        start = self.start
        if start.trained is None or not start.shard:
            return []
        gone = check_fingerprints(self.root, start.trained)
        if gone:
            logger.info("%d shard(s) trained earlier in this run are gone (first: %s); "
                        "they are not needed to resume", len(gone), gone[0])
        passed = start.trained_names | set(start.quarantined or ())
        late = [(rel, path) for rel, path in listing if rel < start.shard and rel not in passed]
        for rel, path in late:
            error = DataError(
                f"late shard: it sorts before the resume position (row {start.row} of "
                f"'{start.shard}') but was neither trained nor quarantined by this run; training "
                "it now would break time order and skipping it would lose its rows",
                file=path,
                fix="move it under a name that sorts after the resume position (e.g. a later "
                "dt=/hour= folder), or pass --set data.skip_bad_shards=true to quarantine it and "
                "go on, or train a new --out on the whole data",
            )
            if not self.skip_bad_shards:
                raise error
            if quarantine:
                self._set_aside(rel, path, error)
        return late

    def _skip_before_start(self, listing: list) -> set[str]:
        """Names to skip in the start's epoch: those before it, late ones checked."""
        start = self.start
        self._late_shards(listing, quarantine=True)
        if start.row > 0 and start.shard not in {rel for rel, _ in listing}:
            raise DataError(
                f"the resume position is row {start.row} of shard '{start.shard}', which is gone",
                file=fs.join(self.root, start.shard),
                fix="restore the shard, or point --data at the data root the run was trained on "
                "(shard names are relative to it)",
            )
        return {rel for rel, _ in listing if rel < start.shard}

    def _sentinel_exists(self) -> bool:
        sentinel = os.fspath(self.follow.sentinel)
        if not (fs.is_uri(sentinel) or os.path.isabs(sentinel)):
            sentinel = fs.join(self.root, sentinel)
        return fs.kind(fs.normalize(sentinel)) is not None

    def _paths(self, stop: threading.Event) -> Iterator[tuple[int, str, str]]:
        """``(epoch, relative path, absolute path)`` of the shards to read, in order."""
        start = self.start
        if self.follow is None:
            listing = self._source.list()
            if not listing and self._source.keep is None:  # a worker may own no shard
                raise DataError(
                    "no shards found (*.parquet, *.csv, *.tfrecord)",
                    file=self.root,
                    fix="check --data; names starting with '.' or '_' are ignored",
                )
            skip = self._skip_before_start(listing)
            for epoch in range(start.epoch, self.epochs):
                for rel, path in listing:
                    if self._halt.is_set():
                        self._source_stop = "requested"
                        return
                    if epoch == start.epoch and rel in skip:
                        continue
                    yield epoch, rel, path
            self._source_stop = "end"
            return
        # follow mode
        opts = self.follow
        taken: set[str] = set()
        last = start.shard or None
        first = True
        last_new = time.monotonic()
        while not stop.is_set():
            if self._halt.is_set():
                self._source_stop = "requested"
                return
            done = opts.sentinel is not None and self._sentinel_exists()
            listing = self._source.list()
            new = [(rel, path) for rel, path in listing if rel not in taken]
            if first:
                taken |= self._skip_before_start(listing)
                new = [(rel, path) for rel, path in new if rel not in taken]
                first = False
            if new:
                last_new = time.monotonic()
            for rel, path in new:
                taken.add(rel)
                if last is not None and rel < last:
                    self._out_of_order(rel, path, last)
                    continue
                last = rel
                yield 0, rel, path
            if done:
                self._source_stop = "sentinel"
                return
            if opts.idle_timeout_s is not None and not new:
                idle = time.monotonic() - last_new
                if idle >= opts.idle_timeout_s:
                    self._source_stop = "idle_timeout"
                    return
                wait = min(opts.poll_interval_s, opts.idle_timeout_s - idle)
            else:
                wait = opts.poll_interval_s
            deadline = time.monotonic() + max(wait, 0.0)
            while not (stop.is_set() or self._halt.is_set()) and time.monotonic() < deadline:
                stop.wait(min(0.05, max(deadline - time.monotonic(), 0.0)))

    def _shards(self, strings: str, stop: threading.Event) -> Iterator[tuple[int, str, ShardColumns]]:
        """Validated shards, loaded ``read_ahead`` shards ahead in a thread."""
        if self.read_ahead == 0:
            for epoch, rel, path in self._paths(stop):
                cols = self._load(rel, path, strings)
                if cols is not None:
                    yield epoch, rel, cols
            return
        out: queue.Queue = queue.Queue(maxsize=self.read_ahead)
        done = object()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for epoch, rel, path in self._paths(stop):
                    cols = self._load(rel, path, strings)
                    if cols is not None and not put((epoch, rel, cols)):
                        return
                put(done)
            except BaseException as exc:  # handed to the consumer
                put(exc)

        thread = threading.Thread(target=produce, name="LogStream-read-ahead", daemon=True)
        thread.start()
        try:
            while True:
                item = out.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=5.0)

    def _generate(self, strings: str, group: int = 1) -> Iterator[tuple[dict, dict, np.ndarray]]:
        """The batching loop shared by :meth:`iter_numpy` and :meth:`dataset`.

        Yields ``(features, labels, rows_end)`` holding ``k <= group`` whole
        batches back to back (only batches already buffered are grouped, so
        nothing waits for more data); ``rows_end`` is int64 ``[k]``.
        """
        start = self.start
        with self._lock:
            self._segments = []
            self._loaded = {}
            self._report = StreamReport()
            self.error = None
        self._source_stop = None
        limit = self.follow.max_rows if self.follow is not None else None
        stop = threading.Event()
        buffer = _Buffer()
        emitted = start.rows_consumed  # stream rows delivered, from the origin
        session = 0  # rows delivered by this iteration
        queued = 0  # rows added to the buffer by this iteration
        hit_limit = False

        def batch(n: int, k: int = 1):
            nonlocal emitted, session
            cols = buffer.take(n * k)
            rows_end = emitted + n * np.arange(1, k + 1, dtype=np.int64)
            emitted += cols.num_rows
            session += cols.num_rows
            with self._lock:
                self._report.rows_read = session
            return cols.features, cols.labels, rows_end

        shards = self._shards(strings, stop)
        try:
            for epoch, rel, cols in shards:
                row0 = start.row if (epoch == start.epoch and rel == start.shard) else 0
                if row0 > cols.num_rows:
                    raise DataError(
                        f"the resume position is row {row0} but the shard has {cols.num_rows} rows; "
                        "it changed since the position was saved",
                        file=fs.join(self.root, rel),
                        fix="restore the shard as it was when trained, or start a new --out",
                    )
                piece = cols.slice(row0, cols.num_rows)
                if limit is not None:
                    piece = piece.slice(0, max(0, limit - queued))
                g0 = start.rows_consumed + queued
                with self._lock:
                    self._report.shards_read.append(rel)
                    if piece.num_rows:
                        self._segments.append(_Segment(g0, g0 + piece.num_rows, epoch, rel, row0))
                buffer.add(piece)
                queued += piece.num_rows
                while buffer.rows >= self.batch_size:
                    yield batch(self.batch_size, min(group, buffer.rows // self.batch_size))
                if limit is not None and queued >= limit:
                    hit_limit = True
                    break
            if buffer.rows:
                yield batch(buffer.rows)
            with self._lock:
                self._report.stopped_by = "max_rows" if hit_limit else self._source_stop
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                self.error = exc
                with self._lock:
                    self._report.stopped_by = "error"
            raise
        finally:
            stop.set()
            shards.close()
            report = self.report()
            if report.quarantined:
                logger.warning(
                    "%d shard(s) quarantined (%d rows, %d unreadable):\n%s",
                    len(report.quarantined), report.rows_quarantined,
                    report.unreadable_shards, report.summary(),
                )
