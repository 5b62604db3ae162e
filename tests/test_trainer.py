"""MatTATrainer: gradient decomposition, soft/hard labels, N>2 levels, metrics, saving."""

import numpy as np
import pytest
import keras
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from matta_rec.training.config import LossConfig, RampConfig
from matta_rec.training.losses import binary_cross_entropy, distillation_loss
from matta_rec.training.trainer import MatTATrainer


def tiny_nested(levels=("student", "ta"), dim=4, seed=0):
    """A hand-made model with a shared trunk and one private tower per level.

    The TA-only tower stands in for the parameters the TA has beyond the
    Student; the trunk is shared, so L_D reaches it through the Student only.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((dim,), name="x")
    trunk = keras.layers.Dense(3, activation="tanh", name="trunk")(inp)
    outputs = {}
    for i, level in enumerate(levels):
        h = keras.layers.Dense(2 + i, activation="tanh", name=f"{level}_tower")(trunk)
        outputs[level] = keras.layers.Reshape((), name=f"{level}_logit")(
            keras.layers.Dense(1, name=f"{level}_head")(h)
        )
    model = keras.Model({"x": inp}, outputs, name="tiny_nested")
    model.levels = tuple(levels)  # what MatTATrainer reads when levels= is not given
    return model


def batch(n=16, dim=4, seed=0, hard=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    target = (1 / (1 + np.exp(-(x[:, 0] - 0.5 * x[:, 1])))).astype(np.float32)
    event = (rng.random(n) < target).astype(np.float32)
    return {"x": x}, {"target": event if hard else target, "event": event}


def _grads(model, fn):
    with tf.GradientTape() as tape:
        value = fn()
    return tape.gradient(value, model.trainable_variables)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_gradient_is_sum_of_separate_losses_with_ta_detached(temperature):
    model = tiny_nested()
    cfg = LossConfig(student_weight=0.7, ta_weight=1.3, distill_weight=0.6,
                     temperature=temperature, ramp=RampConfig(kind="constant"))
    trainer = MatTATrainer(model, cfg)
    x, y = batch()
    labels = tf.constant(y["target"])

    total_grads = _grads(model, lambda: trainer.compute_losses(x, y, training=True)[0])
    ls = _grads(model, lambda: tf.reduce_mean(binary_cross_entropy(labels, model(x)["student"])))
    lt = _grads(model, lambda: tf.reduce_mean(binary_cross_entropy(labels, model(x)["ta"])))
    ta_const = tf.constant(model(x)["ta"].numpy())  # TA detached: a constant
    ld = _grads(model, lambda: tf.reduce_mean(
        temperature ** 2 * binary_cross_entropy(tf.sigmoid(ta_const / temperature),
                                                model(x)["student"] / temperature)))
    for var, g, a, b, c in zip(model.trainable_variables, total_grads, ls, lt, ld):
        parts = [0.7 * a if a is not None else 0, 1.3 * b if b is not None else 0,
                 0.6 * c if c is not None else 0]
        expected = sum(np.asarray(p) for p in parts)
        np.testing.assert_allclose(g.numpy(), expected + np.zeros_like(g.numpy()),
                                   rtol=1e-5, atol=1e-7, err_msg=var.path)
    # No distillation gradient reaches TA-only parameters.
    ld_wrt_ta = dict(zip([v.path for v in model.trainable_variables], ld))
    assert all(ld_wrt_ta[p] is None for p in ld_wrt_ta if p.startswith("ta_"))
    assert any(ld_wrt_ta[p] is not None for p in ld_wrt_ta if p.startswith("trunk"))


def test_train_step_applies_exactly_that_gradient():
    model = tiny_nested()
    cfg = LossConfig(distill_weight=0.5, ramp=RampConfig(kind="constant"))
    trainer = MatTATrainer(model, cfg)
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    x, y = batch()
    expected = _grads(model, lambda: trainer.compute_losses(x, y, training=True)[0])
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = trainer.train_step((x, y))
    for b, v, g in zip(before, model.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), b - 0.1 * g.numpy(), rtol=1e-5, atol=1e-7)
    assert float(logs["distill_weight"]) == 0.5


def test_ramp_follows_optimizer_steps_during_fit():
    model = tiny_nested()
    cfg = LossConfig(distill_weight=2.0, ramp=RampConfig(kind="linear", delay_steps=3, ramp_steps=4))
    trainer = MatTATrainer(model, cfg)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = batch(n=8)
    seen = []
    for _ in range(10):
        seen.append(float(trainer.train_step((x, y))["distill_weight"]))
    # step t (updates done before this one): 0 through step 3, then +0.5 per step, capped at 2.
    assert seen == pytest.approx([0, 0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0])


@pytest.mark.parametrize("hard", [False, True])
def test_fit_learns_with_soft_and_hard_labels_and_reports_metrics(hard):
    model = tiny_nested()
    trainer = MatTATrainer(model, {"label": "target"})
    trainer.compile(optimizer=keras.optimizers.Adam(0.05))
    x, y = batch(n=512, seed=1, hard=hard)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    hist = trainer.fit(ds, epochs=4, verbose=0)
    for key in ("loss", "student_auroc", "ta_auroc", "student_logloss", "ta_logloss",
                "student_distill", "distill_weight"):
        assert key in hist.history, key
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    # In-graph AUROC equals sklearn's (soft labels: a row counts as positive
    # with weight p and negative with weight 1 - p).
    res = trainer.evaluate(ds, return_dict=True, verbose=0)
    logits = trainer.predict(ds, verbose=0)["student"]
    t = y["target"]
    exact = roc_auc_score(np.r_[np.ones_like(t), np.zeros_like(t)], np.r_[logits, logits],
                          sample_weight=np.r_[t, 1 - t])
    assert res["student_auroc"] == pytest.approx(exact, abs=2e-3)


def test_event_label_trains_on_event_column():
    model = tiny_nested()
    trainer = MatTATrainer(model, {"label": "event"})
    x, y = batch(n=32)
    _, parts, *_ = trainer.compute_losses(x, y)
    exp = float(tf.reduce_mean(binary_cross_entropy(y["event"], model(x)["student"])))
    assert float(parts["student_loss"]) == pytest.approx(exp, rel=1e-5)
    with pytest.raises(ValueError, match="no 'event' entry"):
        trainer.compute_losses(x, {"target": y["target"]})


@pytest.mark.parametrize("distill_from", ["ta", "next"])
def test_three_levels_distill_from_ta_or_next(distill_from):
    levels = ("student", "medium", "ta")
    model = tiny_nested(levels)
    trainer = MatTATrainer(model, {"distill_from": distill_from}, levels=levels)
    x, y = batch()
    total, parts, *_ = trainer.compute_losses(x, y)
    assert {"student_distill", "medium_distill"} <= set(parts) and "ta_distill" not in parts
    out = model(x)
    teacher = "ta" if distill_from == "ta" else "medium"
    exp = float(tf.reduce_mean(distillation_loss(out[teacher], out["student"])))
    assert float(parts["student_distill"]) == pytest.approx(exp, rel=1e-5)
    # The student's distillation term never reaches its teacher's private tower.
    g = dict(zip([v.path for v in model.trainable_variables],
                 _grads(model, lambda: trainer.compute_losses(x, y)[2]["student_distill"][0])))
    assert all(g[p] is None for p in g if p.startswith(f"{teacher}_"))
    names = [m.name for m in trainer.metrics]
    assert "medium_auroc" in names and "medium_distill" in names


def test_needs_levels_and_round_trips(tmp_path):
    inp = keras.Input((2,), name="x")
    plain = keras.Model({"x": inp}, {"a": keras.layers.Dense(1)(inp)})
    with pytest.raises(ValueError, match="levels"):
        MatTATrainer(plain)

    model = tiny_nested()
    trainer = MatTATrainer(model, {"distill_weight": 0.25, "temperature": 2.0})
    x, _ = batch()
    ref = trainer(x)["student"].numpy()
    clone = MatTATrainer.from_config(trainer.get_config())
    assert clone.loss_config == trainer.loss_config and clone.levels == trainer.levels
    path = tmp_path / "trainer.keras"
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MatTATrainer)
    np.testing.assert_allclose(loaded(x)["student"].numpy(), ref, rtol=1e-6)
    assert loaded.loss_config.temperature == 2.0


def test_config_keeps_name_trainable_and_dtype_policy(tmp_path):
    """get_config starts from super(): the dtype policy, name and trainable survive."""
    trainer = MatTATrainer(tiny_nested(), {"distill_weight": 0.5}, dtype="float64",
                           name="matta64")
    trainer.trainable = False
    trainer(batch()[0])
    config = trainer.get_config()
    assert config["dtype"]["config"]["name"] == "float64"
    assert config["name"] == "matta64" and config["trainable"] is False
    clone = MatTATrainer.from_config(config)
    assert clone.dtype_policy.name == "float64" and clone.name == "matta64"
    assert clone.trainable is False and clone.levels == ("student", "ta")
    path = tmp_path / "trainer.keras"
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.dtype_policy.name == "float64" and loaded.name == "matta64"
    assert loaded.trainable is False
