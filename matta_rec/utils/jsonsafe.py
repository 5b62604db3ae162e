"""One conversion of report / manifest values to strict JSON.

Reports mix Python and NumPy values (``np.float32`` AUROCs, ``np.int64``
row counts, arrays of replicates, ``nan`` where a metric is undefined, paths).
:func:`to_json_safe` turns such a value into one ``json.dumps`` accepts and
that stays valid JSON (no ``NaN`` / ``Infinity`` tokens, which many readers
reject).

Example:

>>> import numpy as np
>>> to_json_safe({"auc": np.float32(0.5), "p": float("nan"), 3: np.arange(2)})
{'auc': 0.5, 'p': None, '3': [0, 1]}
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

__all__ = ["to_json_safe"]


def to_json_safe(value: Any) -> Any:
    """``value`` with every part made strict-JSON serialisable.

    Args:
        value: any nesting of mappings, lists / tuples and scalars.

    Returns:
        Mappings become dicts with ``str`` keys, lists / tuples / arrays
        become lists, NumPy scalars become Python scalars, non-finite floats
        become ``None``, paths become strings; any other object that JSON
        cannot hold is written as its ``str()``.
    """
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_json_safe(v) for v in (value.tolist() if isinstance(value, np.ndarray)
                                           else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
