"""Atomic publication: a version appears complete or not at all."""

import os
import signal
import subprocess
import sys
import time

import pytest

from matta_rec.export.publish import (
    ExportError,
    existing_versions,
    publish_version,
    remove_stale_temporaries,
    write_file_atomic,
)

TESTS = os.path.dirname(os.path.abspath(__file__))


def _write_files(tmp):
    os.makedirs(os.path.join(tmp, "variables"))
    for name in ("saved_model.pb", "variables/variables.index"):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(name)


def test_publish_and_refuse_existing(tmp_path):
    target = os.path.join(tmp_path, "student", "1")
    assert publish_version(target, _write_files) == target
    assert sorted(os.listdir(target)) == ["saved_model.pb", "variables"]
    with pytest.raises(ExportError, match="already exists"):
        publish_version(target, _write_files)
    with pytest.raises(ExportError, match="integer"):
        publish_version(os.path.join(tmp_path, "student", "v2"), _write_files)
    assert existing_versions(os.path.join(tmp_path, "student")) == [1]


def test_overwrite_replaces_whole_directory(tmp_path):
    target = os.path.join(tmp_path, "m", "7")
    publish_version(target, _write_files)
    with open(os.path.join(target, "stale.txt"), "w") as f:
        f.write("from the old version")

    def new(tmp):
        with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
            f.write("new")

    publish_version(target, new, overwrite=True)
    assert os.listdir(target) == ["saved_model.pb"]
    assert open(os.path.join(target, "saved_model.pb")).read() == "new"
    assert os.listdir(os.path.dirname(target)) == ["7"]


def test_exception_in_writer_leaves_nothing(tmp_path):
    def broken(tmp):
        _write_files(tmp)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        publish_version(os.path.join(tmp_path, "m", "1"), broken)
    assert os.listdir(os.path.join(tmp_path, "m")) == []
    # A failed overwrite keeps the old version intact.
    publish_version(os.path.join(tmp_path, "m", "1"), _write_files)
    with pytest.raises(RuntimeError):
        publish_version(os.path.join(tmp_path, "m", "1"), broken, overwrite=True)
    assert sorted(os.listdir(os.path.join(tmp_path, "m", "1"))) == ["saved_model.pb", "variables"]
    assert os.listdir(os.path.join(tmp_path, "m")) == ["1"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    model_dir = os.path.join(tmp_path, "m")
    os.makedirs(model_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(model_dir, f".4.tmp-{dead.pid}-abcd")
    alive = os.path.join(model_dir, f".5.tmp-{os.getppid()}-abcd")  # a live process
    os.makedirs(stale)
    os.makedirs(alive)
    assert remove_stale_temporaries(model_dir) == [os.path.basename(stale)]
    assert os.path.exists(alive) and not os.path.exists(stale)


def test_write_file_atomic(tmp_path):
    path = os.path.join(tmp_path, "sub", "manifest.json")
    write_file_atomic(path, "{}")
    write_file_atomic(path, b'{"a": 1}')
    assert open(path).read() == '{"a": 1}'
    assert os.listdir(os.path.dirname(path)) == ["manifest.json"]


def test_write_file_atomic_failure_keeps_the_old_file(tmp_path):
    path = os.path.join(tmp_path, "progress.json")
    write_file_atomic(path, "old", fsync=False)

    with pytest.raises(TypeError):
        write_file_atomic(path, 123)  # neither bytes nor str: the write fails
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["progress.json"]


KILL_SCRIPT = r"""
import os, sys, time
sys.path.insert(0, sys.argv[3])
from export_testlib import make_model, make_rows, make_schema
import matta_rec.export.savedmodel as savedmodel

original = savedmodel.write_warmup

def slow_warmup(path, logs):
    original(path, logs)
    open(sys.argv[2], "w").close()  # the SavedModel is half published: kill me now
    time.sleep(120)

savedmodel.write_warmup = slow_warmup
savedmodel.export_model(make_model(), make_schema(), sys.argv[1], warmup=make_rows(8))
"""


@pytest.mark.slow
def test_killed_export_leaves_no_partial_version(tmp_path):
    base = os.path.join(tmp_path, "exports", "student")
    target = os.path.join(base, "1")
    marker = os.path.join(tmp_path, "midway")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, target, marker, TESTS],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 240
    while not os.path.exists(marker):
        if proc.poll() is not None:
            pytest.fail(f"export process exited early: {proc.stdout.read().decode()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("export never reached the midway point")
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The half-written SavedModel sits in a hidden temporary that TF Serving
    # ignores; no version directory exists.
    leftovers = os.listdir(base)
    assert existing_versions(base) == []
    assert len(leftovers) == 1 and leftovers[0].startswith(".1.tmp-")
    assert os.path.exists(os.path.join(base, leftovers[0], "saved_model.pb"))
    # The next export cleans the dead process's temporary up.
    publish_version(target, _write_files)
    assert os.listdir(base) == ["1"]


def test_overwrite_swaps_atomically_on_linux(tmp_path, monkeypatch):
    import matta_rec.export.publish as publish

    target = os.path.join(tmp_path, "m", "2")
    publish_version(target, _write_files)
    calls = []
    real = publish._exchange

    def spy(a, b):
        ok = real(a, b)
        calls.append(ok)
        if ok:  # at the moment of the swap, the version is complete and present
            assert open(os.path.join(b, "saved_model.pb")).read() == "v2"
        return ok

    def v2(tmp):
        with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
            f.write("v2")

    monkeypatch.setattr(publish, "_exchange", spy)
    publish_version(target, v2, overwrite=True)
    assert calls, "the exchange path was not tried"
    if sys.platform.startswith("linux"):
        assert calls == [True]
    assert os.listdir(target) == ["saved_model.pb"]
    assert os.listdir(os.path.dirname(target)) == ["2"]
    # The fallback (no renameat2) gives the same result.
    monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    publish_version(target, _write_files, overwrite=True)
    assert sorted(os.listdir(target)) == ["saved_model.pb", "variables"]
    assert os.listdir(os.path.dirname(target)) == ["2"]


def test_export_bases_and_run_directories_must_be_local():
    from matta_rec.errors import ConfigError
    from matta_rec.export.publish import local_export_base
    from matta_rec.training.run_dir import RunPaths

    with pytest.raises(ExportError, match="local"):
        local_export_base("s3://bucket/exports")
    assert local_export_base("exports") == os.path.abspath("exports")
    with pytest.raises(ConfigError, match="--out"):
        RunPaths("gs://bucket/runs/r1")
