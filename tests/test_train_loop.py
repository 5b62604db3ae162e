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
    # The online curve continues across the crash: every row scored once.
    assert sum(e["rows"] for e in metrics["online"]["curve"]) == 1200


def test_cli_help_lists_every_option_and_bad_config_exits_2(tmp_path, capsys):
    from matta_rec.cli.main import main
    from matta_rec.cli.train import config_reference

    reference = config_reference()
    for key in ("loss.ramp.delay_steps", "loss.temperature", "optimizer.settings", "batch_size",
                "checkpoint.every_rows", "epochs", "mode", "strategy", "data.holdout_shards"):
        assert key in reference, key
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  ramp: {delay: 3}\n")
    code = main(["train", "--data", str(tmp_path), "--schema", "s.yaml", "--out",
                 str(tmp_path / "run"), "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "loss.ramp" in err and "delay" in err


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
