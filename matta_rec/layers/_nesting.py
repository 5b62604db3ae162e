"""Helpers shared by the M-nested layers: level widths and the input convention.

Every M-nested layer serves ``N >= 1`` nesting *levels*, ordered smallest
(the Student) to largest (the TA).  A layer is called either with one tensor,
read by every level, or with a tuple of ``N`` tensors, one per level; an entry
may be ``None`` for a level that skips the layer (its output is then ``None``).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import tensorflow as tf


def per_level(value: Any, name: str, allow_none: bool = False) -> tuple:
    """Validate a per-level size argument; return one entry per level.

    ``value`` is a single size (a one-level, plain layer) or a sequence of
    one size per level ordered Student -> ... -> TA.  Sizes must be positive
    integers, non-decreasing from the Student to the TA (an inner level reads
    a prefix of the next).  With ``allow_none`` every entry may instead be
    ``None`` (all or none; e.g. a full-rank cross layer).

    Args:
        value: int, ``None`` (with ``allow_none``) or a sequence of them.
        name: the argument's name, for error messages.
        allow_none: accept ``None`` entries (all of them or none).

    Returns:
        A tuple with one entry per level, Student first.

    Example:

    >>> per_level((16, 32), "units")
    (16, 32)
    >>> per_level(8, "units")
    (8,)
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        widths = (value,)
    elif isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        widths = ()
    else:
        widths = tuple(value)
    if allow_none and widths and all(w is None for w in widths):
        return widths
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths):
        expected = "positive integers" + (" (or all None)" if allow_none else "")
        raise ValueError(
            f"`{name}` must be one size or a tuple of one size per level, ordered "
            f"Student -> ... -> TA (e.g. `{name}=(16, 32)`); sizes must be {expected}. "
            f"Received: {name}={value!r}"
        )
    for small, large in zip(widths, widths[1:]):
        if small > large:
            raise ValueError(
                f"`{name}` must be non-decreasing from the Student to the TA (each "
                f"level reads a prefix of the next). Received: {name}={value!r}"
            )
    return widths


def pop_deprecated(kwargs: dict, layer: str, old: Sequence[str], new: Mapping) -> dict:
    """Pop the deprecated per-level keywords ``old`` from ``kwargs``.

    matta_rec 0.1 took each per-level size as three keywords (``student_X``,
    ``ta_X``, ``intermediate_Xs``).  They are accepted for one more release
    with a ``DeprecationWarning``, so configs saved with them (and so
    ``.keras`` files) still load.

    Args:
        kwargs: the layer's ``**kwargs``; the deprecated keys are removed.
        layer: the layer's class name, for messages.
        old: the deprecated keyword names.
        new: ``{new argument name: value passed}``; a value other than
            ``None`` together with a deprecated keyword is an error.

    Returns:
        ``{deprecated keyword: value}`` of those given (empty when none).
    """
    given = {key: kwargs.pop(key) for key in old if key in kwargs}
    if not given:
        return given
    passed = [f"{key}={value!r}" for key, value in new.items() if value is not None]
    if passed:
        raise ValueError(
            f"{layer} takes the per-level sizes either as one tuple each "
            f"({', '.join(new)}) or through the deprecated keywords, not both. "
            f"Received: {', '.join(passed)} and {', '.join(sorted(given))}"
        )
    example = ", ".join(f"{key}=(student, ..., ta)" for key in new)
    warnings.warn(
        f"{layer}({', '.join(f'{key}=...' for key in given)}) is deprecated and will be "
        f"removed in the next release: pass one tuple per size, ordered Student -> ... "
        f"-> TA: {layer}({example}). A model saved with the old keywords still loads; "
        "save it again to write the new form.",
        DeprecationWarning,
        stacklevel=3,
    )
    return given


def legacy_widths(given: Mapping, old: Sequence[str], student_default: Any = None) -> Any:
    """Per-level sizes from deprecated ``(student, ta, intermediate)`` keywords.

    ``ta=None`` without intermediate levels was the one-level form.  Returns
    the raw sizes; :func:`per_level` validates them.
    """
    student_key, ta_key, intermediate_key = old
    student = given.get(student_key, student_default)
    ta = given.get(ta_key)
    intermediate = given.get(intermediate_key, ())
    if isinstance(intermediate, (str, bytes)) or not isinstance(intermediate, Sequence):
        raise ValueError(
            f"`{intermediate_key}` must be a sequence of positive integers. "
            f"Received: {intermediate!r}"
        )
    if ta is None and not intermediate:
        return student
    return (student, *intermediate, ta)


def check_flag(value: Any, name: str) -> bool:
    """A boolean argument: ``True`` or ``False`` (not 0 / 1 / a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {value!r}")
    return value


def check_rate(value: Any, name: str) -> float:
    """A dropout rate: a number in ``[0, 1)``, returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def level_dropout(values: tuple, rate: float, seed_generator: Any) -> tuple:
    """Dropout on each level's tensor (``None`` entries pass), one mask per level."""
    import keras

    return tuple(
        None if v is None else keras.random.dropout(v, rate, seed=seed_generator) for v in values
    )


