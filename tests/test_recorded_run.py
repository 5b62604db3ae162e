"""Behaviour lock: a fixed-seed run gives the metrics recorded in ``tests/data``.

Refactors must not move the numbers.  A change that moves them on purpose
re-records them in the same commit (and says why in its message):

    .venv/bin/python tests/test_recorded_run.py --record

The comparison is to 1e-6, on the machine the recording was made on (float
reductions may differ in the last bits elsewhere; CI runs on the same kind).
"""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import tiny_config, write_logs  # noqa: E402

RECORD = os.path.join(os.path.dirname(__file__), "data", "recorded_runs.json")

#: name -> config overrides of the recorded runs (tiny logs, holdout of one shard).
RUNS = {
    "matta_adam": {"data.holdout_shards": 1},
    "matta_shampoo": {
        "data.holdout_shards": 1,
        "optimizer.name": "shampoo",
        "optimizer.settings": {"learning_rate": 0.01, "preconditioning_frequency": 3,
                               "start_preconditioning_step": 3, "grafting": "adam"},
    },
    "student": {"data.holdout_shards": 1, "mode": "student"},
}


def _numbers(node, prefix=""):
    """Every number of a metrics tree as ``{dotted.path: value}`` (timings left out)."""
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("wall_s", "rows_per_s"):
                continue
            out.update(_numbers(value, f"{prefix}{key}."))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.update(_numbers(value, f"{prefix}{i}."))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        out[prefix[:-1]] = float(node)
    return out


def run_all(tmp_root: str) -> dict:
    import keras

    from matta_rec.training import train_run

    logs = os.path.join(tmp_root, "logs")
    write_logs(logs, shards=4, rows=300)
    recorded = {}
    for name, overrides in RUNS.items():
        keras.utils.set_random_seed(1234)
        metrics = train_run(tiny_config(**overrides), logs, os.path.join(logs, "schema.yaml"),
                            os.path.join(tmp_root, name))
        recorded[name] = {key: metrics[key] for key in
                          ("rows_trained", "steps", "final", "online", "holdout")}
    return recorded


@pytest.mark.slow
def test_same_seed_gives_the_recorded_metrics(tmp_path):
    with open(RECORD) as handle:
        expected = json.load(handle)
    got = run_all(str(tmp_path))
    assert set(got) == set(expected)
    for name in expected:
        want, have = _numbers(expected[name]), _numbers(got[name])
        assert set(have) == set(want), f"{name}: metrics keys changed"
        bad = {k: (want[k], have[k]) for k in want
               if not np.isclose(have[k], want[k], rtol=0, atol=1e-6)}
        assert not bad, f"{name}: metrics moved (recorded, now): {bad}"


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    import conftest  # noqa: F401  (same TF set-up as the suite: two logical CPUs, quiet logs)

    with tempfile.TemporaryDirectory() as tmp:
        result = run_all(tmp)
    os.makedirs(os.path.dirname(RECORD), exist_ok=True)
    with open(RECORD, "w") as handle:
        json.dump(result, handle, indent=1, sort_keys=True)
    print(f"recorded {len(result)} runs in {RECORD}")
