"""Every Keras internal Shampoo relies on, in one place, checked when it is built.

Shampoo is a `keras.optimizers.Optimizer`. Beyond Keras's public API it uses:

1. The protected subclass API of `keras/src/optimizers/base_optimizer.py`
   that Keras's own optimizers (`keras.optimizers.Adam` among them) use:
   `_get_variable_index(variable)` (the index of a variable's state) and
   `_overwrite_variable_with_gradient(variable)`; and the learning rate
   attribute `_learning_rate` (`state_bytes` leaves its variable out).
2. Two hooks of the TensorFlow backend's optimizer
   (`keras/src/backend/tensorflow/optimizer.py`), overridden by
   `GroupedUpdateHooks` below so that one step updates all the variables of a
   device set in one call instead of one `update_step` per variable:
   `_backend_update_step(grads, trainable_variables, learning_rate)` and
   `_distributed_tf_update_step(distribution, grads_and_vars, learning_rate)`.
   `Shampoo(grouped_updates=False)` does not override them (Keras's public
   per-variable `update_step` path: the same math, more ops per step).
3. `keras.src.optimizers.optimizer.base_optimizer_keyword_args`, the text of
   the base optimizer's arguments pasted into `Shampoo`'s docstring
   (documentation only: a pointer to `keras.optimizers.Optimizer` otherwise).

Verified on Keras 3.15.x (3.15.1, TensorFlow backend, TensorFlow 2.21) by
`tests/test_shampoo.py` (which also asserts that the grouped path runs),
`tests/test_recorded_run.py` and `tests/test_distribute.py`. The source of the
two hooks and of the TF backend's `_all_reduce_sum_gradients` they sit between
is identical in Keras 3.10.0, 3.12.0, 3.13.2 and 3.14.0 (compared, not run:
the tests ran on 3.15.1 only). `check` runs when
a `Shampoo` is constructed: a missing internal or a changed signature raises a
`MattaError` naming the installed Keras version, rather than letting the
optimizer take a path nobody has tested.
"""

from __future__ import annotations

import functools
import inspect

import keras

from matta_rec.errors import MattaError

__all__ = ["VERIFIED_KERAS", "GroupedUpdateHooks", "check", "base_optimizer_keyword_args", "learning_rate_variable"]

#: The Keras minor versions the internals below were verified on.
VERIFIED_KERAS = "3.15"

# name -> expected parameters, on the class `keras.optimizers.Optimizer`.
_SUBCLASS_API = {
    "_get_variable_index": ("self", "variable"),
    "_overwrite_variable_with_gradient": ("self", "variable"),
}
_GROUPED_UPDATE_HOOKS = {
    "_backend_update_step": ("self", "grads", "trainable_variables", "learning_rate"),
    "_distributed_tf_update_step": ("self", "distribution", "grads_and_vars", "learning_rate"),
}


@functools.lru_cache(maxsize=None)
def check(grouped_updates=True):
    """Raises unless this Keras has the internals Shampoo uses (module docstring).

    Args:
        grouped_updates: also check the two TensorFlow-backend hooks that the
            grouped update overrides.

    Raises:
        MattaError: an internal is missing or its signature changed; the
            message names the installed Keras version and the fix.
    """
    expected = dict(_SUBCLASS_API)
    if grouped_updates:
        expected.update(_GROUPED_UPDATE_HOOKS)
    problems = {}  # name -> what is wrong
    for name, parameters in expected.items():
        method = getattr(keras.optimizers.Optimizer, name, None)
        if method is None:
            problems[name] = f"`{name}` is missing"
            continue
        found = tuple(inspect.signature(method).parameters)
        if found != parameters:
            problems[name] = f"`{name}` takes {found} (expected {parameters})"
    if not problems:
        return
    fix = f"install a verified Keras (`pip install 'keras>={VERIFIED_KERAS},<{_next_minor(VERIFIED_KERAS)}'`)"
    if grouped_updates and all(name in _GROUPED_UPDATE_HOOKS for name in problems):
        fix += (
            ", or construct `Shampoo(grouped_updates=False)` (Keras's per-variable `update_step`: same math, "
            "slower on CPU; in a run config `--set optimizer.settings.grouped_updates=false`)"
        )
    raise MattaError(
        f"matta_rec.optimizers.Shampoo needs Keras internals that Keras {keras.__version__} "
        f"(backend {keras.backend.backend()!r}) does not have as expected: {'; '.join(problems.values())}. "
        f"They were verified on Keras {VERIFIED_KERAS}.x with the TensorFlow backend "
        f"(matta_rec/optimizers/keras_internals.py). Fix: {fix}."
    )


def _next_minor(version):
    major, minor = version.split(".")[:2]
    return f"{major}.{int(minor) + 1}"


def learning_rate_variable(optimizer):
    """The optimizer's learning-rate variable, or None (a schedule or a callable)."""
    value = getattr(optimizer, "_learning_rate", None)
    return value if isinstance(value, keras.Variable) else None


def base_optimizer_keyword_args():
    """The docstring text of the base optimizer's keyword arguments."""
    try:
        from keras.src.optimizers import optimizer
    except ImportError:
        optimizer = None
    text = getattr(optimizer, "base_optimizer_keyword_args", None)
    if isinstance(text, str):
        return text
    return "**kwargs: the base arguments of `keras.optimizers.Optimizer` (`weight_decay`, `clipnorm`, ...)."


class GroupedUpdateHooks:
    """The overrides of Keras's TensorFlow update hooks (module docstring, item 2).

    Keras's TensorFlow optimizer calls `update_step` once per variable, each
    in its own `distribution.extended.update`. With `grouped_updates=True`
    Shampoo instead

    * computes the scalars every variable's update needs (bias corrections,
      step gates) once per step in `_backend_update_step`; they travel to
      the update in place of the learning rate (through `tf.distribute`
      like the learning rate does);
    * updates all the variables placed on the same devices in one `update`
      in `_distributed_tf_update_step` (per replica, with the all-reduced
      gradients, as Keras does), so that the blocks of one shape share each
      elementwise op and the counters are assigned once per step: on CPU a
      small model's step costs per op, not per flop. Variables on other
      devices (parameter servers, pinned tables) form separate calls.

    The class it is mixed into provides `grouped_updates`, `_step_scalars`
    and `_update_variables`.
    """

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self.grouped_updates:
            learning_rate = self._step_scalars(learning_rate)
        return super()._backend_update_step(grads, trainable_variables, learning_rate)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        if not self.grouped_updates:
            return super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)
        by_devices = {}
        for grad, var in grads_and_vars:
            by_devices.setdefault(_devices_of(var), []).append((grad, var))
        for pairs in by_devices.values():
            variables = [var for _, var in pairs]

            def update_all(_, grads, scalars, variables=variables):
                self._update_variables(grads, variables, scalars)

            distribution.extended.update(
                variables[0], update_all, args=([grad for grad, _ in pairs], learning_rate), group=False
            )


def _devices_of(variable):
    """The devices holding a variable's copies (one per replica when mirrored)."""
    values = getattr(variable, "values", None)
    if isinstance(values, (tuple, list)):
        return tuple(v.device for v in values)
    return (variable.device,)
