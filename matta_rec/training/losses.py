"""The MatTA loss (paper section 3.1, Algorithm 1) and the distillation ramp.

For binary relevance / CTR heads every level ``l`` outputs a logit ``z_l``
and ``p_l = sigmoid(z_l)``.  With ``y`` the streamed Teacher probability (or a
0/1 event label) and ``w`` an optional per-row weight::

    L_l  = CE(y, p_l)                                   (eq. 1, 2)
    L_D  = T^2 * CE(stop_gradient(sigmoid(z_TA / T)), sigmoid(z_S / T))   (eq. 3)
    L    = w_S L_S + w_TA L_TA + w_D(t) L_D

``CE(q, p) = -q log p - (1 - q) log(1 - p)`` is the two-class form of the
paper's cross-entropy.  The TA's probabilities are a constant in ``L_D`` so
no distillation gradient reaches the TA (paper: "we disallow the gradient to
update the TA model parameters based on L_D").  With more than two levels,
each smaller level distils from the TA (``distill_from="ta"``) or from the
next larger level (``"next"``); each such term gets weight ``w_D(t)``.

Example:

>>> loss = MatTALoss(("student", "ta"), LossConfig(distill_weight=0.5))
>>> total, parts = loss(y, {"student": z_s, "ta": z_ta}, step=100)
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras
import tensorflow as tf

from matta_rec.training.config import LossConfig, RampConfig


def binary_cross_entropy(labels, logits):
    """Per-row cross-entropy of ``sigmoid(logits)`` against labels in ``[0, 1]``.

    Soft labels (Teacher probabilities) and hard 0/1 labels both work.

    Args:
        labels: float tensor ``[B]`` in ``[0, 1]``.
        logits: float tensor ``[B]``.

    Returns:
        float32 tensor ``[B]``.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.float32)
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def distillation_loss(teacher_logits, student_logits, temperature: float = 1.0):
    """Per-row ``T^2 * CE(stop_gradient(sigmoid(z_t/T)), sigmoid(z_s/T))`` (eq. 3).

    The teacher side is wrapped in ``stop_gradient``: no gradient flows into
    the teacher (the TA) through this term.

    Args:
        teacher_logits: logits ``[B]`` of the larger level.
        student_logits: logits ``[B]`` of the smaller level.
        temperature: softening temperature ``T > 0``.

    Returns:
        float32 tensor ``[B]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = float(temperature)
    target = tf.stop_gradient(tf.sigmoid(tf.cast(teacher_logits, tf.float32) / t))
    ce = binary_cross_entropy(target, tf.cast(student_logits, tf.float32) / t)
    return ce * (t * t)


@keras.saving.register_keras_serializable(package="matta_rec")
class DistillRamp:
    """``w_D(t)``: 0 before ``delay_steps``, then up to ``target`` over ``ramp_steps``.

    Args:
        target: the weight reached after the ramp (``loss.distill_weight``).
        delay_steps: optimizer steps during which the weight is exactly 0.
        ramp_steps: length of the ramp (0 = jump to ``target`` at the delay).
        kind: ``"linear"``, ``"cosine"`` (half-cosine, smooth at both ends)
            or ``"constant"`` (``target`` from the delay on).

    Example:

    >>> ramp = DistillRamp(target=1.0, delay_steps=100, ramp_steps=100)
    >>> float(ramp(50)), float(ramp(150)), float(ramp(1000))
    (0.0, 0.5, 1.0)
    """

    def __init__(self, target: float = 1.0, delay_steps: int = 0, ramp_steps: int = 0,
                 kind: str = "linear"):
        if target < 0:
            raise ValueError(f"DistillRamp target must be >= 0, got {target}")
        if delay_steps < 0 or ramp_steps < 0:
            raise ValueError(
                f"DistillRamp delay_steps and ramp_steps must be >= 0, got "
                f"{delay_steps} and {ramp_steps}"
            )
        if kind not in ("linear", "cosine", "constant"):
            raise ValueError(f"DistillRamp kind must be 'linear', 'cosine' or 'constant', got {kind!r}")
        self.target = float(target)
        self.delay_steps = int(delay_steps)
        self.ramp_steps = int(ramp_steps)
        self.kind = kind

    @classmethod
    def from_loss_config(cls, loss: LossConfig) -> "DistillRamp":
        ramp: RampConfig = loss.ramp
        return cls(loss.distill_weight, ramp.delay_steps, ramp.ramp_steps, ramp.kind)

    def __call__(self, step):
        """The weight at optimizer step ``step`` (number of updates done so far)."""
        step = tf.cast(step, tf.float32)
        target = tf.constant(self.target, tf.float32)
        after = step - float(self.delay_steps)
        if self.kind == "constant" or self.ramp_steps == 0:
            return tf.where(after >= 0.0, target, 0.0)
        frac = tf.clip_by_value(after / float(self.ramp_steps), 0.0, 1.0)
        if self.kind == "cosine":
            frac = 0.5 * (1.0 - tf.cos(math.pi * frac))
        return target * frac

    def get_config(self) -> dict:
        return {
            "target": self.target,
            "delay_steps": self.delay_steps,
            "ramp_steps": self.ramp_steps,
            "kind": self.kind,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> "DistillRamp":
        return cls(**config)


def distill_pairs(levels: Sequence[str], distill_from: str = "ta") -> list[tuple[str, str]]:
    """``(student_level, teacher_level)`` pairs of the distillation terms.

    Args:
        levels: level names, smallest first, the TA last.
        distill_from: ``"ta"`` or ``"next"``.

    Example:

    >>> distill_pairs(("student", "medium", "ta"), "next")
    [('student', 'medium'), ('medium', 'ta')]
    """
    levels = tuple(levels)
    if distill_from not in ("ta", "next"):
        raise ValueError(f"distill_from must be 'ta' or 'next', got {distill_from!r}")
    if len(levels) < 2:
        return []
    if distill_from == "ta":
        return [(level, levels[-1]) for level in levels[:-1]]
    return [(levels[i], levels[i + 1]) for i in range(len(levels) - 1)]


def level_weights(levels: Sequence[str], loss: LossConfig) -> dict[str, float]:
    """Weight of each level's label loss: ``w_S`` first, ``w_TA`` last.

    A one-level model (modes ``student`` / ``ta``) gets weight 1.
    """
    levels = tuple(levels)
    if len(levels) == 1:
        return {levels[0]: 1.0}
    middle = loss.student_weight if loss.intermediate_weight is None else loss.intermediate_weight
    out = {level: float(middle) for level in levels[1:-1]}
    out[levels[0]] = float(loss.student_weight)
    out[levels[-1]] = float(loss.ta_weight)
    return out


def weighted_mean(values, sample_weight=None, denominator=None):
    """``sum(w * values) / denominator`` (default ``sum(w)``, or the batch size)."""
    values = tf.cast(values, tf.float32)
    if sample_weight is None:
        total = tf.reduce_sum(values)
        denom = tf.cast(tf.size(values), tf.float32) if denominator is None else denominator
    else:
        w = tf.cast(sample_weight, tf.float32)
        total = tf.reduce_sum(w * values)
        denom = tf.reduce_sum(w) if denominator is None else denominator
    return tf.math.divide_no_nan(total, tf.cast(denom, tf.float32))


class MatTALoss:
    """The composite MatTA loss over a dict of logits.

    Args:
        levels: level names smallest first (the first is the Student, the
            last the TA).
        loss_config: a :class:`LossConfig` (or mapping).

    Calling it returns ``(total, parts)`` where ``parts`` holds the scalar
    ``{level}_loss`` (label cross-entropy), ``{level}_distill`` (``L_D`` of
    every level that distils) and ``distill_weight`` (``w_D`` at ``step``).
    """

    def __init__(self, levels: Sequence[str], loss_config: LossConfig | Mapping | None = None):
        self.levels = tuple(levels)
        if not self.levels:
            raise ValueError("MatTALoss needs at least one level name")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"level names must be unique, got {self.levels}")
        self.config = LossConfig.from_any(loss_config)
        self.weights = level_weights(self.levels, self.config)
        self.pairs = distill_pairs(self.levels, self.config.distill_from)
        self.ramp = DistillRamp.from_loss_config(self.config)

    def per_example(self, labels, logits: Mapping):
        """Per-row ``{level}_loss`` and ``{level}_distill`` tensors ``[B]``."""
        missing = [level for level in self.levels if level not in logits]
        if missing:
            raise ValueError(
                f"the model output has no logits for level(s) {missing}; it returned "
                f"{sorted(logits)}. The model must return one logit per level {list(self.levels)}"
            )
        out = {}
        for level in self.levels:
            out[f"{level}_loss"] = binary_cross_entropy(labels, logits[level])
        for small, large in self.pairs:
            out[f"{small}_distill"] = distillation_loss(
                logits[large], logits[small], self.config.temperature
            )
        return out

    def __call__(self, labels, logits: Mapping, sample_weight=None, step=0, denominator=None):
        """Return ``(total, parts)``.

        Args:
            labels: ``[B]`` targets in ``[0, 1]``.
            logits: ``{level: [B]}``.
            sample_weight: optional ``[B]`` row weights.
            step: optimizer step (drives ``w_D``).
            denominator: divide the weighted sums by this instead of
                ``sum(sample_weight)`` (the training loop passes the global
                batch weight so per-replica losses add up to the batch loss).
        """
        return self.combine(self.per_example(labels, logits), sample_weight, step, denominator)

    def combine(self, rows: Mapping, sample_weight=None, step=0, denominator=None):
        """``(total, parts)`` from the per-row tensors of :meth:`per_example`."""
        parts = {k: weighted_mean(v, sample_weight, denominator) for k, v in rows.items()}
        w_d = self.ramp(step)
        total = tf.constant(0.0, tf.float32)
        for level in self.levels:
            total += self.weights[level] * parts[f"{level}_loss"]
        for small, _ in self.pairs:
            total += w_d * parts[f"{small}_distill"]
        parts["distill_weight"] = w_d
        return total, parts
