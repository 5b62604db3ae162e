"""Pareto fronts of (cost, loss) points, both minimised.

One definition for the whole package: ``export --sizes all-pareto`` (FLOPs
vs held-out AucLoss) and the evaluation report's front (parameters or
latency vs AucLoss).

Example:

>>> non_dominated([(1, 0.30), (2, 0.40), (3, 0.20)])
[0, 2]
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["dominates", "non_dominated"]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether point ``a`` dominates ``b``: no worse in every coordinate, better in one.

    Args:
        a, b: ``(cost, loss)`` (any number of coordinates, all minimised).

    Example:

    >>> dominates((1, 0.2), (2, 0.2)), dominates((1, 0.2), (1, 0.2))
    (True, False)
    """
    if len(a) != len(b):
        raise ValueError(f"points of different lengths: {tuple(a)} and {tuple(b)}")
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates, in input order.

    Equal points do not dominate each other: both stay on the front.

    Args:
        points: ``[(cost, loss), ...]`` (finite numbers, all minimised).

    Returns:
        Indices into ``points``.

    Example:

    >>> non_dominated([(2, 0.1), (1, 0.3), (1, 0.2), (3, 0.1)])
    [0, 2]
    """
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]
