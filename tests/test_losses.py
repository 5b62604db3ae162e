"""MatTA loss pieces: cross-entropies, distillation, ramp, level weights, config errors."""

import math

import numpy as np
import pytest
import tensorflow as tf

from matta_rec.errors import ConfigError
from matta_rec.training.config import LossConfig, RampConfig, RunConfig, schedule_depends_on_length
from matta_rec.training.losses import (
    DistillRamp,
    MatTALoss,
    binary_cross_entropy,
    distill_pairs,
    distillation_loss,
    level_weights,
)


def _np_ce(q, z):
    p = 1.0 / (1.0 + np.exp(-z))
    return -(q * np.log(p) + (1 - q) * np.log(1 - p))


def test_cross_entropy_soft_and_hard_labels_match_formula():
    z = np.array([-2.0, -0.3, 0.0, 1.5, 3.0], np.float32)
    soft = np.array([0.1, 0.4, 0.5, 0.8, 0.97], np.float32)
    hard = np.array([0, 1, 0, 1, 1], np.float32)
    np.testing.assert_allclose(binary_cross_entropy(soft, z).numpy(), _np_ce(soft, z), rtol=1e-5)
    np.testing.assert_allclose(binary_cross_entropy(hard, z).numpy(), _np_ce(hard, z), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_distillation_loss_formula_and_stop_gradient(temperature):
    zt = tf.Variable([0.5, -1.0, 2.0])
    zs = tf.Variable([0.1, 0.3, -0.7])
    with tf.GradientTape(persistent=True) as tape:
        loss = distillation_loss(zt, zs, temperature)
        total = tf.reduce_sum(loss)
    t = temperature
    q = 1.0 / (1.0 + np.exp(-zt.numpy() / t))
    expected = t * t * _np_ce(q, zs.numpy() / t)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    assert tape.gradient(total, zt) is None  # teacher side is detached
    g = tape.gradient(total, zs).numpy()
    # d/dz_s of T^2 CE(q, sigmoid(z_s/T)) = T (sigmoid(z_s/T) - q)
    np.testing.assert_allclose(g, t * (1.0 / (1.0 + np.exp(-zs.numpy() / t)) - q), rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(zt, zs, 0.0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ramp_zero_before_delay_then_reaches_target(kind):
    ramp = DistillRamp(target=0.7, delay_steps=100, ramp_steps=50, kind=kind)
    values = np.array([float(ramp(s)) for s in range(0, 300)])
    assert np.all(values[:101] == 0.0)  # through the delay (step 100 is the ramp's start)
    assert np.all(values[150:] == pytest.approx(0.7))
    assert np.all(np.diff(values) >= -1e-7)  # monotone
    mid = float(ramp(125))
    assert mid == pytest.approx(0.35, abs=1e-6)  # linear and half-cosine agree at the midpoint
    quarter = float(ramp(112.5))
    expected = 0.7 * (0.25 if kind == "linear" else 0.5 * (1 - math.cos(math.pi * 0.25)))
    assert quarter == pytest.approx(expected, abs=1e-6)


def test_ramp_constant_and_no_ramp_and_config():
    ramp = DistillRamp(target=2.0, delay_steps=10, ramp_steps=0)
    assert float(ramp(9)) == 0.0 and float(ramp(10)) == 2.0
    assert float(DistillRamp(1.0, 0, 100, "constant")(0)) == 1.0
    again = DistillRamp.from_config(ramp.get_config())
    assert again.get_config() == ramp.get_config()
    with pytest.raises(ValueError, match="kind"):
        DistillRamp(kind="exp")
    with pytest.raises(ValueError, match=">= 0"):
        DistillRamp(delay_steps=-1)


def test_distill_pairs_and_level_weights():
    levels = ("student", "medium", "ta")
    assert distill_pairs(levels, "ta") == [("student", "ta"), ("medium", "ta")]
    assert distill_pairs(levels, "next") == [("student", "medium"), ("medium", "ta")]
    assert distill_pairs(("student",), "ta") == []
    cfg = LossConfig(student_weight=0.5, ta_weight=2.0, intermediate_weight=0.25)
    assert level_weights(levels, cfg) == {"student": 0.5, "medium": 0.25, "ta": 2.0}
    assert level_weights(("ta",), cfg) == {"ta": 1.0}


def test_matta_loss_is_weighted_sum_with_sample_weights():
    cfg = LossConfig(student_weight=0.3, ta_weight=1.7, distill_weight=0.9,
                     ramp=RampConfig(kind="linear", delay_steps=0, ramp_steps=10))
    loss = MatTALoss(("student", "ta"), cfg)
    y = np.array([0.2, 0.9, 0.5, 0.05], np.float32)
    w = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
    zs = np.array([0.1, 1.0, -0.5, -2.0], np.float32)
    zt = np.array([-1.0, 2.0, 0.2, -3.0], np.float32)
    total, parts = loss(y, {"student": zs, "ta": zt}, sample_weight=w, step=5)

    def wmean(v):
        return float(np.sum(w * v) / np.sum(w))

    ls, lt = wmean(_np_ce(y, zs)), wmean(_np_ce(y, zt))
    ld = wmean(_np_ce(1 / (1 + np.exp(-zt)), zs))
    assert float(parts["distill_weight"]) == pytest.approx(0.45)
    assert float(parts["student_loss"]) == pytest.approx(ls, rel=1e-5)
    assert float(parts["student_distill"]) == pytest.approx(ld, rel=1e-5)
    assert float(total) == pytest.approx(0.3 * ls + 1.7 * lt + 0.45 * ld, rel=1e-5)
    with pytest.raises(ValueError, match="no logits for level"):
        loss(y, {"student": zs})


def test_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  temprature: 2.0\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(path)
    assert str(path) in str(err.value) and "loss" in str(err.value) and "temprature" in str(err.value)
    path.write_text("loss:\n  temperature: -1\n")
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        RunConfig.from_yaml(path)
    path.write_text("mode: distill\n")
    with pytest.raises(ConfigError, match="mode"):
        RunConfig.from_yaml(path)
    path.write_text("loss:\n  ramp: {kind: exponential}\n")
    with pytest.raises(ConfigError, match="loss.ramp.kind"):
        RunConfig.from_yaml(path)


def test_overrides_and_modes():
    cfg = RunConfig.from_dict({"loss": {"distill_weight": 0.5}},
                              overrides={"loss.temperature": 2.0, "mode": "matta_no_distill"})
    assert cfg.loss.temperature == 2.0 and cfg.loss.distill_weight == 0.5
    assert cfg.effective_loss().distill_weight == 0.0
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_shipped_configs_parse_and_default_yaml_lists_the_defaults():
    import os

    from matta_rec.models import ModelConfig

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default = RunConfig.from_yaml(os.path.join(root, "pipelines/configs/default.yaml"))
    assert default.to_dict() == RunConfig.from_dict({"model": ModelConfig().to_dict()}).to_dict()
    sample = RunConfig.from_yaml(os.path.join(root, "pipelines/configs/sample.yaml"))
    assert sample.mode == "matta" and sample.data.holdout_fraction
    assert sample.model_for_mode().levels == ("student", "ta")
    assert sample.epochs == 1 and sample.data.valid is None  # the single-pass streaming recipe
    fixed_path = os.path.join(root, "pipelines/configs/fixed-dataset.yaml")
    with pytest.raises(ConfigError, match="--valid DIR"):  # the multi-pass recipe needs --valid
        RunConfig.from_yaml(fixed_path)
    fixed = RunConfig.from_yaml(fixed_path, overrides={"data.valid": "valid/"})
    model = fixed.model_for_mode()
    assert fixed.epochs > 1 and fixed.early_stopping.patience and fixed.early_stopping.restore_best
    assert model.mlp_dropout > 0 and model.embedding_l2 > 0 and model.mlp_norm == "layer"
    assert fixed.optimizer.settings["weight_decay"] > 0
    assert fixed.optimizer.schedule.kind == "cosine" and fixed.optimizer.schedule.warmup_steps > 0
    assert schedule_depends_on_length(fixed)
