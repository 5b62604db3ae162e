"""Learning-rate schedules: values against NumPy, serialisation, Adam / Shampoo, config."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from matta_rec.errors import ConfigError
from matta_rec.optimizers import Shampoo
from matta_rec.training.config import RunConfig, ScheduleConfig, schedule_depends_on_length
from matta_rec.training.run_dir import get_optimizer
from matta_rec.training.schedules import (
    WarmupDecay,
    build_schedule,
    planned_steps,
    resolve_schedule,
)


def np_schedule(t, peak, kind, warmup=0, decay=None, alpha=0.0, rate=0.5):
    """The module docstring's formula, step by step in float64."""
    warm = min(1.0, (t + 1) / warmup) if warmup else 1.0
    s = max(t - warmup, 0)
    if kind == "constant":
        factor = 1.0
    elif kind == "cosine":
        factor = alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(s, decay) / decay))
    elif kind == "linear":
        factor = 1 - (1 - alpha) * min(s, decay) / decay
    else:
        factor = max(rate ** math.floor(s / decay), alpha)
    return peak * warm * factor


CASES = [
    dict(kind="constant", warmup=10),
    dict(kind="cosine", warmup=0, decay=50, alpha=0.0),
    dict(kind="cosine", warmup=20, decay=80, alpha=0.1),
    dict(kind="linear", warmup=5, decay=40, alpha=0.25),
    dict(kind="step", warmup=0, decay=7, rate=0.5),
    dict(kind="step", warmup=3, decay=10, rate=0.3, alpha=0.05),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['kind']}-w{c['warmup']}")
def test_values_match_the_formula(case):
    peak = 0.02
    schedule = WarmupDecay(peak, kind=case["kind"], warmup_steps=case["warmup"],
                           decay_steps=case.get("decay"), alpha=case.get("alpha", 0.0),
                           decay_rate=case.get("rate", 0.5))
    steps = np.arange(0, 160)
    got = np.array([float(schedule(tf.constant(t, tf.int64))) for t in steps])
    want = np.array([np_schedule(t, peak, **case) for t in steps])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    if case["warmup"]:
        assert got[case["warmup"] - 1] == pytest.approx(peak)
        assert got[0] == pytest.approx(peak / case["warmup"])


def test_cosine_reaches_its_floor_and_stays():
    schedule = WarmupDecay(1.0, kind="cosine", warmup_steps=10, decay_steps=90, alpha=0.2)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(55)) == pytest.approx(0.2 + 0.8 * 0.5)  # half way
    assert float(schedule(100)) == pytest.approx(0.2) and float(schedule(10_000)) == pytest.approx(0.2)


def test_get_config_round_trips_through_keras_serialisation():
    schedule = WarmupDecay(0.003, kind="step", warmup_steps=4, decay_steps=9, alpha=0.1,
                           decay_rate=0.7)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(again, WarmupDecay) and again.get_config() == schedule.get_config()
    for t in (0, 3, 4, 20, 100):
        assert float(again(t)) == float(schedule(t))


