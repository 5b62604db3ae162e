"""Keep TensorFlow's start-up logging off the terminal (``matta-rec`` without ``--verbose``).

Importing TensorFlow writes about ten lines of C++ logging to stderr before a
command prints anything: ``oneDNN custom operations are on``, ``Could not find
cuda drivers``, the CPU-instructions note and, on machines without a GPU, a
``failed call to cuInit`` error.  ``TF_CPP_MIN_LOG_LEVEL=3`` filters what is
logged after TensorFlow has set up its logging (``cuInit`` included), but the
first lines are written while the shared libraries load, before that setting
is read ("All log messages before absl::InitializeLog() is called are written
to STDERR").  So :func:`quiet_tensorflow` also points file descriptor 2 at
``/dev/null`` for the duration of ``import tensorflow`` (through an import
hook, so commands that never import TensorFlow do not pay for it), and lowers
TensorFlow's Python logger to errors.  Python exceptions raised by the import
are not affected: they propagate once stderr is restored.

Example:

>>> quiet_tensorflow()          # before anything imports tensorflow
>>> import tensorflow           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Iterator

__all__ = ["quiet_tensorflow", "stop_quieting"]


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up logs and its Python warnings from now on.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the environment already sets it
    (an explicit setting is the user's choice), and, when TensorFlow is not
    imported yet, installs a one-shot import hook that imports it with stderr
    (file descriptor 2) pointed at ``/dev/null``.  Calling it again is
    harmless.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        _quiet_python_loggers()
        return
    if not any(isinstance(finder, _SilentTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SilentTensorFlowImport())


def stop_quieting() -> None:
    """Remove the import hook if TensorFlow was never imported (the environment stays set)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _SilentTensorFlowImport)]


def _quiet_python_loggers() -> None:
    # TensorFlow's own Python logger ("WARNING:tensorflow:5 out of the last 5
    # calls ... triggered tf.function retracing" and the like).
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at ``/dev/null`` (C++ code writes there, not to ``sys.stderr``)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _SilentTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once and wraps its loader in :class:`_SilentLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        stop_quieting()  # one shot: the real finders locate the package
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _SilentLoader(spec.loader)
        return spec


class _SilentLoader(importlib.abc.Loader):
    """Runs the wrapped loader with stderr silenced, then hands the module back to it."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The module keeps its real loader (importlib.resources and the like use it).
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        with _stderr_to_devnull():
            self.loader.exec_module(module)
        _quiet_python_loggers()
