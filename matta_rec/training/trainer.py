"""`MatTATrainer`: a Keras model whose ``train_step`` is Algorithm 1 of the paper.

The trainer wraps any model that maps features to a dict of logits in level
order (``{"student": z_S, ..., "ta": z_TA}``) and knows nothing of nesting:
parameter sharing lives in the wrapped model, so ``L_D``'s stop-gradient on
the TA side is all that keeps distillation from updating the TA.

Example:

>>> trainer = MatTATrainer(nested_model, LossConfig(distill_weight=1.0))
>>> trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
>>> trainer.fit(dataset)          # dataset of (features, {"target": y, ...})

Progress bar / TensorBoard logs: ``loss`` (the MatTA loss plus the model's
regularisation losses), ``distill_weight`` and per level ``{level}_auroc``,
``{level}_logloss`` and ``{level}_distill`` (levels that distil).  The
forward pass of ``train_step`` runs before the update, so its predictions
are scored before being trained on (progressive validation), in inference
mode (no dropout) when the model has training-dependent layers.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
import tensorflow as tf

# A saved MatTATrainer wraps a NestedRelevanceModel, and `models` no longer
# imports its Keras classes eagerly: importing the trainer registers them, so
# a .keras file of either loads after `import matta_rec.training.trainer`.
import matta_rec.models.relevance  # noqa: F401
from matta_rec.models import model_levels
from matta_rec.training.config import LossConfig
from matta_rec.training.losses import MatTALoss
from matta_rec.utils.config import to_dict


def split_labels(y, label: str = "target", sample_weight=None):
    """``(labels [B], sample_weight [B] | None)`` from a labels dict or tensor.

    Args:
        y: ``{"target": ..., "event": ..., "weight": ...}`` or a tensor.
        label: the key that trains the heads (``"target"`` or ``"event"``).
        sample_weight: explicit weights; otherwise ``y["weight"]`` if present.
    """
    if isinstance(y, Mapping):
        if label not in y:
            raise ValueError(
                f"labels have no '{label}' entry (got {sorted(y)}); with loss.label: "
                f"{label} the schema must declare labels.{label}"
            )
        labels = y[label]
        if sample_weight is None:
            sample_weight = y.get("weight")
    else:
        labels = y
    labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
    if sample_weight is not None:
        sample_weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    return labels, sample_weight


#: Keras layers whose forward pass depends on training mode.
_TRAINING_DEPENDENT = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.BatchNormalization,
)


@keras.saving.register_keras_serializable(package="matta_rec")
class LastValue(keras.metrics.Metric):
    """A metric that reports the last value it was given (e.g. ``w_D(t)``).

    Keras returns aggregated metric results (not per-replica step outputs)
    only when every log is a metric, so the ramp weight is one.

    Args:
        name: metric name.
    """

    def __init__(self, name="last_value", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value",
                                       aggregation="only_first_replica")

    def update_state(self, value):
        self.value.assign(keras.ops.cast(value, self.value.dtype))

    def result(self):
        return keras.ops.convert_to_tensor(self.value)


@keras.saving.register_keras_serializable(package="matta_rec")
class MatTATrainer(keras.Model):
    """Train a dict-of-logits model with ``L = w_S L_S + w_TA L_TA + w_D(t) L_D``.

    Args:
        model: a Keras model returning ``{level: logit [B]}``.
        loss_config: :class:`~matta_rec.training.config.LossConfig` or mapping
            (weights, temperature, ramp, ``distill_from``, ``label``).
        levels: level names smallest first; default ``model.levels`` or
            ``model.config.levels``.

    Example:

    >>> trainer = MatTATrainer(model, {"distill_weight": 0.5}, levels=("student", "ta"))
    >>> trainer.compile(optimizer="adam")
    >>> history = trainer.fit(ds, epochs=1)
    """

    def __init__(self, model, loss_config: LossConfig | Mapping | None = None,
                 levels: Sequence[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if not callable(model):
            raise ValueError(f"MatTATrainer needs a Keras model, got {type(model).__name__}")
        levels = tuple(levels) if levels else model_levels(model)
        if not levels:
            raise ValueError(
                "MatTATrainer cannot tell the model's levels: pass levels=('student', 'ta') "
                "(smallest first) or give the model a `levels` attribute"
            )
        self.model = model
        self.levels = levels
        self.loss_config = LossConfig.from_any(loss_config)
        self.matta_loss = MatTALoss(levels, self.loss_config)
        self.loss_metric = keras.metrics.Mean(name="loss")
        self.level_metrics = {}
        for level in levels:
            self.level_metrics[f"{level}_auroc"] = keras.metrics.AUC(
                num_thresholds=500, from_logits=True, name=f"{level}_auroc"
            )
            self.level_metrics[f"{level}_logloss"] = keras.metrics.Mean(name=f"{level}_logloss")
        for small, _ in self.matta_loss.pairs:
            self.level_metrics[f"{small}_distill"] = keras.metrics.Mean(name=f"{small}_distill")
        self.distill_weight_metric = LastValue(name="distill_weight")
        self._metric_list = ([self.loss_metric] + list(self.level_metrics.values())
                             + [self.distill_weight_metric])
        self._training_dependent = None

    # ------------------------------------------------------------- keras API
    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    @property
    def metrics(self):
        return list(self._metric_list)

    def _step(self):
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None:
            return tf.constant(0, tf.int64)
        return optimizer.iterations

    def _update_metrics(self, labels, sample_weight, logits, rows, loss_value, loss_weight):
        self.loss_metric.update_state(loss_value, sample_weight=loss_weight)
        # keras.metrics.AUC casts labels to bool, so a soft label p is fed as
        # a positive of weight w*p plus a negative of weight w*(1-p): the
        # AUROC of soft labels (exact for hard 0/1 labels too).
        w = tf.ones_like(labels) if sample_weight is None else sample_weight
        auc_true = tf.concat([tf.ones_like(labels), tf.zeros_like(labels)], 0)
        auc_weight = tf.concat([w * labels, w * (1.0 - labels)], 0)
        for level in self.levels:
            self.level_metrics[f"{level}_auroc"].update_state(
                auc_true, tf.concat([logits[level], logits[level]], 0), sample_weight=auc_weight
            )
            self.level_metrics[f"{level}_logloss"].update_state(
                rows[f"{level}_loss"], sample_weight=sample_weight
            )
        for small, _ in self.matta_loss.pairs:
            self.level_metrics[f"{small}_distill"].update_state(
                rows[f"{small}_distill"], sample_weight=sample_weight
            )

    def _logs(self, distill_weight):
        self.distill_weight_metric.update_state(distill_weight)
        return {m.name: m.result() for m in self._metric_list}

    def compute_losses(self, x, y, sample_weight=None, *, training=False, denominator=None):
        """Forward pass and losses without an update.

        Returns:
            ``(total, parts, rows, logits, labels, sample_weight)``; ``total``
            is the batch loss (not scaled for distribution).
        """
        labels, sample_weight = split_labels(y, self.loss_config.label, sample_weight)
        logits = self._logits(x, training)
        rows = self.matta_loss.per_example(labels, logits)
        total, parts = self.matta_loss.combine(rows, sample_weight, self._step(), denominator)
        return total, parts, rows, logits, labels, sample_weight

    def train_batch(self, x, y, sample_weight=None, *, denominator=None):
        """One MatTA update on a batch; returns ``(logs, logits)``.

        The loss is the MatTA loss plus the model's regularisation losses
        (``model.losses``: weight regularizers, the embedding lookup L2),
        both scaled per replica the same way.  ``logits`` are scored before
        the update (progressive validation) and in inference mode: when the
        model's forward pass depends on training mode (dropout, batch norm;
        see :meth:`scores_need_inference_pass`) they come from an extra
        ``training=False`` forward pass before the update, and the online
        metrics (AUROC, log loss per level) use them; otherwise they are the
        training pass's logits (no extra cost).  ``denominator``: the global
        batch's weight sum when a replica trains a slice of a batch (the
        per-replica losses then add up to the batch loss, so summed
        gradients equal single-device ones); without it the local weighted
        mean is divided by the number of replicas, as Keras does.
        """
        scores = None
        if self.scores_need_inference_pass():
            scores = self._logits(x, training=False)
        with tf.GradientTape() as tape:
            total, parts, rows, logits, labels, sample_weight = self.compute_losses(
                x, y, sample_weight, training=True, denominator=denominator
            )
            replicas = float(tf.distribute.get_strategy().num_replicas_in_sync)
            # Regularisation is a per-replica quantity like a local mean: it
            # is divided by the number of replicas whose gradients are summed.
            regularization = self._regularization_loss()
            if denominator is None:
                # Keras convention: local mean, gradients summed over replicas.
                if regularization is not None:
                    total = total + regularization
                scaled = total / replicas
                tracked, tracked_weight = total, tf.cast(tf.shape(labels)[0], tf.float32)
            else:
                # The replica losses add up to the batch loss: the Mean metric
                # must sum them once per batch.
                scaled = total
                tracked, tracked_weight = total * replicas, 1.0 / replicas
                if regularization is not None:
                    scaled = scaled + regularization / replicas
                    tracked = tracked + regularization
            if self.optimizer is not None:
                scaled = self.optimizer.scale_loss(scaled)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None]
        )
        if scores is not None:
            logits, rows = scores, self.matta_loss.per_example(labels, scores)
        self._update_metrics(labels, sample_weight, logits, rows, tracked, tracked_weight)
        return self._logs(parts["distill_weight"]), logits

    def scores_need_inference_pass(self) -> bool:
        """Whether training mode changes the model's forward pass.

        The model's own ``training_dependent`` attribute when it has one
        (``NestedRelevanceModel``: dropout or batch norm configured);
        otherwise whether it contains a dropout, noise or batch
        normalisation layer.
        """
        if self._training_dependent is None:
            declared = getattr(self.model, "training_dependent", None)
            if declared is None:
                flatten = getattr(self.model, "_flatten_layers", None)
                layers = list(flatten(include_self=False)) if flatten else []
                declared = any(isinstance(layer, _TRAINING_DEPENDENT) for layer in layers)
            self._training_dependent = bool(declared)
        return self._training_dependent

    def _logits(self, x, training):
        logits = self.model(x, training=training)
        return {k: tf.reshape(tf.cast(v, tf.float32), [-1]) for k, v in logits.items()}

    def _regularization_loss(self):
        """The sum of ``model.losses`` (float32), or None when there are none."""
        losses = self.model.losses
        if not losses:
            return None
        return tf.add_n([tf.cast(loss, tf.float32) for loss in losses])

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logs, _ = self.train_batch(x, y, sample_weight)
        return logs

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        total, parts, rows, logits, labels, sample_weight = self.compute_losses(
            x, y, sample_weight, training=False
        )
        self._update_metrics(
            labels, sample_weight, logits, rows, total, tf.cast(tf.shape(labels)[0], tf.float32)
        )
        return self._logs(parts["distill_weight"])

    # --------------------------------------------------------- serialisation
    def get_config(self):
        config = super().get_config()  # name, trainable, dtype (the policy)
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.model),
                "loss_config": to_dict(self.loss_config),
                "levels": list(self.levels),
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model=model, **config)