def level_suffix(level: int, num_levels: int) -> str:
    """Variable-name suffix of a level's own weights when weights are not shared.

    The TA (last level) has none, so a shared layer and the TA of an unshared
    one name their variables alike.
    """
    return "" if level == num_levels - 1 else f"_level{level}"


def split_inputs(inputs: Any, num_levels: int, layer_name: str) -> tuple[tuple, bool]:
    """Normalise the one-or-N-inputs convention.

    Returns ``(per_level_inputs, shared)`` where ``shared`` is True when a
    single tensor is read by every level.
    """
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != num_levels:
            raise ValueError(
                f"Layer '{layer_name}' serves {num_levels} levels: call it with "
                f"one tensor (read by every level) or a tuple of {num_levels} "
                f"tensors (Student first, TA last). Received {len(inputs)} inputs."
            )
        if all(x is None for x in inputs):
            raise ValueError(f"Layer '{layer_name}' received only None inputs.")
        return tuple(inputs), False
    return (inputs,) * num_levels, True


def split_shapes(input_shape: Any, num_levels: int, layer_name: str) -> tuple[tuple, bool]:
    """The build-time counterpart of :func:`split_inputs` for shapes."""
    if isinstance(input_shape, (tuple, list)) and input_shape and all(
        s is None or isinstance(s, (tuple, list)) for s in input_shape
    ):
        if len(input_shape) != num_levels:
            raise ValueError(
                f"Layer '{layer_name}' serves {num_levels} levels: build it with "
                f"one shape or a tuple of {num_levels} shapes. Received "
                f"{len(input_shape)} shapes."
            )
        return tuple(input_shape), False
    return (input_shape,) * num_levels, True


def input_widths(shapes: Sequence, layer_name: str) -> tuple:
    """Last-axis widths of the per-level input shapes (``None`` where skipped).

    Missing levels take the width of the next larger level that is present
    (a skipping level still owns a slice of the kernel: Mix'n'Match may use
    it), and the widths must be non-decreasing.
    """
    widths = [None if s is None else s[-1] for s in shapes]
    if all(w is None for w in widths):
        raise ValueError(f"Layer '{layer_name}' needs at least one input shape.")
    for w in widths:
        if w is not None and (not isinstance(w, int) or w <= 0):
            raise ValueError(
                f"Layer '{layer_name}' needs a known, positive last dimension on "
                f"every input. Received shapes: {tuple(shapes)}"
            )
    filled = list(widths)
    nxt = None
    for i in range(len(filled) - 1, -1, -1):
        if filled[i] is None:
            filled[i] = nxt
        else:
            nxt = filled[i]
    last = None
    for i in range(len(filled)):
        if filled[i] is None:
            filled[i] = last
        last = filled[i]
    for small, large in zip(filled, filled[1:]):
        if small > large:
            raise ValueError(
                f"Layer '{layer_name}': input widths must be non-decreasing from "
                f"the Student to the TA (each level reads a prefix). Received "
                f"shapes: {tuple(shapes)}"
            )
    return tuple(filled)



def per_level_store(layer: Any, *names: str) -> None:
    """Give ``layer`` empty ``{level index: variable(s)}`` lookup dicts.

    The dicts are set past attribute tracking: a tracked dict with integer
    keys cannot be written to a SavedModel (``tf.saved_model.save`` needs
    string names for the object graph).  Call :func:`track_per_level` at the
    end of ``build`` to register the variables under string names.
    """
    for name in names:
        object.__setattr__(layer, name, {})


def track_per_level(layer: Any, *names: str) -> None:
    """Register the variables of ``per_level_store`` dicts with TensorFlow's
    object graph (checkpoints, SavedModel) as ``<name>/level<k>/...``."""
    track = getattr(layer, "_track_trackable", None)
    if track is None:  # not the TensorFlow backend: nothing to register
        return

    def walk(value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{path}/{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                yield from walk(item, f"{path}/{i}")
        elif value is not None:
            yield path, value

    for name in names:
        for level, value in getattr(layer, name).items():
            for path, variable in walk(value, f"{name.lstrip('_')}/level{level}"):
                track(variable, name=path, overwrite=True)


def prefix(x: Any, widths: Sequence[int]):
    """The leading block ``x[..., :w_1, ..., :w_k]`` of the last ``k`` axes.

    The block a smaller level reads from a larger level's weight or
    activation.  ``x`` itself when it is already that size (no op).
    Otherwise one ``Slice`` op, whose gradient is a ``Pad``: TensorFlow
    computes it about twice as fast as the ``StridedSliceGrad`` of Python
    indexing (``x[..., :w]``), and a MatTA step takes the gradient of every
    slice (``bench/forward_cost.py``).  The values are the same.
    """
    widths = tuple(int(w) for w in widths)
    shape = tuple(x.shape)
    if shape[len(shape) - len(widths):] == widths:
        return x
    size = [-1] * (len(shape) - len(widths)) + list(widths)
    return tf.slice(x, [0] * len(shape), size)


def level_prefix(params: dict, level: int, width: int, shared: bool, num_levels: int):
    """The variable level ``level`` uses from a per-level store.

    Shared: the first ``width`` entries (last axis) of the TA's variable, with
    no slice op when the level uses all of it; unshared: the level's own.
    """
    if shared:
        return prefix(params[num_levels - 1], (width,))
    return params[level]
