"""The online loop: run directory, metrics.json, modes, kill -9 and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from matta_rec.errors import ConfigError
from matta_rec.training import load_run, train_run

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import tiny_config, write_logs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    write_logs(str(root), shards=4, rows=300)
    return str(root)


@pytest.fixture(scope="module")
def finished_run(logs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "run")
    metrics = train_run(tiny_config(**{"data.holdout_shards": 1}), logs,
                        os.path.join(logs, "schema.yaml"), out)
    return out, metrics


def test_run_directory_and_metrics(finished_run):
    out, metrics = finished_run
    for name in ("config.yaml", "schema.yaml", "preprocessing.json", "metrics.json",
                 "model.keras", "checkpoints", "tensorboard", "progress.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert metrics["rows_trained"] == 900 and metrics["train_shards"] == 3
    assert metrics["steps"] == 15  # ceil(900 / 64)
    with open(os.path.join(out, "metrics.json")) as handle:
        assert json.load(handle)["rows_trained"] == 900
    curve = metrics["online"]["curve"]
    assert sum(e["rows"] for e in curve) == 900  # every trained row scored exactly once
    assert [e["rows_end"] for e in curve] == sorted(e["rows_end"] for e in curve)
    assert {"student", "ta"} <= set(curve[0]["target"]) and "event" in curve[0]
    hold = metrics["holdout"]
    assert hold["rows"] == 300 and hold["shards"] == ["dt=2026-01-01/hour=03/part-0.parquet"]
    for level in ("student", "ta"):
        h = hold["event"][level]
        assert 0 <= h["auc_loss"] <= 1 and h["auc_loss"] == pytest.approx(1 - h["auroc"])
    assert 0.5 < hold["teacher_vs_event"]["auroc"] <= 1
    events = os.listdir(os.path.join(out, "tensorboard", "train"))
    assert any(e.startswith("events.out.tfevents") for e in events)


def test_load_run_gives_the_trained_model(finished_run, logs):
    out, metrics = finished_run
    run = load_run(out)
    assert run.config.mode == "matta" and run.metrics["rows_trained"] == 900
    assert run.schema.feature_names[0] == "user_id"
    from matta_rec.data.reader import LogStream

    features, _ = next(iter(LogStream(logs, run.schema, batch_size=8).dataset()))
    out_logits = run.model(features)
    assert set(out_logits) == {"student", "ta"} and out_logits["student"].shape == (8,)


def test_refuses_to_overwrite_and_resume_of_finished_run_trains_nothing(finished_run, logs):
    out, metrics = finished_run
    with pytest.raises(ConfigError, match="--resume"):
        train_run(tiny_config(), logs, os.path.join(logs, "schema.yaml"), out)
    with open(os.path.join(out, "preprocessing.json")) as handle:
        stats_before = handle.read()
    again = train_run(None, logs, None, out, resume=True)
    assert again["rows_this_process"] == 0 and again["rows_trained"] == 900
    assert again["resumed_from_rows"] == 900
    with open(os.path.join(out, "preprocessing.json")) as handle:
        assert handle.read() == stats_before  # loaded, not refitted
    with pytest.raises(ConfigError, match="nothing to resume"):
        train_run(None, logs, None, os.path.join(out, "missing"), resume=True)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["student", "matta_no_distill"])
def test_modes(mode, logs, tmp_path):
    metrics = train_run(tiny_config(mode=mode, **{"data.max_rows": 256}), logs,
                        os.path.join(logs, "schema.yaml"), str(tmp_path / "run"))
    assert metrics["rows_trained"] == 256
    if mode == "student":
        assert metrics["levels"] == ["student"] and "student_distill" not in metrics["final"]
    else:
        assert metrics["levels"] == ["student", "ta"]
        assert metrics["final"]["student_distill"] > 0  # measured, but weighted by 0
    cfg = load_run(str(tmp_path / "run")).config
    assert cfg.mode == mode


def _read_trained_rows(path):
    """Per process segment: list of (rows_end, ids) lines; '# resume N' starts a segment."""
    segments, current = [], None
    with open(path) as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn last line of a killed process
            if line.startswith("# resume"):
                current = {"resume": int(line.split()[2]), "batches": []}
                segments.append(current)
                continue
            if current is None:
                current = {"resume": 0, "batches": []}
                segments.append(current)
            parts = line.split()
            current["batches"].append((int(parts[0]), [int(v) for v in parts[1:]]))
    return segments


@pytest.mark.slow
def test_kill_minus_nine_and_resume_trains_every_row_exactly_once(logs, tmp_path):
    out = str(tmp_path / "run")
    config = tiny_config(**{"checkpoint.every_rows": 256, "metrics.window_rows": 100})
    config_path = tmp_path / "run.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(config))
    rows_log = str(tmp_path / "trained_rows.txt")
    # tests/train_driver.py: train_run with a callback that logs the trained
    # row ids batch by batch (before any checkpoint) and slows every step.
    cmd = [sys.executable, os.path.join(ROOT, "tests", "train_driver.py"), "--data", logs,
           "--schema", os.path.join(logs, "schema.yaml"), "--out", out,
           "--config", str(config_path), "--rows-file", rows_log]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd + ["--step-delay", "0.4"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt_dir = os.path.join(out, "checkpoints")
    deadline = time.time() + 240
    # Kill once two checkpoints exist and the run has trained past the last one
    # (the trained-rows log is written batch by batch, before any checkpoint).
    while time.time() < deadline:
        states = [int(f[6:-5]) for f in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else [])
                  if f.startswith("state-") and f.endswith(".json")]
        trained = 0
        if os.path.exists(rows_log):
            with open(rows_log) as handle:
                lines = [ln for ln in handle.read().split("\n")[:-1] if ln and ln[0] != "#"]
            trained = int(lines[-1].split()[0]) if lines else 0
        if len(states) >= 2 and trained > max(states):
            break
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "metrics.json"))  # really died mid-stream
    crashed = load_run(out)  # no model.keras: rebuilt and restored from the last checkpoint
    assert crashed.metrics == {} and crashed.config.checkpoint.every_rows == 256
    from matta_rec.data.reader import LogStream

    features, _ = next(iter(LogStream(logs, crashed.schema, batch_size=4).dataset()))
    assert set(crashed.model(features)) == {"student", "ta"}

    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "read (and trained) again" in resumed.stderr
    with open(os.path.join(out, "metrics.json")) as handle:
        metrics = json.load(handle)
    checkpoint_rows = metrics["resumed_from_rows"]
    assert 0 < checkpoint_rows < 1200 and metrics["rows_trained"] == 1200

    first, second = _read_trained_rows(rows_log)
    assert second["resume"] == checkpoint_rows
    # The killed run trained past its checkpoint; those updates died with it.
    assert max(r for r, _ in first["batches"]) > checkpoint_rows
    kept = [i for r, ids in first["batches"] if r <= checkpoint_rows for i in ids]
    redone = [i for r, ids in first["batches"] if r > checkpoint_rows for i in ids]
    after = [i for _, ids in second["batches"] for i in ids]
    assert metrics["rows_reread"] >= len(redone) > 0
    union = kept + after
    assert sorted(union) == list(range(1200))  # every row once: none skipped, none twice
    assert union == list(range(1200))  # and in stream order
    assert metrics["rows_this_process"] == 1200 - checkpoint_rows
    # The last line reports this process's rows and rate apart from the run's total.
    assert (f"trained {1200 - checkpoint_rows} rows in " in resumed.stderr
            and "the run has trained 1200 rows in all" in resumed.stderr)
    # The online curve continues across the crash: every row scored once.
    assert sum(e["rows"] for e in metrics["online"]["curve"]) == 1200


def test_a_checkpoint_of_another_model_is_refused_not_half_restored(finished_run, tmp_path):
    """Without model.keras a run is rebuilt from config.yaml and its last
    checkpoint; a model with variables the checkpoint lacks (here the
    per-level weights of matta_no_sharing) must fail naming the checkpoint,
    not come back with those variables at their initial values."""
    import shutil

    import yaml

    out, _ = finished_run
    copy = str(tmp_path / "run")
    shutil.copytree(out, copy)
    os.remove(os.path.join(copy, "model.keras"))
    assert load_run(copy).model is not None  # the same config restores
    path = os.path.join(copy, "config.yaml")
    with open(path) as handle:
        config = yaml.safe_load(handle)
    config["mode"] = "matta_no_sharing"
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    with pytest.raises(ConfigError, match="does not hold the variables of the model") as info:
        load_run(copy)
    message = str(info.value)
    assert "ckpt-" in message and "new --out" in message
    assert "_level0" in message  # names the variables the checkpoint lacks


def test_cli_help_lists_every_option_and_bad_config_exits_2(tmp_path, capsys):
    from matta_rec.cli.main import main
    from matta_rec.cli.train import config_reference

    reference = config_reference()
    for key in ("loss.ramp.delay_steps", "loss.temperature", "optimizer.settings", "batch_size",
                "checkpoint.every_rows", "epochs", "mode", "strategy", "data.holdout_shards",
                "distribute.collective_timeout_s"):
        assert key in reference, key
    assert "debug" not in reference  # test hooks are callbacks, not user configuration
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  ramp: {delay: 3}\n")
    code = main(["train", "--data", str(tmp_path), "--schema", "s.yaml", "--out",
                 str(tmp_path / "run"), "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "loss.ramp" in err and "delay" in err
    code = main(["train", "--data", str(tmp_path), "--schema", "s.yaml", "--out",
                 str(tmp_path / "run"), "--set", "distribute.collective_timeout_s=0"])
    err = capsys.readouterr().err
    assert code == 2 and "distribute.collective_timeout_s must be a positive number" in err


@pytest.mark.slow
def test_shampoo_run_reports_root_failures(logs, tmp_path):
    """Shampoo's failure counters reach metrics.json (and the progress logs)."""
    config = tiny_config(**{
        "data.max_rows": 512,
        "optimizer.name": "shampoo",
        "optimizer.settings": {"learning_rate": 0.01, "start_preconditioning_step": 2,
                               "preconditioning_frequency": 2},
    })
    metrics = train_run(config, logs, os.path.join(logs, "schema.yaml"), str(tmp_path / "run"))
    assert metrics["optimizer"]["name"] == "shampoo"
    assert metrics["optimizer"]["shampoo_root_failures"] == 0
    assert metrics["optimizer"]["shampoo_skipped_updates"] == 0
    assert metrics["steps"] > 2  # preconditioned steps were taken


