"""strategy: multi_worker with two worker processes on 127.0.0.1: each worker reads
only its own shards, every row is trained exactly once (zero-weight padding at
the uneven end), the result equals one process training the same global
batches, and kill -9 of one worker then --resume of both keeps exact-once."""

import json
import os
import sys
import time

import numpy as np
import pytest
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import TINY_MODEL  # noqa: E402
from worker_testlib import (  # noqa: E402
    SCHEMA,
    read_rows,
    start_workers,
    trained_ids,
    wait_all,
    write_uneven_logs,
)

from matta_rec.data.schema import Schema  # noqa: E402
from matta_rec.data.writers import write_shard  # noqa: E402
from matta_rec.errors import ConfigError  # noqa: E402
from matta_rec.training import load_run, train_run  # noqa: E402
from matta_rec.training.distribute import assign_shards  # noqa: E402

# Round-robin: worker 0 gets hours 00, 02, 04 (96 + 70 + 50 = 216 rows), worker 1
# hours 01, 03 (40 + 64 = 104). Local batches of 32: worker 1 runs out after 4
# steps (its 4th is 8 rows), worker 0 after 7 (its 7th is 24 rows).
SIZES = [96, 40, 70, 64, 50]


def _config(**overrides):
    cfg = {
        "model": dict(TINY_MODEL),
        "batch_size": 64,
        "strategy": "multi_worker",
        "optimizer": {"name": "sgd", "settings": {"learning_rate": 0.05}},
        "loss": {"ramp": {"kind": "linear", "delay_steps": 2, "ramp_steps": 4}},
        "data": {"stats_rows": 200},
        "checkpoint": {"every_rows": 128},
        "metrics": {"window_rows": 100, "progress": False},
    }
    for key, value in overrides.items():
        node = cfg
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


def _write_config(tmp_path, cfg):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _ids_of(logs, names):
    """row ids of the named shards (read back from the parquet files)."""
    import pyarrow.parquet as pq

    return sorted(int(v) for name in names
                  for v in pq.read_table(os.path.join(logs, name))["row_id"].to_numpy())


def _global_batches(rows_files, batch):
    """One shard holding the global batches the workers trained, in step order:
    for each step, worker 0's rows then worker 1's, padded to ``batch`` rows with
    zero-weight rows (as the workers pad)."""
    steps: dict = {}
    for worker, path in enumerate(rows_files):
        for _, rows_end, ids in read_rows(path)[0]:
            steps.setdefault(rows_end, {})[worker] = ids
    ids, pads = [], []
    for rows_end in sorted(steps):
        step = [i for worker in sorted(steps[rows_end]) for i in steps[rows_end][worker]]
        ids += step + [step[0]] * (batch - len(step))
        pads += [False] * len(step) + [True] * (batch - len(step))
    return ids, np.array(pads)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("logs"))
    write_uneven_logs(root, SIZES)
    return root


def test_assignment_never_moves_when_the_list_grows():
    first = assign_shards(["h00", "h01", "h02"], 2)
    assert first == [["h00", 0], ["h01", 1], ["h02", 0]]
    grown = assign_shards(["h01", "h02", "h03", "h04"], 2, first)  # h00 gone, two new
    assert grown[:3] == first and grown[3:] == [["h03", 1], ["h04", 0]]


def test_follow_mode_is_refused_under_multi_worker(logs, tmp_path):
    with pytest.raises(ConfigError, match="follow.enabled") as info:
        train_run(_config(**{"follow.enabled": True}), logs, os.path.join(logs, "schema.yaml"),
                  str(tmp_path / "run"))
    assert "strategy=mirrored" in str(info.value)


