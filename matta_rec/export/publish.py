"""Atomic publication of a TF Serving version directory.

TF Serving watches ``EXPORT_BASE/<model>/`` and loads every sub-directory whose
name is an integer as soon as it appears.  A version must therefore appear
complete or not at all: :func:`publish_version` writes into a hidden temporary
sibling (``.<version>.tmp-<pid>-<random>``, a name TF Serving ignores), fsyncs
every file and directory, then renames it into place.  A failure (or a kill)
at any point before the rename leaves no ``<version>`` directory; temporaries
left by killed processes are removed by the next publication in the same
model directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Callable

from matta_rec.errors import MattaError
from matta_rec.utils.files import TMP_MARK, fsync_dir, write_file_atomic  # noqa: F401 (write_file_atomic: kept importable from here)

_OLD_MARK = ".old-"


class ExportError(MattaError):
    """An export cannot be written (existing version, bad model, bad target)."""


def local_export_base(export_base) -> str:
    """``export_base`` as an absolute local path; a URI is refused.

    Publication is atomic through a rename on one local file system, which
    object stores do not offer; TF Serving can watch a local (or mounted)
    folder.
    """
    from matta_rec.data.filesystem import is_uri

    path = os.fspath(export_base)
    if is_uri(path):
        raise ExportError(f"the export base {path} is a URI; exports are published to a local "
                          "(or mounted) folder that TF Serving watches: pass a local path")
    return os.path.abspath(path)


def parse_version(version_dir: str) -> int:
    """The integer version of ``EXPORT_BASE/<model>/<version>``."""
    name = os.path.basename(os.path.normpath(version_dir))
    if not name.isdigit():
        raise ExportError(
            f"'{version_dir}': the last path component must be an integer version "
            "(TF Serving only loads EXPORT_BASE/<model>/<integer>/)"
        )
    return int(name)


def existing_versions(model_dir: str) -> list[int]:
    """Integer versions already published under ``model_dir`` (sorted)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(n)
        for n in os.listdir(model_dir)
        if n.isdigit() and os.path.isdir(os.path.join(model_dir, n))
    )


def fsync_tree(root: str) -> None:
    """fsync every file and directory under ``root`` (directories last)."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the call is unavailable (other OS, old kernel or
    file system), so the caller can fall back to two renames.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


def remove_stale_temporaries(model_dir: str) -> list[str]:
    """Delete temporaries left in ``model_dir`` by processes that died."""
    removed = []
    if not os.path.isdir(model_dir):
        return removed
    for name in os.listdir(model_dir):
        if not name.startswith(".") or (TMP_MARK not in name and _OLD_MARK not in name):
            continue
        mark = TMP_MARK if TMP_MARK in name else _OLD_MARK
        try:
            pid = int(name.split(mark, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
        removed.append(name)
    return removed


def publish_version(
    version_dir: str, write: Callable[[str], None], *, overwrite: bool = False
) -> str:
    """Write a version directory atomically.

    Args:
        version_dir: ``EXPORT_BASE/<model>/<integer version>``.
        write: ``write(tmp_dir)`` fills a fresh temporary directory with the
            complete version (it must not rename or delete ``tmp_dir``).
        overwrite: replace an existing version.  On Linux the new and old
            directories are swapped atomically (``renameat2`` with
            ``RENAME_EXCHANGE``); elsewhere the old one is first renamed aside.
            The old directory is deleted once the new one is in place.

    Returns:
        The absolute path of the published version directory.

    Raises:
        ExportError: the version exists and ``overwrite`` is False.
    """
    version_dir = os.path.abspath(version_dir)
    version = parse_version(version_dir)
    model_dir = os.path.dirname(version_dir)
    if os.path.exists(version_dir) and not overwrite:
        raise ExportError(
            f"'{version_dir}' already exists; TF Serving may already serve version "
            f"{version}. Pick another --version or pass --overwrite to replace it"
        )
    os.makedirs(model_dir, exist_ok=True)
    remove_stale_temporaries(model_dir)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = os.path.join(model_dir, f".{version}{TMP_MARK}{tag}")
    os.mkdir(tmp)
    try:
        write(tmp)
        fsync_tree(tmp)
        old = None
        if os.path.exists(version_dir) and _exchange(tmp, version_dir):
            # Swapped in one step: TF Serving never sees the version missing;
            # tmp now holds the old version.
            old = tmp
        else:
            if os.path.exists(version_dir):
                old = os.path.join(model_dir, f".{version}{_OLD_MARK}{tag}")
                os.rename(version_dir, old)
            try:
                os.rename(tmp, version_dir)
            except BaseException:
                if old is not None:
                    os.rename(old, version_dir)
                raise
        fsync_dir(model_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version_dir
