"""Crash-safe file writes shared by the run directory and the exporter.

Example:

>>> write_file_atomic("runs/sample/metrics.json", json.dumps(metrics))
"""

from __future__ import annotations

import os
import secrets

__all__ = ["TMP_MARK", "fsync_dir", "write_file_atomic"]

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


def write_file_atomic(path: str, data: bytes | str, fsync: bool = True) -> None:
    """Write ``path`` through a hidden temporary sibling and a rename.

    Readers see the old content or the new one, never a partial file; a
    failure removes the temporary. The temporary is named
    ``.<name>.tmp-<pid>-<random>`` (hidden, so directory watchers such as
    TF Serving ignore it, and the pid tells a stale one from a live one).

    Args:
        path: the target file; its directory is created if missing.
        data: ``bytes``, or ``str`` written as UTF-8.
        fsync: flush the file and its directory to disk. ``False`` still
            survives a killed process (the page cache is the kernel's), only
            not a machine crash: for frequent writes such as a heartbeat.
    """
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    binary = isinstance(data, bytes)
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if fsync:
        fsync_dir(directory)
