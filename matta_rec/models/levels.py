"""The one answer to "which levels does this model have"."""

from __future__ import annotations

from typing import Any, Sequence


def model_levels(model: Any, default: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """The level names of ``model``, smallest first (``("student", "ta")``).

    Reads ``model.levels`` (:class:`~matta_rec.models.NestedRelevanceModel`,
    :class:`~matta_rec.training.trainer.MatTATrainer`), else
    ``model.config.levels`` (a model holding a
    :class:`~matta_rec.models.ModelConfig`).  Only a missing attribute counts
    as "the model does not say": any other error raised while reading them
    propagates.

    Args:
        model: any object, typically a Keras model.
        default: returned (as a tuple) when the model names no levels.

    Returns:
        A tuple of level names, or ``default`` (``None`` unless given).

    Raises:
        TypeError: the model's ``levels`` is not a sequence of non-empty
            strings.

    Example:

    >>> model_levels(NestedRelevanceModel(schema, stats))
    ('student', 'ta')
    >>> model_levels(object(), default=("student",))
    ('student',)
    """
    levels = getattr(model, "levels", None)
    if levels is None:
        levels = getattr(getattr(model, "config", None), "levels", None)
    if levels is None or (isinstance(levels, Sequence) and len(levels) == 0):
        return None if default is None else tuple(default)
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not all(
        isinstance(name, str) and name for name in levels
    ):
        raise TypeError(
            f"{type(model).__name__}.levels must be a sequence of level names, smallest "
            f"first (e.g. ('student', 'ta')). Received: {levels!r}"
        )
    return tuple(levels)
