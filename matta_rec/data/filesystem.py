"""Where log shards live: local paths and object-storage URIs behind one interface.

Every byte of a shard that :mod:`matta_rec.data` reads (listing, sizes,
Parquet / CSV / TFRecord contents, fingerprints) goes through this module, so
that ``--data`` may be:

* a local path (``logs/``, ``/data/logs``): read with ``os`` and plain
  ``open``, the fast paths of the readers;
* ``file:///data/logs``: turned into the local path ``/data/logs``;
* ``s3://bucket/logs`` (S3 and S3-compatible servers), ``gs://bucket/logs``
  (Google Cloud Storage): read through :mod:`pyarrow.fs`
  (``FileSystem.from_uri``); ``hdfs://namenode:8020/logs`` goes through the
  same layer but needs libhdfs and a JVM at run time and is untested.

Credentials and endpoints come from the standard environment, never from
code or the URI: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` / ``AWS_PROFILE``, ``AWS_DEFAULT_REGION`` and
``AWS_ENDPOINT_URL`` (an S3-compatible server; pyarrow honours it) for
``s3://``; ``GOOGLE_APPLICATION_CREDENTIALS`` for ``gs://``. A URI with
options (``?endpoint_override=...``) is refused for that reason.

A remote path is always its full URI (``s3://bucket/logs/dt=2026-11-01/
hour=07/part-0.parquet``), so that error messages name it as the user would
type it; directories are ``/``-separated prefixes, and names starting with
``.`` or ``_`` are ignored when listing, as on local disk.

Example:

>>> is_uri("s3://logs/day"), is_uri("logs/day")
(True, False)
>>> join("s3://logs/day", "dt=2026-11-01/hour=00/part-0.parquet")
's3://logs/day/dt=2026-11-01/hour=00/part-0.parquet'
>>> [relative(p, "s3://logs/day") for p in list_files("s3://logs/day")]
['dt=2026-11-01/hour=00/part-0.parquet', 'dt=2026-11-01/hour=01/part-0.parquet']
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import threading
from typing import Any

from matta_rec.errors import DataError

__all__ = [
    "is_uri", "normalize", "join", "relative", "kind", "file_size", "list_files",
    "glob_files", "common_folder", "open_input", "read_bytes", "HIDDEN_PREFIXES",
]

HIDDEN_PREFIXES = (".", "_")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# What decides which file system (and credentials) a URI resolves to: a
# changed environment gets a new file system object, the same one is reused.
_ENV_KEYS = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
_FILESYSTEMS: dict = {}
_FS_LOCK = threading.Lock()
ENVIRONMENT_FIX = (
    "check the URI and the standard environment of its store (AWS_ENDPOINT_URL, "
    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION for s3://; "
    "GOOGLE_APPLICATION_CREDENTIALS for gs://)"
)


def _scheme(path: Any) -> str | None:
    match = _SCHEME.match(path) if isinstance(path, str) else None
    return match.group(1).lower() if match else None


def is_uri(path: Any) -> bool:
    """Whether ``path`` is a remote URI (``s3://``, ``gs://``, ``hdfs://``, ...).

    ``file://`` URIs are local paths (see :func:`normalize`) and return ``False``.
    """
    scheme = _scheme(path)
    return scheme is not None and scheme != "file"


def _split(uri: str) -> tuple[str, str]:
    """``("s3://", "bucket/logs")`` or ``("hdfs://nn:8020", "/logs")``."""
    scheme = _scheme(uri)
    rest = uri[len(scheme) + 3:]
    if scheme in ("s3", "gs", "gcs"):
        return uri[: len(scheme) + 3], rest
    slash = rest.find("/")
    if slash < 0:
        return uri, "/"
    return uri[: len(scheme) + 3 + slash], rest[slash:]


def normalize(path: Any) -> str:
    """The canonical form of a shard path or data root.

    Local paths (``file://`` URIs included) become absolute OS paths; remote
    URIs lose repeated and trailing slashes (``s3://b/logs/`` ->
    ``s3://b/logs``).

    Raises:
        DataError: a URI carrying options (``?...``): endpoints and
            credentials come from the environment.
    """
    path = os.fspath(path)
    scheme = _scheme(path)
    if scheme is None:
        return os.path.abspath(path)
    if "?" in path:
        raise DataError(
            "URI options are not read: the store's endpoint, region and credentials come "
            "from the standard environment", file=path, fix="drop '?...' from --data and set "
            "AWS_ENDPOINT_URL / AWS_DEFAULT_REGION (or your store's variables) instead",
        )
    if scheme == "file":
        from pyarrow.fs import FileSystem

        return os.path.abspath(FileSystem.from_uri(path)[1])
    prefix, rest = _split(path)
    if rest.strip("/"):
        rest = posixpath.normpath("/" + rest.lstrip("/"))  # "/bucket/logs" or "/logs": no "//", no "/" at the end
    else:
        rest = "/"
    return prefix + rest.lstrip("/") if prefix.endswith("://") else prefix + rest


def _resolve(uri: str):
    """``(pyarrow FileSystem, path inside it)`` of a remote URI (file systems cached)."""
    prefix, bucket = _store(uri)
    rest = _split(uri)[1]
    env = hashlib.sha256(repr([os.environ.get(k) for k in _ENV_KEYS]).encode()).hexdigest()
    key = (prefix, bucket, env)
    with _FS_LOCK:
        fs = _FILESYSTEMS.get(key)
    if fs is None:
        from pyarrow.fs import FileSystem

        try:
            fs, _ = FileSystem.from_uri(prefix + (bucket if bucket else ""))
        except (OSError, ValueError, ImportError) as exc:
            raise DataError(f"cannot reach the file system of this URI ({exc})", file=uri,
                            fix=ENVIRONMENT_FIX) from exc
        with _FS_LOCK:
            _FILESYSTEMS[key] = fs
    return fs, rest.rstrip("/") if rest != "/" else rest


def join(root: str, *names: str) -> str:
    """``root`` joined with ``/``-separated relative names (a URI stays a URI)."""
    root = os.fspath(root)
    if is_uri(root):
        return "/".join([root.rstrip("/")] + [n.strip("/") for n in names if n])
    return os.path.join(root, *(part for name in names for part in name.split("/")))


def relative(path: str, root: str) -> str | None:
    """``path`` relative to ``root``, ``/``-separated; ``None`` if outside it.

    Local paths are compared as given, then resolved (a root reached through
    a symbolic link still holds its shards); URIs by prefix.
    """
    if is_uri(path) or is_uri(root):
        if not (is_uri(path) and is_uri(root)):
            return None
        root = root.rstrip("/")
        return path[len(root) + 1:] if path.startswith(root + "/") else None
    for norm in (os.path.abspath, os.path.realpath):
        try:
            rel = os.path.relpath(norm(path), norm(root))
        except ValueError:  # another drive
            continue
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep) and not os.path.isabs(rel):
            return rel.replace(os.sep, "/")
    return None


def kind(path: str) -> str | None:
    """``"file"``, ``"dir"`` or ``None`` (nothing there).

    An object-store "directory" is a prefix that at least one object has.
    """
    if not is_uri(path):
        return "file" if os.path.isfile(path) else "dir" if os.path.isdir(path) else None
    from pyarrow.fs import FileType

    fs, inner = _resolve(path)
    try:
        info = fs.get_file_info(inner)
    except OSError as exc:
        raise DataError(f"cannot list the store ({exc})", file=path, fix=ENVIRONMENT_FIX) from exc
    return {FileType.File: "file", FileType.Directory: "dir"}.get(info.type)


def file_size(path: str) -> int:
    """Size in bytes; ``OSError`` (``FileNotFoundError``) when the file is not there."""
    if not is_uri(path):
        return os.path.getsize(path)
    from pyarrow.fs import FileType

    fs, inner = _resolve(path)
    info = fs.get_file_info(inner)
    if info.type != FileType.File:
        raise FileNotFoundError(f"no such object: {path}")
    return int(info.size)


def _hidden(rel: str) -> bool:
    return any(part.startswith(HIDDEN_PREFIXES) for part in rel.split("/"))


def list_files(folder: str) -> list[str]:
    """Every file under ``folder``, recursively, skipping names (files or
    folders) that start with ``.`` or ``_``; unsorted full paths / URIs."""
    if not is_uri(folder):
        paths = []
        for here, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(HIDDEN_PREFIXES)]
            paths.extend(os.path.join(here, n) for n in names if not n.startswith(HIDDEN_PREFIXES))
        return paths
    from pyarrow.fs import FileSelector, FileType

    folder = folder.rstrip("/")
    fs, inner = _resolve(folder)
    try:
        infos = fs.get_file_info(FileSelector(inner, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise DataError(f"cannot list the store ({exc})", file=folder, fix=ENVIRONMENT_FIX) from exc
    base = inner.rstrip("/")
    out = []
    for info in infos:
        if info.type != FileType.File or not info.path.startswith(base + "/"):
            continue
        rel = info.path[len(base) + 1:]
        if not _hidden(rel):
            out.append(folder + "/" + rel)
    return out


def _glob_name(part: str) -> str:
    """One name of a glob (``*``, ``?``, ``[...]``, ``[!...]``) as a regex."""
    body, k = [], 0
    while k < len(part):
        char = part[k]
        end = part.find("]", k + 2) if char == "[" else -1
        if char == "*":
            body.append("[^/]*")
        elif char == "?":
            body.append("[^/]")
        elif end > 0:
            inner = part[k + 1:end].replace("\\", "\\\\")
            body.append("[" + ("^" + inner[1:] if inner.startswith("!") else inner) + "]")
            k = end
        else:
            body.append(re.escape(char))
        k += 1
    return "".join(body)


def _glob_regex(pattern: str) -> "re.Pattern":
    """A ``glob(recursive=True)`` pattern over ``/``-separated names as a regex."""
    parts = pattern.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_glob_name(part) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z")


def glob_files(pattern: str, fixed: str) -> list[str]:
    """Files matching a remote glob (``s3://b/logs/dt=2026-11-0*/**/*.parquet``).

    Args:
        pattern: the glob URI (``*``, ``?``, ``[...]`` within a name, ``**``
            across folders).
        fixed: its part before the first wildcard (the folder listed).
    """
    regex = _glob_regex(pattern[len(fixed.rstrip("/")) + 1:])
    return [p for p in list_files(fixed) if regex.match(relative(p, fixed) or "")]


def _store(uri: str) -> tuple[str, str]:
    """``(scheme prefix, bucket)`` of a URI: what one file system object serves."""
    prefix, rest = _split(uri)
    return prefix, rest.split("/", 1)[0] if prefix.endswith("://") else ""


def common_folder(paths: list[str]) -> str:
    """The deepest folder holding every path (all local, or all on one store)."""
    remote = {is_uri(p) for p in paths}
    if remote == {False}:
        return os.path.commonpath([os.path.dirname(p) for p in paths])
    if len(remote) > 1 or len({_store(p) for p in paths}) > 1:
        raise DataError("the shard files are on different file systems or buckets",
                        file=", ".join(sorted(paths)[:2]),
                        fix="pass shards of one data root (or the root itself) as --data")
    common = posixpath.commonpath([posixpath.dirname(_split(p)[1]) for p in paths])
    return _split(paths[0])[0] + common


def open_input(path: str):
    """A seekable binary file: ``open(path, "rb")`` locally, a pyarrow
    random-access file (ranged reads) on a store. ``OSError`` if absent."""
    if not is_uri(path):
        return open(path, "rb")
    fs, inner = _resolve(path)
    return fs.open_input_file(inner)


def read_bytes(path: str):
    """The whole file as a ``pyarrow.Buffer`` (one read; ``OSError`` if absent)."""
    import pyarrow as pa

    if not is_uri(path):
        with open(path, "rb") as handle:
            return pa.py_buffer(handle.read())
    fs, inner = _resolve(path)
    with fs.open_input_stream(inner) as handle:
        return handle.read_buffer()
