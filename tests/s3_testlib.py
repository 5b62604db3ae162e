"""A real S3 API on 127.0.0.1 for the object-storage tests.

``moto_server`` (moto's standalone server, a dev dependency) runs as a child
process on a free port for the whole test module (``s3_server``); each test
gets the standard AWS environment pointing at it and a bucket of its own
(``s3``), and uploads shards written locally.  Nothing in ``matta_rec`` is
told about the server: it finds it through ``AWS_ENDPOINT_URL``, as it
would find a real store.

Use it by importing both fixtures into a test module::

    from s3_testlib import s3, s3_server  # noqa: F401 (fixtures)
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time

import pytest

_BUCKETS = itertools.count()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of a moto S3 server, stopped after the module."""
    import moto.server  # noqa: F401 - a clear ImportError when the dev extra is missing

    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on port {port} (see {log.name})")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


class Bucket:
    """One test's bucket on the server: ``uri(...)``, ``upload(...)``, ``put(...)``."""

    def __init__(self, endpoint: str, name: str):
        from pyarrow import fs as pafs

        self.name = name
        # The test's own client (bucket creation is not something matta_rec does).
        self.fs = pafs.S3FileSystem(
            endpoint_override=endpoint, scheme="http", access_key="testing",
            secret_key="testing", region="us-east-1", allow_bucket_creation=True,
        )
        self.fs.create_dir(name)

    def uri(self, *parts: str) -> str:
        """``s3://BUCKET/part/part``."""
        return "/".join([f"s3://{self.name}"] + [p.strip("/") for p in parts if p])

    def put(self, key: str, data: bytes) -> str:
        """Write one object; returns its URI."""
        with self.fs.open_output_stream(f"{self.name}/{key}") as out:
            out.write(data)
        return self.uri(key)

    def upload(self, local_root, prefix: str, only=None) -> list[str]:
        """Copy every file under ``local_root`` to ``prefix/<relative path>``
        (or only the local files ``only``); returns the relative paths."""
        local_root = str(local_root)
        names = []
        for folder, _, files in os.walk(local_root):
            for name in files:
                path = os.path.join(folder, name)
                if only is not None and path not in {str(p) for p in only}:
                    continue
                rel = os.path.relpath(path, local_root).replace(os.sep, "/")
                with open(path, "rb") as handle:
                    self.put(f"{prefix}/{rel}", handle.read())
                names.append(rel)
        return sorted(names)


@pytest.fixture
def s3(s3_server, monkeypatch) -> Bucket:
    """A fresh bucket, with the standard AWS environment set to the server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    return Bucket(s3_server, f"logs-{os.getpid()}-{next(_BUCKETS)}")
