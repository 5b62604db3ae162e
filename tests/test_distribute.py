"""tf.distribute: MirroredStrategy on two logical CPUs and MultiWorkerMirroredStrategy
with two worker processes on 127.0.0.1 give the single-device result.

Under multi_worker each worker reads its own shards (round-robin in time order)
and global batch k is the concatenation of the workers' local batches k; the
logs here are shards of exactly one local batch (32 rows), so global batch k is
shards 2k and 2k+1: the same rows, in the same order, as one process reads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml

from matta_rec.training import load_run, train_run

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import tiny_config  # noqa: E402
from worker_testlib import free_ports, write_uneven_logs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


# SGD: the update is linear in the gradient, so a wrong gradient scale across
# replicas (mean instead of sum, or per-replica means) shows at once.
SGD = {"optimizer.name": "sgd", "optimizer.settings": {"learning_rate": 0.05}}
# Shampoo preconditioning from step 2 with roots every 2 steps: the 6 steps
# hold statistics, two root recomputations and preconditioned updates. The
# statistics of 6 small batches are nearly singular; epsilon 1e-2 (relative
# to the largest eigenvalue) keeps the inverse roots from amplifying the
# float rounding of a different all-reduce order past the tolerance (at the
# default 1e-6 the weights differ by up to 7e-5, still far below what a
# replica training on its own gradients would give).
SHAMPOO = {
    "optimizer.name": "shampoo",
    "optimizer.settings": {
        "learning_rate": 0.01,
        "start_preconditioning_step": 2,
        "preconditioning_frequency": 2,
        "epsilon": 1e-2,
    },
}


def _config(strategy, optimizer=SGD):
    return tiny_config(strategy=strategy, **{
        **optimizer,
        "data.max_rows": 330,  # 5 full batches + a short one (uneven split)
        "checkpoint.every_rows": 128,
    })


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("logs"))
    write_uneven_logs(root, [32] * 12)  # one local batch per shard (see above)
    return root


@pytest.fixture(scope="module")
def single(logs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single") / "run")
    metrics = train_run(_config("default"), logs, os.path.join(logs, "schema.yaml"), out)
    return out, metrics


def _weights(run_dir):
    return [v.numpy() for v in load_run(run_dir).model.weights]


def _assert_same_training(single, metrics, out):
    ref_dir, ref = single
    assert metrics["rows_trained"] == ref["rows_trained"] == 330
    assert metrics["steps"] == ref["steps"] == 6
    for key in ("loss", "student_logloss", "ta_logloss", "student_distill"):
        assert metrics["final"][key] == pytest.approx(ref["final"][key], rel=1e-4), key
    for a, b in zip(_weights(ref_dir), _weights(out)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mirrored_two_logical_cpus_matches_single_device(single, logs, tmp_path):
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py configures them)")
    out = str(tmp_path / "run")
    metrics = train_run(_config("mirrored"), logs, os.path.join(logs, "schema.yaml"), out)
    assert metrics["replicas"] == 2
    _assert_same_training(single, metrics, out)


def _train_multi_worker(config, logs, tmp_path):
    """Train with two worker processes on 127.0.0.1; returns (metrics, run dir)."""
    out = str(tmp_path / "run")
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                         "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, "-m", "matta_rec.cli.main", "train", "--data", logs,
               "--schema", os.path.join(logs, "schema.yaml"), "--out", out,
               "--config", str(config_path)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    for proc, text in zip(procs, outputs):
        assert proc.returncode == 0, text[-4000:]
    with open(os.path.join(out, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["replicas"] == 2 and metrics["strategy"] == "multi_worker"
    # Worker 0 read shards 0, 2, .., 10 (cut at data.max_rows in its 6th step),
    # worker 1 shards 1, 3, .., 9: disjoint, 330 rows in all.
    assert metrics["input"]["rows_read_by_worker"] == [170, 160]
    shards = metrics["input"]["shards_read_by_worker"]
    assert [len(s) for s in shards] == [6, 5] and not set(shards[0]) & set(shards[1])
    # Only the chief writes the run directory; the other worker cleans up.
    assert not any(name.startswith(".worker-") for name in os.listdir(out))
    return metrics, out


def test_multi_worker_two_processes_matches_single_device(single, logs, tmp_path):
    metrics, out = _train_multi_worker(_config("multi_worker"), logs, tmp_path)
    _assert_same_training(single, metrics, out)


def test_shampoo_under_multi_worker_matches_single_device(logs, tmp_path):
    """Shampoo's statistics, roots and preconditioned steps under
    MultiWorkerMirroredStrategy (all-reduced gradients, every worker computing
    the same roots) give the single-device run."""
    ref = str(tmp_path / "single")
    ref_metrics = train_run(_config("default", SHAMPOO), logs, os.path.join(logs, "schema.yaml"), ref)
    metrics, out = _train_multi_worker(_config("multi_worker", SHAMPOO), logs, tmp_path)
    assert metrics["optimizer"]["shampoo_root_failures"] == 0
    _assert_same_training((ref, ref_metrics), metrics, out)


def test_trainer_fit_under_mirrored_strategy_matches_single_device():
    """MatTATrainer.train_step alone (Keras fit) under MirroredStrategy."""
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices")
    import keras

    from test_trainer import batch, tiny_nested
    from matta_rec.training.trainer import MatTATrainer

    x, y = batch(n=256, seed=3)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    results = {}
    from matta_rec.training.distribute import make_strategy

    # The process-wide MirroredStrategy train_run uses (a second one would
    # collide with it on collective-op keys).
    for name, strategy in (("single", tf.distribute.get_strategy()),
                           ("mirrored", make_strategy("mirrored"))):
        with strategy.scope():
            model = tiny_nested(seed=5)
            trainer = MatTATrainer(model, {"distill_weight": 0.5})
            trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        hist = trainer.fit(ds, epochs=2, verbose=0, shuffle=False)
        results[name] = (hist.history, [v.numpy() for v in model.weights])
    (h1, w1), (h2, w2) = results["single"], results["mirrored"]
    assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-5)
    assert h1["student_auroc"] == pytest.approx(h2["student_auroc"], abs=1e-6)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
