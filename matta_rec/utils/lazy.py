"""Package attributes imported on first use (PEP 562 module ``__getattr__``)."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_attributes(package: str, table: Mapping[str, str], namespace: dict) -> Callable:
    """A module ``__getattr__`` that imports ``name`` from ``table[name]``.

    Keeps heavy imports (pyarrow, TensorFlow) off a package's import path
    until an attribute that needs them is used; the value is then cached in
    the package's ``namespace`` (its ``globals()``).

    Example:

    >>> __getattr__ = lazy_attributes(__name__, {"LogStream": "matta_rec.data.reader"}, globals())
    """

    def __getattr__(name: str):
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