class _Recorder:
    """Builds a TrainingCallback that records every event in order."""

    @staticmethod
    def make():
        from matta_rec.training import TrainingCallback

        class Recorder(TrainingCallback):
            def __init__(self):
                self.events = []

            def on_train_begin(self, info):
                self.events.append(("begin", info))

            def on_batch_end(self, rows_end, features, labels, logits):
                self.events.append(("batch", rows_end, features["row_id"].reshape(-1).tolist(),
                                    sorted(labels), {k: v.shape for k, v in logits.items()}))

            def on_checkpoint(self, rows_end):
                self.events.append(("checkpoint", rows_end,
                                    sorted(os.listdir(os.path.join(self.run_dir, "checkpoints")))))

            def on_train_end(self, metrics):
                self.events.append(("end", metrics))

        return Recorder()


def test_callbacks_see_every_trained_row_once_and_each_checkpoint_after_its_batch(logs, tmp_path):
    out = str(tmp_path / "run")
    recorder = _Recorder.make()
    recorder.run_dir = out
    metrics = train_run(tiny_config(**{"data.max_rows": 300, "checkpoint.every_rows": 128}), logs,
                        os.path.join(logs, "schema.yaml"), out, callbacks=[recorder])
    kinds = [e[0] for e in recorder.events]
    assert kinds[0] == "begin" and kinds[-1] == "end" and kinds.count("begin") == 1
    info = recorder.events[0][1]
    assert (info.rows_start, info.resumed, info.chief) == (0, False, True)
    assert info.levels == ("student", "ta") and info.run_dir == out
    assert info.planned_rows == 300  # data.max_rows caps the Parquet footers' 1200 rows
    batches = [e for e in recorder.events if e[0] == "batch"]
    ids = [i for e in batches for i in e[2]]
    assert ids == list(range(300))  # cut at data.max_rows, in stream order, none twice
    assert [e[1] for e in batches] == [64, 128, 192, 256, 300]
    assert all(e[3] == ["event", "target"] for e in batches)
    assert all(shapes == {"student": (len(e[2]),), "ta": (len(e[2]),)}
               for e in batches for shapes in [e[4]])
    # A checkpoint follows the batch it covers, and is on disk when announced.
    checkpoints = [(i, e) for i, e in enumerate(recorder.events) if e[0] == "checkpoint"]
    assert [e[1] for _, e in checkpoints] == [128, 256, 300]
    for index, event in checkpoints:
        assert recorder.events[index - 1][:2] == ("batch", event[1])
        assert f"state-{event[1]}.json" in event[2]
    assert recorder.events[-1][1] is metrics


