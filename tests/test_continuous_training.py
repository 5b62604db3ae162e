"""Continuous training on a live log stream (issue 14), end to end.

Each test drives real training processes: partitions land while a run is
killed and resumed, a truncated shard is met mid-stream, a resumed run's
config is changed, SIGTERM stops a run, and ``--follow --publish`` gates new
versions for TF Serving.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import tiny_config, write_logs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
CLI = [sys.executable, "-m", "matta_rec.cli.main"]
DRIVER = [sys.executable, os.path.join(ROOT, "tests", "train_driver.py")]

pytestmark = pytest.mark.slow


def _config(tmp_path, name="run.yaml", **overrides):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_config(**overrides)))
    return str(path)


def _read_rows(path):
    """The trained-rows log of tests/train_driver.py: one list of batches per process."""
    processes = [[]]
    with open(path) as handle:
        for line in handle:
            if line.startswith("# resume"):
                processes.append([])
            elif line.strip():
                rows_end, *ids = line.split()
                processes[-1].append((int(rows_end), [int(float(i)) for i in ids]))
    return processes


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode()[-3000:] if proc.stdout else "died")
        time.sleep(0.05)
    raise AssertionError("timed out")


def _last_rows_end(rows_log):
    if not os.path.exists(rows_log):
        return 0
    batches = _read_rows(rows_log)[-1]
    return batches[-1][0] if batches else 0


def _checkpoints(out):
    folder = os.path.join(out, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(f[6:-5]) for f in os.listdir(folder)
                  if f.startswith("state-") and f.endswith(".json"))


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as handle:
        return json.load(handle)


# ------------------------------------------------------------------- growth
def test_kill_during_day_one_then_day_two_lands_and_resume_trains_every_row_once(tmp_path):
    logs, out = str(tmp_path / "logs"), str(tmp_path / "run")
    write_logs(logs, shards=4, rows=300)  # day 1: rows 0..1199; hour=03 is held out
    config = _config(tmp_path, **{"data.holdout_fraction": 0.1, "checkpoint.every_rows": 256})
    rows_log = str(tmp_path / "rows.txt")
    cmd = DRIVER + ["--data", logs, "--schema", os.path.join(logs, "schema.yaml"), "--out", out,
                    "--config", config, "--rows-file", rows_log]
    proc = subprocess.Popen(cmd + ["--step-delay", "0.3"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(lambda: _checkpoints(out) and _last_rows_end(rows_log) > max(_checkpoints(out)),
              proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(os.path.join(out, "holdout.json")) as handle:
        holdout = json.load(handle)["holdout"]
    assert holdout == ["dt=2026-01-01/hour=03/part-0.parquet"]

    write_logs(logs, shards=4, rows=300, day="2026-01-02", first_row=1200)  # day 2 lands
    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = _metrics(out)
    checkpoint = metrics["resumed_from_rows"]
    first, second = _read_rows(rows_log)
    kept = [i for rows_end, ids in first if rows_end <= checkpoint for i in ids]
    trained = kept + [i for _, ids in second for i in ids]
    expected = list(range(0, 900)) + list(range(1200, 2400))  # never the held-out 900..1199
    assert trained == expected  # every non-holdout row of both days once, in time order
    assert metrics["rows_trained"] == 2100
    # The hold-out is the set fixed at the start, not the last shard of day 2.
    assert metrics["holdout"]["shards"] == holdout and metrics["holdout"]["rows"] == 300
    names = [fp["name"] for fp in metrics["input"]["train_shards"]]
    assert names[0] == "dt=2026-01-01/hour=00/part-0.parquet" and len(names) == 7


# -------------------------------------------------------- mid-stream errors
def test_a_truncated_shard_mid_run_exits_2_in_one_line_and_resume_after_repair(tmp_path):
    logs, out = str(tmp_path / "logs"), str(tmp_path / "run")
    write_logs(logs, shards=4, rows=300)
    bad = os.path.join(logs, "dt=2026-01-01", "hour=02", "part-0.parquet")
    with open(bad, "rb") as handle:
        original = handle.read()
    with open(bad, "wb") as handle:
        handle.write(original[: len(original) // 2])
    config = _config(tmp_path, **{"checkpoint.every_rows": 100_000})
    cmd = CLI + ["train", "--data", logs, "--schema", os.path.join(logs, "schema.yaml"),
                 "--out", out, "--config", config]
    failed = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr and "PyFunc" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("matta-rec")
              and "error" in line]
    assert len(errors) == 1 and "hour=02/part-0.parquet" in errors[0], failed.stderr[-2000:]
    assert "--set data.skip_bad_shards=true" in errors[0]
    # The last fully trained batch before the bad shard: 600 rows read, batches of 64.
    assert _checkpoints(out) == [576]

    with open(bad, "wb") as handle:
        handle.write(original)
    resumed = subprocess.run(cmd[:-2] + ["--resume"], cwd=ROOT, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = _metrics(out)
    assert metrics["resumed_from_rows"] == 576 and metrics["rows_reread"] == 0
    assert metrics["rows_trained"] == 1200 and metrics["rows_this_process"] == 624
    assert sum(e["rows"] for e in metrics["online"]["curve"]) == 1200  # every row scored once


def test_with_skip_bad_shards_the_shard_is_quarantined_counted_and_training_goes_on(tmp_path):
    logs, out = str(tmp_path / "logs"), str(tmp_path / "run")
    write_logs(logs, shards=4, rows=300)
    bad = os.path.join(logs, "dt=2026-01-01", "hour=02", "part-0.parquet")
    with open(bad, "r+b") as handle:
        handle.truncate(os.path.getsize(bad) // 2)
    config = _config(tmp_path, **{"data.skip_bad_shards": True})
    run = subprocess.run(CLI + ["train", "--data", logs, "--schema",
                                os.path.join(logs, "schema.yaml"), "--out", out,
                                "--config", config],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    stream = _metrics(out)["stream"]
    assert _metrics(out)["rows_trained"] == 900
    assert [q["shard"] for q in stream["quarantined"]] == ["dt=2026-01-01/hour=02/part-0.parquet"]


# ------------------------------------------------------------ resume policy
def test_resume_refuses_changed_keys_naming_each_and_records_allowed_ones(tmp_path):
    logs, out = str(tmp_path / "logs"), str(tmp_path / "run")
    write_logs(logs, shards=2, rows=200)
    config = _config(tmp_path)
    base = CLI + ["train", "--data", logs, "--out", out]
    first = subprocess.run(base + ["--schema", os.path.join(logs, "schema.yaml"),
                                   "--config", config],
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    with open(os.path.join(out, "config.yaml")) as handle:
        saved = handle.read()

    refused = subprocess.run(base + ["--resume", "--set", "batch_size=128",
                                     "--set", "model.d_model=8"],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "batch_size: 64 -> 128" in refused.stderr and "model.d_model: 4 -> 8" in refused.stderr

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tiny_config(**{"optimizer.settings.learning_rate": 0.5})))
    by_config = subprocess.run(base + ["--resume", "--config", str(other)],
                               cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert by_config.returncode == 2
    assert "optimizer.settings.learning_rate: 0.01 -> 0.5" in by_config.stderr
    with open(os.path.join(out, "config.yaml")) as handle:
        assert handle.read() == saved  # nothing applied from a refused resume

    edited = saved.replace("learning_rate: 0.01", "learning_rate: 0.5")
    assert edited != saved
    with open(os.path.join(out, "config.yaml"), "w") as handle:
        handle.write(edited)  # a hand edit goes through the same policy
    by_hand = subprocess.run(base + ["--resume"], cwd=ROOT, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert by_hand.returncode == 2
    assert "optimizer.settings.learning_rate: 0.01 -> 0.5" in by_hand.stderr
    with open(os.path.join(out, "config.yaml"), "w") as handle:
        handle.write(saved)

    allowed = subprocess.run(base + ["--resume", "--set", "checkpoint.keep=5",
                                     "--set", "metrics.window_rows=50"],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    with open(os.path.join(out, "config.yaml")) as handle:
        applied = yaml.safe_load(handle)
    assert applied["checkpoint"]["keep"] == 5 and applied["metrics"]["window_rows"] == 50
    changes = _metrics(out)["config_changes"]
    assert {(c["key"], c["old"], c["new"], c["rows_end"]) for c in changes} == {
        ("checkpoint.keep", 3, 5, 400), ("metrics.window_rows", 200, 50, 400)}


# ------------------------------------------------------------------ SIGTERM
def test_sigterm_while_following_checkpoints_and_exits_0_then_resume(tmp_path):
    logs, out = str(tmp_path / "logs"), str(tmp_path / "run")
    write_logs(logs, shards=2, rows=192)  # 6 whole batches: none waits in the buffer
    config = _config(tmp_path, **{"follow.poll_interval_s": 60.0,
                                  "checkpoint.every_rows": 100_000})
    cmd = CLI + ["train", "--data", logs, "--schema", os.path.join(logs, "schema.yaml"),
                 "--out", out, "--config", config, "--follow"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    progress = os.path.join(out, "progress.json")

    def waiting_for_data():
        if not os.path.exists(progress):
            return False
        with open(progress) as handle:
            return json.load(handle)["rows_end"] == 384

    _wait_for(waiting_for_data, proc)
    time.sleep(1.0)  # blocked in a 60 s wait for new partitions
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    assert time.time() - sent < 30  # did not sit out the poll interval
    assert "stopped by SIGTERM" in stderr.decode()
    assert _checkpoints(out) == [384] and _metrics(out)["stopped_by"] == "SIGTERM"

    write_logs(logs, shards=1, rows=100, day="2026-01-02", first_row=384)
    # The run's config keeps following; this resume reads what is there and ends.
    resumed = subprocess.run(CLI + ["train", "--data", logs, "--out", out, "--resume",
                                    "--set", "follow.enabled=false"],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = _metrics(out)
    assert metrics["rows_trained"] == 484 and metrics["rows_this_process"] == 100


def test_sigterm_mid_training_leaves_a_resumable_checkpoint(tmp_path):
    logs, out = str(tmp_path / "logs"), str(tmp_path / "run")
    write_logs(logs, shards=4, rows=300)
    config = _config(tmp_path, **{"checkpoint.every_rows": 100_000})
    rows_log = str(tmp_path / "rows.txt")
    cmd = DRIVER + ["--data", logs, "--schema", os.path.join(logs, "schema.yaml"), "--out", out,
                    "--config", config, "--rows-file", rows_log]
    proc = subprocess.Popen(cmd + ["--step-delay", "0.3"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(lambda: _last_rows_end(rows_log) >= 256, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stdout.read().decode()[-3000:]
    stopped_at = _last_rows_end(rows_log)
    assert _checkpoints(out) == [stopped_at] and stopped_at < 1200
    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ids = [i for process in _read_rows(rows_log) for _, batch in process for i in batch]
    assert ids == list(range(1200))  # nothing lost, nothing repeated


# ------------------------------------------------------- continuous + publish
LOADER = r"""
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matta_rec":
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, _Blocker())
import tensorflow as tf
for path in sys.argv[1:]:
    sig = tf.saved_model.load(path).signatures["serving_default"]
    out = sig(user_id=tf.constant(["u1", "u2"]), item_id=tf.constant(["i1", "i2"]),
              hour=tf.constant(["h00", "h01"]), x=tf.constant([0.1, -0.3]),
              row_id=tf.constant([0.0, 1.0]))
    assert out["probability"].shape == (2,), out