@pytest.mark.parametrize("make", [
    lambda lr: keras.optimizers.Adam(learning_rate=lr),
    lambda lr: keras.optimizers.SGD(learning_rate=lr),
    lambda lr: Shampoo(learning_rate=lr, start_preconditioning_step=2, preconditioning_frequency=1,
                       block_size=4),
], ids=["adam", "sgd", "shampoo"])
def test_optimizers_step_with_the_scheduled_rate(make):
    """An optimizer given the schedule moves its weights exactly like the same
    optimizer whose constant rate is set to the schedule's value before each step."""
    schedule = WarmupDecay(0.05, kind="cosine", warmup_steps=2, decay_steps=4, alpha=0.1)
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(7)]
    scheduled, manual = make(schedule), make(float(schedule(0)))
    w1, w2 = keras.Variable(start), keras.Variable(start)
    for t, g in enumerate(grads):
        manual.learning_rate = float(schedule(t))
        scheduled.apply_gradients([(tf.constant(g), w1)])
        manual.apply_gradients([(tf.constant(g), w2)])
        assert float(scheduled.learning_rate) == pytest.approx(float(schedule(t + 1)))
    np.testing.assert_allclose(w1.numpy(), w2.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(w1.numpy(), start)


def test_optimizer_config_round_trips_with_its_schedule():
    for optimizer in (keras.optimizers.Adam(learning_rate=WarmupDecay(0.01, "linear", 3, 30)),
                      Shampoo(learning_rate=WarmupDecay(0.01, "cosine", 0, 30), weight_decay=1e-4)):
        again = type(optimizer).from_config(optimizer.get_config())
        assert isinstance(again._learning_rate, WarmupDecay)
        assert again._learning_rate.get_config() == optimizer._learning_rate.get_config()


# ------------------------------------------------------------------ config
def test_get_optimizer_builds_the_schedule_and_resolves_auto():
    opt = get_optimizer("adam", {"learning_rate": 0.01, "weight_decay": 1e-4},
                        schedule={"kind": "cosine", "warmup_steps": 100}, total_steps=1000)
    assert isinstance(opt._learning_rate, WarmupDecay)
    assert opt._learning_rate.decay_steps == 900 and opt.weight_decay == pytest.approx(1e-4)
    assert float(opt.learning_rate) == pytest.approx(0.01 / 100)
    shampoo = get_optimizer("shampoo", {"learning_rate": 0.02},
                            schedule=ScheduleConfig(kind="step", decay_steps=10))
    assert isinstance(shampoo, Shampoo) and shampoo._learning_rate.decay_steps == 10


def test_constant_schedule_leaves_the_optimizer_as_before():
    plain = get_optimizer("adam", {"learning_rate": 0.01})
    same = get_optimizer("adam", {"learning_rate": 0.01}, schedule=ScheduleConfig())
    assert isinstance(same._learning_rate, keras.Variable)
    config, plain_config = same.get_config(), plain.get_config()
    config.pop("name"), plain_config.pop("name")
    assert config == plain_config
    assert build_schedule(ScheduleConfig(), 0.3) == 0.3
    assert isinstance(build_schedule({"warmup_steps": 5}, 0.3), WarmupDecay)  # warmup only


def test_schedule_errors_name_the_key():
    with pytest.raises(ConfigError) as info:
        get_optimizer("adam", {"learning_rate": 0.01}, schedule={"kind": "cosine"})
    assert info.value.key == "optimizer.schedule.decay_steps" and "decay_steps=N" in str(info.value)
    with pytest.raises(ConfigError, match="no step to decay"):
        resolve_schedule(ScheduleConfig(kind="linear", warmup_steps=50), total_steps=50)
    with pytest.raises(ConfigError) as info:
        get_optimizer("adam", {}, schedule={"kind": "cosine", "decay_steps": 10})
    assert info.value.key == "optimizer.settings.learning_rate"
    with pytest.raises(ConfigError, match="optimizer.schedule"):
        RunConfig.from_dict({"optimizer": {"schedule": {"kind": "exponential"}}})
    with pytest.raises(ConfigError, match="decay_steps=N"):
        RunConfig.from_dict({"optimizer": {"schedule": {"kind": "step"}}})
    for bad in ({"alpha": 1.5}, {"decay_rate": 0.0}, {"warmup_steps": -1}, {"decay_steps": 0}):
        with pytest.raises(ConfigError):
            RunConfig.from_dict({"optimizer": {"schedule": {"kind": "cosine", **bad}}})


def test_schedule_depends_on_length_only_for_auto_decays():
    def depends(**schedule):
        return schedule_depends_on_length(RunConfig.from_dict({"optimizer": {"schedule": schedule}}))

    assert depends(kind="cosine") and depends(kind="linear", warmup_steps=10)
    assert not depends() and not depends(kind="constant", warmup_steps=100)
    assert not depends(kind="cosine", decay_steps=500) and not depends(kind="step", decay_steps=5)
    cfg = RunConfig.from_dict({}, overrides={"optimizer.schedule.kind": "cosine",
                                             "optimizer.schedule.decay_steps": 300})
    assert cfg.optimizer.schedule.decay_steps == 300
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_planned_steps_counts_the_short_last_batch():
    assert planned_steps(900, 64) == 15 and planned_steps(896, 64) == 14
    assert planned_steps(None, 64) is None
