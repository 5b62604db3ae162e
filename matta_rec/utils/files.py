"""Crash-safe file writes: the one atomic write of the package.

Used by the run directory (metrics, heartbeat), the exporter (manifest),
the preprocessing statistics and the log-shard writer.

Example:

>>> write_file_atomic("runs/sample/metrics.json", json.dumps(metrics))
"""

from __future__ import annotations

import os
import secrets
from typing import Callable

__all__ = ["TMP_MARK", "fsync_dir", "write_atomic", "write_file_atomic"]

# Marks a temporary written next to its target: ``.<name>.tmp-<pid>-<random>``.
TMP_MARK = ".tmp-"


def fsync_dir(path: str) -> None:
    """fsync a directory so that renames inside it survive a machine crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None],
                 fsync: bool = True) -> str:
    """Create ``path`` by calling ``write(temporary)`` and renaming the result.

    Readers see the old content or the new one, never a partial file; a
    failure (or a kill) leaves no partial ``path`` and removes the temporary.
    The temporary is ``.<name>.tmp-<pid>-<random>`` next to ``path``: hidden,
    so directory watchers (TF Serving) and the log reader skip it, and the
    pid tells a stale one from a live one.

    Args:
        path: the target file; its directory is created if missing.
        write: ``write(tmp_path)`` writes the whole new content to
            ``tmp_path`` (e.g. ``pq.write_table(table, tmp_path)``).
        fsync: flush the file and its directory to disk. ``False`` still
            survives a killed process (the page cache is the kernel's), only
            not a machine crash: for frequent writes such as a heartbeat.

    Returns:
        The absolute path written.

    Example:

    >>> write_atomic("logs/part-0.parquet", lambda tmp: pq.write_table(table, tmp))
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory,
                       f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if fsync:
        fsync_dir(directory)
    return path


def write_file_atomic(path: str | os.PathLike, data: bytes | str, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomic`).

    Args:
        path: the target file; its directory is created if missing.
        data: ``bytes``, or ``str`` written as UTF-8.
        fsync: flush the file and its directory to disk (see
            :func:`write_atomic`).

    Example:

    >>> write_file_atomic("runs/sample/metrics.json", json.dumps(metrics))
    """
    if not isinstance(data, (bytes, str)):
        raise TypeError(f"data must be bytes or str, got {type(data).__name__}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data if isinstance(data, bytes) else data.encode("utf-8"))

    write_atomic(path, write, fsync=fsync)
