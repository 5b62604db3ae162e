"""ValidationMonitor: periodic validation, patience, best weights, checkpointed state.

Two models drive it. ``SignModel`` scores every row by ``x * a`` (Student) and
``x * b`` (TA): the sign of a weight sets a level's validation AucLoss to one
of three known values (``L`` for a positive weight, ``0.5`` for zero, ``1 - L``
for a negative one), so patience, ``min_delta``, the best points and the TA
flag are checked against exact expectations.  A tiny ``NestedRelevanceModel``
trained by ``MatTATrainer`` checks the restore end to end: after early
stopping and ``restore_best()`` an independent scoring of the validation set
gives exactly the logged best AucLoss, and every weight is the one of that
evaluation.
"""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from matta_rec.data.reader import LogStream
from matta_rec.data.schema import Schema
from matta_rec.errors import ConfigError, DataError
from matta_rec.training.config import RunConfig
from matta_rec.training.online import evaluate_holdout
from matta_rec.training.validation import ValidationMonitor

sys.path.insert(0, os.path.dirname(__file__))
from train_testlib import SCHEMA, TINY_MODEL, write_logs  # noqa: E402


class SignModel(keras.Model):
    """``{"student": x * a, "ta": x * b}`` on the raw numeric feature ``x``."""

    def __init__(self):
        super().__init__()
        self.a = self.add_weight(shape=(), initializer="ones", name="a")
        self.b = self.add_weight(shape=(), initializer="ones", name="b")

    def call(self, features, training=False):
        x = tf.reshape(tf.cast(features["x"], tf.float32), [-1])
        return {"student": x * self.a, "ta": x * self.b}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training shards and, from the same world on another day, validation shards."""
    root = tmp_path_factory.mktemp("valdata")
    train, valid = str(root / "train"), str(root / "valid")
    write_logs(train, shards=3, rows=300, seed=0)
    write_logs(valid, shards=1, rows=400, seed=0, day="2026-01-02")
    schema = Schema.from_dict(SCHEMA)
    stream = LogStream(valid, schema, batch_size=128)
    target = np.concatenate([y["target"] for _, y in stream.iter_numpy()])
    x = np.concatenate([f["x"] for f, _ in stream.iter_numpy()])
    good = 1.0 - roc_auc_score(np.r_[np.ones_like(target), np.zeros_like(target)], np.r_[x, x],
                               sample_weight=np.r_[target, 1 - target])
    return {"train": train, "valid": valid, "schema": schema, "stream": stream, "good": good}


def _sign_monitor(data, strategy=None, **kwargs):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = SignModel()
    monitor = ValidationMonitor(model, ("student", "ta"), data["stream"], strategy=strategy,
                                **kwargs)
    return model, monitor


def _set(model, a, b=1.0):
    model.a.assign(a)
    model.b.assign(b)


def test_sign_model_gives_the_three_known_scores(data):
    model, monitor = _sign_monitor(data)
    good = data["good"]
    assert good < 0.45
    for a, expected in ((1.0, good), (0.0, 0.5), (-1.0, 1.0 - good)):
        _set(model, a)
        entry = monitor.evaluate(rows_end=100 * (monitor.evaluations + 1), step=1)
        assert entry["target"]["student"]["auc_loss"] == pytest.approx(expected, abs=1e-8)
        assert entry["rows"] == 400 and "event" in entry


def test_patience_counts_evaluations_without_improvement(data):
    model, monitor = _sign_monitor(data, patience=2)
    _set(model, 0.0)
    assert monitor.evaluate(100, 1)["improved"] and monitor.wait == 0  # first: always best
    _set(model, 1.0)
    assert monitor.evaluate(200, 2)["improved"] and monitor.wait == 0
    _set(model, -1.0)
    entry = monitor.evaluate(300, 3)
    assert not entry["improved"] and entry["wait"] == 1 and not monitor.should_stop
    _set(model, 1.0)  # equal to the best: no improvement
    entry = monitor.evaluate(400, 4)
    assert not entry["improved"] and entry["wait"] == 2 and monitor.should_stop
    report = monitor.report()
    assert report["best"]["rows_end"] == 200 and report["best"]["evaluation"] == 2
    assert report["early_stopping"]["stopped"] is True
    assert report["early_stopping"]["stopped_at"]["rows_end"] == 400
    assert [e["wait"] for e in report["curve"]] == [0, 0, 1, 2]


def test_min_delta_decides_what_counts_as_an_improvement(data):
    gain = 0.5 - data["good"]  # from a = 0 to a = 1
    for min_delta, improves in ((gain * 0.9, True), (gain * 1.1, False)):
        model, monitor = _sign_monitor(data, patience=1, min_delta=min_delta)
        _set(model, 0.0)
        monitor.evaluate(100, 1)
        _set(model, 1.0)
        assert monitor.evaluate(200, 2)["improved"] is improves
        assert monitor.should_stop is (not improves)
        expected_best = data["good"] if improves else 0.5
        assert monitor.best["auc_loss"] == pytest.approx(expected_best, abs=1e-8)


def test_restore_best_loads_the_best_weights_and_reproduces_the_logged_score(data):
    model, monitor = _sign_monitor(data, patience=3)
    for a in (-1.0, 0.5, -0.25, 0.0):
        _set(model, a, b=-a)
        monitor.evaluate(100 * (monitor.evaluations + 1), monitor.evaluations + 1)
    assert monitor.best["evaluation"] == 2
    best = monitor.restore_best()
    assert best["auc_loss"] == pytest.approx(data["good"], abs=1e-8)
    assert float(model.a.numpy()) == 0.5 and float(model.b.numpy()) == -0.5  # the whole model
    again = evaluate_holdout(model, data["stream"], ("student", "ta"))
    assert again["target"]["student"]["auc_loss"] == best["auc_loss"]
    assert monitor.report()["restored"] is True


def test_no_copy_without_restore_best(data):
    model, monitor = _sign_monitor(data, restore_best=False)
    monitor.evaluate(100, 1)
    _set(model, -1.0)
    assert monitor.trackable.best_weights == [] or len(monitor.trackable.best_weights) == 0
    assert monitor.restore_best() is None and float(model.a.numpy()) == -1.0


def test_each_level_best_point_and_ta_overfits_flag(data):
    model, monitor = _sign_monitor(data)
    schedule = [(0.0, 1.0), (1.0, -1.0), (-1.0, 1.0)]  # the TA worse than the Student at 2
    for step, (a, b) in enumerate(schedule, start=1):
        _set(model, a, b)
        monitor.evaluate(rows_end=250 * step, step=step, epoch=step)
    report = monitor.report()
    best = report["levels_best"]
    assert best["ta"]["rows_end"] == 250 and best["ta"]["step"] == 1 and best["ta"]["epoch"] == 1
    assert best["student"]["rows_end"] == 500 and best["student"]["step"] == 2
    assert best["ta"]["auc_loss"] == pytest.approx(data["good"], abs=1e-8)
    assert [e["ta_overfits"] for e in report["curve"]] == [False, True, False]
    overfits = report["ta_overfits"]
    assert overfits["any"] is True and overfits["at_best"] is True and overfits["at_end"] is False
    (point,) = overfits["points"]
    assert point["evaluation"] == 2 and point["rows_end"] == 500
    assert point["ta_auc_loss"] > point["student_auc_loss"]
    assert "overfits" in monitor.describe(report["curve"][1])


def test_due_every_epoch_every_rows_and_at_the_end(data):
    _, by_epoch = _sign_monitor(data)
    assert not by_epoch.due(300, epoch=0)
    assert by_epoch.due(320, epoch=1)
    by_epoch.evaluate(320, 5, epoch=1)
    assert not by_epoch.due(600, epoch=1) and by_epoch.due(640, epoch=2)
    assert by_epoch.due(500, final=True) and not by_epoch.due(320, final=True)
    _, by_rows = _sign_monitor(data, every_rows=250)
    assert not by_rows.due(200) and by_rows.due(256)
    by_rows.evaluate(256, 4)
    assert not by_rows.due(500) and by_rows.due(512)


def _checkpoint(model, monitor):
    return tf.train.Checkpoint(model=model, validation=monitor.trackable)


def test_state_round_trips_through_a_checkpoint(data, tmp_path):
    model, monitor = _sign_monitor(data, patience=3)
    for a in (1.0, -1.0, 0.0):
        _set(model, a, b=2 * a)
        monitor.evaluate(100 * (monitor.evaluations + 1), monitor.evaluations + 7, epoch=1)
    path = _checkpoint(model, monitor).save(str(tmp_path / "ckpt"))

    model2, monitor2 = _sign_monitor(data, patience=3)
    _set(model2, 0.25, 0.25)
    _checkpoint(model2, monitor2).restore(path).assert_existing_objects_matched()
    assert monitor2.evaluations == 3 and monitor2.wait == 2 and monitor2.best == monitor.best
    assert monitor2.report()["curve"] == monitor.report()["curve"]
    assert float(model2.a.numpy()) == 0.0  # the model as saved (the last state)
    assert [float(v.numpy()) for v in monitor2.trackable.best_weights] == [1.0, 2.0]
    # The restored counter goes on: one more evaluation without improvement stops.
    _set(model2, -1.0)
    assert not monitor2.due(300, epoch=1) and monitor2.due(400, epoch=2)
    monitor2.evaluate(400, 10, epoch=2)
    assert monitor2.should_stop and monitor2.evaluations == 4
    assert monitor2.restore_best()["evaluation"] == 1 and float(model2.b.numpy()) == 2.0


def test_mirrored_copies_live_in_the_strategy_and_round_trip(data, tmp_path, mirrored_strategy):
    model, monitor = _sign_monitor(data, strategy=mirrored_strategy, patience=2)
    for copy in monitor.trackable.best_weights:
        assert isinstance(copy, tf.distribute.DistributedValues)
        assert mirrored_strategy.extended.variable_created_in_scope(copy)
    _set(model, 0.5, -0.5)
    monitor.evaluate(100, 1)
    _set(model, -1.0, 1.0)
    monitor.evaluate(200, 2)
    path = _checkpoint(model, monitor).save(str(tmp_path / "ckpt"))
    model2, monitor2 = _sign_monitor(data, strategy=mirrored_strategy, patience=2)
    _checkpoint(model2, monitor2).restore(path).assert_existing_objects_matched()
    assert monitor2.restore_best()["rows_end"] == 100
    for replica_value in mirrored_strategy.experimental_local_results(model2.a.value):
        assert float(replica_value.numpy()) == 0.5


# ------------------------------------------------- a real nested model, trained
def _train_until_stopped(data, strategy, model_overrides, patience, epochs=12, lr=0.01,
                         min_delta=0.0):
    from matta_rec.features import FeatureStats
    from matta_rec.models import ModelConfig, NestedRelevanceModel
    from matta_rec.training.config import LossConfig
    from matta_rec.training.distribute import make_train_step
    from matta_rec.training.trainer import MatTATrainer

    schema = data["schema"]
    stats = FeatureStats.fit(schema, LogStream(data["train"], schema, batch_size=256).iter_numpy(),
                             max_rows=600)
    stream = LogStream(data["train"], schema, batch_size=64, epochs=epochs)
    dataset = stream.dataset(with_position=True)
    keras.utils.set_random_seed(3)
    with strategy.scope():
        model = NestedRelevanceModel(schema, stats, ModelConfig(**{**TINY_MODEL, **model_overrides}))
        trainer = MatTATrainer(model, LossConfig(), levels=model.levels)
        trainer.compile(optimizer=keras.optimizers.Adam(lr))
    step_fn = make_train_step(strategy, trainer, "target", dataset.element_spec)
    monitor, snapshots, rows_end = None, {}, 0
    for features, labels, rows_end in dataset:
        if monitor is None:
            with strategy.scope():  # as the loop builds them: model, then optimizer slots
                model(features, training=False)
                trainer.optimizer.build(trainer.trainable_variables)
            monitor = ValidationMonitor(model, model.levels, data["stream"], patience=patience,
                                        min_delta=min_delta, strategy=strategy)
        step_fn(features, labels)
        rows_end = int(rows_end)
        epoch = stream.position_at(rows_end).epoch
        if monitor.due(rows_end, epoch):
            entry = monitor.evaluate(rows_end, int(trainer.optimizer.iterations.numpy()), epoch)
            snapshots[entry["evaluation"]] = [np.array(w.numpy()) for w in model.weights]
            if monitor.should_stop:
                break
    return model, monitor, snapshots


@pytest.mark.parametrize("overrides", [{}, {"mlp_dropout": 0.2}])
def test_early_stopping_restores_the_best_nested_model(data, overrides):
    model, monitor, snapshots = _train_until_stopped(
        data, tf.distribute.get_strategy(), overrides, patience=2, epochs=16, min_delta=0.005)
    report = monitor.report()
    assert monitor.should_stop, "the validation AucLoss of the tiny model plateaus in 16 epochs"
    assert report["evaluations"] < 16 and report["early_stopping"]["stopped"]
    best = report["best"]
    assert best["evaluation"] == report["evaluations"] - 2  # patience 2
    last = [np.array(w.numpy()) for w in model.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(last, snapshots[best["evaluation"]]))
    assert monitor.restore_best() == best
    for weight, expected in zip(model.weights, snapshots[best["evaluation"]]):
        np.testing.assert_array_equal(weight.numpy(), expected)
    again = evaluate_holdout(model, data["stream"], model.levels)
    assert again["target"]["student"]["auc_loss"] == best["auc_loss"]
    assert report["curve"][best["evaluation"] - 1]["target"]["student"]["auc_loss"] == best["auc_loss"]


def test_mirrored_batch_norm_model_restores_its_best_weights(data, mirrored_strategy):
    model, monitor, snapshots = _train_until_stopped(
        data, mirrored_strategy, {"mlp_norm": "batch"}, patience=1, epochs=3, lr=0.05)
    assert monitor.evaluations == 2 and not monitor.should_stop  # the best is the last one
    for weight in model.weights:  # move every weight away from the best point
        weight.assign(weight.numpy() + np.ones_like(weight.numpy()))
    best = monitor.best
    monitor.restore_best()
    for weight, expected in zip(model.weights, snapshots[best["evaluation"]]):
        np.testing.assert_array_equal(weight.numpy(), expected)
    again = evaluate_holdout(model, data["stream"], model.levels)
    assert again["target"]["student"]["auc_loss"] == best["auc_loss"]


# ------------------------------------------------------------ from_config
def _config(data, **overrides):
    return RunConfig.from_dict({"model": dict(TINY_MODEL), "data": {"valid": data["valid"]}},
                               overrides=overrides)


def test_from_config_builds_the_monitor_of_the_run(data):
    model = SignModel()
    cfg = _config(data, **{"early_stopping.patience": 4, "validation.every_rows": 500,
                           "loss.label": "event", "early_stopping.min_delta": 0.001})
    monitor = ValidationMonitor.from_config(cfg, model, ("student", "ta"), data["schema"],
                                            train_files=[os.path.join(data["train"], "x.parquet")])
    assert (monitor.level, monitor.label, monitor.patience, monitor.every_rows) == \
        ("student", "event", 4, 500)
    assert monitor.min_delta == 0.001 and monitor.data == data["valid"]
    assert ValidationMonitor.from_config(RunConfig.from_dict({}), model, ("student",),
                                         data["schema"]) is None


def test_from_config_refuses_bad_setups(data, tmp_path):
    model = SignModel()
    with pytest.raises(ConfigError, match="validation.level"):
        ValidationMonitor.from_config(_config(data, **{"validation.level": "teacher"}), model,
                                      ("student", "ta"), data["schema"])
    valid_files = [os.path.join(data["valid"], "dt=2026-01-02/hour=00/part-0.parquet")]
    with pytest.raises(ConfigError, match="also training shards") as info:
        ValidationMonitor.from_config(_config(data), model, ("student", "ta"), data["schema"],
                                      train_files=valid_files)
    assert info.value.key == "data.valid"
    (tmp_path / "empty").mkdir()
    cfg = RunConfig.from_dict({"data": {"valid": str(tmp_path / "empty")}})
    with pytest.raises(DataError, match="holds no shards"):
        ValidationMonitor.from_config(cfg, model, ("student", "ta"), data["schema"])


def test_config_keys_and_their_checks():
    cfg = RunConfig.from_dict({"data": {"valid": "v/"}, "early_stopping": {"patience": 3}})
    assert cfg.validation.every_rows is None and cfg.early_stopping.restore_best is True
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="--valid DIR"):
        RunConfig.from_dict({"early_stopping": {"patience": 3}})
    for bad in ({"early_stopping": {"patience": 0}}, {"early_stopping": {"min_delta": -1}},
                {"validation": {"every_rows": 0}}, {"validation": {"label": "click"}}):
        with pytest.raises(ConfigError):
            RunConfig.from_dict({"data": {"valid": "v/"}, **bad})


def test_train_valid_flag_sets_data_valid():
    from matta_rec.cli.main import build_parser
    from matta_rec.cli.train import overrides_of

    args = build_parser(load="train").parse_args(
        ["train", "--data", "d", "--out", "o", "--valid", "v/", "--set", "epochs=30"])
    assert overrides_of(args) == {"epochs": 30, "data.valid": "v/"}


@pytest.mark.slow
def test_train_run_with_valid_stops_early_and_keeps_the_best_weights(tmp_path):
    """End to end through the loop: an evaluation per epoch, early stopping
    (learning rate high enough to overfit 400 rows), the best weights in
    model.keras."""
    from train_testlib import tiny_config

    from matta_rec.training import load_run, train_run

    train, valid = str(tmp_path / "train"), str(tmp_path / "valid")
    write_logs(train, shards=2, rows=200)
    write_logs(valid, shards=1, rows=300, day="2026-02-01")
    overrides = {"epochs": 12, "data.valid": valid, "early_stopping.patience": 1,
                 "validation.label": "event", "optimizer.settings.learning_rate": 0.05,
                 "loss.label": "event"}
    metrics = train_run(tiny_config(**overrides), train, os.path.join(train, "schema.yaml"),
                        str(tmp_path / "run"))
    report = metrics["validation"]
    assert report["evaluations"] == len(report["curve"]) >= 2
    assert [e["epoch"] for e in report["curve"]] == list(range(1, report["evaluations"] + 1))
    assert metrics["stopped_by"] == "early_stopping" and report["early_stopping"]["stopped"]
    assert report["evaluations"] < 12 and report["best"]["evaluation"] < report["evaluations"]
    best = report["best"]
    # model.keras holds the best weights: scoring it on the validation set gives the best AucLoss.
    run = load_run(str(tmp_path / "run"))
    stream = LogStream(valid, run.schema, batch_size=1024)
    again = evaluate_holdout(run.model, stream, ("student", "ta"))
    assert again["event"]["student"]["auc_loss"] == pytest.approx(best["auc_loss"], abs=1e-7)
    # The holdout-free run still reports where each level peaked.
    assert set(report["levels_best"]) == {"student", "ta"}