print("loaded", len(sys.argv) - 1)
"""


def test_follow_and_publish_gates_versions_and_holds_back_a_worse_candidate(tmp_path):
    logs, out, exports = tmp_path / "logs", str(tmp_path / "run"), str(tmp_path / "exports")
    write_logs(str(logs), shards=2, rows=900, day="2026-01-01")  # rows 0..1799
    config = _config(tmp_path, **{
        "batch_size": 100, "optimizer.settings.learning_rate": 0.02,
        "follow.poll_interval_s": 0.2, "follow.sentinel": "_DONE",
        "publish.every_rows": 1800, "publish.eval_rows": 900,
        "checkpoint.every_rows": 900, "metrics.window_rows": 900})

    def land():  # partitions arrive one after another; the second has inverted labels
        time.sleep(0.5)
        write_logs(str(logs), shards=2, rows=900, day="2026-01-02", first_row=1800,
                   inverted=True)
        time.sleep(0.5)
        write_logs(str(logs), shards=1, rows=900, day="2026-01-03", first_row=3600)
        (logs / "_DONE").write_text("")

    writer = threading.Thread(target=land)
    writer.start()
    run = subprocess.run(CLI + ["train", "--data", str(logs), "--schema",
                                str(logs / "schema.yaml"), "--out", out, "--config", config,
                                "--follow", "--publish", exports, "--sizes", "student"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    writer.join()
    assert run.returncode == 0, run.stderr[-3000:]
    assert _metrics(out)["rows_trained"] == 4500
    with open(os.path.join(out, "publications.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    first, worse = records  # a candidate after day 1, and one after the inverted day 2
    assert first["decision"] == "published" and first["version"] == 1
    assert first["rows_trained"] == 1800 and first["published_version"] is None
    # The candidate trained on the inverted partition, scored on the clean one after it
    # (before training on it) against the served version 1:
    assert worse["rows_trained"] == 3600 and worse["decision"] == "held_back", worse
    assert worse["window"] == {"rows": 900, "rows_end_first": 3601, "rows_end_last": 4500}
    assert worse["published_version"] == 1 and worse["label"] == "event"
    assert worse["candidate_auc_loss"] > worse["published_auc_loss"]
    assert os.listdir(os.path.join(exports, "student")) == ["1"]  # TF Serving keeps serving 1
    assert not os.listdir(os.path.join(out, "candidates"))  # the held-back one is gone
    assert "publish: held_back version 2 after 3600 rows" in run.stderr
    loaded = subprocess.run([sys.executable, "-c", LOADER, os.path.join(exports, "student", "1")],
                            cwd=str(tmp_path), env={k: v for k, v in ENV.items()
                                                    if k != "PYTHONPATH"},
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and "loaded 1" in loaded.stdout, loaded.stderr