def test_callbacks_must_be_training_callbacks(logs, tmp_path):
    with pytest.raises(TypeError, match=r"callbacks\[0\] must be a matta_rec.training.TrainingCallback"):
        train_run(tiny_config(), logs, os.path.join(logs, "schema.yaml"), str(tmp_path / "run"),
                  callbacks=[lambda *a: None])
    assert not os.path.exists(str(tmp_path / "run"))  # refused before any work


def test_progress_off_a_terminal_is_plain_lines_on_stderr(logs, tmp_path, capsys):
    """Under pytest stdout is not a terminal: no progress bar, a plain final
    line with the total from the Parquet footers; metrics.progress: false is silent."""
    config = tiny_config(**{"data.max_rows": 256, "metrics.progress": True})
    train_run(config, logs, os.path.join(logs, "schema.yaml"), str(tmp_path / "on"))
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("[matta-rec train] rows ")]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("[matta-rec train] rows 256/256 (100.0%) - ")
    assert " rows/s - done in " in lines[0] and " - step 4" in lines[0] and " - loss " in lines[0]
    assert "Unknown" not in captured.out + captured.err and "━" not in captured.out
    config["metrics"]["progress"] = False
    train_run(config, logs, os.path.join(logs, "schema.yaml"), str(tmp_path / "off"))
    captured = capsys.readouterr()
    assert "] rows " not in captured.err and captured.out == ""
