"""Shard fingerprints: tell the logs a run was trained on from other logs.

A :class:`ShardFingerprint` is a shard's name (its path relative to the data
root), its size in bytes and its row count. A resumed run compares the
fingerprints of the shards it has already trained (or partly trained) with
the files under ``--data`` now (:func:`check_fingerprints`): the same names
with other sizes or row counts mean ``--data`` points at different logs, and
training on would mix two data sets under one run.

Only shards already trained are compared, so the data may grow (new shards
are not compared) and a shard that was quarantined, hence never trained, may
be repaired (it is not compared either). A trained shard that is gone (logs
past their retention deleted) is accepted; none of them left is not.

Row counts come from the file metadata where that is cheap (Parquet footer);
CSV and TFRecord files are scanned (CSV rows parsed by Arrow, TFRecord
records hopped over by their length prefix, no TensorFlow needed). Shards on
an object store (``s3://``, ``gs://``) are read through
:mod:`matta_rec.data.filesystem`: a Parquet footer by ranged reads, a CSV or
TFRecord object whole.

Example:

>>> fp = shard_fingerprint("logs/", "dt=2026-11-01/hour=07/part-0.parquet")
>>> fp.to_dict()
{'name': 'dt=2026-11-01/hour=07/part-0.parquet', 'bytes': 1210344, 'rows': 20000}
>>> check_fingerprints("logs/", [fp])  # the same logs: nothing missing
[]
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import Iterable, Mapping

import pyarrow as pa

from matta_rec.errors import DataError
from matta_rec.data import filesystem as fs
from matta_rec.data.writers import format_of

__all__ = ["ShardFingerprint", "shard_fingerprint", "count_rows", "check_fingerprints"]

DIFFERENT_DATA_FIX = "resume with the original --data, or start a new --out"


@dataclasses.dataclass(frozen=True)
class ShardFingerprint:
    """What a shard looked like when it was trained.

    Args:
        name: path relative to the data root (``/``-separated), e.g.
            ``dt=2026-11-01/hour=07/part-0.parquet``.
        bytes: file size in bytes.
        rows: row count (``None`` when the file could not be read).

    Example:

    >>> ShardFingerprint("dt=2026-11-01/hour=07/part-0.parquet", 1210344, 20000).describe()
    '20000 rows / 1.2 MB'
    """

    name: str
    bytes: int
    rows: int | None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty relative path, got {self.name!r}")
        if isinstance(self.bytes, bool) or not isinstance(self.bytes, int) or self.bytes < 0:
            raise ValueError(f"bytes must be an integer >= 0, got {self.bytes!r}")
        if self.rows is not None and (
            isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 0
        ):
            raise ValueError(f"rows must be None or an integer >= 0, got {self.rows!r}")

    def to_dict(self) -> dict:
        """``{"name", "bytes", "rows"}``, JSON-safe."""
        return {"name": self.name, "bytes": self.bytes, "rows": self.rows}

    @classmethod
    def from_dict(cls, data: "Mapping | ShardFingerprint") -> "ShardFingerprint":
        """Inverse of :meth:`to_dict` (a fingerprint is returned as is)."""
        if isinstance(data, ShardFingerprint):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"a shard fingerprint must be a mapping, got {type(data).__name__}")
        keys = {"name", "bytes", "rows"}
        if set(data) != keys:
            raise ValueError(f"a shard fingerprint has exactly the keys {sorted(keys)}, got {sorted(data)}")
        return cls(data["name"], data["bytes"], data["rows"])

    def describe(self) -> str:
        """``"20000 rows / 1.2 MB"``."""
        rows = "unreadable" if self.rows is None else f"{self.rows} rows"
        return f"{rows} / {_size(self.bytes)}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# ------------------------------------------------------------------ counting
def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    if not fs.is_uri(path):
        return int(pq.read_metadata(path).num_rows)
    with fs.open_input(path) as handle:  # ranged reads: the footer only
        return int(pq.read_metadata(handle).num_rows)


def _csv_rows(path: str) -> int:
    import pyarrow.csv as pcsv

    # Only the first column is converted (as text); every line is still
    # tokenized, so quoted newlines and blank lines count as read_csv does.
    # A remote file is read once, whole.
    source = fs.read_bytes(path) if fs.is_uri(path) else path
    if isinstance(source, str):
        with open(path, "rb") as handle:
            first = handle.readline()
    else:
        handle, first = pa.BufferReader(source), b""
        while b"\n" not in first and (chunk := handle.read(1 << 16)):
            first += chunk
        first = first[: first.find(b"\n") + 1] if b"\n" in first else first
    if not first.strip():
        return 0
    column = next(iter(pcsv.read_csv(pa.py_buffer(first)).column_names))
    reader = pcsv.open_csv(
        source if isinstance(source, str) else pa.BufferReader(source),
        convert_options=pcsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()}),
    )
    return sum(batch.num_rows for batch in reader)


def _tfrecord_rows(path: str) -> int:
    # A record: uint64 length, uint32 CRC of the length, the data, uint32 CRC.
    # Hop from header to header; only 12 bytes per record are read (of a
    # local file; a remote one is read once, whole, then hopped in memory).
    if fs.is_uri(path):
        buffer = fs.read_bytes(path)
        size, handle = buffer.size, pa.BufferReader(buffer)
    else:
        size, handle = os.path.getsize(path), open(path, "rb", buffering=1 << 16)
    offset, rows = 0, 0
    with handle:
        while offset < size:
            header = handle.read(12)
            if len(header) < 12:
                raise ValueError(f"record {rows} is cut off in its header")
            (length,) = struct.unpack_from("<Q", header)
            offset += 16 + length
            if offset > size:
                raise ValueError(f"record {rows} is cut off")
            handle.seek(offset)
            rows += 1
    return rows


_COUNTERS = {"parquet": _parquet_rows, "csv": _csv_rows, "tfrecord": _tfrecord_rows}


def count_rows(path: str | os.PathLike) -> int:
    """Rows of one shard, from its metadata (Parquet) or a scan (CSV, TFRecord).

    Args:
        path: the shard file (``*.parquet``, ``*.csv`` or ``*.tfrecord``), a
            local path or a URI (:mod:`matta_rec.data.filesystem`).

    Returns:
        The row count, without validating a value.

    Raises:
        DataError: the file is not a shard or cannot be read (truncated,
            corrupt), naming the file.
    """
    path = os.fspath(path)
    fmt = format_of(path)
    if fmt is None:
        raise DataError("not a shard: unknown extension", file=path,
                        fix="name shards *.parquet, *.csv or *.tfrecord")
    try:
        return _COUNTERS[fmt](path)
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot count the rows of this {fmt} shard: it is truncated or corrupt ({exc})",
            file=path,
            fix="re-write the shard, or pass --set data.skip_bad_shards=true to quarantine it",
        ) from exc


def shard_fingerprint(root: str | os.PathLike, name: str, *, rows: bool = True) -> ShardFingerprint:
    """The fingerprint of shard ``name`` under ``root`` as it is now.

    Args:
        root: the data root the name is relative to (a local path or a URI).
        name: the shard's ``/``-separated path relative to ``root``.
        rows: count the rows (``False``: ``rows`` is ``None``; only the size
            is taken).

    Returns:
        A :class:`ShardFingerprint`; ``rows`` is ``None`` when the file
        cannot be read.

    Raises:
        DataError: the file does not exist.
    """
    path = fs.join(os.fspath(root), name)
    try:
        size = fs.file_size(path)
    except OSError as exc:
        raise DataError(f"the shard cannot be opened ({exc})", file=path, fix="check --data") from exc
    count = None
    if rows:
        try:
            count = count_rows(path)
        except DataError:
            count = None
    return ShardFingerprint(name, int(size), count)


def check_fingerprints(
    root: str | os.PathLike, recorded: Iterable["ShardFingerprint | Mapping"]
) -> list[str]:
    """Check that the shards already trained are the same files under ``root`` now.

    Shards not in ``recorded`` (new ones, or ones quarantined and so never
    trained) are not looked at. Shards are checked in name order and the first
    difference is raised.

    Args:
        root: the data root of the resumed run (``--data``).
        recorded: fingerprints of the shards trained (or partly trained) so
            far, as saved (:class:`ShardFingerprint` or their dicts).

    Returns:
        The names of recorded shards that are gone (deleted after their
        retention, say): accepted, for the caller to log.

    Raises:
        DataError: a recorded shard has another size or row count now, or
            none of the recorded shards is left under ``root``; the message
            names the shard and both fingerprints.

    Example:

    >>> check_fingerprints("logs/", state["trained"])
    []
    """
    root = os.fspath(root)
    prints = sorted((ShardFingerprint.from_dict(fp) for fp in recorded), key=lambda fp: fp.name)
    missing = []
    for old in prints:
        path = fs.join(root, old.name)
        if fs.kind(path) != "file":
            missing.append(old.name)
            continue
        now = shard_fingerprint(root, old.name)
        if now.bytes != old.bytes or now.rows != old.rows:
            raise DataError(
                f"--data points at different logs: shard '{old.name}' had {old.describe()} "
                f"({old.bytes} bytes) when trained, now {now.describe()} ({now.bytes} bytes)",
                file=path,
                fix=DIFFERENT_DATA_FIX,
            )
    if prints and len(missing) == len(prints):
        raise DataError(
            f"--data points at different logs: none of the {len(prints)} shard(s) trained so far "
            f"is under it (the last one trained: '{prints[-1].name}')",
            file=root,
            fix=DIFFERENT_DATA_FIX,
        )
    return missing