@pytest.mark.slow
def test_two_workers_read_disjoint_shards_and_match_one_process(logs, tmp_path):
    out = str(tmp_path / "run")
    rows_files = [str(tmp_path / f"rows-{i}.txt") for i in range(2)]
    procs = start_workers(logs, out, _write_config(tmp_path, _config()), rows_files)
    for code, text in wait_all(procs):
        assert code == 0, text[-4000:]
    with open(os.path.join(out, "metrics.json")) as handle:
        metrics = json.load(handle)
    names = sorted(fp["name"] for fp in metrics["input"]["train_shards"])
    shards = metrics["input"]["shards_read_by_worker"]
    # Disjoint shards, round-robin in time order, whose union is the stream.
    assert shards == [names[0::2], names[1::2]]
    assert metrics["input"]["rows_read_by_worker"] == [216, 104]
    with open(os.path.join(out, "workers.json")) as handle:
        assert json.load(handle)["shards"] == [[n, k % 2] for k, n in enumerate(names)]
    # Every row trained exactly once, each by the worker owning its shard.
    for worker, path in enumerate(rows_files):
        assert sorted(trained_ids(path)) == _ids_of(logs, shards[worker])
    assert metrics["rows_trained"] == sum(SIZES) and metrics["steps"] == 7
    assert sum(window["rows"] for window in metrics["online"]["curve"]) == sum(SIZES)

    # One process over the same global batches (zero-weight padding included),
    # with the workers' preprocessing statistics.
    import pyarrow.parquet as pq

    ids, pads = _global_batches(rows_files, 64)
    by_id = {}
    for name in names:
        table = pq.read_table(os.path.join(logs, name)).to_pydict()
        for k, row_id in enumerate(table["row_id"]):
            by_id[int(row_id)] = {c: table[c][k] for c in table}
    cols = {c: [by_id[i][c] for i in ids] for c in by_id[0]}
    cols["w"] = np.where(pads, 0.0, np.asarray(cols["w"], np.float32)).astype(np.float32)
    ref_logs = str(tmp_path / "ref-logs")
    write_shard(os.path.join(ref_logs, "part-0.parquet"), cols, Schema.from_dict(SCHEMA))
    from matta_rec.features import FeatureStats
    from matta_rec.training.run_dir import build_model

    stats = FeatureStats.load(os.path.join(out, "preprocessing.json"))
    ref = train_run(_config(strategy="default"), ref_logs, os.path.join(logs, "schema.yaml"),
                    str(tmp_path / "ref"), model_builder=lambda c, s, _: build_model(c, s, stats))
    assert ref["steps"] == metrics["steps"]
    for key in ("loss", "student_logloss", "ta_logloss", "student_auroc"):
        assert metrics["final"][key] == pytest.approx(ref["final"][key], rel=1e-4), key
    for a, b in zip(load_run(str(tmp_path / "ref")).model.weights, load_run(out).model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_kill_one_worker_then_resume_both_is_exact_once(tmp_path):
    logs = str(tmp_path / "logs")
    write_uneven_logs(logs, SIZES + [30])  # the last shard is held out
    out = str(tmp_path / "run")
    rows_files = [str(tmp_path / f"rows-{i}.txt") for i in range(2)]
    # A 30 s collective timeout (default 300): the survivor must fail soon.
    config = _write_config(tmp_path, _config(**{"checkpoint.every_rows": 64,
                                                "data.holdout_shards": 1,
                                                "distribute.collective_timeout_s": 30}))
    procs = start_workers(logs, out, config, rows_files, step_delay=1.0)
    deadline = time.time() + 300
    while len(read_rows(rows_files[1])[0]) < 3:  # worker 1 has trained 3 steps
        assert time.time() < deadline and procs[1].poll() is None, procs[1].stdout.read()[-3000:]
        time.sleep(0.2)
    procs[1].kill()
    killed = time.time()
    code, text = wait_all(procs[:1], timeout=120)[0]
    assert code != 0, text[-3000:]
    assert time.time() - killed < 90
    procs[1].wait()

    # The list grows: two new hours after the held-out one.
    write_uneven_logs(logs, [33, 20], first_row=sum(SIZES) + 30, first_hour=len(SIZES) + 1)
    with open(os.path.join(out, "workers.json")) as handle:
        before = json.load(handle)["shards"]
    procs = start_workers(logs, out, config, rows_files, resume=True)
    for code, text in wait_all(procs):
        assert code == 0, text[-4000:]
    with open(os.path.join(out, "workers.json")) as handle:
        after = json.load(handle)["shards"]
    assert after[:len(before)] == before and len(after) == len(before) + 2
    with open(os.path.join(out, "metrics.json")) as handle:
        metrics = json.load(handle)
    holdout = metrics["input"]["holdout_shards"]
    assert holdout == ["dt=2026-01-01/hour=05/part-0.parquet"]
    shards = metrics["input"]["shards_read_by_worker"]
    assert not set(shards[0]) & set(shards[1])
    train = sorted(set(shards[0]) | set(shards[1]))
    assert len(train) == len(SIZES) + 2 and not set(train) & set(holdout)
    ids = sorted(trained_ids(rows_files[0]) + trained_ids(rows_files[1]))
    assert ids == _ids_of(logs, train)  # every training row, each exactly once
    assert metrics["rows_trained"] == len(ids) == sum(metrics["input"]["rows_read_by_worker"])
    assert metrics["resumes"] == 1
